//! One capture session: set-up checks, the slot decision (resume, create, or re-snapshot),
//! the initial snapshot, then the stream — batching changes into durable appends and
//! confirming each commit's position only after it is stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use estafeta_config::postgres_source::SnapshotMode;
use estafeta_core::Event;
use futures::StreamExt as _;
use pg_walstream::{
    ChangeEvent, EventStream, EventType, LogicalReplicationStream, ReplicationError,
    ReplicationStreamConfig, RetryConfig, SnapshotOutcome, StreamingMode,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::envelope::{Column, EventBuilder, Op, Origin, Table, format_lsn};
use super::reread::{AlreadyStored, parse_lsn};
use super::setup::{Admin, with_param};
use super::{Capture, CaptureError, metrics as m};
use crate::pipeline::{Appender, Stored};
use crate::status::{SnapshotProgress, SourceState, TableProgress};

/// How a session ended without an error.
pub(super) enum Ended {
    Cancelled,
    SnapshotOnlyDone,
}

/// What the source remembers in the store between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// `running` while a snapshot is being copied, `done` after.
    #[serde(default)]
    snapshot: Option<String>,
    /// The last commit position confirmed to the server.
    #[serde(default)]
    confirmed_lsn: Option<String>,
}

pub(super) async fn run_once(c: &Capture) -> Result<Ended, CaptureError> {
    let s = &c.settings;
    c.board.update(&c.id, |st| st.state = SourceState::Starting);
    let mut admin = Admin::connect(s.url.expose()).await?;
    admin.check_server().await?;
    let tables = admin.tables(s).await?;
    admin.ensure_publication(s, &tables).await?;
    let catalog: HashMap<(String, String), Table> = tables
        .into_iter()
        .map(|(t, _)| ((t.schema.to_string(), t.name.to_string()), t))
        .collect();

    let mut checkpoint = load_checkpoint(c).await?;
    let slot = admin.slot(&s.slot).await?;
    if let Some(row) = &slot {
        if row.plugin.as_deref().is_some_and(|p| p != "pgoutput") {
            return Err(CaptureError::Setup(format!(
                "replication slot `{}` uses the plugin `{}`, not pgoutput; choose another `slot` name or drop it: `SELECT pg_drop_replication_slot('{}');`",
                s.slot,
                row.plugin.as_deref().unwrap_or_default(),
                s.slot
            )));
        }
        if row.active {
            return Err(CaptureError::Transient(format!(
                "replication slot `{}` is in use by another connection (another Estafeta?); waiting for it to be free",
                s.slot
            )));
        }
    }
    let mut need_snapshot =
        s.snapshot != SnapshotMode::Never && checkpoint.snapshot.as_deref() != Some("done");
    if slot.is_none() {
        if let Some(lsn) = &checkpoint.confirmed_lsn {
            tracing::error!(source_id = %c.id, slot = %s.slot, confirmed_lsn = %lsn,
                "the replication slot was dropped outside Estafeta: changes after this position were not captured; {}",
                if s.snapshot == SnapshotMode::Never { "streaming resumes from now" } else { "taking a new snapshot" });
            c.board.update(&c.id, |st| {
                st.warning = Some(format!(
                    "replication slot `{}` was dropped outside Estafeta; changes after {lsn} were not captured{}",
                    s.slot,
                    if s.snapshot == SnapshotMode::Never { "" } else { " (a new snapshot was taken)" }
                ));
            });
            need_snapshot = s.snapshot != SnapshotMode::Never;
            checkpoint.confirmed_lsn = None;
        }
    } else if need_snapshot {
        // A slot left by a snapshot that did not finish: its exported snapshot is gone, so
        // start over with a new one.
        tracing::warn!(source_id = %c.id, slot = %s.slot, "an earlier initial snapshot did not finish; dropping its slot and starting the snapshot again");
        admin.drop_slot(&s.slot).await?;
    }

    let config = ReplicationStreamConfig::builder(s.slot.clone(), s.publication.clone())
        .with_protocol_version(1)
        .with_streaming_mode(StreamingMode::Off)
        .with_messages(true)
        .with_feedback_interval(Duration::from_secs(2))
        .with_connection_timeout(Duration::from_secs(15))
        .with_health_check_interval(Duration::from_secs(30))
        .with_retry_config(RetryConfig {
            max_attempts: 1,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_duration: Duration::from_secs(5),
            jitter: false,
        });
    let repl_url = with_param(s.url.expose(), "replication", "database");
    let mut stream = LogicalReplicationStream::new(&repl_url, config)
        .await
        .map_err(|e| CaptureError::connect(&e.to_string()))?;

    let builder = EventBuilder::new(c.id.clone(), s.database.clone(), s.envelope, s.numeric);

    if need_snapshot {
        checkpoint.snapshot = Some("running".into());
        save_checkpoint(c, &checkpoint).await?;
        match snapshot(c, stream, &mut admin, &catalog, &builder).await? {
            None => return Ok(Ended::Cancelled),
            Some(s2) => stream = s2,
        }
        checkpoint.snapshot = Some("done".into());
        save_checkpoint(c, &checkpoint).await?;
        if s.snapshot == SnapshotMode::InitialOnly {
            drop(stream);
            admin.drop_slot(&s.slot).await?;
            return Ok(Ended::SnapshotOnlyDone);
        }
    } else if checkpoint.snapshot.is_none() {
        checkpoint.snapshot = Some(
            if s.snapshot == SnapshotMode::Never {
                "skipped"
            } else {
                "done"
            }
            .into(),
        );
    }

    // The server resumes after the slot's confirmed position; what this source stored past
    // it (before a crash or a lost connection) will come again and is skipped.
    let floor = admin
        .slot(&s.slot)
        .await?
        .and_then(|row| row.confirmed_flush_lsn)
        .and_then(|lsn| parse_lsn(&lsn))
        .unwrap_or(0);
    let already = AlreadyStored::load(c.store.as_ref(), &c.id, floor).await?;
    if already.len() > 0 {
        tracing::info!(source_id = %c.id, changes = already.len(), from = %format_lsn(floor),
            "changes stored before the last confirmation will be read again and skipped");
    }
    stream
        .start(None)
        .await
        .map_err(|e| CaptureError::Transient(format!("could not start replication: {e}")))?;
    tracing::info!(source_id = %c.id, slot = %s.slot, publication = %s.publication, "streaming changes");
    c.board.update(&c.id, |st| {
        st.state = SourceState::Running;
        st.error = None;
    });

    let (limit_tx, limit_rx) = mpsc::channel(1);
    let monitor = tokio::spawn(super::slot::monitor(
        c.id.clone(),
        s.clone(),
        c.board.clone(),
        limit_tx,
        c.cancel.child_token(),
    ));
    let events = stream.into_stream(c.cancel.child_token());
    let result = Streamer {
        c,
        builder,
        events,
        relations: HashMap::new(),
        catalog,
        buf: Vec::with_capacity(c.settings.batch_size.min(PREALLOCATE)),
        oldest: None,
        txn: None,
        pending_ack: None,
        acked: 0,
        checkpoint,
        last_checkpoint: None,
        appender: Appender::new_events_only(Arc::clone(&c.sink), MAX_APPENDS_IN_FLIGHT),
        already,
    }
    .run(limit_rx, &mut admin)
    .await;
    monitor.abort();
    result
}

