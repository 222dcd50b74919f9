//! The embedded store: SQLite in WAL mode, one writer thread that group-commits every queued
//! write in one fsync'd transaction, and a pool of read-only connections for queries.
//!
//! Layout: `schema` (migrations), `connection` (opening, pragmas, the reader pool),
//! `writer` (the group commit), `command` (what is sent to the writer), `checkpoint`
//! (copying the WAL into the database file in the background), `write_ops` and
//! `queries` (the SQL), `codec` (how values are stored), `errors` (mapping failures
//! without leaking SQL or paths).

mod checkpoint;
mod codec;
mod command;
mod connection;
mod errors;
mod purge;
mod queries;
mod runs;
mod schema;
mod vault;
mod write_ops;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use estafeta_core::{Attempt, Delivery, DeliveryId, Event, EventId, ScheduleRunId, TenantId};

use self::checkpoint::Checkpointer;
use self::codec::{AttemptRow, DeliveryRow, EventRow};
use self::command::{Op, Waiter};
use self::connection::{ReaderPool, open_writer};
use self::errors::unavailable;
use self::runs::{ClaimRow, FinishRow};
use self::write_ops::AppendItem;
use self::writer::WriterHandle;
use crate::retention::{AuditEntry, EventPurge, PurgeBatch, PurgePreview};
use crate::vault::{VaultKind, VaultRecord};
use crate::{
    AppendOutcome, AttemptRecord, DeliveryCount, DeliveryQuery, EventQuery, LastTick, NewEvent,
    Page, RunClaim, RunFinish, ScheduleRun, Store, StoreResult,
};

/// How to open a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// The database file; missing parent folders are created.
    pub path: PathBuf,
    /// How long a `(tenant, dedupe key)` pair keeps later events with the same key out.
    pub dedupe_window: Duration,
    /// How many read-only connections serve queries at once (at least one).
    pub readers: usize,
}

impl SqliteOptions {
    /// The default dedupe window: 24 hours.
    pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);
    /// The default number of reader connections.
    pub const DEFAULT_READERS: usize = 4;

    /// Options for the database at `path`, with the default dedupe window and readers.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            dedupe_window: Self::DEFAULT_DEDUPE_WINDOW,
            readers: Self::DEFAULT_READERS,
        }
    }

    /// The same options with another dedupe window.
    #[must_use]
    pub fn with_dedupe_window(mut self, window: Duration) -> Self {
        self.dedupe_window = window;
        self
    }

    /// The same options with another number of reader connections.
    #[must_use]
    pub fn with_readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }
}

