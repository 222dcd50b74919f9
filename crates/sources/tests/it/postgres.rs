//! `kind: postgres` against the machine's PostgreSQL (wal_level=logical): snapshot, stream,
//! types, TOAST, schema changes, restarts, connection cuts, dropped slots, set-up errors.

use estafeta_sources::SourceState;
use estafeta_testkit::postgres::{TestDb, psql};
use serde_json::{Value, json};

use crate::harness::Harness;

fn config(db: &TestDb, tables: &str, extra: &str) -> String {
    format!(
        "sources:\n  - id: pg\n    kind: postgres\n    url: {}\n    tables: [{tables}]\n    slot: {}\n    publication: {}_pub\n    batch_wait: 5ms\n{extra}",
        db.url(),
        db.name(),
        db.name()
    )
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

#[tokio::test]
async fn snapshot_then_stream_with_faithful_types() {
    let db = TestDb::create();
    db.sql(
        "CREATE TABLE visitors (id int PRIMARY KEY, name text, doc varchar(20), score numeric(10,2), \
         ok boolean, tags text[], meta jsonb, seen timestamptz, born date, uid uuid, photo bytea, big text, n int8);
         INSERT INTO visitors VALUES (1, 'Ana', '123', 10.50, true, '{a,\"b c\"}', '{\"k\": [1, 2]}', \
           '2026-11-22 10:00:00-03', '1990-01-02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\xdeadbeef', 'x', 9007199254740993);
         INSERT INTO visitors (id, name) VALUES (2, 'Bruno');",
    );
    let h = Harness::start(&config(&db, "public.visitors", "")).await;
    h.wait(30, "two snapshot rows", |h| count(h, "visitors.read") == 2)
        .await;
    h.wait(10, "streaming", |h| {
        h.status("pg").state == SourceState::Running
    })
    .await;
    let snap = h.status("pg").snapshot.unwrap();
    assert!(snap.finished_at.is_some());
    assert_eq!(snap.tables[0].table, "public.visitors");
    assert_eq!(snap.tables[0].rows_copied, 2);

    let read = h
        .sink
        .all()
        .into_iter()
        .find(|e| e.subject.as_deref() == Some("1"))
        .unwrap();
    assert_eq!(read.ty, "visitors.read");
    assert_eq!(read.key.as_deref(), Some("public.visitors:1"));
    let after = &read.data.as_ref().unwrap()["after"];
    assert_eq!(after["name"], json!("Ana"));
    assert_eq!(after["score"], json!("10.50"));
    assert_eq!(after["ok"], json!(true));
    assert_eq!(after["tags"], json!(["a", "b c"]));
    assert_eq!(after["meta"], json!({"k": [1, 2]}));
    assert_eq!(after["seen"], json!("2026-11-22T13:00:00Z"));
    assert_eq!(after["born"], json!("1990-01-02"));
    assert_eq!(after["uid"], json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(after["photo"], json!("3q2+7w=="));
    assert_eq!(after["n"], json!(9_007_199_254_740_993_i64));
    assert_eq!(
        read.data.as_ref().unwrap()["source"]["snapshot"],
        json!(true)
    );

    // A large value stored out of line (TOAST), then an update that leaves it alone.
    db.sql("INSERT INTO visitors (id, name, big) SELECT 3, 'Caio', string_agg(md5(i::text), '') FROM generate_series(1, 400) i");
    db.sql("UPDATE visitors SET name = 'Caio S.' WHERE id = 3");
    db.sql("DELETE FROM visitors WHERE id = 2");
    h.wait(20, "insert, update and delete", |h| {
        count(h, "visitors.insert") == 1
            && count(h, "visitors.update") == 1
            && count(h, "visitors.delete") == 1
    })
    .await;
    let ins = &of_type(&h, "visitors.insert")[0];
    assert_eq!(ins["op"], json!("insert"));
    assert_eq!(ins["after"]["big"].as_str().unwrap().len(), 400 * 32);
    assert_eq!(ins["before"], Value::Null);
    assert!(ins["source"]["lsn"].as_str().unwrap().contains('/'));
    assert!(ins["source"]["txid"].as_u64().is_some());
    assert!(ins["source"]["commit_time"].as_str().is_some());
    let upd = &of_type(&h, "visitors.update")[0];
    assert_eq!(upd["after"]["name"], json!("Caio S."));
    assert!(
        upd["after"].get("big").is_none(),
        "an unchanged TOAST value is not invented: {upd}"
    );
    assert_eq!(upd["unchanged_toast"], json!(["big"]));
    let del = &of_type(&h, "visitors.delete")[0];
    assert_eq!(del["before"], json!({"id": 2}));
    assert_eq!(del["after"], Value::Null);
    let del_event = h
        .sink
        .all()
        .into_iter()
        .find(|e| e.ty == "visitors.delete")
        .unwrap();
    assert_eq!(del_event.subject.as_deref(), Some("2"));

    // A column added while streaming shows up without a restart.
    db.sql("ALTER TABLE visitors ADD COLUMN vip boolean DEFAULT false; INSERT INTO visitors (id, name, vip) VALUES (4, 'Dora', true)");
    h.wait(20, "insert after ALTER TABLE", |h| {
        count(h, "visitors.insert") == 2
    })
    .await;
    assert_eq!(
        of_type(&h, "visitors.insert")[1]["after"]["vip"],
        json!(true)
    );

    db.sql("TRUNCATE visitors");
    h.wait(20, "truncate", |h| count(h, "visitors.truncate") == 1)
        .await;

    // The confirmed position follows what was stored.
    h.wait(20, "a confirmed position", |h| {
        h.status("pg").position.is_some()
    })
    .await;
}

#[tokio::test]
async fn full_replica_identity_fills_before_and_debezium_envelope() {
    let db = TestDb::create();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric); ALTER TABLE orders REPLICA IDENTITY FULL;");
    let h = Harness::start(&config(
        &db,
        "orders",
        "    envelope: debezium\n    numeric: number\n    snapshot: never\n",
    ))
    .await;
    h.wait(20, "streaming", |h| {
        h.status("pg").state == SourceState::Running
    })
    .await;
    db.sql("INSERT INTO orders VALUES (7, 'new', 12.5); UPDATE orders SET status = 'paid' WHERE id = 7;");
    h.wait(20, "two changes", |h| h.sink.all().len() == 2).await;
    let d = h.sink.data();
    assert_eq!(d[0]["op"], json!("c"));
    assert_eq!(d[0]["after"]["total"], json!(12.5));
    assert_eq!(d[0]["source"]["connector"], json!("postgresql"));
    assert_eq!(d[0]["source"]["table"], json!("orders"));
    assert!(d[0]["source"]["lsn"].as_u64().is_some());
    assert!(d[0]["ts_ms"].as_i64().is_some());
    assert_eq!(d[1]["op"], json!("u"));
    assert_eq!(
        d[1]["before"]["status"],
        json!("new"),
        "REPLICA IDENTITY FULL sends the old row"
    );
    assert_eq!(d[1]["after"]["status"], json!("paid"));
}

#[tokio::test]
async fn restart_resumes_from_the_confirmed_position_without_loss_or_new_snapshot() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
    let mut h = Harness::start(&config(&db, "t", "")).await;
    h.wait(30, "snapshot", |h| count(h, "t.read") == 1).await;
    db.sql("INSERT INTO t VALUES (2)");
    h.wait(20, "first insert", |h| count(h, "t.insert") == 1)
        .await;
    h.stop().await;
    // Written while Estafeta is down.
    db.sql("INSERT INTO t SELECT generate_series(3, 502)");
    h.restart_sources();
    h.wait(30, "the inserts made while stopped", |h| {
        count(h, "t.insert") >= 501
    })
    .await;
    assert_eq!(count(&h, "t.read"), 1, "no second snapshot after a restart");
    let mut ids: Vec<i64> = of_type(&h, "t.insert")
        .iter()
        .map(|d| d["after"]["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, (2..=502).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_cut_connection_is_reestablished_and_nothing_is_lost() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id int PRIMARY KEY)");
    let h = Harness::start(&config(&db, "t", "    snapshot: never\n")).await;
    h.wait(20, "streaming", |h| {
        h.status("pg").state == SourceState::Running
    })
    .await;
    db.sql("INSERT INTO t VALUES (1)");
    h.wait(20, "first insert", |h| count(h, "t.insert") == 1)
        .await;
    // Cut the replication connection from the server side.
    let killed = psql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE slot_name = '{}' AND active_pid IS NOT NULL",
            db.name()
        ),
    );
    assert_eq!(killed, "1");
    db.sql("INSERT INTO t SELECT generate_series(2, 200)");
    h.wait(60, "inserts after the cut", |h| {
        let mut ids: Vec<i64> = of_type(h, "t.insert")
            .iter()
            .map(|d| d["after"]["id"].as_i64().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len() == 200
    })
    .await;
    h.wait(30, "running again", |h| {
        h.status("pg").state == SourceState::Running
    })
    .await;
}