/// Copies the tables through the slot's exported snapshot. `None` when cancelled.
async fn snapshot(
    c: &Capture,
    stream: LogicalReplicationStream,
    admin: &mut Admin,
    catalog: &HashMap<(String, String), Table>,
    builder: &EventBuilder,
) -> Result<Option<LogicalReplicationStream>, CaptureError> {
    let snap = match stream.snapshot().await {
        Ok(SnapshotOutcome::Available(snap)) => snap,
        Ok(SnapshotOutcome::Unavailable(_)) => {
            return Err(CaptureError::Transient(
                "the replication slot already existed, so no snapshot could be exported; retrying"
                    .into(),
            ));
        }
        Err(e) => {
            return Err(CaptureError::Transient(format!(
                "could not start the snapshot: {e}"
            )));
        }
    };
    let consistent = format_lsn(snap.consistent_point().value());
    let mut progress = SnapshotProgress {
        started_at: Utc::now(),
        finished_at: None,
        tables: Vec::new(),
    };
    for t in snap.tables() {
        let r = t.relation();
        progress.tables.push(TableProgress {
            table: format!("{}.{}", r.namespace, r.relation_name),
            rows_copied: 0,
            rows_estimated: admin
                .estimate_rows(&r.namespace, &r.relation_name)
                .await
                .unwrap_or(0),
            done: false,
        });
    }
    tracing::info!(source_id = %c.id, tables = progress.tables.len(), at = %consistent, "initial snapshot started");
    let p = progress.clone();
    c.board.update(&c.id, |st| {
        st.state = SourceState::Snapshotting;
        st.snapshot = Some(p);
    });

    let mut rows = snap.rows();
    let mut buf: Vec<Event> = Vec::with_capacity(c.settings.batch_size.min(PREALLOCATE));
    let mut counts: Vec<u64> = vec![0; progress.tables.len()];
    let mut reported: Vec<u64> = vec![0; progress.tables.len()];
    let mut appender = Appender::<()>::new(Arc::clone(&c.sink), MAX_APPENDS_IN_FLIGHT);
    // Rows of one table share their relation: look its shape up once per table.
    let mut current: Option<(
        Arc<pg_walstream::RelationInfo>,
        Table,
        String,
        Option<usize>,
    )> = None;
    let mut n: u64 = 0;
    loop {
        // Rows arrive from a buffer that is rarely empty: yield now and then so the API and
        // the deliveries keep running on this worker thread.
        tokio::task::consume_budget().await;
        if appender.is_full() {
            let stored = appender.next().await.map_err(store_error)?;
            record_stored(c, stored.count);
            continue;
        }
        let row = tokio::select! {
            () = c.cancel.cancelled() => return Ok(None),
            r = rows.next_row() => r.map_err(|e| CaptureError::Transient(format!("snapshot read failed: {e}")))?,
        };
        let Some(row) = row else { break };
        if !current
            .as_ref()
            .is_some_and(|(rel, ..)| Arc::ptr_eq(rel, &row.relation))
        {
            let key = (
                row.relation.namespace.to_string(),
                row.relation.relation_name.to_string(),
            );
            let table = catalog
                .get(&key)
                .cloned()
                .unwrap_or_else(|| table_from_relation(&row.relation));
            let qualified = format!("{}.{}", key.0, key.1);
            let index = progress.tables.iter().position(|t| t.table == qualified);
            current = Some((Arc::clone(&row.relation), table, qualified, index));
        }
        let Some((_, table, qualified, index)) = current.as_ref() else {
            continue;
        };
        n += 1;
        let origin = Origin {
            ce_id: format!("snapshot:{consistent}:{qualified}:{n}"),
            lsn: consistent.clone(),
            txid: None,
            commit_time: None,
            snapshot: true,
        };
        buf.push(builder.row_event(table, Op::Read, None, Some(&row.data), &origin));
        if let Some(i) = index {
            counts[*i] += 1;
        }
        if buf.len() >= c.settings.batch_size {
            let full = std::mem::replace(
                &mut buf,
                Vec::with_capacity(c.settings.batch_size.min(PREALLOCATE)),
            );
            appender.submit(full, None);
            publish_progress(c, &mut progress, &counts, &mut reported, false);
        }
    }
    appender.submit(buf, None);
    while !appender.is_empty() {
        let stored = appender.next().await.map_err(store_error)?;
        record_stored(c, stored.count);
    }
    publish_progress(c, &mut progress, &counts, &mut reported, true);
    let stream = rows
        .finish()
        .await
        .map_err(|e| CaptureError::Transient(format!("could not finish the snapshot: {e}")))?;
    tracing::info!(source_id = %c.id, rows = n, "initial snapshot finished");
    Ok(Some(stream))
}