/// The embedded [`Store`]: a SQLite database in WAL mode written by one thread with group
/// commit (one fsync per batch of concurrent writes) and read through a connection pool.
pub struct SqliteStore {
    writer: WriterHandle,
    readers: ReaderPool,
    schema_version: i64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("schema_version", &self.schema_version)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, then starts the writer thread.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`](crate::StoreError::Unavailable) when the file or its folder
    /// cannot be created or opened, [`StoreError::TooNew`](crate::StoreError::TooNew) when a
    /// newer build wrote the schema, [`StoreError::Corrupt`](crate::StoreError::Corrupt) when
    /// the file is not a usable database.
    pub async fn open(options: SqliteOptions) -> StoreResult<Self> {
        let SqliteOptions {
            path,
            dedupe_window,
            readers,
        } = options;
        let (conn, checkpointer, readers, schema_version) =
            tokio::task::spawn_blocking(move || {
                let mut conn = open_writer(&path)?;
                let version = schema::migrate(&mut conn)?;
                let readers = ReaderPool::open(&path, readers)?;
                let checkpointer = Checkpointer::start(&path)?;
                Ok::<_, crate::StoreError>((conn, checkpointer, readers, version))
            })
            .await
            .map_err(|e| unavailable("opening the database did not finish", e))??;
        let writer = WriterHandle::spawn(conn, checkpointer, dedupe_window)?;
        tracing::debug!(schema_version, "sqlite store open");
        Ok(Self {
            writer,
            readers,
            schema_version,
        })
    }

    /// The schema version of the open database (the newest this build knows).
    #[must_use]
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// The newest schema version this build can read and write.
    #[must_use]
    pub fn supported_schema_version() -> i64 {
        schema::latest_version()
    }
}

/// Moves encoding (JSON rendering, timestamps) onto the caller's task, off the writer.
fn encode_batch(batch: Vec<NewEvent>) -> StoreResult<Vec<AppendItem>> {
    batch
        .into_iter()
        .map(|n| {
            Ok(AppendItem {
                event: EventRow::encode(&n.event)?,
                dedupe_key: n.dedupe_key,
                deliveries: n.deliveries.into_iter().map(DeliveryRow::encode).collect(),
            })
        })
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, batch: Vec<NewEvent>) -> StoreResult<Vec<AppendOutcome>> {
        if batch.is_empty() {
            self.writer.ensure_open()?;
            return Ok(Vec::new());
        }
        let items = encode_batch(batch)?;
        self.writer.submit(Op::Append(items), Waiter::Append).await
    }

    async fn record_attempts(&self, records: Vec<AttemptRecord>) -> StoreResult<()> {
        if records.is_empty() {
            self.writer.ensure_open()?;
            return Ok(());
        }
        let rows = records
            .into_iter()
            .map(AttemptRow::encode)
            .collect::<StoreResult<_>>()?;
        self.writer
            .submit(Op::RecordAttempts(rows), Waiter::Unit)
            .await
    }

    async fn insert_deliveries(&self, deliveries: Vec<Delivery>) -> StoreResult<()> {
        if deliveries.is_empty() {
            self.writer.ensure_open()?;
            return Ok(());
        }
        let rows = deliveries.into_iter().map(DeliveryRow::encode).collect();
        self.writer
            .submit(Op::InsertDeliveries(rows), Waiter::Unit)
            .await
    }

    async fn requeue_delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> StoreResult<Option<Delivery>> {
        let tenant = tenant.as_str().to_owned();
        self.writer
            .submit(Op::Requeue { tenant, id }, Waiter::Requeue)
            .await
    }

    async fn get_event(&self, tenant: &TenantId, id: EventId) -> StoreResult<Option<Event>> {
        let tenant = tenant.clone();
        self.readers
            .run(move |c| queries::get_event(c, tenant.as_str(), id))
            .await
    }

    async fn get_events(&self, ids: &[EventId]) -> StoreResult<Vec<Event>> {
        let ids = ids.to_vec();
        self.readers
            .run(move |c| queries::get_events(c, &ids))
            .await
    }

    async fn list_events(&self, query: &EventQuery) -> StoreResult<Page<Event>> {
        let query = query.clone();
        self.readers
            .run(move |c| queries::list_events(c, &query))
            .await
    }

    async fn scan_events(
        &self,
        tenant: &TenantId,
        after: Option<EventId>,
        since: Option<DateTime<Utc>>,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let tenant = tenant.clone();
        self.readers
            .run(move |c| queries::scan_events(c, tenant.as_str(), after, since, limit))
            .await
    }

    async fn get_delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> StoreResult<Option<Delivery>> {
        let tenant = tenant.clone();
        self.readers
            .run(move |c| queries::get_delivery(c, tenant.as_str(), id))
            .await
    }

    async fn list_deliveries(&self, query: &DeliveryQuery) -> StoreResult<Page<Delivery>> {
        let query = query.clone();
        self.readers
            .run(move |c| queries::list_deliveries(c, &query))
            .await
    }

    async fn deliveries_for_event(&self, event_id: EventId) -> StoreResult<Vec<Delivery>> {
        self.readers
            .run(move |c| queries::deliveries_for_event(c, event_id))
            .await
    }

    async fn attempts(&self, delivery_id: DeliveryId) -> StoreResult<Vec<Attempt>> {
        self.readers
            .run(move |c| queries::attempts(c, delivery_id))
            .await
    }

    async fn unfinished_deliveries(
        &self,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.readers
            .run(move |c| queries::unfinished_deliveries(c, after, limit))
            .await
    }

    async fn unfinished_deliveries_for(
        &self,
        destination_id: &str,
        after: Option<DeliveryId>,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let destination_id = destination_id.to_owned();
        self.readers
            .run(move |c| queries::unfinished_deliveries_for(c, &destination_id, after, limit))
            .await
    }

    async fn delivery_counts(&self) -> StoreResult<Vec<DeliveryCount>> {
        self.readers.run(queries::delivery_counts).await
    }

    async fn get_cursor(&self, source_id: &str) -> StoreResult<Option<String>> {
        let source_id = source_id.to_owned();
        self.readers
            .run(move |c| queries::get_cursor(c, &source_id))
            .await
    }

    async fn put_cursor(&self, source_id: &str, value: &str) -> StoreResult<()> {
        let (source_id, value) = (source_id.to_owned(), value.to_owned());
        self.writer
            .submit(Op::PutCursor { source_id, value }, Waiter::Unit)
            .await
    }

    async fn get_setting(&self, name: &str) -> StoreResult<Option<String>> {
        let name = name.to_owned();
        self.readers
            .run(move |c| queries::get_setting(c, &name))
            .await
    }

    async fn put_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.writer
            .submit(Op::PutSetting { name, value }, Waiter::Unit)
            .await
    }

    async fn claim_runs(&self, claims: Vec<RunClaim>) -> StoreResult<Vec<bool>> {
        if claims.is_empty() {
            self.writer.ensure_open()?;
            return Ok(Vec::new());
        }
        let rows = claims.into_iter().map(ClaimRow::encode).collect();
        self.writer
            .submit(Op::ClaimRuns(rows), Waiter::Claims)
            .await
    }

    async fn start_run(&self, id: ScheduleRunId, started_at: DateTime<Utc>) -> StoreResult<()> {
        let started_at = codec::ts(&started_at);
        self.writer
            .submit(Op::StartRun { id, started_at }, Waiter::Unit)
            .await
    }

    async fn finish_run(&self, finish: RunFinish) -> StoreResult<()> {
        self.writer
            .submit(Op::FinishRun(FinishRow::encode(finish)), Waiter::Unit)
            .await
    }

    async fn list_runs(
        &self,
        schedule_id: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> StoreResult<Page<ScheduleRun>> {
        let schedule_id = schedule_id.to_owned();
        self.readers
            .run(move |c| runs::list(c, &schedule_id, limit, cursor.as_deref()))
            .await
    }

    async fn last_ticks(&self) -> StoreResult<Vec<LastTick>> {
        self.readers.run(runs::last_ticks).await
    }

    async fn fail_unfinished_runs(
        &self,
        schedule_ids: &[String],
        reason: &str,
    ) -> StoreResult<u64> {
        if schedule_ids.is_empty() {
            self.writer.ensure_open()?;
            return Ok(0);
        }
        let op = Op::FailUnfinishedRuns {
            schedule_ids: schedule_ids.to_vec(),
            reason: reason.to_owned(),
        };
        self.writer.submit(op, Waiter::Count).await
    }

    async fn put_vault_record(&self, record: VaultRecord) -> StoreResult<()> {
        let op = Op::Vault(vault::VaultOp::Put(record));
        self.writer.submit(op, Waiter::Count).await.map(|_| ())
    }

    async fn get_vault_record(
        &self,
        kind: VaultKind,
        name: &str,
    ) -> StoreResult<Option<VaultRecord>> {
        let name = name.to_owned();
        self.readers.run(move |c| vault::get(c, kind, &name)).await
    }

    async fn list_vault_records(&self, kind: Option<VaultKind>) -> StoreResult<Vec<VaultRecord>> {
        self.readers.run(move |c| vault::list(c, kind)).await
    }

    async fn delete_vault_record(&self, kind: VaultKind, name: &str) -> StoreResult<bool> {
        let op = Op::Vault(vault::VaultOp::Delete {
            kind,
            name: name.to_owned(),
        });
        Ok(self.writer.submit(op, Waiter::Count).await? > 0)
    }

    async fn replace_vault_records(&self, records: Vec<VaultRecord>) -> StoreResult<()> {
        let op = Op::Vault(vault::VaultOp::Rewrite(records));
        self.writer.submit(op, Waiter::Count).await.map(|_| ())
    }

    async fn purge_events_batch(
        &self,
        filter: &EventPurge,
        after: Option<EventId>,
        limit: usize,
    ) -> StoreResult<PurgeBatch> {
        let op = Op::PurgeEvents {
            filter: Box::new(filter.clone()),
            after,
            limit: limit.max(1),
        };
        self.writer.submit(op, Waiter::Purge).await
    }

    async fn preview_event_purge(
        &self,
        filter: &EventPurge,
        sample: usize,
    ) -> StoreResult<PurgePreview> {
        let filter = filter.clone();
        self.readers
            .run(move |c| purge::preview(c, &filter, sample))
            .await
    }

    async fn record_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        let op = Op::RecordAudit(purge::AuditRow::encode(&entry));
        self.writer.submit(op, Waiter::Unit).await
    }

    async fn list_audit(
        &self,
        limit: usize,
        cursor: Option<String>,
    ) -> StoreResult<Page<AuditEntry>> {
        self.readers
            .run(move |c| purge::list_audit(c, limit, cursor.as_deref()))
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        // Ready means able to take writes: a closed writer is not ready.
        self.writer.ensure_open()?;
        self.readers.run(queries::ping).await
    }

    async fn close(&self) {
        self.writer.close().await;
    }
}
