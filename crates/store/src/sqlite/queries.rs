//! The SQL of every read, run on a pooled read-only connection; keyset pagination by id.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use estafeta_core::{Attempt, Delivery, DeliveryId, Event, EventId};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Params, Row, params, params_from_iter};

use super::codec::{
    ATTEMPT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS, attempt_from_row, delivery_from_row,
    event_from_row, parse_status, ts,
};
use super::errors::from_sqlite;
use crate::{DeliveryCount, DeliveryQuery, EventQuery, Page, StoreError, StoreResult};

/// Largest page or scan a caller gets at once.
const MAX_LIMIT: usize = 1_000;

/// Clamps a requested page size to `1..=1000`.
pub(crate) fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_LIMIT)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn parse_cursor<T: FromStr>(cursor: &str) -> StoreResult<T> {
    cursor
        .parse()
        .map_err(|_| StoreError::Invalid("invalid page cursor".to_owned()))
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(from_sqlite)?;
    let mut rows = stmt.query(params).map_err(from_sqlite)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(from_sqlite)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Fetches `limit + 1` rows' worth of items and turns the extra one into a `next` cursor.
fn page<T>(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next }
}

/// One event of a tenant.
pub(crate) fn get_event(
    conn: &Connection,
    tenant: &str,
    id: EventId,
) -> StoreResult<Option<Event>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1 AND tenant = ?2");
    Ok(collect(conn, &sql, params![id.to_string(), tenant], event_from_row)?.pop())
}

/// Events by id, any tenant, in the order asked; missing ids are skipped.
pub(crate) fn get_events(conn: &Connection, ids: &[EventId]) -> StoreResult<Vec<Event>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1");
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(collect(conn, &sql, [id.to_string()], event_from_row)?);
    }
    Ok(out)
}

/// How much older than its `received_at` an event's id may be: none in practice (the ingest
/// takes the time first, then makes the id), so this only covers the wall clock stepping
/// back between the two. It bounds how many extra rows a time-bounded read walks.
const ID_CLOCK_SLACK_MS: u64 = 1_000;

/// The smallest event id that an event received at or after `t` can have: `evt_` and the
/// ULID of millisecond `t - ID_CLOCK_SLACK_MS` with an all-zero random part (or "" before
/// the epoch). Lets "received at or after `t`" start as an id range on the primary key.
pub(crate) fn id_floor(t: &DateTime<Utc>) -> String {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    match ms.checked_sub(ID_CLOCK_SLACK_MS) {
        Some(ms) => EventId::from_ulid(ulid::Ulid::from_parts(ms, 0)).to_string(),
        None => String::new(),
    }
}

/// A page of a tenant's events, newest first.
pub(crate) fn list_events(conn: &Connection, q: &EventQuery) -> StoreResult<Page<Event>> {
    let limit = clamp_limit(q.limit);
    // Without a type or source, walk the primary key (`+` keeps the planner off the
    // `(tenant, type|source, id)` indexes, which would need a sort).
    let plus = if q.ty.is_none() && q.source_id.is_none() {
        "+"
    } else {
        ""
    };
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE {plus}tenant = ?");
    let mut args = vec![Value::Text(q.tenant.as_str().to_owned())];
    if let Some(ty) = &q.ty {
        sql.push_str(" AND type = ?");
        args.push(Value::Text(ty.clone()));
    }
    if let Some(source) = &q.source_id {
        sql.push_str(" AND source_id = ?");
        args.push(Value::Text(source.clone()));
    }
    // The id floor ends the walk early; the exact condition decides.
    if let Some(since) = &q.since {
        sql.push_str(" AND id >= ? AND +received_at >= ?");
        args.push(Value::Text(id_floor(since)));
        args.push(Value::Text(ts(since)));
    }
    // No id ceiling for `until`: an id may be much newer than its `received_at` (the clock
    // stepped back, or an event was stored with an older receipt time), so it is a filter.
    if let Some(until) = &q.until {
        sql.push_str(" AND +received_at < ?");
        args.push(Value::Text(ts(until)));
    }
    if let Some(cursor) = &q.cursor {
        let after: EventId = parse_cursor(cursor)?;
        sql.push_str(" AND id < ?");
        args.push(Value::Text(after.to_string()));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Value::Integer(sql_limit(limit + 1)));
    let items = collect(conn, &sql, params_from_iter(args), event_from_row)?;
    Ok(page(items, limit, |e| e.id.to_string()))
}

