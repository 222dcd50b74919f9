//! The SQL of every write: each function runs inside the writer's open transaction (and the
//! command's savepoint) and leaves committing to the writer.

use estafeta_core::{Delivery, DeliveryId, EventId};
use rusqlite::{Connection, params};

use super::codec::{AttemptRow, DELIVERY_COLUMNS, DeliveryRow, EventRow, delivery_from_row};
use super::errors::{corrupt, from_sqlite};
use crate::{AppendOutcome, StoreError, StoreResult};

/// One event to append, encoded.
#[derive(Debug)]
pub(crate) struct AppendItem {
    pub(crate) event: EventRow,
    pub(crate) dedupe_key: Option<String>,
    pub(crate) deliveries: Vec<DeliveryRow>,
}

impl AppendItem {
    /// Rough size in bytes.
    pub(crate) fn weight(&self) -> usize {
        self.event.weight()
            + self.dedupe_key.as_ref().map_or(0, String::len)
            + self
                .deliveries
                .iter()
                .map(DeliveryRow::weight)
                .sum::<usize>()
    }
}

/// The clock of one group commit: every write in a batch carries the same "now".
pub(crate) struct Clock {
    /// Now, as stored in timestamp columns.
    pub(crate) now: String,
    /// Now, in microseconds (dedupe bookkeeping).
    pub(crate) now_us: i64,
    /// Dedupe rows created at or before this many microseconds are expired.
    pub(crate) dedupe_cutoff_us: i64,
}

/// Appends events: claims each dedupe key (or finds who holds it), inserts new events and
/// their deliveries.
pub(crate) fn append(
    conn: &Connection,
    items: &[AppendItem],
    clock: &Clock,
) -> StoreResult<Vec<AppendOutcome>> {
    // Claims the key unless a fresh claim exists: 1 row changed = ours, 0 = a duplicate.
    let mut claim = conn
        .prepare_cached(
            "INSERT INTO dedupe (tenant, dedupe_key, event_id, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, dedupe_key) DO UPDATE
                 SET event_id = excluded.event_id, created_at = excluded.created_at
                 WHERE dedupe.created_at <= ?5",
        )
        .map_err(from_sqlite)?;
    let mut holder = conn
        .prepare_cached("SELECT event_id FROM dedupe WHERE tenant = ?1 AND dedupe_key = ?2")
        .map_err(from_sqlite)?;
    let mut insert_event = conn
        .prepare_cached(
            "INSERT INTO events (id, tenant, source_id, ce_id, ce_source, type, subject, time,
                 datacontenttype, dataschema, key, extensions, data, data_is_base64, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )
        .map_err(from_sqlite)?;
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let e = &item.event;
        let claimed = match &item.dedupe_key {
            None => 1,
            Some(key) => claim
                .execute(params![
                    e.tenant,
                    key,
                    e.id_text,
                    clock.now_us,
                    clock.dedupe_cutoff_us
                ])
                .map_err(from_sqlite)?,
        };
        if claimed == 0 {
            let first: String = holder
                .query_row(params![e.tenant, item.dedupe_key], |r| r.get(0))
                .map_err(from_sqlite)?;
            let first: EventId = first
                .parse()
                .map_err(|err| corrupt(format!("stored dedupe entry: {err}")))?;
            outcomes.push(AppendOutcome::Duplicate(first));
            continue;
        }
        insert_event
            .execute(params![
                e.id_text,
                e.tenant,
                e.source_id,
                e.ce_id,
                e.ce_source,
                e.ty,
                e.subject,
                e.time,
                e.datacontenttype,
                e.dataschema,
                e.key,
                e.extensions,
                e.data,
                e.data_is_base64,
                e.received_at,
            ])
            .map_err(from_sqlite)?;
        insert_deliveries(conn, &item.deliveries)?;
        outcomes.push(AppendOutcome::Inserted(e.id));
    }
    Ok(outcomes)
}

