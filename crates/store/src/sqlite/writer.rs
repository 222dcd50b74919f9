//! The single writer thread and its group commit: write commands arrive over a bounded
//! channel; the writer takes everything queued (up to a cap), runs it in ONE transaction,
//! commits once (one fsync) and then answers every waiter.
//!
//! A command that fails on its own (a constraint, a missing delivery) must not take the
//! others down. Savepoints per command would isolate it, but they copy every page a command
//! touches into a sub-journal, which costs more than the SQL itself. So a batch first runs
//! without them; only if a command fails is the transaction rolled back and the batch run
//! again with a savepoint around each command. Both runs see the same database and clock,
//! so they compute the same results.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use estafeta_core::metric_names::{STORE_BATCH_SIZE, STORE_COMMIT_DURATION};
use rusqlite::Connection;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::checkpoint::Checkpointer;
use super::codec::{micros, ts};
use super::command::{Answer, Command, Op, Reply, Waiter};
use super::errors::{
    closed, dooms_transaction, from_sqlite, replicate, share, unavailable, unavailable_bare,
};
use super::write_ops::{self, Clock};
use crate::{StoreError, StoreResult};

/// Most commands committed in one transaction.
const MAX_BATCH_COMMANDS: usize = 2_000;
/// Roughly the most bytes committed in one transaction.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Commands that may wait in the channel before senders are held back.
const QUEUE_CAPACITY: usize = 4_096;
/// How often expired dedupe rows are deleted, and how many at a time.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
const PRUNE_CHUNK: i64 = 1_000;

enum Message {
    Write(Command),
    Shutdown,
}