fn publish_progress(
    c: &Capture,
    progress: &mut SnapshotProgress,
    counts: &[u64],
    reported: &mut [u64],
    finished: bool,
) {
    for ((t, n), prev) in progress
        .tables
        .iter_mut()
        .zip(counts)
        .zip(reported.iter_mut())
    {
        if *n > *prev {
            ::metrics::counter!(m::SNAPSHOT_ROWS, "source" => c.id.clone(), "table" => t.table.clone())
                .increment(*n - *prev);
            *prev = *n;
        }
        t.rows_copied = *n;
    }
    if finished {
        for t in &mut progress.tables {
            t.done = true;
        }
        progress.finished_at = Some(Utc::now());
    }
    let p = progress.clone();
    c.board.update(&c.id, |st| st.snapshot = Some(p));
}

fn table_from_relation(r: &pg_walstream::RelationInfo) -> Table {
    Table {
        schema: Arc::clone(&r.namespace),
        name: Arc::clone(&r.relation_name),
        columns: r
            .columns
            .iter()
            .map(|c| Column {
                name: Arc::clone(&c.name),
                type_oid: c.type_id,
                is_key: c.flags & 1 != 0,
            })
            .collect(),
    }
}

/// Appends kept in flight while reading goes on (the store's group commit merges them).
const MAX_APPENDS_IN_FLIGHT: usize = 4;
/// Room made for a batch's events up front (batches may be configured far larger).
const PREALLOCATE: usize = 1_024;