/// Inserts deliveries as given.
pub(crate) fn insert_deliveries(conn: &Connection, rows: &[DeliveryRow]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO deliveries (id, event_id, tenant, route_id, destination_id, target_index,
                 status, attempts, next_at, last_error, key, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .map_err(from_sqlite)?;
    for d in rows {
        stmt.execute(params![
            d.id,
            d.event_id,
            d.tenant,
            d.route_id,
            d.destination_id,
            d.target_index,
            d.status,
            d.attempts,
            d.next_at,
            d.last_error,
            d.key,
            d.created_at,
            d.updated_at,
        ])
        .map_err(from_sqlite)?;
    }
    Ok(())
}

/// Moves each attempt's delivery to its new state and records the attempt.
pub(crate) fn record_attempts(
    conn: &Connection,
    rows: &[AttemptRow],
    clock: &Clock,
) -> StoreResult<()> {
    let mut update = conn
        .prepare_cached(
            "UPDATE deliveries
             SET status = ?2, attempts = ?3, next_at = ?4, last_error = ?5, updated_at = ?6
             WHERE id = ?1",
        )
        .map_err(from_sqlite)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO attempts (id, delivery_id, started_at, duration_ms, outcome,
                 status_code, error, response_excerpt, steps)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(from_sqlite)?;
    for a in rows {
        let changed = update
            .execute(params![
                a.delivery_id,
                a.status,
                a.attempts,
                a.next_at,
                a.last_error,
                clock.now
            ])
            .map_err(from_sqlite)?;
        if changed == 0 {
            return Err(StoreError::Invalid(format!(
                "attempt {} is for delivery {}, which does not exist",
                a.id, a.delivery_id
            )));
        }
        insert
            .execute(params![
                a.id,
                a.delivery_id,
                a.started_at,
                a.duration_ms,
                a.outcome,
                a.status_code,
                a.error,
                a.response_excerpt,
                a.steps,
            ])
            .map_err(from_sqlite)?;
    }
    Ok(())
}

/// Sets a tenant's delivery back to `pending`, due now; `None` when there is no such delivery.
pub(crate) fn requeue_delivery(
    conn: &Connection,
    tenant: &str,
    id: DeliveryId,
    clock: &Clock,
) -> StoreResult<Option<Delivery>> {
    let sql = format!(
        "UPDATE deliveries SET status = 'pending', next_at = ?3, updated_at = ?3
         WHERE id = ?1 AND tenant = ?2 RETURNING {DELIVERY_COLUMNS}"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
    let mut rows = stmt
        .query(params![id.to_string(), tenant, clock.now])
        .map_err(from_sqlite)?;
    let found = match rows.next().map_err(from_sqlite)? {
        Some(row) => Some(delivery_from_row(row)?),
        None => None,
    };
    // Step to the end so the statement finishes before the savepoint is released.
    while rows.next().map_err(from_sqlite)?.is_some() {}
    Ok(found)
}

/// Stores a source's checkpoint.
pub(crate) fn put_cursor(
    conn: &Connection,
    source_id: &str,
    value: &str,
    clock: &Clock,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO cursors (source_id, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (source_id) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![source_id, value, clock.now]))
    .map_err(from_sqlite)?;
    Ok(())
}

/// Stores a setting.
pub(crate) fn put_setting(conn: &Connection, name: &str, value: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO settings (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![name, value]))
    .map_err(from_sqlite)?;
    Ok(())
}

/// Deletes up to `limit` expired dedupe rows; returns how many went.
pub(crate) fn prune_dedupe(conn: &Connection, clock: &Clock, limit: i64) -> StoreResult<usize> {
    conn.prepare_cached(
        "DELETE FROM dedupe WHERE (tenant, dedupe_key) IN (
             SELECT tenant, dedupe_key FROM dedupe WHERE created_at <= ?1 LIMIT ?2)",
    )
    .and_then(|mut s| s.execute(params![clock.dedupe_cutoff_us, limit]))
    .map_err(from_sqlite)
}