/// The async side of the writer: sends commands and waits for their answers.
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Message>,
    closed: std::sync::atomic::AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Starts the writer thread, which owns `conn` and `checkpointer` from now on.
    pub(crate) fn spawn(
        conn: Connection,
        checkpointer: Checkpointer,
        dedupe_window: Duration,
    ) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let window_us = i64::try_from(dedupe_window.as_micros()).unwrap_or(i64::MAX);
        let writer = Writer {
            conn,
            checkpointer,
            window_us,
            last_prune: None,
            backlog: false,
        };
        let thread = std::thread::Builder::new()
            .name("estafeta-writer".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| unavailable("cannot start the store writer thread", e))?;
        Ok(Self {
            tx,
            closed: std::sync::atomic::AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Fails with `Unavailable` once the store is closed.
    pub(crate) fn ensure_open(&self) -> StoreResult<()> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    /// Queues `op` and waits until it is durable (or failed). `waiter` picks the kind of
    /// answer, e.g. `Waiter::Append`.
    pub(crate) async fn submit<T>(
        &self,
        op: Op,
        waiter: impl FnOnce(Reply<T>) -> Waiter,
    ) -> StoreResult<T> {
        self.ensure_open()?;
        let (reply, answer) = oneshot::channel();
        let command = Command {
            op,
            waiter: waiter(reply),
        };
        self.tx
            .send(Message::Write(command))
            .await
            .map_err(|_| closed())?;
        answer
            .await
            .map_err(|_| unavailable_bare("the store writer stopped"))?
    }

    /// Refuses new writes, lets the writer finish what is queued and waits for its thread.
    pub(crate) async fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
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

/// Why a batch's transaction did not commit.
enum Failure {
    /// The transaction is lost (I/O, disk full, lock timeout): every command fails.
    Doomed(StoreError),
    /// A command failed on its own: run the batch again with savepoints.
    Isolate,
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Self::Doomed(err)
    }
}

struct Writer {
    conn: Connection,
    checkpointer: Checkpointer,
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
                        weight += cmd.op.weight();
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
        self.checkpointer.stop();
    }

    /// Runs one batch in one transaction and answers every command.
    fn commit(&mut self, batch: Vec<Command>) {
        let started = Instant::now();
        let size = batch.len();
        let now = Utc::now();
        let now_us = micros(&now);
        let clock = Clock {
            now: ts(&now),
            now_us,
            dedupe_cutoff_us: now_us.saturating_sub(self.window_us),
        };
        let (ops, waiters): (Vec<Op>, Vec<Waiter>) =
            batch.into_iter().map(|c| (c.op, c.waiter)).unzip();
        let mut result = self.transaction(&ops, &clock, false);
        if matches!(result, Err(Failure::Isolate)) {
            self.rollback();
            result = self.transaction(&ops, &clock, true);
        }
        metrics::histogram!(STORE_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(STORE_BATCH_SIZE).record(size as f64);
        match result {
            Ok(answers) => {
                for (waiter, answer) in waiters.into_iter().zip(answers) {
                    waiter.send(answer);
                }
                self.checkpointer.kick();
            }
            Err(failure) => {
                self.rollback();
                let err = match failure {
                    Failure::Doomed(err) => err,
                    Failure::Isolate => unavailable_bare("a write could not be isolated"),
                };
                let (reason, source) = share(err);
                tracing::warn!(error = %reason, commands = size, "store group commit failed");
                for waiter in waiters {
                    waiter.send(Err(replicate(&reason, source.as_ref())));
                }
            }
        }
    }

    /// One attempt at the batch. Without `isolate`, the first command that fails ends the
    /// attempt with [`Failure::Isolate`]; with it, each command runs in a savepoint and a
    /// failing one is rolled back alone and answered with its error.
    fn transaction(
        &mut self,
        ops: &[Op],
        clock: &Clock,
        isolate: bool,
    ) -> Result<Vec<StoreResult<Answer>>, Failure> {
        exec(&self.conn, "BEGIN IMMEDIATE")?;
        self.prune(clock, isolate)?;
        let conn = &self.conn;
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            if isolate {
                exec(conn, "SAVEPOINT command")?;
            }
            match op.run(conn, clock) {
                Ok(answer) => {
                    if isolate {
                        exec(conn, "RELEASE command")?;
                    }
                    answers.push(Ok(answer));
                }
                Err(err) if dooms_transaction(&err) || conn.is_autocommit() => {
                    return Err(Failure::Doomed(err));
                }
                Err(_) if !isolate => return Err(Failure::Isolate),
                Err(err) => {
                    exec(conn, "ROLLBACK TO command")?;
                    exec(conn, "RELEASE command")?;
                    answers.push(Err(err));
                }
            }
        }
        exec(conn, "COMMIT")?;
        Ok(answers)
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit()
            && let Err(err) = exec(&self.conn, "ROLLBACK")
        {
            tracing::warn!(error = %err, "cannot roll back a store transaction");
        }
    }

    /// Deletes a chunk of expired dedupe rows about once a second (more often while a
    /// backlog remains), inside the batch's transaction.
    fn prune(&mut self, clock: &Clock, isolate: bool) -> Result<(), Failure> {
        let due = self.backlog || self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
        if !due {
            return Ok(());
        }
        self.last_prune = Some(Instant::now());
        if isolate {
            exec(&self.conn, "SAVEPOINT prune")?;
        }
        match write_ops::prune_dedupe(&self.conn, clock, PRUNE_CHUNK) {
            Ok(deleted) => {
                self.backlog = i64::try_from(deleted).unwrap_or(i64::MAX) >= PRUNE_CHUNK;
                if isolate {
                    exec(&self.conn, "RELEASE prune")?;
                }
                Ok(())
            }
            Err(err) if dooms_transaction(&err) || self.conn.is_autocommit() => Err(err.into()),
            Err(_) if !isolate => Err(Failure::Isolate),
            Err(err) => {
                tracing::warn!(error = %err, "cannot prune expired dedupe entries");
                self.backlog = false;
                exec(&self.conn, "ROLLBACK TO prune")?;
                exec(&self.conn, "RELEASE prune")?;
                Ok(())
            }
        }
    }
}

