//! The status board: each source's state, counters, snapshot progress and replication-slot
//! health, read by the API (`/v1/sources`), `/readyz` and the CLI.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a source is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Connecting and checking its set-up.
    Starting,
    /// Copying existing rows (initial snapshot).
    Snapshotting,
    /// Taking events in.
    Running,
    /// Lost its connection or its store; retrying with backoff.
    Reconnecting,
    /// Stopped by a problem it cannot fix by retrying; `error` says what to do.
    Failed,
    /// Finished its work (`snapshot: initial_only`) or shut down.
    Stopped,
}

/// Progress of one table in a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct TableProgress {
    /// `schema.table`.
    pub table: String,
    /// Rows copied so far.
    pub rows_copied: u64,
    /// The database's estimate of the table's rows when the snapshot began.
    pub rows_estimated: u64,
    /// Whether the table is done.
    pub done: bool,
}

/// Progress of an initial snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotProgress {
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// When it finished, if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// Per table, in copy order.
    pub tables: Vec<TableProgress>,
}

/// Replication slot health.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStats {
    /// Slot name.
    pub slot: String,
    /// WAL the server keeps for this slot (bytes from its `restart_lsn` to the current
    /// WAL position).
    pub retained_wal_bytes: u64,
    /// Bytes between the last position Estafeta confirmed and the current WAL position.
    pub lag_bytes: u64,
    /// The slot's `confirmed_flush_lsn`.
    pub confirmed_flush_lsn: Option<String>,
    /// The server's `wal_status` for the slot (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: Option<String>,
    /// When this was measured.
    pub checked_at: DateTime<Utc>,
}

/// One source's status.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// Source id.
    pub id: String,
    /// Kind (`http`, `postgres`, …).
    pub kind: &'static str,
    /// State.
    pub state: SourceState,
    /// The last problem, with what to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A warning that does not stop the source (e.g. retained WAL above the threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Events stored since start.
    pub events: u64,
    /// When the last event was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<DateTime<Utc>>,
    /// The last upstream position acknowledged (LSN, offset …), after it was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Reconnections since start.
    pub reconnects: u64,
    /// Broker sources: messages waiting upstream that have not been taken in yet (see
    /// `estafeta_source_lag_messages`), when the broker tells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Broker sources: messages that could not be decoded since start (each stored as an
    /// `estafeta.message.undecodable` event).
    #[serde(skip_serializing_if = "is_zero")]
    pub undecodable: u64,
    /// Initial snapshot progress, when there is or was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
    /// Replication slot health (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotStats>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Every source's status, shared between the sources and the API.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<RwLock<BTreeMap<String, SourceStatus>>>,
}

impl StatusBoard {
    pub(crate) fn register(&self, id: &str, kind: &'static str, state: SourceState) {
        let s = SourceStatus {
            id: id.to_owned(),
            kind,
            state,
            error: None,
            warning: None,
            events: 0,
            last_event_at: None,
            position: None,
            reconnects: 0,
            lag: None,
            undecodable: 0,
            snapshot: None,
            slot: None,
        };
        self.write().insert(id.to_owned(), s);
    }

    /// Changes one source's status.
    pub(crate) fn update(&self, id: &str, f: impl FnOnce(&mut SourceStatus)) {
        if let Some(s) = self.write().get_mut(id) {
            f(s);
        }
    }

    /// All sources, by id.
    #[must_use]
    pub fn list(&self) -> Vec<SourceStatus> {
        self.read().values().cloned().collect()
    }

    /// One source.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<SourceStatus> {
        self.read().get(id).cloned()
    }

    /// Sources that are not taking events in (`/readyz` reports them).
    #[must_use]
    pub fn not_ready(&self) -> Vec<SourceStatus> {
        self.read()
            .values()
            .filter(|s| matches!(s.state, SourceState::Reconnecting | SourceState::Failed))
            .cloned()
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, SourceStatus>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, SourceStatus>> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
