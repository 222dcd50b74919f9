//! The initial snapshot: the tables' rows read inside one consistent-snapshot transaction
//! whose binlog position is known (MariaDB: `binlog_snapshot_file/position`, no lock;
//! MySQL: a brief `FLUSH TABLES WITH READ LOCK`), in primary-key order and `batch_size`
//! chunks, as `read` events. Streaming then starts at that position, so no change falls
//! between the copy and the stream and none is copied twice.

use chrono::Utc;
use estafeta_core::Event;
use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Opts, Row, Value};

use super::decode::{Read, to_json};
use super::events::{EventBuilder, Origin};
use super::schema::TableDef;
use super::setup::{Admin, GRANT, cell, connect, quote};
use super::{Capture, CaptureError, capture::store, metrics as m};
use crate::row_change::Op;
use crate::status::{SnapshotProgress, SourceState, TableProgress};

/// Copies the tables; returns the binlog position to stream from, `None` when cancelled.
pub(crate) async fn run(
    c: &Capture,
    opts: &Opts,
    admin: &mut Admin,
    tables: &[TableDef],
    builder: &EventBuilder,
) -> Result<Option<(String, u64)>, CaptureError> {
    let mut conn = connect(opts).await?;
    let q = |e| CaptureError::db("snapshot query failed", e);
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(q)?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(q)?;
    let (file, pos) = if admin.mariadb {
        begin_mariadb(&mut conn).await?
    } else {
        begin_mysql(&mut conn).await?
    };

    let mut progress = SnapshotProgress {
        started_at: Utc::now(),
        finished_at: None,
        tables: Vec::with_capacity(tables.len()),
    };
    for t in tables {
        progress.tables.push(TableProgress {
            table: t.qualified(),
            rows_copied: 0,
            rows_estimated: admin.estimate_rows(&t.db, &t.name).await,
            done: false,
        });
    }
    tracing::info!(source_id = %c.id, tables = tables.len(), file = %file, pos, "initial snapshot started");
    let p = progress.clone();
    c.board.update(&c.id, |st| {
        st.state = SourceState::Snapshotting;
        st.snapshot = Some(p);
    });

    let mut total = 0_u64;
    for (i, t) in tables.iter().enumerate() {
        let copied = if t.keys.is_empty() {
            copy_streaming(c, &mut conn, t, builder, (&file, pos), &mut progress, i).await?
        } else {
            copy_by_key(c, &mut conn, t, builder, (&file, pos), &mut progress, i).await?
        };
        let Some(copied) = copied else {
            let _ = conn.disconnect().await;
            return Ok(None);
        };
        total += copied;
        progress.tables[i].done = true;
        publish(c, &progress);
    }
    progress.finished_at = Some(Utc::now());
    publish(c, &progress);
    let _ = conn.query_drop("COMMIT").await;
    let _ = conn.disconnect().await;
    tracing::info!(source_id = %c.id, rows = total, "initial snapshot finished");
    Ok(Some((file, pos)))
}

/// MariaDB: the snapshot's binlog position comes with the transaction, no lock needed.
async fn begin_mariadb(conn: &mut Conn) -> Result<(String, u64), CaptureError> {
    let q = |e| CaptureError::db("could not start the snapshot", e);
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(q)?;
    let rows: Vec<Row> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(q)?;
    let get = |name: &str| {
        rows.iter()
            .find(|r| cell(r, 0).is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .and_then(|r| cell(r, 1))
    };
    match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        (Some(f), Some(p)) if !f.is_empty() => Ok((f, p.parse().unwrap_or(4))),
        _ => Err(CaptureError::Setup(
            "MariaDB did not report the snapshot's binlog position (binlog_snapshot_file); is log_bin on?"
                .into(),
        )),
    }
}

/// MySQL: hold a global read lock just long enough to start the transaction and read the
/// binlog position.
async fn begin_mysql(conn: &mut Conn) -> Result<(String, u64), CaptureError> {
    match conn.query_drop("FLUSH TABLES WITH READ LOCK").await {
        Ok(()) => {}
        Err(mysql_async::Error::Server(e)) if e.code == 1227 => {
            return Err(CaptureError::Setup(format!(
                "the snapshot needs a brief global read lock, which the user may not take ({}). \
                 Run `GRANT RELOAD ON *.* TO 'USER'@'HOST';` (and `{GRANT}`) or use `snapshot: never`",
                e.message
            )));
        }
        Err(e) => return Err(CaptureError::db("could not start the snapshot", e)),
    }
    let q = |e| CaptureError::db("could not start the snapshot", e);
    let result = async {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(q)?;
        let rows: Vec<Row> = match conn.query("SHOW MASTER STATUS").await {
            Ok(rows) => rows,
            Err(mysql_async::Error::Server(e)) if e.code == 1064 => {
                conn.query("SHOW BINARY LOG STATUS").await.map_err(q)?
            }
            Err(e) => return Err(q(e)),
        };
        let row = rows.first().ok_or_else(|| {
            CaptureError::Setup("the server reports no binary log position; is log_bin on?".into())
        })?;
        Ok((
            cell(row, 0).unwrap_or_default(),
            cell(row, 1).and_then(|p| p.parse().ok()).unwrap_or(4),
        ))
    }
    .await;
    let unlocked = conn.query_drop("UNLOCK TABLES").await;
    let position = result?;
    unlocked.map_err(q)?;
    Ok(position)
}

fn select(t: &TableDef) -> String {
    let cols: Vec<String> = t.columns.iter().map(|c| quote(&c.name)).collect();
    format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        quote(&t.db),
        quote(&t.name)
    )
}

