//! A throw-away PostgreSQL database per test, on the server named by `ESTAFETA_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432`). SQL runs through `psql`, so tests need
//! nothing but the client. Databases and replication slots are named after the test
//! process, so leftovers of a process that died are found and dropped by the next run.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "estafeta_t_";

/// The server's base URL (no database).
#[must_use]
pub fn server_url() -> String {
    std::env::var("ESTAFETA_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Runs SQL on a database of the test server; returns `psql -At` output. Panics with
/// psql's message on failure (this is test code).
///
/// # Panics
/// When psql fails.
pub fn psql(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(format!("{}/{database}", server_url()))
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", "-c", sql])
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql failed on `{sql}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Like [`psql`], returning the error text instead of panicking.
///
/// # Errors
/// psql's stderr.
pub fn try_psql(database: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .arg(format!("{}/{database}", server_url()))
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A database created for one test, dropped (with its replication slots) on drop.
pub struct TestDb {
    name: String,
}

impl TestDb {
    /// Creates an empty database. Also drops leftovers of test processes that no longer run.
    ///
    /// # Panics
    /// When the server cannot be reached.
    #[must_use]
    pub fn create() -> Self {
        sweep_leftovers();
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let _ = psql("postgres", &format!("CREATE DATABASE {name}"));
        Self { name }
    }

    /// The database name (also a good prefix for slot and publication names).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its connection URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("{}/{}", server_url(), self.name)
    }

    /// Runs SQL in it; returns `psql -At` output.
    pub fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

fn drop_database(name: &str) {
    let _ = try_psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '{name}' AND active_pid IS NOT NULL"
        ),
    );
    for _ in 0..50 {
        let left = try_psql(
            "postgres",
            &format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{name}' AND NOT active; \
                 SELECT count(*) FROM pg_replication_slots WHERE database = '{name}'"
            ),
        );
        match left {
            Ok(n) if n.lines().last() == Some("0") => break,
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    let _ = try_psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

/// Drops databases (and their slots) of test processes that are gone.
fn sweep_leftovers() {
    let Ok(list) = try_psql(
        "postgres",
        &format!("SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'"),
    ) else {
        return;
    };
    for db in list.lines() {
        let pid = db
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| {
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }) {
            drop_database(db);
        }
    }
}
