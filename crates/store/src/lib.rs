//! Durable storage for events, deliveries, attempts, schedule runs, source cursors,
//! settings, and secrets and credentials sealed at rest ([`vault`]).
//!
//! [`Store`] is the one interface the engine and the API use. [`SqliteStore`] is the embedded
//! implementation (WAL, one writer thread that commits many appends per transaction); a
//! PostgreSQL implementation for cluster mode satisfies the same trait and the same
//! behaviour suite.

mod model;
pub mod retention;
mod schedule_runs;
mod sqlite;
pub mod vault;

pub use model::{
    AppendOutcome, AttemptRecord, DeliveryCount, DeliveryQuery, EventQuery, NewEvent, Page,
};
pub use schedule_runs::{LastTick, RunClaim, RunFinish, RunStatus, RunTrigger, ScheduleRun};
pub use sqlite::{SqliteOptions, SqliteStore};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use estafeta_core::{Attempt, Delivery, DeliveryId, Event, EventId, ScheduleRunId, TenantId};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take writes or reads right now (disk full, I/O error, closed). The
    /// operation had no effect; the caller may retry later.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What happened, without SQL or file paths.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The database holds something this version cannot read.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database was written by a newer Estafeta.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    TooNew {
        /// Version found in the database.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A bad argument, such as an unparseable page cursor.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Estafeta keeps durably. All methods are safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends events together with their initial deliveries, durably (the call returns only
    /// after the transaction is on disk) and atomically per call (all or nothing). An event
    /// whose `(tenant, dedupe_key)` was seen within the dedupe window is not stored again:
    /// its outcome is [`AppendOutcome::Duplicate`] with the first event's id, and its
    /// deliveries are dropped. Duplicates inside one call are detected too. An event without
    /// a dedupe key is always stored.
    async fn append(&self, batch: Vec<NewEvent>) -> StoreResult<Vec<AppendOutcome>>;

    /// Records finished attempts and the new state of their deliveries, durably.
    async fn record_attempts(&self, records: Vec<AttemptRecord>) -> StoreResult<()>;

    /// Inserts new deliveries (used by replay), durably.
    async fn insert_deliveries(&self, deliveries: Vec<Delivery>) -> StoreResult<()>;

    /// Moves a delivery back to `pending`, due now, for an operator's retry. Returns the
    /// updated delivery, or `None` when it does not exist for that tenant.
    async fn requeue_delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> StoreResult<Option<Delivery>>;

    /// One event.
    async fn get_event(&self, tenant: &TenantId, id: EventId) -> StoreResult<Option<Event>>;

    /// Several events by id, for the dispatcher (any tenant); missing ids are skipped.
    async fn get_events(&self, ids: &[EventId]) -> StoreResult<Vec<Event>>;

    /// A page of events, newest first.
    async fn list_events(&self, query: &EventQuery) -> StoreResult<Page<Event>>;

    /// Events of a tenant in log order starting after `after` (exclusive) or at the first
    /// event (in log order) received at or after `since`; used by replay.
    async fn scan_events(
        &self,
        tenant: &TenantId,
        after: Option<EventId>,
        since: Option<chrono::DateTime<chrono::Utc>>,
        limit: usize,
    ) -> StoreResult<Vec<Event>>;

    /// One delivery.
    async fn get_delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> StoreResult<Option<Delivery>>;

    /// A page of deliveries, newest first.
    async fn list_deliveries(&self, query: &DeliveryQuery) -> StoreResult<Page<Delivery>>;

    /// The deliveries of one event.
    async fn deliveries_for_event(&self, event_id: EventId) -> StoreResult<Vec<Delivery>>;

    /// The attempts of one delivery, oldest first.
    async fn attempts(&self, delivery_id: DeliveryId) -> StoreResult<Vec<Attempt>>;

    /// Deliveries that are not finished (`pending` or `retrying`), in id order after
    /// `after`, at most `limit`: how the dispatcher recovers its queue after a restart.
    async fn unfinished_deliveries(
        &self,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;

    /// Unfinished deliveries (`pending` or `retrying`) of one destination, in id order after
    /// `after`, at most `limit`: how a destination's queue pages work in from the store when
    /// its backlog is larger than what it keeps in memory.
    async fn unfinished_deliveries_for(
        &self,
        destination_id: &str,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;

    /// Number of deliveries per destination and status.
    async fn delivery_counts(&self) -> StoreResult<Vec<DeliveryCount>>;

    /// A source's checkpoint (LSN, offset, cursor …).
    async fn get_cursor(&self, source_id: &str) -> StoreResult<Option<String>>;

    /// Stores a source's checkpoint durably.
    async fn put_cursor(&self, source_id: &str, value: &str) -> StoreResult<()>;

    /// A setting (for example the admin token's hash).
    async fn get_setting(&self, name: &str) -> StoreResult<Option<String>>;

    /// Stores a setting durably.
    async fn put_setting(&self, name: &str, value: &str) -> StoreResult<()>;

    /// Claims schedule runs durably, before they run. A claim is recorded unless a run of
    /// the same schedule for the same `scheduled_at` already is (whoever recorded it: this
    /// process before a restart, or another process on the same store); manual runs are
    /// never refused. Answers, in order, whether each claim was recorded by this call.
    async fn claim_runs(&self, claims: Vec<RunClaim>) -> StoreResult<Vec<bool>>;

    /// Marks a queued run as running from `started_at`, durably; a run that is no longer
    /// queued is left as it is.
    async fn start_run(&self, id: ScheduleRunId, started_at: DateTime<Utc>) -> StoreResult<()>;

    /// Records how a run ended, durably. Callers record what the run produced (its events)
    /// before they call this with `succeeded`.
    async fn finish_run(&self, finish: RunFinish) -> StoreResult<()>;

    /// A page of a schedule's runs, newest (last claimed) first.
    async fn list_runs(
        &self,
        schedule_id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> StoreResult<Page<ScheduleRun>>;

    /// The latest claimed tick of every schedule that has one (manual runs do not count):
    /// where a schedule resumes after a restart.
    async fn last_ticks(&self) -> StoreResult<Vec<LastTick>>;

    /// Marks the `queued` and `running` runs of these schedules `failed` with `reason`
    /// (a process stopped before they finished); answers how many there were.
    async fn fail_unfinished_runs(&self, schedule_ids: &[String], reason: &str)
    -> StoreResult<u64>;

    /// Creates or replaces a secret or credential record (private fields already sealed);
    /// an existing record keeps its `created_at`.
    async fn put_vault_record(&self, record: vault::VaultRecord) -> StoreResult<()>;

    /// One secret or credential record.
    async fn get_vault_record(
        &self,
        kind: vault::VaultKind,
        name: &str,
    ) -> StoreResult<Option<vault::VaultRecord>>;

    /// Every record of a kind (both kinds for `None`), ordered by kind and name.
    async fn list_vault_records(
        &self,
        kind: Option<vault::VaultKind>,
    ) -> StoreResult<Vec<vault::VaultRecord>>;

    /// Deletes a record; answers whether it existed.
    async fn delete_vault_record(&self, kind: vault::VaultKind, name: &str) -> StoreResult<bool>;

    /// Replaces the sealed fields and key id of these existing records, all in one
    /// transaction (master key rotation).
    async fn replace_vault_records(&self, records: Vec<vault::VaultRecord>) -> StoreResult<()>;

    /// Deletes up to `limit` events that `filter` selects, oldest first after `after`, with
    /// their deliveries and attempts, in one short write; events with an unfinished
    /// delivery are kept. [`retention::purge_events`] runs batches until none is left.
    async fn purge_events_batch(
        &self,
        filter: &retention::EventPurge,
        after: Option<EventId>,
        limit: usize,
    ) -> StoreResult<retention::PurgeBatch>;

    /// What a purge with `filter` would delete now (nothing is deleted), with up to `sample`
    /// of the oldest event ids.
    async fn preview_event_purge(
        &self,
        filter: &retention::EventPurge,
        sample: usize,
    ) -> StoreResult<retention::PurgePreview>;

    /// Records an entry of the audit log of deletions, durably.
    async fn record_audit(&self, entry: retention::AuditEntry) -> StoreResult<()>;

    /// A page of the audit log, newest first.
    async fn list_audit(
        &self,
        limit: usize,
        cursor: Option<String>,
    ) -> StoreResult<Page<retention::AuditEntry>>;

    /// Checks that the store answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Flushes and stops the writer; later writes fail with `Unavailable`.
    async fn close(&self);
}
