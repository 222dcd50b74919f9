//! `kind: mysql` against the machine's MariaDB (log_bin, ROW, binlog_row_metadata=FULL):
//! snapshot, stream, types, envelopes, restarts, binlog rotation, connection cuts, purged
//! binlogs, set-up errors. Each test has its own database and replica id; SQL runs through
//! the `mariadb` client. The server is `ESTAFETA_TEST_MYSQL_HOST`/`_PORT` (default
//! 127.0.0.1:3306, user root without password).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use estafeta_sources::SourceState;
use serde_json::{Value, json};

use crate::harness::Harness;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn host() -> String {
    std::env::var("ESTAFETA_TEST_MYSQL_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

fn port() -> String {
    std::env::var("ESTAFETA_TEST_MYSQL_PORT").unwrap_or_else(|_| "3306".into())
}

/// Runs SQL as root; returns the tab-separated output. Panics with the client's message.
fn sql(database: &str, statements: &str) -> String {
    try_sql(database, statements).unwrap_or_else(|e| panic!("SQL failed: {statements}: {e}"))
}

fn try_sql(database: &str, statements: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args([
            "-uroot",
            "-h",
            &host(),
            "-P",
            &port(),
            "-N",
            "-B",
            "-e",
            statements,
        ])
        .args((!database.is_empty()).then_some(database))
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A database for one test, dropped at the end, with a replica id no other test uses.
struct TestDb {
    name: String,
    server_id: u32,
}

impl TestDb {
    fn create() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("estafeta_my_{pid}_{n}");
        sql("", &format!("CREATE DATABASE {name}"));
        Self {
            name,
            server_id: 100_000_000 + (pid % 1_000_000) * 16 + n,
        }
    }

    fn sql(&self, statements: &str) -> String {
        sql(&self.name, statements)
    }

    fn url(&self) -> String {
        format!("mysql://root@{}:{}/", host(), port())
    }

    fn config(&self, tables: &str, extra: &str) -> String {
        self.config_as(&self.url(), tables, extra)
    }

    fn config_as(&self, url: &str, tables: &str, extra: &str) -> String {
        let tables: Vec<String> = tables
            .split(',')
            .map(|t| format!("{}.{}", self.name, t.trim()))
            .collect();
        format!(
            "sources:\n  - id: my\n    kind: mysql\n    url: {url}\n    tables: [{}]\n    server_id: {}\n    batch_wait: 5ms\n{extra}",
            tables.join(", "),
            self.server_id
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = try_sql("", &format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

/// A user for one test, dropped at the end.
struct TestUser(String);

impl TestUser {
    fn create(db: &TestDb, grants: &str) -> Self {
        let user = format!("{}_u", db.name);
        sql(
            "",
            &format!(
                "DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'; GRANT {grants} ON *.* TO '{user}'@'%';"
            ),
        );
        Self(user)
    }

    fn url(&self) -> String {
        format!("mysql://{}:pw@{}:{}/", self.0, host(), port())
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = try_sql("", &format!("DROP USER IF EXISTS '{}'@'%'", self.0));
    }
}

fn of_type(h: &Harness, ty: &str) -> Vec<Value> {
    h.sink
        .all()
        .into_iter()
        .filter(|e| e.ty == ty)
        .filter_map(|e| e.data)
        .collect()
}

fn count(h: &Harness, ty: &str) -> usize {
    h.sink.all().iter().filter(|e| e.ty == ty).count()
}

/// The distinct `after.id`s of events of one type.
fn ids(h: &Harness, ty: &str) -> BTreeSet<i64> {
    of_type(h, ty)
        .iter()
        .filter_map(|d| d["after"]["id"].as_i64())
        .collect()
}

async fn running(h: &Harness) {
    h.wait(30, "streaming", |h| {
        h.status("my").state == SourceState::Running
    })
    .await;
}

const TYPES: &str = "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2), \
    big BIGINT UNSIGNED, small TINYINT, f FLOAT, d DOUBLE, meta JSON, seen DATETIME(3), ts TIMESTAMP(6) NULL, \
    born DATE, t TIME, photo BLOB, bin BINARY(4), status ENUM('new','paid'), tags SET('a','b','c'), \
    flags BIT(8), y YEAR, latin VARCHAR(10) CHARACTER SET latin1, note TEXT NULL)";

const ROW: &str = "'Ana', 10.50, 18446744073709551615, -5, 1.1, 2.5, '{\"k\": [1, 2]}', \
    '2026-11-22 10:00:00.250', '2026-11-22 13:00:00.000123', '1990-01-02', '-26:03:04', x'DEADBEEF', x'0102', \
    'paid', 'a,c', b'101', 2024, 'café', NULL";

#[tokio::test]
async fn snapshot_then_stream_with_faithful_types() {
    let db = TestDb::create();
    db.sql(&format!(
        "{TYPES}; CREATE TABLE nokey (a INT, b VARCHAR(5)); SET time_zone = '+00:00'; \
         INSERT INTO items VALUES (1, {ROW}); INSERT INTO items (id, name) VALUES (2, 'Bruno');"
    ));
    let h = Harness::start(&db.config("items, nokey", "")).await;
    h.wait(30, "two snapshot rows", |h| count(h, "items.read") == 2)
        .await;
    running(&h).await;
    let snap = h.status("my").snapshot.unwrap();
    assert!(snap.finished_at.is_some());
    assert_eq!(snap.tables.len(), 2);
    let items = snap
        .tables
        .iter()
        .find(|t| t.table == format!("{}.items", db.name))
        .unwrap();
    assert_eq!(items.rows_copied, 2);

    let read = h
        .sink
        .all()
        .into_iter()
        .find(|e| e.subject.as_deref() == Some("1"))
        .unwrap();
    assert_eq!(read.ty, "items.read");
    assert_eq!(
        read.key.as_deref(),
        Some(format!("{}.items:1", db.name).as_str())
    );
    let expected = json!({
        "id": 1, "name": "Ana", "price": "10.50", "big": 18_446_744_073_709_551_615_u64, "small": -5,
        "f": 1.1, "d": 2.5, "meta": {"k": [1, 2]}, "seen": "2026-11-22T10:00:00.250",
        "ts": "2026-11-22T13:00:00.000123Z", "born": "1990-01-02", "t": "-26:03:04",
        "photo": "3q2+7w==", "bin": "AQIAAA==", "status": "paid", "tags": "a,c", "flags": 5,
        "y": 2024, "latin": "café", "note": null
    });
    let data = read.data.unwrap();
    assert_eq!(data["after"], expected, "snapshot row");
    assert_eq!(data["source"]["snapshot"], json!(true));
    assert_eq!(data["source"]["connector"], json!("mysql"));

    // The same values through the binlog read the same.
    db.sql(&format!(
        "SET time_zone = '+00:00'; INSERT INTO items VALUES (3, {ROW}); \
         UPDATE items SET name = 'Bruno S.', price = 1.00 WHERE id = 2; DELETE FROM items WHERE id = 1; \
         INSERT INTO nokey VALUES (1, 'x');"
    ));
    h.wait(20, "insert, update, delete", |h| {
        count(h, "items.insert") == 1
            && count(h, "items.update") == 1
            && count(h, "items.delete") == 1
            && count(h, "nokey.insert") == 1
    })
    .await;
    let ins = &of_type(&h, "items.insert")[0];
    let mut expected3 = expected.clone();
    expected3["id"] = json!(3);
    assert_eq!(ins["after"], expected3, "binlog row");
    assert_eq!(ins["op"], json!("insert"));
    assert_eq!(ins["before"], Value::Null);
    assert_eq!(ins["source"]["snapshot"], json!(false));
    assert!(ins["source"]["file"].as_str().unwrap().contains("bin"));
    assert!(ins["source"]["pos"].as_u64().unwrap() > 4);
    assert_eq!(ins["source"]["server_id"], json!(1));
    assert!(
        ins["source"]["gtid"]
            .as_str()
            .is_some_and(|g| g.split('-').count() == 3),
        "a MariaDB GTID: {}",
        ins["source"]
    );
    let upd = &of_type(&h, "items.update")[0];
    assert_eq!(upd["before"]["name"], json!("Bruno"));
    assert_eq!(upd["after"]["name"], json!("Bruno S."));
    assert_eq!(upd["after"]["price"], json!("1.00"));
    let del = h
        .sink
        .all()
        .into_iter()
        .find(|e| e.ty == "items.delete")
        .unwrap();
    assert_eq!(del.subject.as_deref(), Some("1"));
    let del = del.data.unwrap();
    assert_eq!(del["before"]["name"], json!("Ana"));
    assert_eq!(del["after"], Value::Null);
    let nokey = h
        .sink
        .all()
        .into_iter()
        .find(|e| e.ty == "nokey.insert")
        .unwrap();
    assert_eq!(
        nokey.subject, None,
        "a table without a primary key has no subject"
    );
    assert_eq!(nokey.data.unwrap()["after"], json!({"a": 1, "b": "x"}));

    // A column added while streaming shows up without a restart.
    db.sql("ALTER TABLE items ADD COLUMN vip BOOLEAN DEFAULT 0; INSERT INTO items (id, name, vip) VALUES (4, 'Dora', 1)");
    h.wait(20, "insert after ALTER TABLE", |h| {
        count(h, "items.insert") == 2
    })
    .await;
    assert_eq!(of_type(&h, "items.insert")[1]["after"]["vip"], json!(1));
    h.wait(20, "a position", |h| h.status("my").position.is_some())
        .await;
}

#[tokio::test]
async fn debezium_envelope_and_numbers() {
    let db = TestDb::create();
    db.sql("CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(10), total DECIMAL(10,2))");
    let h = Harness::start(&db.config(
        "orders",
        "    envelope: debezium\n    numeric: number\n    snapshot: never\n",
    ))
    .await;
    running(&h).await;
    db.sql("INSERT INTO orders VALUES (7, 'new', 12.50); UPDATE orders SET status = 'paid' WHERE id = 7; DELETE FROM orders;");
    h.wait(20, "three changes", |h| h.sink.all().len() == 3)
        .await;
    let d = h.sink.data();
    assert_eq!(d[0]["op"], json!("c"));
    assert_eq!(d[0]["after"]["total"], json!(12.5));
    assert_eq!(d[0]["source"]["connector"], json!("mysql"));
    assert_eq!(d[0]["source"]["db"], json!(db.name));
    assert_eq!(d[0]["source"]["table"], json!("orders"));
    assert_eq!(d[0]["source"]["snapshot"], json!("false"));
    assert!(d[0]["source"]["pos"].as_u64().is_some());
    assert!(d[0]["source"]["file"].as_str().is_some());
    assert!(d[0]["source"]["gtid"].as_str().is_some());
    assert!(d[0]["ts_ms"].as_i64().is_some());
    assert_eq!(d[1]["op"], json!("u"));
    assert_eq!(d[1]["before"]["status"], json!("new"));
    assert_eq!(d[1]["after"]["status"], json!("paid"));
    assert_eq!(d[2]["op"], json!("d"));
    assert_eq!(d[2]["after"], Value::Null);
}

#[tokio::test]
async fn restart_resumes_from_the_checkpoint_without_loss_or_new_snapshot() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)");
    let mut h = Harness::start(&db.config("t", "")).await;
    h.wait(30, "snapshot", |h| count(h, "t.read") == 1).await;
    running(&h).await;
    db.sql("INSERT INTO t VALUES (2)");
    h.wait(20, "first insert", |h| count(h, "t.insert") == 1)
        .await;
    h.stop().await;
    let cursor = h.store.get_cursor("my").await.unwrap().unwrap();
    let cp: Value = serde_json::from_str(&cursor).unwrap();
    assert_eq!(cp["snapshot"], json!("done"), "{cp}");
    assert!(
        cp["file"].as_str().is_some() && cp["pos"].as_u64().is_some(),
        "{cp}"
    );
    // Written while Estafeta is down, in many transactions.
    let values: Vec<String> = (3..=502).map(|i| format!("({i})")).collect();
    for chunk in values.chunks(50) {
        db.sql(&format!("INSERT INTO t VALUES {}", chunk.join(",")));
    }
    h.restart_sources();
    h.wait(30, "the inserts made while stopped", |h| {
        ids(h, "t.insert").len() == 501
    })
    .await;
    assert_eq!(count(&h, "t.read"), 1, "no second snapshot after a restart");
    assert_eq!(ids(&h, "t.insert"), (2..=502).collect());
    // A change read again after the restart has the same id, so the log stores it once.
    let mut by_row = std::collections::BTreeMap::new();
    for e in h.sink.all().into_iter().filter(|e| e.ty == "t.insert") {
        let id = e.data.as_ref().unwrap()["after"]["id"].as_i64().unwrap();
        let first = by_row.entry(id).or_insert_with(|| e.ce_id.clone());
        assert_eq!(*first, e.ce_id, "stable ce_id for row {id}");
    }
}

#[tokio::test]
async fn a_binlog_rotation_mid_stream_loses_nothing() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)");
    let h = Harness::start(&db.config("t", "    snapshot: never\n")).await;
    running(&h).await;
    db.sql("INSERT INTO t VALUES (1), (2)");
    h.wait(20, "first inserts", |h| ids(h, "t.insert").len() == 2)
        .await;
    let before = h.status("my").position.unwrap();
    db.sql(
        "FLUSH BINARY LOGS; INSERT INTO t VALUES (3); FLUSH BINARY LOGS; INSERT INTO t VALUES (4)",
    );
    h.wait(20, "inserts after the rotation", |h| {
        ids(h, "t.insert") == (1..=4).collect()
    })
    .await;
    h.wait(20, "a position in a newer file", |h| {
        let now = h.status("my").position.unwrap();
        now.split(':').next() > before.split(':').next()
    })
    .await;
    let files: BTreeSet<String> = of_type(&h, "t.insert")
        .iter()
        .map(|d| d["source"]["file"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        files.len() >= 2,
        "changes read from several files: {files:?}"
    );
}

#[tokio::test]
async fn a_cut_connection_is_reestablished_and_nothing_is_lost() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)");
    let user = TestUser::create(&db, "REPLICATION SLAVE, REPLICATION CLIENT, SELECT");
    let h = Harness::start(&db.config_as(&user.url(), "t", "    snapshot: never\n")).await;
    running(&h).await;
    db.sql("INSERT INTO t VALUES (1)");
    h.wait(20, "first insert", |h| count(h, "t.insert") == 1)
        .await;
    let thread = sql(
        "",
        &format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{}' AND COMMAND LIKE 'Binlog Dump%'",
            user.0
        ),
    );
    assert!(!thread.is_empty(), "the source's binlog dump thread");
    sql("", &format!("KILL {thread}"));
    let values: Vec<String> = (2..=200).map(|i| format!("({i})")).collect();
    db.sql(&format!("INSERT INTO t VALUES {}", values.join(",")));
    h.wait(60, "inserts after the cut", |h| {
        ids(h, "t.insert").len() == 200
    })
    .await;
    h.wait(30, "running again", |h| {
        let s = h.status("my");
        s.state == SourceState::Running && s.reconnects >= 1
    })
    .await;
}

