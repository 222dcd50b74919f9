//! `kind: postgres` — change data capture from PostgreSQL by logical replication with the
//! built-in `pgoutput` plugin.
//!
//! The source creates (or reuses) a publication and a replication slot, copies the tables'
//! current rows when asked (an initial snapshot exported by the slot, so nothing falls
//! between the copy and the stream), then streams inserts, updates, deletes and truncates.
//! Changes are appended to the log in batches; the slot's position is confirmed to the
//! server only after the batch holding a transaction's commit is durable, so a crash, a
//! restart or a lost connection resumes from the last confirmed commit and nothing is lost.
//! Each change has a CloudEvents id made of its transaction's commit position and its place
//! in the transaction, so a change read twice is stored once.

mod capture;
mod decode;
mod envelope;
mod setup;
mod slot;

use std::sync::Arc;
use std::time::Duration;

use estafeta_config::postgres_source::PostgresSourceSettings;
use estafeta_store::Store;
use tokio_util::sync::CancellationToken;

use crate::sink::EventSink;
use crate::status::{SourceState, StatusBoard};

/// Metric names of this source (documented in `docs/sources/postgres.md`).
pub mod metrics {
    /// Counter: change events stored, by `source` and `op`.
    pub const EVENTS: &str = "estafeta_source_events_total";
    /// Counter: reconnections after a lost connection, by `source`.
    pub const RECONNECTS: &str = "estafeta_source_reconnects_total";
    /// Gauge: WAL retained by the slot, in bytes, by `source`.
    pub const SLOT_RETAINED_WAL: &str = "estafeta_source_slot_retained_wal_bytes";
    /// Gauge: bytes between the slot's confirmed position and the server's WAL position.
    pub const SLOT_LAG: &str = "estafeta_source_slot_lag_bytes";
    /// Counter: rows copied by the initial snapshot, by `source` and `table`.
    pub const SNAPSHOT_ROWS: &str = "estafeta_source_snapshot_rows_total";
}

/// Why capture stopped or paused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaptureError {
    /// The database or the user is not set up for capture; retrying will not help until
    /// someone runs what the message says.
    #[error("{0}")]
    Setup(String),
    /// A lost connection or a failed query; retried with backoff.
    #[error("{0}")]
    Transient(String),
    /// The slot was dropped because it held back too much WAL (`on_limit: drop_slot`).
    #[error("{0}")]
    SlotLimit(String),
    /// The log could not store events; retried with backoff, nothing acknowledged.
    #[error("the event log could not store the changes: {0}")]
    Store(String),
}

impl CaptureError {
    fn connect(message: &str) -> Self {
        let first = message.lines().next().unwrap_or(message);
        if message.contains("no pg_hba.conf entry") && message.contains("replication") {
            return Self::Setup(format!(
                "PostgreSQL refused a replication connection ({first}). Allow it in pg_hba.conf: \
                 `host replication USER CLIENT_ADDRESS/32 scram-sha-256`, then reload PostgreSQL"
            ));
        }
        if message.contains("password authentication failed") || message.contains("does not exist")
        {
            return Self::Setup(format!("PostgreSQL refused the connection: {first}"));
        }
        Self::Transient(format!("cannot connect to PostgreSQL: {first}"))
    }

    fn is_permanent(&self) -> bool {
        matches!(self, Self::Setup(_) | Self::SlotLimit(_))
    }
}

/// One running PostgreSQL capture.
pub(crate) struct Capture {
    id: String,
    settings: PostgresSourceSettings,
    sink: Arc<dyn EventSink>,
    store: Arc<dyn Store>,
    board: StatusBoard,
    cancel: CancellationToken,
}

impl Capture {
    pub(crate) fn new(
        id: String,
        settings: PostgresSourceSettings,
        sink: Arc<dyn EventSink>,
        store: Arc<dyn Store>,
        board: StatusBoard,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            id,
            settings,
            sink,
            store,
            board,
            cancel,
        }
    }

    /// Runs until cancelled or stopped by a problem that needs a person; reconnects with
    /// backoff (1 s doubling to 30 s) after anything else.
    pub(crate) async fn run(self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let started = std::time::Instant::now();
            let result = capture::run_once(&self).await;
            match result {
                Ok(capture::Ended::Cancelled) => break,
                Ok(capture::Ended::SnapshotOnlyDone) => {
                    tracing::info!(source_id = %self.id, "initial snapshot finished; the source stops (snapshot: initial_only)");
                    self.board
                        .update(&self.id, |s| s.state = SourceState::Stopped);
                    return;
                }
                Err(e) if e.is_permanent() => {
                    tracing::error!(source_id = %self.id, error = %e, "postgres source stopped");
                    self.board.update(&self.id, |s| {
                        s.state = SourceState::Failed;
                        s.error = Some(e.to_string());
                    });
                    // Setup problems may be fixed while we wait: check again now and then.
                    if matches!(e, CaptureError::SlotLimit(_)) {
                        return;
                    }
                    tokio::select! {
                        () = self.cancel.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                }
                Err(e) => {
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_secs(1);
                    }
                    tracing::warn!(source_id = %self.id, error = %e, retry_in = ?backoff, "postgres source lost its connection; reconnecting");
                    ::metrics::counter!(metrics::RECONNECTS, "source" => self.id.clone())
                        .increment(1);
                    self.board.update(&self.id, |s| {
                        s.state = SourceState::Reconnecting;
                        s.error = Some(e.to_string());
                        s.reconnects += 1;
                    });
                    tokio::select! {
                        () = self.cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        self.board
            .update(&self.id, |s| s.state = SourceState::Stopped);
    }
}