/// Runs a transaction-control statement (prepared once, reused).
fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(from_sqlite)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use estafeta_core::{Event, EventId, TenantId};
    use tokio::sync::oneshot::Receiver;

    use super::super::codec::EventRow;
    use super::super::connection::open_writer;
    use super::super::schema::migrate;
    use super::super::write_ops::AppendItem;
    use super::*;
    use crate::{AppendOutcome, StoreError};

    fn writer(dir: &tempfile::TempDir) -> Writer {
        let path = dir.path().join("w.db");
        let mut conn = open_writer(&path).expect("open");
        migrate(&mut conn).expect("migrate");
        let checkpointer = Checkpointer::start(&path).expect("checkpointer");
        Writer {
            conn,
            checkpointer,
            window_us: 60_000_000,
            last_prune: None,
            backlog: false,
        }
    }

    fn event(id: EventId) -> Event {
        Event {
            id,
            tenant: TenantId::default(),
            source_id: "http".to_owned(),
            ce_id: id.to_string(),
            ce_source: "test".to_owned(),
            ty: "t".to_owned(),
            subject: None,
            time: Utc::now(),
            datacontenttype: None,
            dataschema: None,
            key: None,
            extensions: serde_json::Map::new(),
            data: None,
            data_is_base64: false,
            received_at: Utc::now(),
        }
    }

    type Outcomes = Receiver<StoreResult<Vec<AppendOutcome>>>;

    fn append(id: EventId, key: &str) -> (Command, Outcomes) {
        let (reply, rx) = oneshot::channel();
        let item = AppendItem {
            event: EventRow::encode(&event(id)).expect("encode"),
            dedupe_key: Some(key.to_owned()),
            deliveries: Vec::new(),
        };
        (
            Command {
                op: Op::Append(vec![item]),
                waiter: Waiter::Append(reply),
            },
            rx,
        )
    }

    fn setting(name: &str) -> (Command, Receiver<StoreResult<()>>) {
        let (reply, rx) = oneshot::channel();
        let op = Op::PutSetting {
            name: name.to_owned(),
            value: "v".to_owned(),
        };
        (
            Command {
                op,
                waiter: Waiter::Unit(reply),
            },
            rx,
        )
    }

    fn count(w: &Writer, sql: &str) -> i64 {
        w.conn.query_row(sql, [], |r| r.get(0)).expect("count")
    }

    #[test]
    fn a_failing_command_does_not_poison_its_batch() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = writer(&dir);
        let taken = EventId::new();
        let (seed, _) = append(taken, "seed");
        w.commit(vec![seed]);

        let first = EventId::new();
        let (c1, mut r1) = append(first, "a");
        let (c2, mut r2) = append(taken, "b"); // the id exists: this command fails
        let (c3, mut r3) = setting("s");
        let (c4, mut r4) = append(EventId::new(), "a"); // duplicate of c1's key
        w.commit(vec![c1, c2, c3, c4]);

        assert_eq!(
            r1.try_recv().expect("answer").ok(),
            Some(vec![AppendOutcome::Inserted(first)])
        );
        assert!(matches!(
            r2.try_recv().expect("answer"),
            Err(StoreError::Invalid(_))
        ));
        assert!(r3.try_recv().expect("answer").is_ok());
        assert_eq!(
            r4.try_recv().expect("answer").ok(),
            Some(vec![AppendOutcome::Duplicate(first)])
        );
        assert_eq!(count(&w, "SELECT COUNT(*) FROM events"), 2);
        assert_eq!(
            count(&w, "SELECT COUNT(*) FROM dedupe WHERE dedupe_key = 'b'"),
            0
        );
        assert_eq!(count(&w, "SELECT COUNT(*) FROM settings"), 1);
        assert!(w.conn.is_autocommit());
    }

    #[test]
    fn a_lost_transaction_fails_every_command_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = writer(&dir);
        w.conn
            .pragma_update(None, "query_only", true)
            .expect("query_only");
        let (c1, mut r1) = append(EventId::new(), "a");
        let (c2, mut r2) = setting("s");
        w.commit(vec![c1, c2]);
        for err in [
            r1.try_recv().expect("answer").err(),
            r2.try_recv().expect("answer").err(),
        ] {
            assert!(
                matches!(err, Some(StoreError::Unavailable { .. })),
                "{err:?}"
            );
        }
        w.conn
            .pragma_update(None, "query_only", false)
            .expect("writable again");
        assert!(w.conn.is_autocommit());
        assert_eq!(count(&w, "SELECT COUNT(*) FROM events"), 0);
        assert_eq!(count(&w, "SELECT COUNT(*) FROM settings"), 0);
        let (c3, mut r3) = setting("later");
        w.commit(vec![c3]);
        assert!(r3.try_recv().expect("answer").is_ok());
    }

    #[test]
    fn expired_dedupe_rows_are_pruned_in_chunks() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = writer(&dir);
        w.window_us = 0;
        let batch: Vec<Command> = (0..5)
            .map(|i| append(EventId::new(), &format!("k{i}")).0)
            .collect();
        w.commit(batch);
        assert_eq!(count(&w, "SELECT COUNT(*) FROM dedupe"), 5);
        w.last_prune = None;
        let (c, _) = setting("tick");
        w.commit(vec![c]);
        assert_eq!(count(&w, "SELECT COUNT(*) FROM dedupe"), 0);
    }
}
