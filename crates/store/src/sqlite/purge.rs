//! The SQL of deletions: one purge batch (events with their deliveries and attempts, inside
//! the writer's transaction), the preview of a purge (on a reader), and the audit log.
//!
//! Events are walked oldest first on the primary key. "Received before T" is bounded above
//! by an id ceiling: an event's id is made right after its `received_at` is taken, so no
//! event received before T has an id from after `T + ID_CEILING_SLACK_MS`; the walk never
//! reads the newer part of the log.

use chrono::{DateTime, Utc};
use estafeta_core::EventId;
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::codec::{parse_ts, ts};
use super::errors::{corrupt, from_sqlite};
use crate::retention::{AuditEntry, EventPurge, PurgeBatch, PurgeCounts, PurgePreview};
use crate::{Page, StoreError, StoreResult};

/// How much newer than its `received_at` an event's id may be.
const ID_CEILING_SLACK_MS: u64 = 60_000;

/// Statuses of deliveries that are not finished: their events are kept.
const UNFINISHED: &str = "('pending', 'in_flight', 'retrying')";

/// An audit entry ready for `INSERT`.
#[derive(Debug)]
pub(crate) struct AuditRow {
    id: String,
    at: String,
    actor: String,
    kind: String,
    scope: String,
    counts: String,
    dry_run: bool,
    error: Option<String>,
}

impl AuditRow {
    pub(crate) fn encode(e: &AuditEntry) -> Self {
        Self {
            id: e.id.clone(),
            at: ts(&e.at),
            actor: e.actor.clone(),
            kind: e.kind.clone(),
            scope: e.scope.to_string(),
            counts: e.counts.to_string(),
            dry_run: e.dry_run,
            error: e.error.clone(),
        }
    }

    pub(crate) fn weight(&self) -> usize {
        100 + self.actor.len() + self.scope.len() + self.counts.len()
    }
}

/// The id every event received before `before` sorts below.
fn id_ceiling(before: &DateTime<Utc>) -> String {
    let ms = u64::try_from(before.timestamp_millis())
        .unwrap_or(0)
        .saturating_add(ID_CEILING_SLACK_MS);
    EventId::from_ulid(ulid::Ulid::from_parts(ms, 0)).to_string()
}

/// `WHERE` conditions (on `events e`) and their arguments for a filter, after `after`.
fn conditions(f: &EventPurge, after: Option<EventId>) -> (String, Vec<Value>) {
    let mut sql = String::from("e.id > ? AND e.id < ? AND e.received_at < ?");
    let mut args = vec![
        Value::Text(after.map(|a| a.to_string()).unwrap_or_default()),
        Value::Text(id_ceiling(&f.before)),
        Value::Text(ts(&f.before)),
    ];
    for (column, value) in [
        ("tenant", f.tenant.as_ref().map(|t| t.as_str().to_owned())),
        ("source_id", f.source_id.clone()),
        ("type", f.ty.clone()),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND e.{column} = ?"));
            args.push(Value::Text(v));
        }
    }
    for (column, values) in [
        ("tenant", &f.exclude_tenants),
        ("source_id", &f.exclude_sources),
    ] {
        if !values.is_empty() {
            let marks = vec!["?"; values.len()].join(", ");
            sql.push_str(&format!(" AND e.{column} NOT IN ({marks})"));
            args.extend(values.iter().cloned().map(Value::Text));
        }
    }
    (sql, args)
}

fn unfinished_clause(negate: bool) -> String {
    format!(
        "{}EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status IN {UNFINISHED})",
        if negate { "NOT " } else { "" }
    )
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Deletes up to `limit` events (oldest first, after `after`) that `f` selects and that have
/// no unfinished delivery, with their deliveries and attempts.
pub(crate) fn purge_batch(
    conn: &Connection,
    f: &EventPurge,
    after: Option<EventId>,
    limit: usize,
) -> StoreResult<PurgeBatch> {
    let (cond, mut args) = conditions(f, after);
    let sql = format!(
        "SELECT e.id FROM events e WHERE {cond} AND {} ORDER BY e.id LIMIT ?",
        unfinished_clause(true)
    );
    args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let ids: Vec<String> = {
        let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
        let rows = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(0))
            .map_err(from_sqlite)?;
        rows.collect::<Result<_, _>>().map_err(from_sqlite)?
    };
    let mut counts = PurgeCounts::default();
    let mut del_attempts = conn
        .prepare_cached(
            "DELETE FROM attempts WHERE delivery_id IN
                 (SELECT id FROM deliveries WHERE event_id = ?1)",
        )
        .map_err(from_sqlite)?;
    let mut del_deliveries = conn
        .prepare_cached("DELETE FROM deliveries WHERE event_id = ?1")
        .map_err(from_sqlite)?;
    let mut del_event = conn
        .prepare_cached("DELETE FROM events WHERE id = ?1")
        .map_err(from_sqlite)?;
    for id in &ids {
        counts.attempts += count(del_attempts.execute([id]).map_err(from_sqlite)?);
        counts.deliveries += count(del_deliveries.execute([id]).map_err(from_sqlite)?);
        counts.events += count(del_event.execute([id]).map_err(from_sqlite)?);
    }
    let last = match ids.last() {
        Some(id) => Some(
            id.parse::<EventId>()
                .map_err(|_| corrupt(format!("event id `{id}` does not parse")))?,
        ),
        None => None,
    };
    Ok(PurgeBatch { counts, last })
}

