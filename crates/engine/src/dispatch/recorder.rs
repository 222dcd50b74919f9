//! Writes finished attempts to the store in batches, so thousands of attempts per second
//! cost a handful of transactions. A failed write is retried; what is not written by
//! shutdown is simply attempted again after the restart (at-least-once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use estafeta_core::DeliveryId;
use estafeta_store::{AttemptRecord, Store};
use tokio::sync::{mpsc, oneshot};

/// How long a finished delivery is remembered after its record is written, so that a page of
/// the backlog read just before the write cannot bring it back.
const SETTLED_MEMORY: Duration = Duration::from_secs(30);

/// Deliveries that finished (delivered or dead) in memory but whose record may not be in the
/// store yet. The backlog pager skips them: the store still calls them unfinished.
#[derive(Debug, Default)]
pub(crate) struct Settling {
    ids: Mutex<HashMap<DeliveryId, Option<Instant>>>,
}

impl Settling {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, Option<Instant>>> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A delivery finished; its record is on the way.
    pub(crate) fn begin(&self, id: DeliveryId) {
        self.lock().insert(id, None);
    }

    /// True while the store may still call this delivery unfinished.
    pub(crate) fn contains(&self, id: DeliveryId) -> bool {
        self.lock().contains_key(&id)
    }

    fn written(&self, ids: impl Iterator<Item = DeliveryId>) {
        let now = Instant::now();
        let mut map = self.lock();
        for id in ids {
            if let Some(slot) = map.get_mut(&id) {
                *slot = Some(now);
            }
        }
        map.retain(|_, t| t.is_none_or(|t| now.duration_since(t) < SETTLED_MEMORY));
    }
}

const MAX_BATCH: usize = 2_000;

/// A message to the recorder.
pub(crate) enum Msg {
    /// Write this record.
    Record(AttemptRecord),
    /// Answer once everything sent before is written.
    Flush(oneshot::Sender<()>),
}

pub(crate) fn spawn(
    store: Arc<dyn Store>,
    capacity: usize,
    settling: Arc<Settling>,
) -> mpsc::Sender<Msg> {
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
            let finished: Vec<DeliveryId> = batch
                .iter()
                .filter(|r| r.status.is_terminal())
                .map(|r| r.attempt.delivery_id)
                .collect();
            write(&*store, &mut batch, !flushes.is_empty()).await;
            settling.written(finished.into_iter());
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
                    tracing::warn!(
                        records = batch.len(),
                        "giving up recording attempts at shutdown; they will be attempted again after restart"
                    );
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    batch.clear();
}