/// A tenant's events in log order, after `after` or from the first one (in log order)
/// received at/after `since`.
pub(crate) fn scan_events(
    conn: &Connection,
    tenant: &str,
    after: Option<EventId>,
    since: Option<DateTime<Utc>>,
    limit: usize,
) -> StoreResult<Vec<Event>> {
    let limit = sql_limit(clamp_limit(limit));
    let mut from = after.map(|id| (id.to_string(), false));
    if let Some(since) = since {
        // Walks from the id floor: at most `ID_CLOCK_SLACK_MS` of earlier events.
        let start: Option<String> = conn
            .prepare_cached(
                "SELECT id FROM events WHERE +tenant = ?1 AND id >= ?2 AND +received_at >= ?3
                 ORDER BY id LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![tenant, id_floor(&since), ts(&since)], |r| r.get(0))
                    .optional()
            })
            .map_err(from_sqlite)?;
        let Some(start) = start else {
            return Ok(Vec::new());
        };
        // Whichever bound is later wins.
        if from.as_ref().is_none_or(|(after, _)| start > *after) {
            from = Some((start, true));
        }
    }
    let sql = |op: &str| {
        format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE +tenant = ?1 AND id {op} ?2
             ORDER BY id LIMIT ?3"
        )
    };
    match from {
        None => collect(conn, &sql(">"), params![tenant, "", limit], event_from_row),
        Some((id, true)) => collect(conn, &sql(">="), params![tenant, id, limit], event_from_row),
        Some((id, false)) => collect(conn, &sql(">"), params![tenant, id, limit], event_from_row),
    }
}

/// One delivery of a tenant.
pub(crate) fn get_delivery(
    conn: &Connection,
    tenant: &str,
    id: DeliveryId,
) -> StoreResult<Option<Delivery>> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1 AND tenant = ?2");
    Ok(collect(
        conn,
        &sql,
        params![id.to_string(), tenant],
        delivery_from_row,
    )?
    .pop())
}

/// A page of a tenant's deliveries, newest first.
pub(crate) fn list_deliveries(conn: &Connection, q: &DeliveryQuery) -> StoreResult<Page<Delivery>> {
    let limit = clamp_limit(q.limit);
    // With an event id, its index is the selective one; with a status (and no event id),
    // `(tenant, status, id)`; otherwise the walk goes down the primary key. `+` keeps the
    // planner off the index that is not meant.
    let by_status = q.status.is_some() && q.event_id.is_none();
    let (tenant_plus, status_plus) = if by_status { ("", "") } else { ("+", "+") };
    let mut sql =
        format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {tenant_plus}tenant = ?");
    let mut args = vec![Value::Text(q.tenant.as_str().to_owned())];
    if let Some(status) = q.status {
        sql.push_str(&format!(" AND {status_plus}status = ?"));
        args.push(Value::Text(status.as_str().to_owned()));
    }
    if let Some(route) = &q.route_id {
        sql.push_str(" AND route_id = ?");
        args.push(Value::Text(route.clone()));
    }
    if let Some(destination) = &q.destination_id {
        sql.push_str(" AND +destination_id = ?");
        args.push(Value::Text(destination.clone()));
    }
    if let Some(event) = q.event_id {
        sql.push_str(" AND event_id = ?");
        args.push(Value::Text(event.to_string()));
    }
    if let Some(cursor) = &q.cursor {
        let after: DeliveryId = parse_cursor(cursor)?;
        sql.push_str(" AND id < ?");
        args.push(Value::Text(after.to_string()));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Value::Integer(sql_limit(limit + 1)));
    let items = collect(conn, &sql, params_from_iter(args), delivery_from_row)?;
    Ok(page(items, limit, |d| d.id.to_string()))
}

/// The deliveries of one event, in id order.
pub(crate) fn deliveries_for_event(
    conn: &Connection,
    event: EventId,
) -> StoreResult<Vec<Delivery>> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ?1 ORDER BY id");
    collect(conn, &sql, [event.to_string()], delivery_from_row)
}

/// The attempts of one delivery, oldest first.
pub(crate) fn attempts(conn: &Connection, delivery: DeliveryId) -> StoreResult<Vec<Attempt>> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ?1 ORDER BY started_at, id"
    );
    collect(conn, &sql, [delivery.to_string()], attempt_from_row)
}