#[tokio::test]
async fn a_purged_binlog_is_reported_and_a_new_snapshot_taken() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
    let mut h = Harness::start(&db.config("t", "")).await;
    h.wait(30, "snapshot", |h| count(h, "t.read") == 2).await;
    running(&h).await;
    h.stop().await;
    // As if the server had purged the file Estafeta was reading.
    h.store
        .put_cursor(
            "my",
            r#"{"snapshot":"done","file":"estafeta-purged-bin.000001","pos":4}"#,
        )
        .await
        .unwrap();
    db.sql("INSERT INTO t VALUES (3)");
    h.restart_sources();
    h.wait(30, "a new snapshot with every row", |h| {
        count(h, "t.read") == 2 + 3
    })
    .await;
    running(&h).await;
    let warning = h.status("my").warning.unwrap_or_default();
    assert!(warning.contains("was purged"), "{warning}");
    db.sql("INSERT INTO t VALUES (4)");
    h.wait(20, "streaming after the new snapshot", |h| {
        ids(h, "t.insert").contains(&4)
    })
    .await;
}

#[tokio::test]
async fn initial_only_copies_in_chunks_and_stops() {
    let db = TestDb::create();
    db.sql(
        "CREATE TABLE t (a INT, b INT, PRIMARY KEY (a, b)); \
         INSERT INTO t SELECT seq DIV 100, seq MOD 100 FROM seq_1_to_2500;",
    );
    let h =
        Harness::start(&db.config("t", "    snapshot: initial_only\n    batch_size: 1000\n")).await;
    h.wait(60, "stopped after the snapshot", |h| {
        h.status("my").state == SourceState::Stopped
    })
    .await;
    assert_eq!(count(&h, "t.read"), 2500);
    let subjects: BTreeSet<String> = h.sink.all().into_iter().filter_map(|e| e.subject).collect();
    assert_eq!(subjects.len(), 2500, "every row once, keyed `a=…,b=…`");
    assert!(subjects.contains("a=0,b=1"));
    let snap = h.status("my").snapshot.unwrap();
    assert_eq!(snap.tables[0].rows_copied, 2500);
}