#[tokio::test]
async fn a_slot_dropped_outside_estafeta_is_reported_and_a_new_snapshot_taken() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
    let mut h = Harness::start(&config(&db, "t", "")).await;
    h.wait(30, "snapshot", |h| count(h, "t.read") == 2).await;
    db.sql("INSERT INTO t VALUES (3)");
    h.wait(20, "insert and a confirmed position", |h| {
        count(h, "t.insert") == 1 && h.status("pg").position.is_some()
    })
    .await;
    // Give the checkpoint a moment to be written, then stop and drop the slot.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    db.sql("INSERT INTO t VALUES (4)");
    h.wait(20, "second insert", |h| count(h, "t.insert") == 2)
        .await;
    h.stop().await;
    psql(
        "postgres",
        &format!("SELECT pg_drop_replication_slot('{}')", db.name()),
    );
    db.sql("INSERT INTO t VALUES (5)");
    h.restart_sources();
    h.wait(30, "a new snapshot with every row", |h| {
        count(h, "t.read") == 2 + 5
    })
    .await;
    let warning = h.status("pg").warning.unwrap_or_default();
    assert!(warning.contains("dropped outside Estafeta"), "{warning}");
}

#[tokio::test]
async fn initial_only_copies_and_stops_without_keeping_a_slot() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 2500)");
    let h = Harness::start(&config(
        &db,
        "t",
        "    snapshot: initial_only\n    batch_size: 1000\n",
    ))
    .await;
    h.wait(60, "stopped after the snapshot", |h| {
        h.status("pg").state == SourceState::Stopped
    })
    .await;
    assert_eq!(count(&h, "t.read"), 2500);
    let slots = psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
            db.name()
        ),
    );
    assert_eq!(slots, "0");
}

