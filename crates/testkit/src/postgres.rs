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

/// A PostgreSQL server of the test's own (`initdb` in a temporary directory, a free loopback
/// port, `wal_level=logical`), for tests that restart or stop the server without disturbing
/// other tests. Stopped and removed on drop.
pub struct PrivateServer {
    dir: std::path::PathBuf,
    port: u16,
    bindir: std::path::PathBuf,
}

impl PrivateServer {
    /// Creates and starts it.
    ///
    /// # Panics
    /// When PostgreSQL's server programs are missing or it does not start.
    #[must_use]
    pub fn start() -> Self {
        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|d| std::path::Path::new(d).join("initdb").exists())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::fs::read_dir("/usr/lib/postgresql")
                    .ok()
                    .and_then(|rd| {
                        let mut v: Vec<_> = rd
                            .filter_map(Result::ok)
                            .map(|e| e.path().join("bin"))
                            .collect();
                        v.sort();
                        v.pop()
                    })
            })
            .expect("PostgreSQL server programs (initdb, pg_ctl)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "estafeta-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create data dir");
        let s = Self { dir, port, bindir };
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&s.dir)
                .status()
                .is_ok_and(|st| st.success());
            assert!(ok, "chown of the private PostgreSQL directory failed");
        }
        s.run(
            "initdb",
            &[
                "-D",
                &s.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        s.ctl("start");
        s
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bindir.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .output()
            .expect("running a PostgreSQL program");
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl(&self, action: &str) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", data.as_str(), "-l", log.as_str(), "-w", "-t", "60"];
        if action != "stop" {
            args.extend(["-o", opts.as_str()]);
        }
        args.extend(["-m", "fast", action]);
        self.run("pg_ctl", &args);
    }

    /// Its URL for a database.
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL through psql; returns the output or the error.
    ///
    /// # Errors
    /// psql's stderr.
    pub fn sql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .arg(self.url(database))
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Stops the server (fast shutdown: sessions are ended, as in a real restart).
    pub fn stop(&self) {
        self.ctl("stop");
    }

    /// Starts it again after [`PrivateServer::stop`].
    pub fn start_again(&self) {
        self.ctl("start");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new(if is_root() { "runuser" } else { "sh" })
            .args(if is_root() {
                vec!["-u", "postgres", "--"]
            } else {
                vec!["-c", "exec \"$0\" \"$@\""]
            })
            .arg(self.bindir.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
