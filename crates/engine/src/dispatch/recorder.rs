//! Writes finished attempts to the store in batches, so thousands of attempts per second
//! cost a handful of transactions. A failed write is retried; what is not written by
//! shutdown is simply attempted again after the restart (at-least-once).

use std::sync::Arc;
use std::time::Duration;

use estafeta_store::{AttemptRecord, Store};
use tokio::sync::{mpsc, oneshot};

const MAX_BATCH: usize = 2_000;

/// A message to the recorder.
pub(crate) enum Msg {
    /// Write this record.
    Record(AttemptRecord),
    /// Answer once everything sent before is written.
    Flush(oneshot::Sender<()>),
}

pub(crate) fn spawn(store: Arc<dyn Store>, capacity: usize) -> mpsc::Sender<Msg> {
    let (tx, mut rx) = mpsc::channel::<Msg>(capacity);
    tokio::spawn(async move {
        let mut msgs = Vec::with_capacity(MAX_BATCH);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            if rx.recv_many(&mut msgs, MAX_BATCH).await == 0 {
                return; // every sender is gone and the channel is drained
            }
            let mut flushes = Vec::new();
            for msg in msgs.drain(..) {
                match msg {
                    Msg::Record(r) => batch.push(r),
                    Msg::Flush(done) => flushes.push(done),
                }
            }
            write(&*store, &mut batch, !flushes.is_empty()).await;
            for done in flushes {
                let _ = done.send(());
            }
        }
    });
    tx
}

async fn write(store: &dyn Store, batch: &mut Vec<AttemptRecord>, flushing: bool) {
    if batch.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        match store.record_attempts(batch.clone()).await {
            Ok(()) => break,
            Err(err) => {
                tracing::warn!(error = %err, records = batch.len(), "cannot record attempts; retrying");
                if flushing && backoff > Duration::from_secs(2) {
                    tracing::warn!(records = batch.len(), "giving up recording attempts at shutdown; they will be attempted again after restart");
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    batch.clear();
}