fn store_error(e: crate::sink::SinkError) -> CaptureError {
    CaptureError::Store(format!("{e}: {}", e.0))
}

/// Counts events that are now durable.
fn record_stored(c: &Capture, n: usize) {
    if n == 0 {
        return;
    }
    let n = n as u64;
    ::metrics::counter!(m::EVENTS, "source" => c.id.clone()).increment(n);
    let now = Utc::now();
    c.board.update(&c.id, |st| {
        st.events += n;
        st.last_event_at = Some(now);
    });
}

async fn load_checkpoint(c: &Capture) -> Result<Checkpoint, CaptureError> {
    let raw = c
        .store
        .get_cursor(&c.id)
        .await
        .map_err(|e| CaptureError::Store(e.to_string()))?;
    Ok(raw
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or_default())
}

async fn save_checkpoint(c: &Capture, cp: &Checkpoint) -> Result<(), CaptureError> {
    let raw = serde_json::to_string(cp).map_err(|e| CaptureError::Store(e.to_string()))?;
    c.store
        .put_cursor(&c.id, &raw)
        .await
        .map_err(|e| CaptureError::Store(e.to_string()))
}

/// The old row as sent: all columns under `REPLICA IDENTITY FULL`, otherwise only the key
/// (pgoutput sends the other columns as nulls, which are not the row's values).
fn old_row(
    row: pg_walstream::RowData,
    identity: &pg_walstream::ReplicaIdentity,
    keys: &[Arc<str>],
) -> pg_walstream::RowData {
    if matches!(identity, pg_walstream::ReplicaIdentity::Full) || keys.is_empty() {
        return row;
    }
    let mut out = pg_walstream::RowData::with_capacity(keys.len());
    for (name, value) in row.iter() {
        if keys.contains(name) {
            out.push(Arc::clone(name), value.clone());
        }
    }
    out
}

struct Txn {
    xid: u32,
    commit_lsn: String,
    commit_time: chrono::DateTime<Utc>,
    seq: u64,
}

struct Streamer<'a> {
    c: &'a Capture,
    builder: EventBuilder,
    events: EventStream,
    relations: HashMap<u32, Table>,
    catalog: HashMap<(String, String), Table>,
    buf: Vec<Event>,
    /// When the oldest buffered change (or unconfirmed commit) arrived.
    oldest: Option<Instant>,
    txn: Option<Txn>,
    /// The highest commit end position read whose changes are all buffered or stored.
    pending_ack: Option<u64>,
    acked: u64,
    checkpoint: Checkpoint,
    last_checkpoint: Option<Instant>,
    appender: Appender<u64>,
    /// Changes stored before the last confirmation, skipped when read again.
    already: AlreadyStored,
}

