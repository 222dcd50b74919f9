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
//! in the transaction, so a change read twice is stored once: when streaming starts, the
//! source reads back its events stored after the slot's confirmed position and skips them
//! when the server sends them again (`reread`), which spares every event a de-duplication
//! claim in the store.

mod capture;
mod decode;
mod envelope;
mod reread;
mod setup;
mod slot;

use estafeta_config::postgres_source::PostgresSourceSettings;

use crate::supervisor::{Failure, Supervisor};

/// Metric names of this source (documented in `docs/sources/postgres.md`).
pub mod metrics {
    pub use estafeta_core::metric_names::{
        SOURCE_EVENTS as EVENTS, SOURCE_RECONNECTS as RECONNECTS, SOURCE_SLOT_LAG as SLOT_LAG,
        SOURCE_SLOT_RETAINED_WAL as SLOT_RETAINED_WAL, SOURCE_SNAPSHOT_ROWS as SNAPSHOT_ROWS,
    };
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
}

/// One running source of this kind.
pub(crate) type Capture = crate::Source<PostgresSourceSettings>;

impl Capture {
    /// Runs until cancelled or stopped by a problem that needs a person; reconnects with
    /// backoff after anything else (see [`Supervisor`]).
    pub(crate) async fn run(self) {
        let mut sup = Supervisor::new(&self.id, &self.board, &self.cancel);
        while sup.begin() {
            let failure = match capture::run_once(&self).await {
                Ok(capture::Ended::Cancelled) => break,
                Ok(capture::Ended::SnapshotOnlyDone) => {
                    tracing::info!(source_id = %self.id, "initial snapshot finished; the source stops (snapshot: initial_only)");
                    break;
                }
                Err(e @ CaptureError::SlotLimit(_)) => Failure::Fatal(e.to_string()),
                Err(e @ CaptureError::Setup(_)) => Failure::Setup(e.to_string()),
                Err(e) => Failure::Transient(e.to_string()),
            };
            if !sup.failed(failure).await {
                break;
            }
        }
        sup.stopped();
    }
}
