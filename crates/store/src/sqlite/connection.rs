//! Opening SQLite connections with the store's settings, and the small pool of read-only
//! connections that queries run on (inside `spawn_blocking`, never on the async runtime).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::errors::{from_sqlite, unavailable, unavailable_bare};
use crate::StoreResult;

/// How long a connection waits for a lock held by another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection (the listing queries have many shapes).
const STATEMENT_CACHE: usize = 64;
/// WAL size at which the writer checkpoints inline (the background checkpointer usually
/// has copied most of it by then).
const WAL_CHECKPOINT_BYTES: i64 = 16 * 1024 * 1024;

/// Opens the one read-write connection, creating the file and its folders if needed.
pub(crate) fn open_writer(path: &Path) -> StoreResult<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable("cannot create the data directory", e))?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(from_sqlite)?;
    configure(&conn)?;
    // SQLite's default 4 KiB pages: 16 KiB pages cut the CPU per captured event by about
    // 10% (fewer WAL frames per commit) but raised the peak memory of `estafeta bench
    // --scenario batch100-batched` from 200 MB to 250 MB and the bytes written by a quarter.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(from_sqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unavailable_bare(format!(
            "the database cannot use write-ahead logging (journal mode stays `{mode}`)"
        )));
    }
    // Every commit is fsync'd: an acknowledged append survives a power cut.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(from_sqlite)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(from_sqlite)?;
    // The background checkpointer copies the WAL into the database file; the writer steps
    // in (and restarts the WAL) only once it passes 16 MiB, so the file stays bounded.
    let page_size: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .map_err(from_sqlite)?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        WAL_CHECKPOINT_BYTES / page_size.max(512),
    )
    .map_err(from_sqlite)?;
    // Keep the WAL file from staying huge after a burst.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(from_sqlite)?;
    Ok(conn)
}

/// Opens a read-only connection to a database the writer has already set up.
pub(crate) fn open_reader(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(from_sqlite)?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> StoreResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(from_sqlite)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(from_sqlite)?;
    // 16 MiB of page cache per connection.
    conn.pragma_update(None, "cache_size", -16 * 1024)
        .map_err(from_sqlite)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// A bounded set of read-only connections. At most `size` queries run at once; idle
/// connections are reused, and one lost to a cancelled query is reopened on demand.
pub(crate) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReaderPool {
    /// A pool of up to `size` (at least one) connections, opened eagerly.
    pub(crate) fn open(path: &Path, size: usize) -> StoreResult<Self> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| open_reader(path))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self {
            path: path.to_owned(),
            idle: Mutex::new(idle),
            permits: Semaphore::new(size),
        })
    }

    /// Runs `f` on a pooled connection on the blocking thread pool.
    pub(crate) async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| unavailable_bare("the store is closed"))?;
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let path = self.path.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match pooled {
                Some(conn) => conn,
                None => match open_reader(&path) {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = f(&conn);
            (Some(conn), result)
        })
        .await
        .map_err(|e| unavailable("a database read did not finish", e))?;
        if let Some(conn) = conn {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
        result
    }
}
