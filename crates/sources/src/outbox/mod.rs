//! `kind: outbox` — the transactional outbox / queue-table pattern: an application (or a
//! trigger) inserts rows with `status = 'PENDING'`; this source claims them in batches,
//! appends one event per row to the log, and writes each row back.
//!
//! **Claiming.** A batch is read and locked in one transaction
//! (`SELECT … ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED` in PostgreSQL, MySQL 8 and
//! MariaDB 10.6+; plain `FOR UPDATE` on older MySQL/MariaDB, where a second instance waits
//! instead of skipping; `BEGIN IMMEDIATE` in SQLite, which lets one writer at a time in). The
//! transaction stays open while the events are appended and commits the write-back only
//! after the log said they are durable, so several instances polling one table never emit a
//! row twice, and a crash at any point leaves the batch pending to be read again.
//!
//! **Ids.** Each event's CloudEvents id is `<table>:<row id>`, so a row read again after a
//! crash between the append and the commit is de-duplicated by the log.
//!
//! **Write-back.** `mark_on: stored` marks rows processed (or deletes them) in the claim's
//! transaction. `mark_on: delivered` marks them `processing` there, keeps the list of rows
//! and their events in the store's cursor for this source, and marks each row processed
//! when all its deliveries succeeded or failed (with the last error and the attempt count)
//! when they finished and one died. A row whose payload is not JSON is marked failed with
//! the reason and never becomes an event.

mod mysql;
mod poll;
mod postgres;
mod row;
mod sql;
mod sqlite;
mod watch;

use std::error::Error as StdError;

use estafeta_config::outbox_source::{OutboxDatabase, OutboxSourceSettings};
use estafeta_store::StoreError;

use crate::sink::SinkError;
use crate::supervisor::{Failure, Supervisor};

/// Metric names of this source (documented in `docs/sources/outbox.md`).
pub mod metrics {
    pub use estafeta_core::metric_names::{
        SOURCE_EVENTS as EVENTS, SOURCE_RECONNECTS as RECONNECTS,
    };
    /// Counter: rows written back, by `source` and `outcome` (`processed`, `deleted`,
    /// `failed`).
    pub const ROWS: &str = "estafeta_source_outbox_rows_total";
    /// Gauge: rows in `processing` waiting for their deliveries (`mark_on: delivered`), by
    /// `source`.
    pub const WATCHING: &str = "estafeta_source_outbox_processing_rows";
}

/// Why polling stopped or paused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutboxError {
    /// The database, the table or the user is not set up as the config says; retrying will
    /// not help until someone fixes what the message says.
    #[error("{0}")]
    Setup(String),
    /// The database refused a statement for a reason a person must fix (a missing column,
    /// a value that does not fit, a missing privilege).
    #[error("{what}")]
    Refused {
        what: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// A lost connection or a failed query; retried with backoff.
    #[error("{what}")]
    Database {
        what: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The connection (or the SQLite thread) is gone.
    #[error("{0}")]
    Lost(String),
    /// The log could not store the events; nothing was marked.
    #[error("the event log could not store the rows' events")]
    Sink(#[source] SinkError),
    /// The store could not read deliveries or save the source's state.
    #[error("the event store failed")]
    Store(#[source] StoreError),
}

impl OutboxError {
    fn is_permanent(&self) -> bool {
        matches!(self, Self::Setup(_) | Self::Refused { .. })
    }

    /// The error with its causes, for logs and the status board.
    pub(crate) fn report(&self) -> String {
        crate::supervisor::error_chain(self)
    }
}

/// One running source of this kind.
pub(crate) type Outbox = crate::Source<OutboxSourceSettings>;

impl Outbox {
    /// Runs until cancelled; reconnects with backoff after a failure, and checks again
    /// every minute after a problem that needs a person (see [`Supervisor`]).
    pub(crate) async fn run(self) {
        let mut sup = Supervisor::new(&self.id, &self.board, &self.cancel);
        let mut watch = None;
        while sup.begin() {
            let result = match self.settings.database {
                OutboxDatabase::Postgres => {
                    poll::session::<postgres::PgDriver>(&self, &mut watch).await
                }
                OutboxDatabase::Mysql => poll::session::<mysql::MyDriver>(&self, &mut watch).await,
                OutboxDatabase::Sqlite { .. } => {
                    poll::session::<sqlite::LiteDriver>(&self, &mut watch).await
                }
            };
            let failure = match result {
                Ok(()) => break,
                Err(e) if e.is_permanent() => Failure::Setup(e.report()),
                Err(e) => Failure::Transient(e.report()),
            };
            if !sup.failed(failure).await {
                break;
            }
        }
        sup.stopped();
    }
}