/// Pending and retrying deliveries in id order after `after`. There is no index of them in
/// id order across destinations: the next `limit` ids of each destination come from
/// `deliveries_unfinished` and are merged, so a page costs (destinations × limit) index
/// entries and `limit` row reads, however many finished deliveries there are.
pub(crate) fn unfinished_deliveries(
    conn: &Connection,
    after: Option<DeliveryId>,
    limit: usize,
) -> StoreResult<Vec<Delivery>> {
    let limit = clamp_limit(limit);
    let after = after.map(|id| id.to_string()).unwrap_or_default();
    let mut next_destination = conn
        .prepare_cached(
            "SELECT destination_id FROM deliveries
             WHERE destination_id > ?1 AND status IN ('pending', 'retrying')
             ORDER BY destination_id LIMIT 1",
        )
        .map_err(from_sqlite)?;
    let mut ids_of = conn
        .prepare_cached(
            "SELECT id FROM deliveries
             WHERE destination_id = ?1 AND status IN ('pending', 'retrying') AND id > ?2
             ORDER BY id LIMIT ?3",
        )
        .map_err(from_sqlite)?;
    let mut ids: Vec<String> = Vec::new();
    let mut destination = String::new();
    loop {
        let found: Option<String> = next_destination
            .query_row([&destination], |r| r.get(0))
            .optional()
            .map_err(from_sqlite)?;
        let Some(found) = found else { break };
        let mut rows = ids_of
            .query(params![found, after, sql_limit(limit)])
            .map_err(from_sqlite)?;
        while let Some(row) = rows.next().map_err(from_sqlite)? {
            ids.push(row.get(0).map_err(from_sqlite)?);
        }
        // Keep only the smallest `limit` so far, so memory stays at 2 × limit ids.
        if ids.len() > limit {
            ids.sort_unstable();
            ids.truncate(limit);
        }
        destination = found;
    }
    ids.sort_unstable();
    ids.truncate(limit);
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1");
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(collect(conn, &sql, [id], delivery_from_row)?);
    }
    Ok(out)
}

/// Unfinished deliveries of one destination in id order after `after`.
pub(crate) fn unfinished_deliveries_for(
    conn: &Connection,
    destination_id: &str,
    after: Option<DeliveryId>,
    limit: usize,
) -> StoreResult<Vec<Delivery>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries
         WHERE destination_id = ?1 AND status IN ('pending', 'retrying') AND id > ?2
         ORDER BY id LIMIT ?3"
    );
    let after = after.map(|id| id.to_string()).unwrap_or_default();
    collect(
        conn,
        &sql,
        params![destination_id, after, sql_limit(clamp_limit(limit))],
        delivery_from_row,
    )
}

/// Deliveries per destination and status.
pub(crate) fn delivery_counts(conn: &Connection) -> StoreResult<Vec<DeliveryCount>> {
    collect(
        conn,
        "SELECT destination_id, status, COUNT(*) FROM deliveries
         GROUP BY destination_id, status ORDER BY destination_id, status",
        [],
        |row| {
            let status: String = row.get(1).map_err(from_sqlite)?;
            let count: i64 = row.get(2).map_err(from_sqlite)?;
            Ok(DeliveryCount {
                destination_id: row.get(0).map_err(from_sqlite)?,
                status: parse_status(&status)?,
                count: u64::try_from(count).unwrap_or(0),
            })
        },
    )
}

/// A source's checkpoint.
pub(crate) fn get_cursor(conn: &Connection, source_id: &str) -> StoreResult<Option<String>> {
    single_text(
        conn,
        "SELECT value FROM cursors WHERE source_id = ?1",
        source_id,
    )
}

/// A setting.
pub(crate) fn get_setting(conn: &Connection, name: &str) -> StoreResult<Option<String>> {
    single_text(conn, "SELECT value FROM settings WHERE name = ?1", name)
}

fn single_text(conn: &Connection, sql: &str, key: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .map_err(from_sqlite)
}

