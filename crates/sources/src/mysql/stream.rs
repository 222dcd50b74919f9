//! The binlog stream: reads, as a replica, from the checkpoint's file and
//! position, turns the captured tables' row events into events, stores them in batches and
//! saves the end of the last fully stored transaction as the checkpoint.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use estafeta_core::Event;
use futures::StreamExt as _;
use mysql_async::binlog::events::{Event as BinlogEvent, EventData, RowsEventData};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::{BinlogStream, Opts};
use serde_json::{Map, Value};

use super::capture::{Checkpoint, Ended, save_checkpoint, store};
use super::decode::binlog_to_json;
use super::events::{EventBuilder, Origin};
use super::replica::{open, purged_or, refusal};
use super::schema::{TableDef, from_table_map};
use super::setup::Admin;
use super::{Capture, CaptureError};
use crate::row_change::Op;
use crate::status::SourceState;

/// Silence after which the connection is taken for dead.
const STALL: Duration = Duration::from_secs(30);
/// Least time between two checkpoint writes while streaming.
const SAVE_EVERY: Duration = Duration::from_secs(1);

// MariaDB's own event types (not known to the decoder).
const MARIADB_GTID_EVENT: u8 = 162;
const MARIADB_COMPRESSED_FIRST: u8 = 165;
const MARIADB_COMPRESSED_LAST: u8 = 171;

pub(crate) async fn run(
    c: &Capture,
    opts: &Opts,
    admin: Admin,
    tables: Vec<TableDef>,
    builder: EventBuilder,
    cp: Checkpoint,
) -> Result<Ended, CaptureError> {
    let (Some(file), Some(pos)) = (cp.file.clone(), cp.pos) else {
        return Err(CaptureError::Transient(
            "no binlog position to stream from".into(),
        ));
    };
    let stream = match open(opts, c.settings.server_id, admin.mariadb, &file, pos, false).await {
        Ok(s) => s,
        Err(e) => return Err(purged_or(e, admin, &file).await),
    };
    tracing::info!(source_id = %c.id, file = %file, pos, server_id = c.settings.server_id, "streaming changes");
    let position = format!("{file}:{pos}");
    c.board.update(&c.id, |st| {
        st.state = SourceState::Running;
        st.error = None;
        st.position = Some(position);
    });
    let catalog = tables
        .into_iter()
        .map(|t| ((t.db.to_string(), t.name.to_string()), t))
        .collect();
    Streamer {
        c,
        opts,
        admin,
        builder,
        stream,
        catalog,
        shapes: HashMap::new(),
        file,
        txn: None,
        gtid: None,
        last_gtid: cp.gtid.clone(),
        buf: Vec::new(),
        oldest: None,
        pending: None,
        cp,
        last_save: Instant::now(),
        unsaved: false,
        last_seen: Instant::now(),
        fde_seen: false,
    }
    .run()
    .await
}

/// What a table map id stands for.
struct Mapped {
    db: String,
    name: String,
    columns: u64,
    shape: Option<Arc<TableDef>>,
}

/// The transaction being read.
struct Txn {
    /// Where it starts (the end of its GTID or `BEGIN` event): with the rows event's and
    /// row's index, its changes' stable ids.
    start: u64,
    gtid: Option<String>,
    thread: Option<u32>,
    /// Rows events read so far in it.
    events: u32,
}

struct Streamer<'a> {
    c: &'a Capture,
    opts: &'a Opts,
    admin: Admin,
    builder: EventBuilder,
    stream: BinlogStream,
    /// Captured tables from the catalog (MariaDB `JSON` columns, names if the binlog has
    /// none).
    catalog: HashMap<(String, String), TableDef>,
    /// Table map ids to the table they named (database, table, column count) and its
    /// shape; `None` for tables not captured.
    shapes: HashMap<u64, Mapped>,
    /// The binlog file being read.
    file: String,
    txn: Option<Txn>,
    /// The GTID read just before the next transaction or statement.
    gtid: Option<String>,
    /// The GTID of the last transaction read to its end.
    last_gtid: Option<String>,
    buf: Vec<Event>,
    /// When the oldest buffered change (or unstored safe point) arrived.
    oldest: Option<Instant>,
    /// The last position outside a transaction that was read, with the last GTID.
    pending: Option<(String, u64, Option<String>)>,
    cp: Checkpoint,
    last_save: Instant,
    /// The checkpoint in `cp` is newer than the stored one.
    unsaved: bool,
    last_seen: Instant,
    /// A format description event was read on this connection.
    fde_seen: bool,
}