#[tokio::test]
async fn a_table_without_primary_key_is_refused_with_the_fix() {
    let db = TestDb::create();
    db.sql("CREATE TABLE nokey (a int)");
    let h = Harness::start(&config(&db, "nokey", "")).await;
    h.wait(20, "failed", |h| {
        h.status("pg").state == SourceState::Failed
    })
    .await;
    let err = h.status("pg").error.unwrap();
    assert!(
        err.contains("public.nokey") && err.contains("has no primary key"),
        "{err}"
    );
    assert!(err.contains("REPLICA IDENTITY FULL"), "{err}");
}

#[tokio::test]
async fn a_missing_table_and_a_user_without_replication_are_explained() {
    let db = TestDb::create();
    let h = Harness::start(&config(&db, "public.nope", "")).await;
    h.wait(20, "failed", |h| {
        h.status("pg").state == SourceState::Failed
    })
    .await;
    assert!(
        h.status("pg")
            .error
            .unwrap()
            .contains("`public.nope` does not exist")
    );

    let role = format!("{}_r", db.name());
    psql(
        "postgres",
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"),
    );
    let url = db.url().replace("postgres@", &format!("{role}@"));
    let yaml = config(&db, "t", "").replace(&db.url(), &url);
    db.sql("CREATE TABLE t (id int PRIMARY KEY)");
    let h2 = Harness::start(&yaml).await;
    h2.wait(20, "failed", |h| {
        h.status("pg").state == SourceState::Failed
    })
    .await;
    let err = h2.status("pg").error.unwrap();
    assert!(err.contains("WITH REPLICATION"), "{err}");
    drop(h2);
    let _ =
        estafeta_testkit::postgres::try_psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

#[tokio::test]
async fn heartbeats_advance_the_slot_of_an_idle_database() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id int PRIMARY KEY)");
    let h = Harness::start(&config(
        &db,
        "t",
        "    snapshot: never\n    heartbeat: 200ms\n    slot_safety: { check_interval: 200ms }\n",
    ))
    .await;
    h.wait(20, "streaming", |h| {
        h.status("pg").state == SourceState::Running
    })
    .await;
    let first = psql(
        "postgres",
        &format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
            db.name()
        ),
    );
    // WAL written elsewhere; nothing in this database changes.
    let other = TestDb::create();
    other.sql("CREATE TABLE w (x int); INSERT INTO w SELECT generate_series(1, 1000)");
    h.wait(30, "the slot to advance", |_| {
        let now = psql(
            "postgres",
            &format!(
                "SELECT confirmed_flush_lsn > '{first}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
                db.name()
            ),
        );
        now == "t"
    })
    .await;
    h.wait(20, "slot statistics", |h| h.status("pg").slot.is_some())
        .await;
}

