//! The single writer thread and its group commit: write commands arrive over a bounded
//! channel; the writer takes everything queued (up to a cap), runs it in ONE transaction with
//! a savepoint per command, commits once (one fsync) and then answers every waiter.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use estafeta_core::metric_names::{STORE_BATCH_SIZE, STORE_COMMIT_DURATION};
use estafeta_core::{Delivery, DeliveryId};
use rusqlite::Connection;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::codec::{AttemptRow, DeliveryRow, micros, ts};
use super::errors::{
    SharedError, closed, dooms_transaction, from_sqlite, replicate, share, unavailable,
    unavailable_bare,
};
use super::write_ops::{self, AppendItem, Clock};
use crate::{AppendOutcome, StoreResult};

/// Most commands committed in one transaction.
const MAX_BATCH_COMMANDS: usize = 2_000;
/// Roughly the most bytes committed in one transaction.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Commands that may wait in the channel before senders are held back.
const QUEUE_CAPACITY: usize = 4_096;
/// How often expired dedupe rows are deleted, and how many at a time.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
const PRUNE_CHUNK: i64 = 1_000;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// One durable write and where to send its result.
pub(crate) enum Command {
    Append { items: Vec<AppendItem>, reply: Reply<Vec<AppendOutcome>> },
    RecordAttempts { rows: Vec<AttemptRow>, reply: Reply<()> },
    InsertDeliveries { rows: Vec<DeliveryRow>, reply: Reply<()> },
    Requeue { tenant: String, id: DeliveryId, reply: Reply<Option<Delivery>> },
    PutCursor { source_id: String, value: String, reply: Reply<()> },
    PutSetting { name: String, value: String, reply: Reply<()> },
}

enum Message {
    Write(Command),
    Shutdown,
}

/// A command's result before it is known whether its transaction committed.
enum Answer {
    Outcomes(Vec<AppendOutcome>),
    Unit,
    Delivery(Option<Delivery>),
}

/// Whoever waits for one command.
enum Waiter {
    Append(Reply<Vec<AppendOutcome>>),
    Unit(Reply<()>),
    Requeue(Reply<Option<Delivery>>),
}

impl Waiter {
    fn send(self, result: StoreResult<Answer>) {
        // A waiter that has gone away (its caller was cancelled) does not matter.
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

impl Command {
    fn weight(&self) -> usize {
        match self {
            Self::Append { items, .. } => items.iter().map(AppendItem::weight).sum(),
            Self::RecordAttempts { rows, .. } => rows.iter().map(AttemptRow::weight).sum(),
            Self::InsertDeliveries { rows, .. } => rows.iter().map(DeliveryRow::weight).sum(),
            Self::Requeue { tenant, .. } => 100 + tenant.len(),
            Self::PutCursor { source_id: a, value: b, .. }
            | Self::PutSetting { name: a, value: b, .. } => 100 + a.len() + b.len(),
        }
    }

    fn into_waiter(self) -> Waiter {
        match self {
            Self::Append { reply, .. } => Waiter::Append(reply),
            Self::Requeue { reply, .. } => Waiter::Requeue(reply),
            Self::RecordAttempts { reply, .. }
            | Self::InsertDeliveries { reply, .. }
            | Self::PutCursor { reply, .. }
            | Self::PutSetting { reply, .. } => Waiter::Unit(reply),
        }
    }

    fn run(self, conn: &Connection, clock: &Clock) -> (Waiter, StoreResult<Answer>) {
        match self {
            Self::Append { items, reply } => (
                Waiter::Append(reply),
                write_ops::append(conn, &items, clock).map(Answer::Outcomes),
            ),
            Self::RecordAttempts { rows, reply } => (
                Waiter::Unit(reply),
                write_ops::record_attempts(conn, &rows, clock).map(|()| Answer::Unit),
            ),
            Self::InsertDeliveries { rows, reply } => (
                Waiter::Unit(reply),
                write_ops::insert_deliveries(conn, &rows).map(|()| Answer::Unit),
            ),
            Self::Requeue { tenant, id, reply } => (
                Waiter::Requeue(reply),
                write_ops::requeue_delivery(conn, &tenant, id, clock).map(Answer::Delivery),
            ),
            Self::PutCursor { source_id, value, reply } => (
                Waiter::Unit(reply),
                write_ops::put_cursor(conn, &source_id, &value, clock).map(|()| Answer::Unit),
            ),
            Self::PutSetting { name, value, reply } => (
                Waiter::Unit(reply),
                write_ops::put_setting(conn, &name, &value).map(|()| Answer::Unit),
            ),
        }
    }
}

/// The async side of the writer: sends commands and waits for their answers.
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Message>,
    closed: std::sync::atomic::AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Starts the writer thread, which owns `conn` from now on.
    pub(crate) fn spawn(conn: Connection, dedupe_window: Duration) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let window_us = i64::try_from(dedupe_window.as_micros()).unwrap_or(i64::MAX);
        let thread = std::thread::Builder::new()
            .name("estafeta-store-writer".to_owned())
            .spawn(move || Writer { conn, window_us, last_prune: None, backlog: false }.run(rx))
            .map_err(|e| unavailable("cannot start the store writer thread", e))?;
        Ok(Self {
            tx,
            closed: std::sync::atomic::AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Fails with `Unavailable` once the store is closed.
    pub(crate) fn ensure_open(&self) -> StoreResult<()> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) { Err(closed()) } else { Ok(()) }
    }

    /// Queues a command built around a fresh reply channel and waits until it is durable.
    pub(crate) async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> StoreResult<T> {
        self.ensure_open()?;
        let (reply, answer) = oneshot::channel();
        self.tx.send(Message::Write(make(reply))).await.map_err(|_| closed())?;
        answer.await.map_err(|_| unavailable_bare("the store writer stopped"))?
    }

    /// Refuses new writes, lets the writer finish what is queued and waits for its thread.
    pub(crate) async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        let mut thread = self.thread.lock().await;
        let Some(handle) = thread.take() else { return };
        // Fails only when the writer is already gone, which is what we want anyway.
        let _ = self.tx.send(Message::Shutdown).await;
        match tokio::task::spawn_blocking(move || handle.join()).await {
            Ok(Ok(())) => tracing::debug!("store writer stopped"),
            Ok(Err(_)) => tracing::error!("store writer thread panicked"),
            Err(err) => tracing::error!(error = %err, "cannot wait for the store writer"),
        }
    }
}

