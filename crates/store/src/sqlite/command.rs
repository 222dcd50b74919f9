//! What travels to the writer thread: a write operation, the waiter for its answer, and the
//! dispatch from an operation to its SQL in `write_ops`.

use estafeta_core::{Delivery, DeliveryId};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::codec::{AttemptRow, DeliveryRow};
use super::errors::unavailable_bare;
use super::write_ops::{self, AppendItem, Clock};
use crate::{AppendOutcome, StoreResult};

/// Where the writer sends one command's result.
pub(crate) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// One durable write. Borrowed while it runs, so a batch can be run a second time.
pub(crate) enum Op {
    Append(Vec<AppendItem>),
    RecordAttempts(Vec<AttemptRow>),
    InsertDeliveries(Vec<DeliveryRow>),
    Requeue { tenant: String, id: DeliveryId },
    PutCursor { source_id: String, value: String },
    PutSetting { name: String, value: String },
}

/// A command's result, held until its transaction has committed.
pub(crate) enum Answer {
    Outcomes(Vec<AppendOutcome>),
    Unit,
    Delivery(Option<Delivery>),
}

/// Whoever waits for one command.
pub(crate) enum Waiter {
    Append(Reply<Vec<AppendOutcome>>),
    Unit(Reply<()>),
    Requeue(Reply<Option<Delivery>>),
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
        }
    }
}

fn mismatch() -> crate::StoreError {
    unavailable_bare("the store writer answered the wrong request")
}