impl Streamer<'_> {
    async fn run(
        mut self,
        mut limit: mpsc::Receiver<String>,
        admin: &mut Admin,
    ) -> Result<Ended, CaptureError> {
        let wait = self.c.settings.batch_wait;
        loop {
            // The replication stream answers from its buffer without waiting for most
            // messages: yield now and then so the API and the deliveries keep running.
            tokio::task::consume_budget().await;
            let deadline = self.oldest.map(|t| t + wait);
            let timeout = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            let reading = !self.appender.is_full();
            tokio::select! {
                () = self.c.cancel.cancelled() => {
                    self.submit();
                    self.drain().await?;
                    let _ = self.events.shutdown().await;
                    return Ok(Ended::Cancelled);
                }
                Some(reason) = limit.recv() => {
                    let _ = self.events.shutdown().await;
                    admin.drop_slot(&self.c.settings.slot).await?;
                    self.checkpoint.snapshot = None;
                    self.checkpoint.confirmed_lsn = None;
                    save_checkpoint(self.c, &self.checkpoint).await?;
                    return Err(CaptureError::SlotLimit(reason));
                }
                stored = self.appender.next(), if !self.appender.is_empty() => {
                    self.stored(stored.map_err(store_error)?).await?;
                }
                next = tokio::time::timeout(timeout, self.events.next()), if reading => match next {
                    Err(_) => self.submit(),
                    Ok(None) => {
                        self.submit();
                        self.drain().await?;
                        return Err(CaptureError::Transient("the replication stream ended".into()));
                    }
                    Ok(Some(Err(ReplicationError::Cancelled(_)))) => {
                        self.submit();
                        self.drain().await?;
                        return Ok(Ended::Cancelled);
                    }
                    Ok(Some(Err(e))) => {
                        // What is buffered is safe to store: its position is simply not
                        // confirmed unless its commit was read.
                        self.submit();
                        self.drain().await?;
                        return Err(CaptureError::Transient(format!("replication stream failed: {e}")));
                    }
                    Ok(Some(Ok(ev))) => {
                        self.handle(ev)?;
                        if self.buf.len() >= self.c.settings.batch_size {
                            self.submit();
                        }
                    }
                }
            }
        }
    }

    fn handle(&mut self, ev: ChangeEvent) -> Result<(), CaptureError> {
        match ev.event_type {
            EventType::Begin {
                transaction_id,
                final_lsn,
                commit_timestamp,
            } => {
                self.txn = Some(Txn {
                    xid: transaction_id,
                    commit_lsn: format_lsn(final_lsn.value()),
                    commit_time: commit_timestamp,
                    seq: 0,
                });
            }
            EventType::Commit { end_lsn, .. } => {
                self.txn = None;
                self.already.passed(end_lsn.value());
                self.pending_ack = Some(end_lsn.value());
                self.oldest.get_or_insert_with(Instant::now);
            }
            EventType::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                let mut table = Table {
                    schema: namespace,
                    name: relation_name,
                    columns: columns
                        .into_iter()
                        .map(|c| Column {
                            name: c.name,
                            type_oid: c.type_id,
                            is_key: c.is_key,
                        })
                        .collect(),
                };
                // Key flags come from the catalog when the relation message has none, or
                // marks every column (REPLICA IDENTITY FULL).
                let all = table.columns.iter().all(|c| c.is_key);
                let none = !table.columns.iter().any(|c| c.is_key);
                if (all || none)
                    && let Some(cat) = self
                        .catalog
                        .get(&(table.schema.to_string(), table.name.to_string()))
                {
                    for col in &mut table.columns {
                        col.is_key = cat.columns.iter().any(|k| k.is_key && k.name == col.name);
                    }
                }
                if let Some(old) = self.relations.get(&relation_id)
                    && (old.columns.len() != table.columns.len()
                        || old
                            .columns
                            .iter()
                            .zip(&table.columns)
                            .any(|(a, b)| a.name != b.name || a.type_oid != b.type_oid))
                {
                    tracing::info!(source_id = %self.c.id, table = %format!("{}.{}", table.schema, table.name),
                            columns = table.columns.len(), "table changed shape; using its new columns");
                }
                self.relations.insert(relation_id, table);
            }
            EventType::Insert {
                relation_oid, data, ..
            } => {
                self.change(relation_oid, Op::Insert, None, Some(&data))?;
            }
            EventType::Update {
                relation_oid,
                old_data,
                new_data,
                replica_identity,
                key_columns,
                ..
            } => {
                let old = old_data.map(|o| old_row(o, &replica_identity, &key_columns));
                self.change(relation_oid, Op::Update, old.as_ref(), Some(&new_data))?;
            }
            EventType::Delete {
                relation_oid,
                old_data,
                replica_identity,
                key_columns,
                ..
            } => {
                let old = old_row(old_data, &replica_identity, &key_columns);
                self.change(relation_oid, Op::Delete, Some(&old), None)?;
            }
            EventType::Truncate {
                tables,
                cascade,
                restart_identity,
            } => {
                for name in tables {
                    let table = self
                        .relations
                        .values()
                        .find(|t| format!("{}.{}", t.schema, t.name) == *name)
                        .cloned();
                    if let (Some(table), Some(origin)) = (table, self.next_origin()) {
                        let e =
                            self.builder
                                .truncate_event(&table, cascade, restart_identity, &origin);
                        self.push(e);
                    }
                }
            }
            EventType::Message {
                flags, message_lsn, ..
            } if flags & 1 == 0 && self.txn.is_none() => {
                // A heartbeat (or another non-transactional message): every commit before
                // it has been read, so its position can be confirmed once they are stored.
                self.pending_ack = Some(self.pending_ack.unwrap_or(0).max(message_lsn.value()));
                self.oldest.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
        Ok(())
    }

    fn next_origin(&mut self) -> Option<Origin> {
        let txn = self.txn.as_mut()?;
        txn.seq += 1;
        Some(Origin {
            ce_id: format!("{}:{}", txn.commit_lsn, txn.seq),
            lsn: txn.commit_lsn.clone(),
            txid: Some(txn.xid),
            commit_time: Some(txn.commit_time),
            snapshot: false,
        })
    }

    fn change(
        &mut self,
        relation: u32,
        op: Op,
        before: Option<&pg_walstream::RowData>,
        after: Option<&pg_walstream::RowData>,
    ) -> Result<(), CaptureError> {
        let Some(origin) = self.next_origin() else {
            return Ok(());
        };
        let Some(table) = self.relations.get(&relation) else {
            // pgoutput always sends a table's shape before its first change; a change
            // without one cannot be decoded and must not be confirmed.
            return Err(CaptureError::Transient(format!(
                "a change of relation {relation} arrived before its shape; reading again from the last confirmed position"
            )));
        };
        let e = self.builder.row_event(table, op, before, after, &origin);
        self.push(e);
        Ok(())
    }

    fn push(&mut self, e: Event) {
        if self.already.contains(&e.ce_id) {
            return;
        }
        self.buf.push(e);
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Hands what is buffered to the appender with the commit position it completes.
    fn submit(&mut self) {
        self.oldest = None;
        let events = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.c.settings.batch_size.min(PREALLOCATE)),
        );
        let ack = self.pending_ack.take();
        if events.is_empty() && ack.is_none() {
            return;
        }
        self.appender.submit(events, ack);
    }

    /// Waits for every append in flight, confirming as they finish.
    async fn drain(&mut self) -> Result<(), CaptureError> {
        while !self.appender.is_empty() {
            let stored = self.appender.next().await.map_err(store_error)?;
            self.stored(stored).await?;
        }
        Ok(())
    }

    /// An append is durable: count it and confirm the position it completes.
    async fn stored(&mut self, stored: Stored<u64>) -> Result<(), CaptureError> {
        record_stored(self.c, stored.count);
        if let Some(lsn) = stored.position
            && lsn > self.acked
        {
            self.acked = lsn;
            self.events.update_flushed_lsn(lsn);
            self.events.update_applied_lsn(lsn);
            let pos = format_lsn(lsn);
            self.c
                .board
                .update(&self.c.id, |st| st.position = Some(pos.clone()));
            if self
                .last_checkpoint
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                self.checkpoint.confirmed_lsn = Some(pos);
                save_checkpoint(self.c, &self.checkpoint).await?;
                self.last_checkpoint = Some(Instant::now());
            }
        }
        Ok(())
    }
}