/// `a > ? OR (a = ? AND b > ?)`: rows after the last key read, index-friendly.
fn after_key(names: &[&str]) -> String {
    (0..names.len())
        .map(|i| {
            let mut parts: Vec<String> = names[..i]
                .iter()
                .map(|n| format!("{} = ?", quote(n)))
                .collect();
            parts.push(format!("{} > ?", quote(names[i])));
            format!("({})", parts.join(" AND "))
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The parameters for [`after_key`] from the last key's values.
fn after_params(last: &[Value]) -> Vec<Value> {
    (0..last.len())
        .flat_map(|i| last[..=i].iter().cloned())
        .collect()
}

/// A row's values in column order (a value already taken out reads as `NULL`).
fn values_of(row: Row) -> Vec<Value> {
    row.unwrap_raw()
        .into_iter()
        .map(|v| v.unwrap_or(Value::NULL))
        .collect()
}

fn row_json(t: &TableDef, values: &[Value], builder: &EventBuilder) -> serde_json::Value {
    let mut m = serde_json::Map::with_capacity(t.columns.len());
    for (col, v) in t.columns.iter().zip(values) {
        m.insert(
            col.name.to_string(),
            to_json(&col.kind, v, Read::Snapshot, builder.numeric),
        );
    }
    serde_json::Value::Object(m)
}

fn read_event(
    t: &TableDef,
    values: &[Value],
    builder: &EventBuilder,
    at: (&str, u64),
    n: u64,
) -> Event {
    let origin = Origin {
        ce_id: format!("snapshot:{}:{}:{}:{n}", at.0, at.1, t.qualified()),
        file: at.0.to_owned(),
        pos: at.1,
        row: 0,
        server_id: None,
        gtid: None,
        thread: None,
        time: None,
        snapshot: true,
    };
    builder.row_event(
        t,
        Op::Read,
        None,
        Some(row_json(t, values, builder)),
        &origin,
    )
}

/// Reads a table with a primary key in key order, `batch_size` rows per query.
async fn copy_by_key(
    c: &Capture,
    conn: &mut Conn,
    t: &TableDef,
    builder: &EventBuilder,
    at: (&str, u64),
    progress: &mut SnapshotProgress,
    index: usize,
) -> Result<Option<u64>, CaptureError> {
    let names = t.key_names();
    let order: Vec<String> = names.iter().map(|n| quote(n)).collect();
    let limit = c.settings.batch_size;
    let first = format!("{} ORDER BY {} LIMIT {limit}", select(t), order.join(", "));
    let next = format!(
        "{} WHERE {} ORDER BY {} LIMIT {limit}",
        select(t),
        after_key(&names),
        order.join(", ")
    );
    let mut last: Option<Vec<Value>> = None;
    let mut n = 0_u64;
    loop {
        if c.cancel.is_cancelled() {
            return Ok(None);
        }
        let rows: Vec<Row> = match &last {
            None => conn.exec(first.as_str(), ()).await,
            Some(key) => conn.exec(next.as_str(), after_params(key)).await,
        }
        .map_err(|e| CaptureError::db("snapshot read failed", e))?;
        let got = rows.len();
        let mut events = Vec::with_capacity(got);
        for row in rows {
            let values = values_of(row);
            n += 1;
            events.push(read_event(t, &values, builder, at, n));
            last = Some(
                t.keys
                    .iter()
                    .map(|&k| values.get(k).cloned().unwrap_or(Value::NULL))
                    .collect(),
            );
        }
        store(c, events).await?;
        count(c, progress, index, got as u64);
        if got < limit {
            return Ok(Some(n));
        }
    }
}

/// Reads a table without a primary key in one pass, storing every `batch_size` rows.
async fn copy_streaming(
    c: &Capture,
    conn: &mut Conn,
    t: &TableDef,
    builder: &EventBuilder,
    at: (&str, u64),
    progress: &mut SnapshotProgress,
    index: usize,
) -> Result<Option<u64>, CaptureError> {
    let e = |e| CaptureError::db("snapshot read failed", e);
    let mut result = conn.exec_iter(select(t), ()).await.map_err(e)?;
    let mut events = Vec::with_capacity(c.settings.batch_size);
    let mut n = 0_u64;
    while let Some(row) = result.next().await.map_err(e)? {
        if c.cancel.is_cancelled() {
            drop(result);
            return Ok(None);
        }
        n += 1;
        events.push(read_event(t, &values_of(row), builder, at, n));
        if events.len() >= c.settings.batch_size {
            let batch = std::mem::take(&mut events);
            let got = batch.len() as u64;
            store(c, batch).await?;
            count(c, progress, index, got);
        }
    }
    let got = events.len() as u64;
    store(c, events).await?;
    count(c, progress, index, got);
    Ok(Some(n))
}

fn count(c: &Capture, progress: &mut SnapshotProgress, index: usize, rows: u64) {
    if rows == 0 {
        return;
    }
    if let Some(t) = progress.tables.get_mut(index) {
        t.rows_copied += rows;
        ::metrics::counter!(m::SNAPSHOT_ROWS, "source" => c.id.clone(), "table" => t.table.clone())
            .increment(rows);
    }
    publish(c, progress);
}

fn publish(c: &Capture, progress: &SnapshotProgress) {
    let p = progress.clone();
    c.board.update(&c.id, |st| st.snapshot = Some(p));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_condition() {
        assert_eq!(after_key(&["id"]), "(`id` > ?)");
        assert_eq!(after_key(&["a", "b"]), "(`a` > ?) OR (`a` = ? AND `b` > ?)");
        let p = after_params(&[Value::from(1), Value::from(2)]);
        assert_eq!(p, vec![Value::from(1), Value::from(1), Value::from(2)]);
    }
}