struct Writer {
    conn: Connection,
    window_us: i64,
    last_prune: Option<Instant>,
    backlog: bool,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut weight = 0;
            let mut stopping = false;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Shutdown => stopping = true,
                    Message::Write(cmd) => {
                        weight += cmd.weight();
                        batch.push(cmd);
                    }
                }
                if batch.len() >= MAX_BATCH_COMMANDS || weight >= MAX_BATCH_BYTES {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !batch.is_empty() {
                self.commit(std::mem::take(&mut batch));
            }
            if stopping {
                // Senders now fail at once; what is already queued is still drained above.
                rx.close();
            }
        }
    }

    /// Runs one batch in one transaction and answers every command.
    fn commit(&mut self, batch: Vec<Command>) {
        let started = Instant::now();
        let size = batch.len();
        let now = Utc::now();
        let now_us = micros(&now);
        let clock =
            Clock { now: ts(&now), now_us, dedupe_cutoff_us: now_us.saturating_sub(self.window_us) };
        let mut done: Vec<(Waiter, StoreResult<Answer>)> = Vec::with_capacity(size);
        let mut pending = batch.into_iter();
        let outcome = self.run_transaction(&clock, &mut pending, &mut done);
        metrics::histogram!(STORE_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(STORE_BATCH_SIZE).record(size as f64);
        match outcome {
            Ok(()) => {
                for (waiter, result) in done {
                    waiter.send(result);
                }
            }
            Err(err) => {
                if !self.conn.is_autocommit() {
                    let _ = exec(&self.conn, "ROLLBACK");
                }
                let (reason, source) = share(err);
                tracing::warn!(error = %reason, commands = size, "store group commit failed");
                fail_all(&reason, source.as_ref(), done.into_iter().map(|(w, _)| w));
                fail_all(&reason, source.as_ref(), pending.map(Command::into_waiter));
            }
        }
    }

    fn run_transaction(
        &mut self,
        clock: &Clock,
        pending: &mut std::vec::IntoIter<Command>,
        done: &mut Vec<(Waiter, StoreResult<Answer>)>,
    ) -> StoreResult<()> {
        let conn = &self.conn;
        exec(conn, "BEGIN IMMEDIATE")?;
        self.prune(clock)?;
        let conn = &self.conn;
        for cmd in pending.by_ref() {
            exec(conn, "SAVEPOINT command")?;
            let (waiter, result) = cmd.run(conn, clock);
            match result {
                Ok(answer) => {
                    exec(conn, "RELEASE command")?;
                    done.push((waiter, Ok(answer)));
                }
                Err(err) if dooms_transaction(&err) || conn.is_autocommit() => {
                    done.push((waiter, Ok(Answer::Unit)));
                    return Err(err);
                }
                Err(err) => {
                    exec(conn, "ROLLBACK TO command")?;
                    exec(conn, "RELEASE command")?;
                    done.push((waiter, Err(err)));
                }
            }
        }
        exec(conn, "COMMIT")
    }

    /// Deletes a chunk of expired dedupe rows about once a second (more often while a
    /// backlog remains), inside the batch's transaction.
    fn prune(&mut self, clock: &Clock) -> StoreResult<()> {
        let due = self.backlog || self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
        if !due {
            return Ok(());
        }
        self.last_prune = Some(Instant::now());
        exec(&self.conn, "SAVEPOINT prune")?;
        match write_ops::prune_dedupe(&self.conn, clock, PRUNE_CHUNK) {
            Ok(deleted) => {
                self.backlog = i64::try_from(deleted).unwrap_or(i64::MAX) >= PRUNE_CHUNK;
                exec(&self.conn, "RELEASE prune")
            }
            Err(err) if dooms_transaction(&err) || self.conn.is_autocommit() => Err(err),
            Err(err) => {
                tracing::warn!(error = %err, "cannot prune expired dedupe entries");
                self.backlog = false;
                exec(&self.conn, "ROLLBACK TO prune")?;
                exec(&self.conn, "RELEASE prune")
            }
        }
    }
}

fn fail_all(reason: &str, source: Option<&SharedError>, waiters: impl Iterator<Item = Waiter>) {
    for waiter in waiters {
        waiter.send(Err(replicate(reason, source)));
    }
}

/// Runs a transaction-control statement (prepared once, reused).
fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ()).map_err(from_sqlite)
}