/// What a purge with `f` would delete now, and up to `sample` of the oldest event ids.
pub(crate) fn preview(
    conn: &Connection,
    f: &EventPurge,
    sample: usize,
) -> StoreResult<PurgePreview> {
    let (cond, args) = conditions(f, None);
    let doomed = format!(
        "SELECT e.id FROM events e WHERE {cond} AND {}",
        unfinished_clause(true)
    );
    let kept = format!(
        "SELECT COUNT(*) FROM events e WHERE {cond} AND {}",
        unfinished_clause(false)
    );
    let totals = format!(
        "WITH doomed AS ({doomed})
         SELECT (SELECT COUNT(*) FROM doomed),
                (SELECT COUNT(*) FROM deliveries WHERE event_id IN (SELECT id FROM doomed)),
                (SELECT COUNT(*) FROM attempts WHERE delivery_id IN
                    (SELECT id FROM deliveries WHERE event_id IN (SELECT id FROM doomed)))"
    );
    let (events, deliveries, attempts) = conn
        .query_row(&totals, params_from_iter(args.clone()), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(from_sqlite)?;
    let kept_unfinished: i64 = conn
        .query_row(&kept, params_from_iter(args.clone()), |r| r.get(0))
        .map_err(from_sqlite)?;
    let mut sample_args = args;
    sample_args.push(Value::Integer(i64::try_from(sample).unwrap_or(i64::MAX)));
    let mut stmt = conn
        .prepare(&format!("{doomed} ORDER BY e.id LIMIT ?"))
        .map_err(from_sqlite)?;
    let ids: Vec<String> = stmt
        .query_map(params_from_iter(sample_args), |r| r.get(0))
        .map_err(from_sqlite)?
        .collect::<Result<_, _>>()
        .map_err(from_sqlite)?;
    let sample = ids
        .iter()
        .map(|id| {
            id.parse::<EventId>()
                .map_err(|_| corrupt(format!("event id `{id}` does not parse")))
        })
        .collect::<StoreResult<_>>()?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(PurgePreview {
        counts: PurgeCounts {
            events: n(events),
            deliveries: n(deliveries),
            attempts: n(attempts),
        },
        sample,
        kept_unfinished: n(kept_unfinished),
    })
}

/// Records one audit entry.
pub(crate) fn insert_audit(conn: &Connection, row: &AuditRow) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (id, at, actor, kind, scope, counts, dry_run, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .map_err(from_sqlite)?
    .execute(params![
        row.id,
        row.at,
        row.actor,
        row.kind,
        row.scope,
        row.counts,
        row.dry_run,
        row.error
    ])
    .map_err(from_sqlite)?;
    Ok(())
}

/// A page of the audit log, newest first.
pub(crate) fn list_audit(
    conn: &Connection,
    limit: usize,
    cursor: Option<&str>,
) -> StoreResult<Page<AuditEntry>> {
    let limit = super::queries::clamp_limit(limit);
    if cursor.is_some_and(|c| !c.starts_with("aud_")) {
        return Err(StoreError::Invalid("invalid page cursor".to_owned()));
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, at, actor, kind, scope, counts, dry_run, error FROM audit_log
             WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
        )
        .map_err(from_sqlite)?;
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![cursor, fetch]).map_err(from_sqlite)?;
    let mut items = Vec::new();
    while let Some(r) = rows.next().map_err(from_sqlite)? {
        let text = |i: usize| r.get::<_, String>(i).map_err(from_sqlite);
        let json = |s: String| {
            serde_json::from_str(&s).map_err(|_| corrupt("an audit entry is not valid JSON"))
        };
        items.push(AuditEntry {
            id: text(0)?,
            at: parse_ts(&text(1)?)?,
            actor: text(2)?,
            kind: text(3)?,
            scope: json(text(4)?)?,
            counts: json(text(5)?)?,
            dry_run: r.get::<_, bool>(6).map_err(from_sqlite)?,
            error: r.get::<_, Option<String>>(7).map_err(from_sqlite)?,
        });
    }
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Page { items, next })
}
