//! The background checkpointer: copies committed WAL pages into the database file on its own
//! connection and thread, so that work (and its fsync of the database file) mostly happens
//! beside the writer's commits instead of inside them.
//!
//! The writer keeps SQLite's automatic checkpoint as a backstop: once the WAL passes
//! `wal_autocheckpoint` pages it checkpoints inline too, which finds most pages already
//! copied, and then restarts the WAL from the beginning, so the file stays bounded even
//! under a constant write load.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::errors::{from_sqlite, unavailable};
use crate::StoreResult;

/// Least time between two background checkpoints.
const PAUSE: Duration = Duration::from_millis(50);

/// The writer's side: nudges the checkpointer after commits and stops it.
pub(crate) struct Checkpointer {
    kick: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a read-write connection to an already migrated database and starts the thread.
    pub(crate) fn start(path: &Path) -> StoreResult<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(from_sqlite)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(from_sqlite)?;
        // Sync the WAL before copying it and the database file after: a checkpoint must never
        // be what loses an acknowledged write.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(from_sqlite)?;
        let (kick, rx) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("estafeta-ckpt".to_owned())
            .spawn(move || run(&conn, &rx))
            .map_err(|e| unavailable("cannot start the store checkpoint thread", e))?;
        Ok(Self {
            kick: Some(kick),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint soon; never blocks.
    pub(crate) fn kick(&self) {
        if let Some(kick) = &self.kick {
            match kick.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!("store checkpoint thread stopped");
                }
            }
        }
    }

    /// Stops the thread after its current checkpoint and waits for it.
    pub(crate) fn stop(&mut self) {
        self.kick = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("store checkpoint thread panicked");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(conn: &Connection, kicks: &Receiver<()>) {
    while kicks.recv().is_ok() {
        let result = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .map_err(from_sqlite);
        match result {
            Ok((wal_pages, copied)) => tracing::trace!(wal_pages, copied, "store checkpoint"),
            // Another checkpoint (the writer's backstop) may be running: try again later.
            Err(err) => tracing::debug!(error = %err, "store checkpoint skipped"),
        }
        std::thread::sleep(PAUSE);
    }
}