impl Streamer<'_> {
    async fn run(mut self) -> Result<Ended, CaptureError> {
        let wait = self.c.settings.batch_wait;
        loop {
            // Binlog events often come from a buffer without waiting: yield now and then so
            // the API and the deliveries keep running on this worker thread.
            tokio::task::consume_budget().await;
            let now = Instant::now();
            let mut deadline = self.last_seen + STALL;
            if let Some(t) = self.oldest {
                deadline = deadline.min(t + wait);
            }
            if self.unsaved {
                deadline = deadline.min(self.last_save + SAVE_EVERY);
            }
            let timeout = deadline.saturating_duration_since(now);
            tokio::select! {
                () = self.c.cancel.cancelled() => {
                    self.flush(true).await?;
                    let _ = self.stream.close().await;
                    self.admin.close().await;
                    return Ok(Ended::Cancelled);
                }
                next = tokio::time::timeout(timeout, self.stream.next()) => match next {
                    Err(_) if self.last_seen.elapsed() >= STALL => {
                        self.flush(true).await?;
                        return Err(CaptureError::Transient(format!(
                            "no binlog event or heartbeat for {}s; reconnecting", STALL.as_secs()
                        )));
                    }
                    Err(_) => self.flush(false).await?,
                    Ok(None) => {
                        self.flush(true).await?;
                        return Err(CaptureError::Transient("the server ended the binlog stream".into()));
                    }
                    Ok(Some(Err(e))) => {
                        // What is buffered is safe to store: its position is only saved
                        // once its transaction's end was read.
                        self.flush(true).await?;
                        let file = self.file.clone();
                        return Err(purged_or(refusal(e, "the binlog stream failed"), self.admin, &file).await);
                    }
                    Ok(Some(Ok(ev))) => {
                        self.last_seen = Instant::now();
                        self.handle(&ev).await?;
                        if self.buf.len() >= self.c.settings.batch_size {
                            self.flush(false).await?;
                        }
                    }
                }
            }
        }
    }

    /// Marks `pos` in the current file as a point between transactions.
    fn safe_point(&mut self, pos: u64) {
        if pos == 0 {
            return;
        }
        self.pending = Some((self.file.clone(), pos, self.last_gtid.clone()));
        self.oldest.get_or_insert_with(Instant::now);
    }

    fn end_txn(&mut self, pos: u64) {
        if let Some(g) = self.txn.take().and_then(|t| t.gtid) {
            self.last_gtid = Some(g);
        }
        self.safe_point(pos);
    }

    async fn handle(&mut self, ev: &BinlogEvent) -> Result<(), CaptureError> {
        let header = ev.header();
        let end = u64::from(header.log_pos());
        match header.event_type_raw() {
            MARIADB_GTID_EVENT => {
                if let Some((gtid, standalone)) = mariadb_gtid(ev.data(), header.server_id()) {
                    if standalone {
                        self.gtid = Some(gtid);
                    } else {
                        self.txn = Some(Txn {
                            start: end,
                            gtid: Some(gtid),
                            thread: None,
                            events: 0,
                        });
                    }
                }
                return Ok(());
            }
            MARIADB_COMPRESSED_FIRST..=MARIADB_COMPRESSED_LAST => {
                return Err(CaptureError::Setup(
                    "the binlog holds compressed events (log_bin_compress=ON), which Estafeta cannot read. \
                     Run `SET GLOBAL log_bin_compress = OFF;`; changes written compressed need a new snapshot"
                        .into(),
                ));
            }
            _ => {}
        }
        let data = match ev.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(CaptureError::Decode {
                    message: format!(
                        "could not decode the binlog event ending at {}:{end}",
                        self.file
                    ),
                    source: e,
                });
            }
        };
        match data {
            EventData::FormatDescriptionEvent(_) => self.fde_seen = true,
            EventData::RotateEvent(r) => {
                // The rotate event that opens the stream comes before the format
                // description, so the decoder leaves its 4 checksum bytes in the name.
                let raw = r.name_raw();
                let name = if !self.fde_seen
                    && raw.len() == self.file.len() + 4
                    && raw.starts_with(self.file.as_bytes())
                {
                    self.file.clone()
                } else {
                    String::from_utf8_lossy(raw).into_owned()
                };
                if name != self.file {
                    self.shapes.clear();
                }
                self.file = name;
                if self.txn.is_none() {
                    self.safe_point(r.position());
                }
            }
            EventData::GtidEvent(g) => {
                self.gtid = Some(format!("{}:{}", uuid(&g.sid()), g.gno()));
            }
            EventData::QueryEvent(q) => {
                let word: String = q
                    .query()
                    .trim()
                    .chars()
                    .take(10)
                    .collect::<String>()
                    .to_ascii_uppercase();
                if word == "BEGIN" || word.starts_with("XA START") {
                    let txn = self.txn.get_or_insert(Txn {
                        start: end,
                        gtid: None,
                        thread: None,
                        events: 0,
                    });
                    txn.thread = Some(q.thread_id());
                    if txn.gtid.is_none() {
                        txn.gtid = self.gtid.take();
                    }
                } else if word == "COMMIT" || word == "ROLLBACK" || self.txn.is_none() {
                    // The end of a non-transactional group, or a statement of its own
                    // (DDL) between transactions.
                    if self.txn.is_none()
                        && let Some(g) = self.gtid.take()
                    {
                        self.txn = Some(Txn {
                            start: end,
                            gtid: Some(g),
                            thread: None,
                            events: 0,
                        });
                    }
                    self.end_txn(end);
                }
            }
            EventData::XidEvent(_) => self.end_txn(end),
            EventData::TableMapEvent(t) => {
                let id = t.table_id();
                let (db, name) = (t.database_name().into_owned(), t.table_name().into_owned());
                let columns = t.columns_count();
                let known = self
                    .shapes
                    .get(&id)
                    .is_some_and(|m| m.db == db && m.name == name && m.columns == columns);
                if !known {
                    let shape = if self.c.settings.captures(&db, &name) {
                        Some(Arc::new(self.shape(&t, db.clone(), name.clone()).await?))
                    } else {
                        None
                    };
                    self.shapes.insert(
                        id,
                        Mapped {
                            db,
                            name,
                            columns,
                            shape,
                        },
                    );
                }
            }
            EventData::RowsEvent(rows) => self.rows(ev, &rows, end)?,
            _ => {}
        }
        Ok(())
    }

    /// A captured table's shape from its table map, with the catalog's MariaDB `JSON`
    /// columns (the catalog is read again when the table changed shape or is new).
    async fn shape(
        &mut self,
        tme: &mysql_async::binlog::events::TableMapEvent<'_>,
        db: String,
        name: String,
    ) -> Result<TableDef, CaptureError> {
        let key = (db, name);
        let mut shape = from_table_map(
            tme,
            &json_columns(self.catalog.get(&key)),
            self.catalog.get(&key),
        );
        let stale = self
            .catalog
            .get(&key)
            .is_none_or(|cat| !cat.same_columns(&shape));
        if stale && self.admin.mariadb {
            let fresh = match self.admin.table(&key.0, &key.1).await {
                Ok(t) => t,
                Err(_) => {
                    // The catalog connection may have timed out while the stream was idle.
                    let mut admin = Admin::connect(self.opts).await?;
                    let t = admin.table(&key.0, &key.1).await?;
                    std::mem::replace(&mut self.admin, admin).close().await;
                    t
                }
            };
            if let Some(fresh) = fresh {
                shape = from_table_map(tme, &json_columns(Some(&fresh)), Some(&fresh));
                tracing::info!(source_id = %self.c.id, table = %fresh.qualified(), columns = fresh.columns.len(), "read the table's columns from the catalog");
                self.catalog.insert(key, fresh);
            }
        }
        Ok(shape)
    }

    fn rows(
        &mut self,
        ev: &BinlogEvent,
        rows: &RowsEventData<'_>,
        end: u64,
    ) -> Result<(), CaptureError> {
        let header = ev.header();
        let (txn_start, event_no, gtid, thread) = match self.txn.as_mut() {
            Some(t) => {
                t.events += 1;
                (t.start, t.events, t.gtid.clone(), t.thread)
            }
            None => (end, 0, None, None),
        };
        let table_id = rows.table_id();
        let Some(shape) = self.shapes.get(&table_id).and_then(|m| m.shape.clone()) else {
            return Ok(());
        };
        let Some(tme) = self.stream.get_tme(table_id) else {
            tracing::warn!(source_id = %self.c.id, table = %shape.qualified(), "row event without its table map; skipped");
            return Ok(());
        };
        let op = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
            _ => Op::Update,
        };
        let time = DateTime::<Utc>::from_timestamp(i64::from(header.timestamp()), 0);
        let pos = end.saturating_sub(u64::from(header.event_size()));
        let numeric = self.builder.numeric;
        let mut out = Vec::new();
        for (i, row) in rows.rows(tme).enumerate() {
            let (before, after) = row.map_err(|e| CaptureError::Decode {
                message: format!(
                    "could not decode a row of `{}` at {}:{pos}",
                    shape.qualified(),
                    self.file
                ),
                source: e,
            })?;
            let row_no = u32::try_from(i).unwrap_or(u32::MAX);
            let origin = Origin {
                ce_id: format!("{}:{txn_start}:{event_no}:{row_no}", self.file),
                file: self.file.clone(),
                pos,
                row: row_no,
                server_id: Some(header.server_id()),
                gtid: gtid.clone(),
                thread,
                time,
                snapshot: false,
            };
            let before = before.map(|r| row_json(&shape, &r, numeric));
            let after = after.map(|r| row_json(&shape, &r, numeric));
            out.push(self.builder.row_event(&shape, op, before, after, &origin));
        }
        if !out.is_empty() {
            self.buf.extend(out);
            self.oldest.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Stores what is buffered, then records the last point between transactions read as
    /// the checkpoint (written at most once a second unless `force`).
    async fn flush(&mut self, force: bool) -> Result<(), CaptureError> {
        let events = std::mem::take(&mut self.buf);
        self.oldest = None;
        store(self.c, events).await?;
        if let Some((file, pos, gtid)) = self.pending.take() {
            let position = format!("{file}:{pos}");
            self.c
                .board
                .update(&self.c.id, |st| st.position = Some(position));
            self.cp.file = Some(file);
            self.cp.pos = Some(pos);
            self.cp.gtid = gtid;
            self.unsaved = true;
        }
        if self.unsaved && (force || self.last_save.elapsed() >= SAVE_EVERY) {
            save_checkpoint(self.c, &self.cp).await?;
            self.last_save = Instant::now();
            self.unsaved = false;
        }
        Ok(())
    }
}

