//! The SQL of schedule runs: claims (an insert that loses quietly when the tick is already
//! taken), start, finish, the clean-up after a restart, and the reads (a schedule's history,
//! the latest tick per schedule). Writes run inside the writer's transaction.

use estafeta_core::ScheduleRunId;
use rusqlite::{Connection, Row, params};

use super::codec::{parse_ts, ts};
use super::errors::{corrupt, from_sqlite};
use super::write_ops::Clock;
use crate::{LastTick, Page, RunClaim, RunFinish, RunStatus, ScheduleRun, StoreError, StoreResult};

const RUN_COLUMNS: &str = "id, schedule_id, scheduled_at, trigger, status, claimed_at, \
    started_at, finished_at, records, error, next_fire_at";

/// A claim ready for `INSERT`.
#[derive(Debug)]
pub(crate) struct ClaimRow {
    id: String,
    schedule_id: String,
    scheduled_at: String,
    trigger: &'static str,
    status: &'static str,
    error: Option<String>,
    next_fire_at: Option<String>,
}

impl ClaimRow {
    pub(crate) fn encode(c: RunClaim) -> Self {
        Self {
            id: c.id.to_string(),
            schedule_id: c.schedule_id,
            scheduled_at: ts(&c.scheduled_at),
            trigger: c.trigger.as_str(),
            status: c.status.as_str(),
            error: c.error,
            next_fire_at: c.next_fire_at.as_ref().map(ts),
        }
    }

    pub(crate) fn weight(&self) -> usize {
        160 + self.schedule_id.len() + self.error.as_ref().map_or(0, String::len)
    }
}

/// A finished run ready for `UPDATE`.
#[derive(Debug)]
pub(crate) struct FinishRow {
    id: String,
    status: &'static str,
    started_at: String,
    finished_at: String,
    records: i64,
    error: Option<String>,
}

impl FinishRow {
    pub(crate) fn encode(f: RunFinish) -> Self {
        Self {
            id: f.id.to_string(),
            status: f.status.as_str(),
            started_at: ts(&f.started_at),
            finished_at: ts(&f.finished_at),
            records: i64::try_from(f.records).unwrap_or(i64::MAX),
            error: f.error,
        }
    }

    pub(crate) fn weight(&self) -> usize {
        120 + self.error.as_ref().map_or(0, String::len)
    }
}

/// Inserts each claim unless its tick is taken; `true` for the ones inserted.
pub(crate) fn claim(conn: &Connection, rows: &[ClaimRow], clock: &Clock) -> StoreResult<Vec<bool>> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO schedule_runs (id, schedule_id, scheduled_at, trigger, status,
                 claimed_at, error, next_fire_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT DO NOTHING",
        )
        .map_err(from_sqlite)?;
    rows.iter()
        .map(|r| {
            insert
                .execute(params![
                    r.id,
                    r.schedule_id,
                    r.scheduled_at,
                    r.trigger,
                    r.status,
                    clock.now,
                    r.error,
                    r.next_fire_at
                ])
                .map(|n| n == 1)
                .map_err(from_sqlite)
        })
        .collect()
}

/// Moves a queued run to running.
pub(crate) fn start(conn: &Connection, id: ScheduleRunId, started_at: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE schedule_runs SET status = 'running', started_at = ?2
         WHERE id = ?1 AND status = 'queued'",
    )
    .and_then(|mut s| s.execute(params![id.to_string(), started_at]))
    .map_err(from_sqlite)?;
    Ok(())
}

/// Records how a run ended; a run that does not exist is an error.
pub(crate) fn finish(conn: &Connection, row: &FinishRow) -> StoreResult<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE schedule_runs
             SET status = ?2, finished_at = ?3, records = ?4, error = ?5,
                 started_at = COALESCE(started_at, ?6)
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                row.id,
                row.status,
                row.finished_at,
                row.records,
                row.error,
                row.started_at
            ])
        })
        .map_err(from_sqlite)?;
    if changed == 0 {
        return Err(StoreError::Invalid(format!(
            "schedule run {} does not exist",
            row.id
        )));
    }
    Ok(())
}

