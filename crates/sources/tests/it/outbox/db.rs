//! The test databases: a PostgreSQL database per test (`TestDb`), a MariaDB/MySQL database
//! per test (named after the process, dropped at the end, leftovers of dead processes swept),
//! and a SQLite file; each with the same `outbox` table.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use estafeta_testkit::postgres::TestDb;

// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pg,
    My,
    Lite,
}

/// A throw-away MariaDB/MySQL database on the server named by `ESTAFETA_TEST_MYSQL_URL`
/// (default `mysql://root@127.0.0.1:3306`), named after the test process and dropped on
/// drop; leftovers of test processes that died are dropped by the next run.
pub(crate) struct MyDb {
    name: String,
}

struct MyServer {
    host: String,
    port: String,
    user: String,
    password: Option<String>,
}

fn my_server() -> MyServer {
    let url = std::env::var("ESTAFETA_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned());
    let rest = url
        .trim_start_matches("mysql://")
        .trim_start_matches("mariadb://");
    let rest = rest.split('/').next().unwrap();
    let (creds, hostport) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (user, password) = match creds.split_once(':') {
        Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
        None => (creds.to_owned(), None),
    };
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    MyServer {
        host: host.to_owned(),
        port: port.to_owned(),
        user,
        password,
    }
}

fn mysql_cli(database: Option<&str>, sql: &str) -> String {
    let s = my_server();
    let mut cmd = Command::new("mysql");
    cmd.args([
        "--protocol=TCP",
        "-h",
        &s.host,
        "-P",
        &s.port,
        "-u",
        &s.user,
    ])
    .args(["-N", "-B", "-e", sql]);
    if let Some(p) = &s.password {
        cmd.env("MYSQL_PWD", p);
    }
    if let Some(db) = database {
        cmd.arg(db);
    }
    let out = cmd.output().expect("running mysql");
    assert!(
        out.status.success(),
        "mysql failed on `{sql}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Like `psql -At`: fields joined by `|`, NULL as empty.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.split('\t')
                .map(|f| if f == "NULL" { "" } else { f })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const MY_PREFIX: &str = "estafeta_ob_";
static NEXT_MY: AtomicU32 = AtomicU32::new(0);

impl MyDb {
    fn create() -> Self {
        for db in mysql_cli(None, &format!("SHOW DATABASES LIKE '{MY_PREFIX}%'")).lines() {
            let pid = db
                .strip_prefix(MY_PREFIX)
                .and_then(|r| r.split('_').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = mysql_cli(None, &format!("DROP DATABASE IF EXISTS `{db}`"));
            }
        }
        let name = format!(
            "{MY_PREFIX}{}_{}",
            std::process::id(),
            NEXT_MY.fetch_add(1, Ordering::Relaxed)
        );
        mysql_cli(None, &format!("CREATE DATABASE `{name}`"));
        Self { name }
    }

    fn url(&self) -> String {
        let s = my_server();
        let creds = match &s.password {
            Some(p) => format!("{}:{p}", s.user),
            None => s.user.clone(),
        };
        format!("mysql://{creds}@{}:{}/{}", s.host, s.port, self.name)
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = mysql_cli(None, &format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

pub(crate) struct LiteDb {
    dir: tempfile::TempDir,
}

impl LiteDb {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("app.db")
    }

    fn sql(&self, sql: &str) -> String {
        let conn = rusqlite::Connection::open(self.path()).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        if !sql.trim_start().to_ascii_uppercase().starts_with("SELECT") {
            conn.execute_batch(sql).unwrap();
            return String::new();
        }
        let mut st = conn.prepare(sql).unwrap();
        let n = st.column_count();
        st.query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .join("\n")
    }
}

pub(crate) enum Db {
    Pg(TestDb),
    My(MyDb),
    Lite(LiteDb),
}

impl Db {
    /// A new database with an empty `outbox` table.
    pub(crate) fn with_outbox(kind: Kind) -> Self {
        let db = match kind {
            Kind::Pg => Db::Pg(TestDb::create()),
            Kind::My => Db::My(MyDb::create()),
            Kind::Lite => Db::Lite(LiteDb {
                dir: tempfile::tempdir().unwrap(),
            }),
        };
        db.sql(match kind {
            Kind::Pg => {
                "CREATE TABLE outbox (id bigserial PRIMARY KEY, event_type text, aggregate_id text, \
                 payload text, status varchar(12) NOT NULL DEFAULT 'PENDING', processed_at timestamptz, \
                 error text, attempts int NOT NULL DEFAULT 0);
                 CREATE INDEX outbox_pending ON outbox (id) WHERE status = 'PENDING'"
            }
            Kind::My => {
                "CREATE TABLE outbox (id BIGINT AUTO_INCREMENT PRIMARY KEY, event_type VARCHAR(100), \
                 aggregate_id VARCHAR(100), payload TEXT, status VARCHAR(12) NOT NULL DEFAULT 'PENDING', \
                 processed_at DATETIME(6) NULL, error TEXT, attempts INT NOT NULL DEFAULT 0, \
                 KEY outbox_status (status, id))"
            }
            Kind::Lite => {
                "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_type TEXT, \
                 aggregate_id TEXT, payload TEXT, status TEXT NOT NULL DEFAULT 'PENDING', \
                 processed_at TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0)"
            }
        });
        db
    }

    pub(crate) fn url(&self) -> String {
        match self {
            Db::Pg(d) => d.url(),
            Db::My(d) => d.url(),
            Db::Lite(d) => format!("sqlite://{}", d.path().display()),
        }
    }

    /// Runs SQL; a query's rows come back as lines of `|`-separated fields.
    pub(crate) fn sql(&self, sql: &str) -> String {
        match self {
            Db::Pg(d) => d.sql(sql),
            Db::My(d) => mysql_cli(Some(&d.name), sql),
            Db::Lite(d) => d.sql(sql),
        }
    }

    pub(crate) fn count(&self, condition: &str) -> usize {
        self.sql(&format!("SELECT count(*) FROM outbox WHERE {condition}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Inserts `n` rows of type `bulk` with subjects `b-<from>`, `b-<from+1>`, …
    pub(crate) fn insert_many(&self, n: usize, from: usize) {
        let rows: Vec<String> = (from..from + n)
            .map(|i| format!("('bulk', 'b-{i}', '{{\"i\": {i}}}')"))
            .collect();
        for chunk in rows.chunks(500) {
            self.sql(&format!(
                "INSERT INTO outbox (event_type, aggregate_id, payload) VALUES {}",
                chunk.join(", ")
            ));
        }
    }
}
