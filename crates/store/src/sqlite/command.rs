//! What travels to the writer thread: a write operation, the waiter for its answer, and the
//! dispatch from an operation to its SQL in `write_ops`.

use estafeta_core::{Delivery, DeliveryId, ScheduleRunId};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::codec::{AttemptRow, DeliveryRow};
use super::errors::unavailable_bare;
use super::purge::{self, AuditRow};
use super::runs::{self, ClaimRow, FinishRow};
use super::vault::VaultOp;
use super::write_ops::{self, AppendItem, Clock};
use crate::retention::{EventPurge, PurgeBatch};
use crate::{AppendOutcome, StoreResult};

/// Where the writer sends one command's result.
pub(crate) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// One durable write. Borrowed while it runs, so a batch can be run a second time.
pub(crate) enum Op {
    Append(Vec<AppendItem>),
    RecordAttempts(Vec<AttemptRow>),
    InsertDeliveries(Vec<DeliveryRow>),
    Requeue {
        tenant: String,
        id: DeliveryId,
    },
    PutCursor {
        source_id: String,
        value: String,
    },
    PutSetting {
        name: String,
        value: String,
    },
    ClaimRuns(Vec<ClaimRow>),
    StartRun {
        id: ScheduleRunId,
        started_at: String,
    },
    FinishRun(FinishRow),
    FailUnfinishedRuns {
        schedule_ids: Vec<String>,
        reason: String,
    },
    Vault(VaultOp),
    PurgeEvents {
        filter: Box<EventPurge>,
        after: Option<estafeta_core::EventId>,
        limit: usize,
    },
    RecordAudit(AuditRow),
}

/// A command's result, held until its transaction has committed.
pub(crate) enum Answer {
    Outcomes(Vec<AppendOutcome>),
    Unit,
    Delivery(Option<Delivery>),
    Claims(Vec<bool>),
    Count(u64),
    Purged(PurgeBatch),
}

/// Whoever waits for one command.
pub(crate) enum Waiter {
    Append(Reply<Vec<AppendOutcome>>),
    Unit(Reply<()>),
    Requeue(Reply<Option<Delivery>>),
    Claims(Reply<Vec<bool>>),
    Count(Reply<u64>),
    Purge(Reply<PurgeBatch>),
}

/// An operation and its waiter.
pub(crate) struct Command {
    pub(crate) op: Op,
    pub(crate) waiter: Waiter,
}

impl Op {
    /// Rough size in bytes, for capping a group commit.
    pub(crate) fn weight(&self) -> usize {
        match self {
            Self::Append(items) => items.iter().map(AppendItem::weight).sum(),
            Self::RecordAttempts(rows) => rows.iter().map(AttemptRow::weight).sum(),
            Self::InsertDeliveries(rows) => rows.iter().map(DeliveryRow::weight).sum(),
            Self::Requeue { tenant, .. } => 100 + tenant.len(),
            Self::PutCursor {
                source_id: a,
                value: b,
            }
            | Self::PutSetting { name: a, value: b } => 100 + a.len() + b.len(),
            Self::ClaimRuns(rows) => rows.iter().map(ClaimRow::weight).sum(),
            Self::StartRun { .. } => 100,
            Self::FinishRun(row) => row.weight(),
            Self::FailUnfinishedRuns {
                schedule_ids,
                reason,
            } => 100 + reason.len() + schedule_ids.iter().map(String::len).sum::<usize>(),
            Self::Vault(op) => op.weight(),
            Self::PurgeEvents { .. } => 200,
            Self::RecordAudit(row) => row.weight(),
        }
    }

    /// Runs the operation's SQL inside the writer's open transaction.
    pub(crate) fn run(&self, conn: &Connection, clock: &Clock) -> StoreResult<Answer> {
        match self {
            Self::Append(items) => write_ops::append(conn, items, clock).map(Answer::Outcomes),
            Self::RecordAttempts(rows) => {
                write_ops::record_attempts(conn, rows, clock).map(|()| Answer::Unit)
            }
            Self::InsertDeliveries(rows) => {
                write_ops::insert_deliveries(conn, rows).map(|()| Answer::Unit)
            }
            Self::Requeue { tenant, id } => {
                write_ops::requeue_delivery(conn, tenant, *id, clock).map(Answer::Delivery)
            }
            Self::PutCursor { source_id, value } => {
                write_ops::put_cursor(conn, source_id, value, clock).map(|()| Answer::Unit)
            }
            Self::PutSetting { name, value } => {
                write_ops::put_setting(conn, name, value).map(|()| Answer::Unit)
            }
            Self::ClaimRuns(rows) => runs::claim(conn, rows, clock).map(Answer::Claims),
            Self::StartRun { id, started_at } => {
                runs::start(conn, *id, started_at).map(|()| Answer::Unit)
            }
            Self::FinishRun(row) => runs::finish(conn, row).map(|()| Answer::Unit),
            Self::FailUnfinishedRuns {
                schedule_ids,
                reason,
            } => runs::fail_unfinished(conn, schedule_ids, reason, clock).map(Answer::Count),
            Self::Vault(op) => op.run(conn).map(Answer::Count),
            Self::PurgeEvents {
                filter,
                after,
                limit,
            } => purge::purge_batch(conn, filter, *after, *limit).map(Answer::Purged),
            Self::RecordAudit(row) => purge::insert_audit(conn, row).map(|()| Answer::Unit),
        }
    }
}

impl Waiter {
    /// Hands over the result; a waiter that has gone away (its caller was cancelled) is
    /// ignored.
    pub(crate) fn send(self, result: StoreResult<Answer>) {
        match self {
            Self::Append(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Outcomes(v) => Ok(v),
                    _ => Err(mismatch()),
                }));
            }
            Self::Unit(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Unit => Ok(()),
                    _ => Err(mismatch()),
                }));
            }
            Self::Requeue(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Delivery(d) => Ok(d),
                    _ => Err(mismatch()),
                }));
            }
            Self::Claims(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Claims(v) => Ok(v),
                    _ => Err(mismatch()),
                }));
            }
            Self::Count(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Count(n) => Ok(n),
                    _ => Err(mismatch()),
                }));
            }
            Self::Purge(tx) => {
                let _ = tx.send(result.and_then(|a| match a {
                    Answer::Purged(b) => Ok(b),
                    _ => Err(mismatch()),
                }));
            }
        }
    }
}

fn mismatch() -> crate::StoreError {
    unavailable_bare("the store writer answered the wrong request")
}