/// Fails the unfinished runs of these schedules; answers how many.
pub(crate) fn fail_unfinished(
    conn: &Connection,
    schedule_ids: &[String],
    reason: &str,
    clock: &Clock,
) -> StoreResult<u64> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE schedule_runs SET status = 'failed', error = ?2, finished_at = ?3
             WHERE schedule_id = ?1 AND status IN ('queued', 'running')",
        )
        .map_err(from_sqlite)?;
    let mut total = 0u64;
    for id in schedule_ids {
        let n = stmt
            .execute(params![id, reason, clock.now])
            .map_err(from_sqlite)?;
        total += u64::try_from(n).unwrap_or(0);
    }
    Ok(total)
}

fn opt_ts(v: Option<String>) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
    v.as_deref().map(parse_ts).transpose()
}

fn run_from_row(row: &Row<'_>) -> StoreResult<ScheduleRun> {
    let col = |i: usize| -> StoreResult<Option<String>> { row.get(i).map_err(from_sqlite) };
    let text = |i: usize| -> StoreResult<String> {
        col(i)?.ok_or_else(|| corrupt("a schedule run lacks a required value"))
    };
    let id = text(0)?;
    let records: i64 = row.get(8).map_err(from_sqlite)?;
    Ok(ScheduleRun {
        id: id
            .parse()
            .map_err(|e| corrupt(format!("stored id is invalid: {e}")))?,
        schedule_id: text(1)?,
        scheduled_at: parse_ts(&text(2)?)?,
        trigger: text(3)?.parse().map_err(corrupt)?,
        status: text(4)?.parse::<RunStatus>().map_err(corrupt)?,
        claimed_at: parse_ts(&text(5)?)?,
        started_at: opt_ts(col(6)?)?,
        finished_at: opt_ts(col(7)?)?,
        records: u64::try_from(records).unwrap_or(0),
        error: col(9)?,
        next_fire_at: opt_ts(col(10)?)?,
    })
}

/// A page of a schedule's runs, newest first (by id: claim order).
pub(crate) fn list(
    conn: &Connection,
    schedule_id: &str,
    limit: usize,
    cursor: Option<&str>,
) -> StoreResult<Page<ScheduleRun>> {
    let limit = super::queries::clamp_limit(limit);
    let after = match cursor {
        None => None,
        Some(c) => Some(
            c.parse::<ScheduleRunId>()
                .map_err(|_| StoreError::Invalid("invalid page cursor".to_owned()))?
                .to_string(),
        ),
    };
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM schedule_runs
         WHERE schedule_id = ?1 AND (?2 IS NULL OR id < ?2)
         ORDER BY id DESC LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let mut rows = stmt
        .query(params![schedule_id, after, fetch])
        .map_err(from_sqlite)?;
    let mut items = Vec::new();
    while let Some(row) = rows.next().map_err(from_sqlite)? {
        items.push(run_from_row(row)?);
    }
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Page { items, next })
}

/// The latest claimed tick of each schedule (manual runs left out).
pub(crate) fn last_ticks(conn: &Connection) -> StoreResult<Vec<LastTick>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT schedule_id, MAX(scheduled_at) FROM schedule_runs
             WHERE trigger <> 'manual' GROUP BY schedule_id",
        )
        .map_err(from_sqlite)?;
    let mut rows = stmt.query([]).map_err(from_sqlite)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(from_sqlite)? {
        let schedule_id: String = row.get(0).map_err(from_sqlite)?;
        let at: String = row.get(1).map_err(from_sqlite)?;
        out.push(LastTick {
            schedule_id,
            scheduled_at: parse_ts(&at)?,
        });
    }
    Ok(out)
}