#[tokio::test]
async fn set_up_problems_are_explained() {
    let db = TestDb::create();
    let h = Harness::start(&db.config("nope", "")).await;
    h.wait(20, "failed", |h| {
        h.status("my").state == SourceState::Failed
    })
    .await;
    let err = h.status("my").error.unwrap();
    assert!(
        err.contains(&format!("`{}.nope` does not exist", db.name)),
        "{err}"
    );

    db.sql("CREATE TABLE t (id INT PRIMARY KEY)");
    let user = TestUser::create(&db, "REPLICATION CLIENT, SELECT");
    let h2 = Harness::start(&db.config_as(&user.url(), "t", "")).await;
    h2.wait(20, "failed", |h| {
        h.status("my").state == SourceState::Failed
    })
    .await;
    let err = h2.status("my").error.unwrap();
    assert!(err.contains("GRANT REPLICATION SLAVE"), "{err}");
    assert!(
        h2.sink.all().is_empty(),
        "no snapshot without the right to stream"
    );

    let own: u32 = sql("", "SELECT @@server_id").parse().unwrap();
    let yaml = db.config("t", "").replace(
        &format!("server_id: {}", db.server_id),
        &format!("server_id: {own}"),
    );
    let h3 = Harness::start(&yaml).await;
    h3.wait(20, "failed", |h| {
        h.status("my").state == SourceState::Failed
    })
    .await;
    let err = h3.status("my").error.unwrap();
    assert!(err.contains("server's own"), "{err}");
}

#[tokio::test]
async fn whole_databases_include_new_tables_and_large_transactions_arrive_whole() {
    let db = TestDb::create();
    let yaml = format!(
        "sources:\n  - id: my\n    kind: mysql\n    url: {}\n    databases: [{}]\n    server_id: {}\n    snapshot: never\n    batch_size: 1000\n    batch_wait: 5ms\n",
        db.url(),
        db.name,
        db.server_id
    );
    let h = Harness::start(&yaml).await;
    running(&h).await;
    let start = h.status("my").position.unwrap();
    // A table created after the source started, filled by one transaction of 2500 rows.
    db.sql("CREATE TABLE later (id INT PRIMARY KEY, v VARCHAR(8)); INSERT INTO later SELECT seq, 'x' FROM seq_1_to_2500;");
    h.wait(30, "the whole transaction", |h| {
        ids(h, "later.insert").len() == 2500
    })
    .await;
    let ce_ids: BTreeSet<String> = h.sink.all().into_iter().map(|e| e.ce_id).collect();
    assert_eq!(ce_ids.len(), 2500, "one id per row");
    h.wait(20, "the position past the transaction", |h| {
        h.status("my").position.as_deref() != Some(start.as_str())
    })
    .await;
}