#[tokio::test]
async fn a_slot_over_its_wal_limit_is_dropped_when_asked() {
    let db = TestDb::create();
    db.sql("CREATE TABLE t (id int PRIMARY KEY)");
    let h = Harness::start(&config(
        &db,
        "t",
        "    snapshot: never\n    heartbeat: 0\n    slot_safety: { warn_retained_wal: 1, max_retained_wal: 1, on_limit: drop_slot, check_interval: 100ms }\n",
    ))
    .await;
    // Any WAL at all puts the slot over a one-byte limit.
    db.sql("INSERT INTO t SELECT generate_series(1, 100)");
    h.wait(30, "failed", |h| {
        h.status("pg").state == SourceState::Failed
    })
    .await;
    let err = h.status("pg").error.unwrap();
    assert!(
        err.contains("max_retained_wal") && err.contains("dropped"),
        "{err}"
    );
    let slots = psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
            db.name()
        ),
    );
    assert_eq!(slots, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_while_streaming_loses_no_committed_change() {
    let pg = tokio::task::spawn_blocking(estafeta_testkit::postgres::PrivateServer::start)
        .await
        .unwrap();
    pg.sql("postgres", "CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    let yaml = format!(
        "sources:\n  - id: pg\n    kind: postgres\n    url: {}\n    tables: [t]\n    slot: restart_test\n    snapshot: never\n    batch_wait: 5ms\n",
        pg.url("postgres")
    );
    let h = Harness::start(&yaml).await;
    h.wait(30, "streaming", |h| {
        h.status("pg").state == SourceState::Running
    })
    .await;
    let mut committed: Vec<i64> = Vec::new();
    for batch in 0..20_i64 {
        if batch == 8 {
            pg.stop();
            pg.start_again();
        }
        let (lo, hi) = (batch * 100 + 1, batch * 100 + 100);
        if pg
            .sql(
                "postgres",
                &format!("INSERT INTO t SELECT generate_series({lo}, {hi})"),
            )
            .is_ok()
        {
            committed.extend(lo..=hi);
        }
    }
    assert!(committed.len() >= 1500, "most inserts commit");
    h.wait(120, "every committed row after the restart", |h| {
        let got: std::collections::HashSet<i64> = of_type(h, "t.insert")
            .iter()
            .map(|d| d["after"]["id"].as_i64().unwrap())
            .collect();
        committed.iter().all(|id| got.contains(id))
    })
    .await;
    h.wait(30, "running again", |h| {
        h.status("pg").state == SourceState::Running
    })
    .await;
}