/// Reads the schema version: proves the file is there and readable.
pub(crate) fn ping(conn: &Connection) -> StoreResult<()> {
    super::schema::current_version(conn).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str, args: usize) -> String {
        let params = vec![Value::Text("x".to_owned()); args];
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("prepare");
        let mut rows = stmt.query(params_from_iter(params)).expect("query");
        let mut out = Vec::new();
        while let Some(row) = rows.next().expect("row") {
            out.push(row.get::<_, String>(3).expect("detail"));
        }
        out.join("; ")
    }

    #[test]
    fn the_id_floor_is_the_first_id_of_the_slack_millisecond() {
        use chrono::TimeZone;
        let ms = 1_767_225_600_123_i64;
        let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        let floor_ms = u64::try_from(ms).unwrap_or(0) - ID_CLOCK_SLACK_MS;
        let id = |ms: u64, random: u128| EventId::from_ulid(ulid::Ulid::from_parts(ms, random));
        let floor = id_floor(&t);
        assert_eq!(floor, id(floor_ms, 0).to_string());
        // Any nanosecond within the millisecond gives the same floor.
        let late = t + chrono::Duration::nanoseconds(999_999);
        assert_eq!(id_floor(&late), floor);
        // Ids of the floor's millisecond are in; the last id of the one before is out.
        assert!(id(floor_ms, 0).to_string() >= floor);
        assert!(id(floor_ms, u128::MAX).to_string() >= floor);
        assert!(id(floor_ms - 1, u128::MAX).to_string() < floor);
        // Before the epoch (plus slack) everything is in.
        let early = Utc.timestamp_millis_opt(999).single().unwrap_or_default();
        assert_eq!(id_floor(&early), "");
        let old = Utc.timestamp_millis_opt(-5).single().unwrap_or_default();
        assert_eq!(id_floor(&old), "");
    }

    /// How plans name the index on `events.id`.
    const EVENTS_ID: &str = "sqlite_autoindex_events_1";

    #[test]
    fn common_queries_use_their_indexes() {
        let mut conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&mut conn).expect("migrate");
        let cases = [
            (
                "SELECT id FROM events WHERE +tenant = ? AND id < ? ORDER BY id DESC LIMIT 5",
                2,
                EVENTS_ID,
            ),
            (
                "SELECT id FROM events WHERE +tenant = ? AND id >= ? AND +received_at >= ? ORDER BY id DESC LIMIT 5",
                3,
                EVENTS_ID,
            ),
            (
                "SELECT id FROM events WHERE tenant = ? AND type = ? AND id >= ? AND +received_at >= ? ORDER BY id DESC LIMIT 5",
                4,
                "events_tenant_type_id",
            ),
            (
                "SELECT id FROM events WHERE tenant = ? AND source_id = ? ORDER BY id DESC LIMIT 5",
                2,
                "events_tenant_source_id",
            ),
            (
                "SELECT id FROM events WHERE +tenant = ?1 AND id >= ?2 AND +received_at >= ?3 ORDER BY id LIMIT 1",
                3,
                EVENTS_ID,
            ),
            (
                "SELECT id FROM events WHERE id = ? AND tenant = ?",
                2,
                EVENTS_ID,
            ),
            (
                "SELECT id FROM deliveries WHERE +tenant = ? AND +destination_id = ? ORDER BY id DESC LIMIT 5",
                2,
                "SCAN deliveries",
            ),
            (
                "SELECT id FROM deliveries WHERE +tenant = ? AND id < ? ORDER BY id DESC LIMIT 5",
                2,
                "PRIMARY KEY (id<?)",
            ),
            (
                "SELECT id FROM deliveries WHERE tenant = ? AND status = ? AND route_id = ? ORDER BY id DESC LIMIT 5",
                3,
                "deliveries_tenant_status_id",
            ),
            (
                "SELECT id FROM deliveries WHERE +tenant = ? AND +status = ? AND event_id = ? ORDER BY id DESC LIMIT 5",
                3,
                "deliveries_event_id",
            ),
            (
                "SELECT destination_id FROM deliveries WHERE destination_id > ? AND status IN ('pending', 'retrying') ORDER BY destination_id LIMIT 1",
                1,
                "deliveries_unfinished",
            ),
            (
                "SELECT id FROM deliveries WHERE destination_id = ? AND status IN ('pending', 'retrying') AND id > ? ORDER BY id LIMIT 5",
                2,
                "deliveries_unfinished",
            ),
            (
                "UPDATE deliveries SET status = 'delivered' WHERE id = ?",
                1,
                "PRIMARY KEY",
            ),
            (
                "SELECT id FROM attempts WHERE delivery_id = ? ORDER BY started_at, id",
                1,
                "PRIMARY KEY",
            ),
        ];
        for (sql, args, index) in cases {
            let plan = plan(&conn, sql, args);
            assert!(plan.contains(index), "{sql}\n  uses: {plan}");
            let sorts_everything = plan.contains("TEMP B-TREE") && !sql.contains("started_at");
            assert!(!sorts_everything, "{sql}\n  sorts: {plan}");
        }
    }
}
