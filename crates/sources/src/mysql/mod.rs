//! `kind: mysql` — change data capture from MySQL and MariaDB by reading the binary log as a
//! replica does (`binlog_format=ROW`, `binlog_row_image=FULL`, `binlog_row_metadata=FULL`).
//!
//! The source checks the server's settings and the user's privileges, copies the tables'
//! current rows when asked (inside a consistent-snapshot transaction whose binlog position
//! is known, so nothing falls between the copy and the stream), then streams inserts,
//! updates and deletes from that position. Changes are appended to the log in batches; the
//! binlog file and position of the last transaction whose changes are all stored is saved
//! as the source's checkpoint only after the append succeeded, so a crash, a restart or a
//! lost connection resumes from the last stored transaction and nothing is lost. Each
//! change has a CloudEvents id made of its transaction's binlog position and its place in
//! the transaction, so a change read twice is stored once.

mod capture;
mod decode;
mod events;
mod replica;
mod schema;
mod setup;
mod snapshot;
mod stream;

use estafeta_config::mysql_source::MysqlSourceSettings;
use estafeta_store::StoreError;

use crate::sink::SinkError;
use crate::supervisor::{Failure, Supervisor, error_chain};

/// Metric names of this source (documented in `docs/sources/mysql.md`); the same names as
/// the PostgreSQL source's, so dashboards cover both.
pub mod metrics {
    pub use estafeta_core::metric_names::{
        SOURCE_EVENTS as EVENTS, SOURCE_RECONNECTS as RECONNECTS,
        SOURCE_SNAPSHOT_ROWS as SNAPSHOT_ROWS,
    };
}

/// Why capture stopped or paused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaptureError {
    /// The server or the user is not set up for capture; retrying will not help until
    /// someone does what the message says.
    #[error("{0}")]
    Setup(String),
    /// A server refusal that needs a person, with the server's own error.
    #[error("{message}")]
    Refused {
        message: String,
        #[source]
        source: mysql_async::Error,
    },
    /// A lost connection or a failed query; retried with backoff.
    #[error("{message}")]
    Database {
        message: String,
        #[source]
        source: mysql_async::Error,
    },
    /// A binlog event that cannot be decoded; skipping it would lose changes, so the
    /// source stops until someone looks.
    #[error("{message}")]
    Decode {
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// The stream ended or stalled without an error from the driver; retried with backoff.
    #[error("{0}")]
    Transient(String),
    /// The log could not store events; retried with backoff, nothing acknowledged.
    #[error("the event log could not store the changes")]
    Store(#[source] SinkError),
    /// The checkpoint could not be read or written; retried with backoff.
    #[error("the source's checkpoint could not be read or written")]
    Checkpoint(#[source] StoreError),
}

impl CaptureError {
    /// A failed query or connection, classified: access refusals need a person, the rest
    /// is retried.
    fn db(message: impl Into<String>, source: mysql_async::Error) -> Self {
        let message = message.into();
        match &source {
            mysql_async::Error::Server(e) if matches!(e.code, 1044 | 1045 | 1142 | 1227) => {
                Self::Refused { message, source }
            }
            _ => Self::Database { message, source },
        }
    }

    fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Setup(_) | Self::Refused { .. } | Self::Decode { .. }
        )
    }
}

/// One running source of this kind.
pub(crate) type Capture = crate::Source<MysqlSourceSettings>;

impl Capture {
    /// Runs until cancelled or stopped by a problem that needs a person; reconnects with
    /// backoff (1 s doubling to 30 s) after anything else.
    pub(crate) async fn run(self) {
        let mut sup = Supervisor::new(&self.id, &self.board, &self.cancel);
        while sup.begin() {
            let failure = match capture::run_once(&self).await {
                Ok(capture::Ended::Cancelled) => break,
                Ok(capture::Ended::SnapshotOnlyDone) => {
                    tracing::info!(source_id = %self.id, "initial snapshot finished; the source stops (snapshot: initial_only)");
                    break;
                }
                Err(e) if e.is_permanent() => Failure::Setup(error_chain(&e)),
                Err(e) => Failure::Transient(error_chain(&e)),
            };
            if !sup.failed(failure).await {
                break;
            }
        }
        sup.stopped();
    }
}