fn json_columns(t: Option<&TableDef>) -> HashSet<String> {
    t.map(|t| {
        t.columns
            .iter()
            .filter(|c| c.kind == super::schema::Kind::Json)
            .map(|c| c.name.to_string())
            .collect()
    })
    .unwrap_or_default()
}

/// A binlog row as a JSON object, by the table's columns (by position when the row has
/// them all, as with `binlog_row_image=FULL`, else by name).
fn row_json(
    shape: &TableDef,
    row: &BinlogRow,
    numeric: estafeta_config::mysql_source::NumericMode,
) -> Value {
    let mut m = Map::with_capacity(row.len());
    let by_position = row.len() == shape.columns.len();
    for (i, column) in row.columns_ref().iter().enumerate() {
        let col = if by_position {
            shape.columns.get(i)
        } else {
            let name = column.name_str();
            shape.columns.iter().find(|c| *c.name == *name)
        };
        let Some(col) = col else { continue };
        let value = row
            .as_ref(i)
            .map_or(Value::Null, |v| binlog_to_json(&col.kind, v, numeric));
        m.insert(col.name.to_string(), value);
    }
    Value::Object(m)
}

/// MariaDB's GTID event: `domain-server-sequence`, and whether it marks a statement
/// outside a transaction (DDL).
fn mariadb_gtid(data: &[u8], server_id: u32) -> Option<(String, bool)> {
    let seq = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    let flags = *data.get(12)?;
    Some((format!("{domain}-{server_id}-{seq}"), flags & 1 != 0))
}

/// A MySQL server UUID in its usual form.
fn uuid(sid: &[u8; 16]) -> String {
    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_gtids() {
        let mut data = 42_u64.to_le_bytes().to_vec();
        data.extend(0_u32.to_le_bytes());
        data.push(1);
        assert_eq!(mariadb_gtid(&data, 7), Some(("0-7-42".into(), true)));
        assert_eq!(mariadb_gtid(&data[..5], 7), None);
    }

    #[test]
    fn uuids() {
        let sid = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ];
        assert_eq!(uuid(&sid), "3e11fa47-71ca-11e1-9e33-c80aa9429562");
    }
}
