//! One polling session: connect, then claim → store → mark in batches until cancelled or
//! the connection fails. With `mark_on: delivered`, also settles claimed rows whose
//! deliveries have finished.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;
use estafeta_config::outbox_source::{MarkOn, OnProcessed, OutboxSourceSettings};

use super::row::{EventMaker, RawRow, RowId};
use super::sql::{Mark, Shape, Statement};
use super::watch::{Outcome, Watch};
use super::{Outbox, OutboxError, metrics as m};
use crate::status::SourceState;

/// What the poll loop needs from a database. A claim opens a transaction that holds the
/// claimed rows (locked, skipped by other claimers) until [`Driver::commit`] or
/// [`Driver::rollback`]; nothing is written back before the commit, which comes only after
/// the rows' events are durable.
pub(super) trait Driver: Sized + Send {
    /// Connects, checks the table and its columns, and prepares the claim.
    fn connect(s: &OutboxSourceSettings) -> impl Future<Output = Result<Self, OutboxError>> + Send;

    /// The table as found in the database.
    fn shape(&self) -> &Shape;

    /// Opens a transaction and reads (locking) up to `limit` pending rows in id order.
    fn claim(
        &mut self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RawRow>, OutboxError>> + Send;

    /// Runs the write-backs in the claim's transaction and commits it. On an error the
    /// transaction is rolled back (or the connection is gone, which rolls it back).
    fn commit(
        &mut self,
        statements: &[Statement],
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// Rolls the claim's transaction back: its rows are pending again.
    fn rollback(&mut self) -> impl Future<Output = ()> + Send;

    /// Runs write-backs in a transaction of their own (settling `processing` rows).
    fn apply(
        &mut self,
        statements: &[Statement],
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// Resolves when the database signals new rows (PostgreSQL `NOTIFY`); never resolves
    /// for databases without notifications. An error means the connection is gone.
    fn woken(&mut self) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// How long to leave the database alone between two full batches, so that other
    /// writers get a turn (SQLite, where a claim holds the only write lock).
    fn breather(&self) -> Duration {
        Duration::ZERO
    }
}

/// How often finished deliveries are looked for at first, and at most.
const SETTLE_MIN: Duration = Duration::from_millis(100);
const SETTLE_MAX: Duration = Duration::from_secs(10);

/// Runs one session until cancelled (`Ok`) or a failure (`Err`).
pub(super) async fn session<D: Driver>(
    o: &Outbox,
    watch: &mut Option<Watch>,
) -> Result<(), OutboxError> {
    let s = &o.settings;
    o.board.update(&o.id, |st| st.state = SourceState::Starting);
    let mut db = D::connect(s).await?;
    let watch = match watch {
        Some(w) => w,
        None => watch.insert(Watch::load(o.store.as_ref(), &o.id, s.batch_size).await?),
    };
    tracing::info!(source_id = %o.id, database = s.database.name(), table = %s.table_label, "polling the outbox table");
    o.board.update(&o.id, |st| {
        st.state = SourceState::Running;
        st.error = None;
    });
    let maker = EventMaker {
        source_id: &o.id,
        settings: s,
    };
    let base = s.poll_interval.clamp(SETTLE_MIN, Duration::from_secs(2));
    let mut settle_every = base;
    let mut last_settle: Option<Instant> = None;
    loop {
        if o.cancel.is_cancelled() {
            return Ok(());
        }
        let full = claim_batch(o, &mut db, &maker, watch).await?;
        if !watch.is_empty() && last_settle.is_none_or(|t| t.elapsed() >= settle_every) {
            let settled = settle(o, &mut db, watch).await?;
            last_settle = Some(Instant::now());
            // Back off while nothing finishes (a destination is down), so a long list of
            // processing rows does not keep the store busy.
            settle_every = if settled > 0 {
                base
            } else {
                (settle_every * 2).min(SETTLE_MAX)
            };
        }
        if full {
            let pause = db.breather();
            if !pause.is_zero() {
                tokio::select! {
                    () = o.cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(pause) => {}
                }
            }
            continue;
        }
        let wait = if watch.is_empty() {
            s.poll_interval
        } else {
            s.poll_interval.min(settle_every)
        };
        tokio::select! {
            () = o.cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
            r = db.woken() => r?,
        }
    }
}

/// Claims one batch, stores its events, writes the rows back and commits. Returns whether
/// the batch was full (more rows are probably waiting).
async fn claim_batch<D: Driver>(
    o: &Outbox,
    db: &mut D,
    maker: &EventMaker<'_>,
    watch: &mut Watch,
) -> Result<bool, OutboxError> {
    let s = &o.settings;
    let delivered = s.mark_on == MarkOn::Delivered;
    let limit = if delivered {
        s.batch_size.min(watch.room())
    } else {
        s.batch_size
    };
    if limit == 0 {
        return Ok(false);
    }
    let t0 = Instant::now();
    let rows = db.claim(limit).await?;
    let claim_time = t0.elapsed();
    if rows.is_empty() {
        db.rollback().await;
        return Ok(false);
    }
    let claimed = rows.len();
    let last_id = rows.last().map(|r| r.id.to_string());
    let mut events = Vec::with_capacity(claimed);
    let mut sent = Vec::with_capacity(claimed);
    let mut bad: BTreeMap<String, Vec<RowId>> = BTreeMap::new();
    for row in rows {
        let id = row.id.clone();
        match maker.event(row) {
            Ok(e) => {
                events.push(e);
                sent.push(id);
            }
            Err(reason) => {
                tracing::warn!(source_id = %o.id, row_id = %id, reason = %reason, "outbox row cannot become an event; marking it failed");
                bad.entry(reason).or_default().push(id);
            }
        }
    }
    let failed: usize = bad.values().map(Vec::len).sum();
    let mut marks: Vec<Mark> = bad
        .into_iter()
        .map(|(error, ids)| Mark::Failed {
            ids,
            error,
            attempts: None,
        })
        .collect();
    let stored = sent.len();
    let t1 = Instant::now();
    if !events.is_empty() {
        let ids = match o.sink.append(events).await {
            Ok(ids) => ids,
            Err(e) => {
                db.rollback().await;
                return Err(OutboxError::Sink(e));
            }
        };
        if delivered {
            watch.add(sent.iter().cloned().zip(ids));
            if let Err(e) = watch.save(o.store.as_ref(), &o.id).await {
                db.rollback().await;
                return Err(e);
            }
            marks.push(Mark::Processing(sent));
        } else {
            marks.push(Mark::Processed {
                ids: sent,
                attempts: None,
            });
        }
    }
    let statements: Vec<Statement> = marks
        .iter()
        .map(|mk| db.shape().mark(mk, &s.pending))
        .collect();
    let append_time = t1.elapsed();
    let t2 = Instant::now();
    db.commit(&statements).await?;
    tracing::debug!(source_id = %o.id, rows = claimed, claim = ?claim_time, append = ?append_time,
        write_back = ?t2.elapsed(), "outbox batch");

    let source = o.id.clone();
    if stored > 0 {
        let n = stored as u64;
        ::metrics::counter!(m::EVENTS, "source" => source.clone()).increment(n);
        if !delivered {
            ::metrics::counter!(m::ROWS, "source" => source.clone(), "outcome" => processed_label(s))
                .increment(n);
        }
    }
    if failed > 0 {
        ::metrics::counter!(m::ROWS, "source" => source, "outcome" => "failed")
            .increment(failed as u64);
    }
    let now = Utc::now();
    o.board.update(&o.id, |st| {
        st.events += stored as u64;
        if stored > 0 {
            st.last_event_at = Some(now);
        }
        st.position = last_id;
    });
    if delivered {
        ::metrics::gauge!(m::WATCHING, "source" => o.id.clone()).set(watch.len() as f64);
    }
    Ok(claimed == limit)
}

fn processed_label(s: &OutboxSourceSettings) -> &'static str {
    match s.on_processed {
        OnProcessed::Mark => "processed",
        OnProcessed::Delete => "deleted",
    }
}

/// Marks `processing` rows whose deliveries all finished. Returns how many were settled.
async fn settle<D: Driver>(
    o: &Outbox,
    db: &mut D,
    watch: &mut Watch,
) -> Result<usize, OutboxError> {
    let s = &o.settings;
    let finished = watch.finished(o.store.as_ref()).await?;
    if finished.is_empty() {
        return Ok(0);
    }
    let mut done: BTreeMap<i64, Vec<RowId>> = BTreeMap::new();
    let mut dead: BTreeMap<(String, i64), Vec<RowId>> = BTreeMap::new();
    for (row, outcome) in &finished {
        match outcome {
            Outcome::Delivered { attempts } => done.entry(*attempts).or_default().push(row.clone()),
            Outcome::Dead { error, attempts } => {
                tracing::warn!(source_id = %o.id, row_id = %row, "a delivery of an outbox row died; marking the row failed");
                dead.entry((error.clone(), *attempts))
                    .or_default()
                    .push(row.clone());
            }
        }
    }
    let (n_done, n_dead) = (
        done.values().map(Vec::len).sum::<usize>(),
        dead.values().map(Vec::len).sum::<usize>(),
    );
    let mut marks: Vec<Mark> = done
        .into_iter()
        .map(|(attempts, ids)| Mark::Processed {
            ids,
            attempts: Some(attempts),
        })
        .collect();
    marks.extend(
        dead.into_iter()
            .map(|((error, attempts), ids)| Mark::Failed {
                ids,
                error,
                attempts: Some(attempts),
            }),
    );
    let statements: Vec<Statement> = marks
        .iter()
        .map(|mk| db.shape().mark(mk, &s.processing))
        .collect();
    db.apply(&statements).await?;
    let rows: Vec<RowId> = finished.into_iter().map(|(r, _)| r).collect();
    watch.remove(&rows);
    watch.save(o.store.as_ref(), &o.id).await?;
    if n_done > 0 {
        ::metrics::counter!(m::ROWS, "source" => o.id.clone(), "outcome" => processed_label(s))
            .increment(n_done as u64);
    }
    if n_dead > 0 {
        ::metrics::counter!(m::ROWS, "source" => o.id.clone(), "outcome" => "failed")
            .increment(n_dead as u64);
    }
    ::metrics::gauge!(m::WATCHING, "source" => o.id.clone()).set(watch.len() as f64);
    Ok(rows.len())
}
