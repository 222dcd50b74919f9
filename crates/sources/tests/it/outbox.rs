//! `kind: outbox` against the machine's PostgreSQL and MariaDB and a SQLite file: rows become
//! events and are marked (or deleted), malformed rows are marked failed, two instances share
//! a table without sending a row twice, restarts resume, a failed append is re-read and
//! stored once, LISTEN/NOTIFY wakes the source, and `mark_on: delivered` follows deliveries.

mod db;
mod instance;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use estafeta_core::{DeliveryStatus, Event};
use estafeta_sources::SourceState;
use serde_json::json;

use self::db::{Db, Kind};
use self::instance::Instance;
use crate::harness::Harness;

/// Every column setting, and a quick poll.
const COLUMNS: &str = "    payload_column: payload\n    type_column: event_type\n    subject_column: aggregate_id\n    processed_at_column: processed_at\n    error_column: error\n    attempts_column: attempts\n    poll_interval: 50ms\n";

fn config(db: &Db, body: &str) -> String {
    format!(
        "sources:\n  - id: ob\n    kind: outbox\n    url: {}\n    table: outbox\n{body}",
        db.url()
    )
}

fn ce_ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.ce_id.clone()).collect()
}

async fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The tests, run against each database
// ---------------------------------------------------------------------------------------

async fn rows_become_events_and_are_marked_processed(kind: Kind) {
    let db = Db::with_outbox(kind);
    db.sql(
        "INSERT INTO outbox (event_type, aggregate_id, payload) VALUES \
         ('order.created', 'o-1', '{\"total\": 10}'), \
         ('order.paid', 'o-1', '{\"total\": 10, \"via\": [\"card\"]}'), \
         ('order.created', NULL, '{}')",
    );
    let h = Harness::start(&config(
        &db,
        &format!("{COLUMNS}    key_column: aggregate_id\n"),
    ))
    .await;
    h.wait(30, "three events", |h| h.sink.all().len() == 3)
        .await;
    h.wait(10, "three rows processed", |_| {
        db.count("status = 'PROCESSED' AND processed_at IS NOT NULL") == 3
    })
    .await;
    let events = h.sink.all();
    assert_eq!(ce_ids(&events), ["outbox:1", "outbox:2", "outbox:3"]);
    assert_eq!(events[0].ty, "order.created");
    assert_eq!(events[1].ty, "order.paid");
    assert_eq!(events[0].subject.as_deref(), Some("o-1"));
    assert_eq!(events[0].key.as_deref(), Some("o-1"));
    assert_eq!(events[2].subject, None);
    assert_eq!(events[0].data, Some(json!({"total": 10})));
    assert_eq!(events[1].data, Some(json!({"total": 10, "via": ["card"]})));
    assert_eq!(events[0].source_id, "ob");
    assert_eq!(events[0].ce_source, "/estafeta/outbox/ob");
    assert_eq!(db.count("error IS NULL AND attempts = 0"), 3);
    let st = h.status("ob");
    assert_eq!(
        (st.kind, st.state, st.events),
        ("outbox", SourceState::Running, 3)
    );
    assert_eq!(st.position.as_deref(), Some("3"));

    // New rows are picked up while running; rows already processed are not read again.
    db.sql("INSERT INTO outbox (event_type, aggregate_id, payload) VALUES ('order.shipped', 'o-1', '[1]')");
    h.wait(10, "a fourth event", |h| h.sink.all().len() == 4)
        .await;
    db.insert_many(2, 0);
    h.wait(10, "six events", |h| h.sink.all().len() >= 6).await;
    h.wait(10, "six rows processed", |_| {
        db.count("status = 'PROCESSED'") == 6
    })
    .await;
    let ids = ce_ids(&h.sink.all());
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 6, "{ids:?}");
    assert_eq!(h.sink.all()[3].data, Some(json!([1])));
}

async fn whole_rows_are_the_data_and_processed_rows_can_be_deleted(kind: Kind) {
    let db = Db::with_outbox(kind);
    db.sql("INSERT INTO outbox (event_type, aggregate_id, payload) VALUES ('x', 'a-1', 'not json either'), ('y', 'a-2', NULL)");
    let h = Harness::start(&config(
        &db,
        "    type: outbox.row\n    on_processed: delete\n    poll_interval: 50ms\n",
    ))
    .await;
    h.wait(30, "two events", |h| h.sink.all().len() == 2).await;
    h.wait(10, "the rows deleted", |_| db.count("1 = 1") == 0)
        .await;
    let events = h.sink.all();
    assert!(events.iter().all(|e| e.ty == "outbox.row"));
    let data = events[0].data.as_ref().unwrap();
    assert_eq!(data["id"], json!(1));
    assert_eq!(data["aggregate_id"], json!("a-1"));
    assert_eq!(data["payload"], json!("not json either"));
    assert_eq!(data["status"], json!("PENDING"));
    assert_eq!(events[1].data.as_ref().unwrap()["payload"], json!(null));
}

async fn malformed_rows_are_marked_failed_with_the_reason(kind: Kind) {
    let db = Db::with_outbox(kind);
    db.sql(
        "INSERT INTO outbox (event_type, aggregate_id, payload) VALUES \
         ('ok', 'a', '{\"n\": 1}'), ('bad', 'b', '{\"n\": '), ('null', 'c', NULL), ('ok', 'd', '{\"n\": 4}')",
    );
    let h = Harness::start(&config(&db, COLUMNS)).await;
    h.wait(30, "two events", |h| h.sink.all().len() == 2).await;
    h.wait(10, "two rows failed and two processed", |_| {
        db.count("status = 'FAILED'") == 2 && db.count("status = 'PROCESSED'") == 2
    })
    .await;
    assert_eq!(ce_ids(&h.sink.all()), ["outbox:1", "outbox:4"]);
    let failed = db.sql("SELECT id, error FROM outbox WHERE status = 'FAILED' ORDER BY id");
    let lines: Vec<&str> = failed.lines().collect();
    assert!(
        lines[0].starts_with("2|") && lines[0].contains("`payload` is not valid JSON"),
        "{failed}"
    );
    assert!(
        lines[1].starts_with("3|") && lines[1].contains("`payload` is NULL"),
        "{failed}"
    );
    assert_eq!(db.count("status = 'FAILED' AND processed_at IS NULL"), 2);
    // The source keeps running after a bad row.
    db.sql("INSERT INTO outbox (event_type, aggregate_id, payload) VALUES ('ok', 'e', '{}')");
    h.wait(10, "a third event", |h| h.sink.all().len() == 3)
        .await;
    assert_eq!(h.status("ob").state, SourceState::Running);
}

async fn two_instances_share_a_table_without_sending_a_row_twice(kind: Kind) {
    const ROWS: usize = 2_000;
    let db = Db::with_outbox(kind);
    db.insert_many(ROWS, 0);
    let yaml = config(&db, &format!("{COLUMNS}    batch_size: 25\n"));
    let (a, b) = tokio::join!(
        Instance::start(&yaml, Duration::from_millis(2)),
        Instance::start(&yaml, Duration::from_millis(2))
    );
    wait_for(120, "every row stored once by either instance", || {
        a.log.inserted().len() + b.log.inserted().len() >= ROWS
            && db.count("status = 'PROCESSED'") == ROWS
    })
    .await;
    let (ea, eb) = (a.log.inserted(), b.log.inserted());
    let sa: HashSet<String> = ce_ids(&ea).into_iter().collect();
    let sb: HashSet<String> = ce_ids(&eb).into_iter().collect();
    assert_eq!(sa.len() + sb.len(), ROWS, "no row twice within an instance");
    assert!(sa.is_disjoint(&sb), "a row was sent by both instances");
    assert_eq!(sa.union(&sb).count(), ROWS);
    assert!(
        !sa.is_empty() && !sb.is_empty(),
        "both instances took part: {} and {}",
        sa.len(),
        sb.len()
    );
}

async fn a_restart_resumes_where_it_stopped(kind: Kind) {
    let db = Db::with_outbox(kind);
    db.insert_many(5, 0);
    let mut h = Harness::start(&config(&db, COLUMNS)).await;
    h.wait(30, "five events", |h| h.sink.all().len() == 5).await;
    h.wait(10, "five rows processed", |_| {
        db.count("status = 'PROCESSED'") == 5
    })
    .await;
    h.stop().await;
    db.insert_many(5, 5);
    h.restart_sources();
    h.wait(30, "ten events", |h| h.sink.all().len() == 10).await;
    h.wait(10, "ten rows processed", |_| {
        db.count("status = 'PROCESSED'") == 10
    })
    .await;
    let ids: HashSet<String> = ce_ids(&h.sink.all()).into_iter().collect();
    assert_eq!(ids.len(), 10, "every row once");
}

async fn a_failed_append_leaves_rows_pending_and_the_log_stores_them_once(kind: Kind) {
    let db = Db::with_outbox(kind);
    db.insert_many(3, 0);
    let i = Instance::start(&config(&db, COLUMNS), Duration::ZERO).await;
    i.log.fail_after_storing.store(1, Ordering::SeqCst);
    wait_for(60, "the rows processed after the retry", || {
        db.count("status = 'PROCESSED'") == 3
    })
    .await;
    assert!(
        i.log.calls.load(Ordering::SeqCst) >= 2,
        "the rows were read again"
    );
    let ids: Vec<String> = ce_ids(&i.log.inserted());
    assert_eq!(ids, ["outbox:1", "outbox:2", "outbox:3"], "stored once");
    assert!(i.status().reconnects >= 1);
}

async fn delivered_rows_are_marked_after_their_deliveries(kind: Kind) {
    let db = Db::with_outbox(kind);
    db.insert_many(3, 0);
    let mut i = Instance::start(
        &config(&db, &format!("{COLUMNS}    mark_on: delivered\n")),
        Duration::ZERO,
    )
    .await;
    wait_for(30, "three rows claimed", || {
        db.count("status = 'PROCESSING'") == 3
    })
    .await;
    assert_eq!(i.log.inserted().len(), 3);
    i.attempt("outbox:1", DeliveryStatus::Delivered, 1, None)
        .await;
    i.attempt(
        "outbox:2",
        DeliveryStatus::Dead,
        3,
        Some("HTTP 500 from hook"),
    )
    .await;
    i.attempt("outbox:3", DeliveryStatus::Retrying, 1, Some("timeout"))
        .await;
    wait_for(30, "row 1 processed and row 2 failed", || {
        db.count("id = 1 AND status = 'PROCESSED' AND processed_at IS NOT NULL AND attempts = 1")
            == 1
            && db.count("id = 2 AND status = 'FAILED' AND attempts = 3") == 1
    })
    .await;
    assert_eq!(
        db.sql("SELECT error FROM outbox WHERE id = 2"),
        "delivery to `hook` failed: HTTP 500 from hook"
    );
    assert_eq!(db.count("id = 3 AND status = 'PROCESSING'"), 1);

    // A restart picks the watch up again from the store.
    i.stop().await;
    db.insert_many(1, 3);
    i.restart();
    wait_for(30, "row 4 claimed after the restart", || {
        db.count("id = 4 AND status = 'PROCESSING'") == 1
    })
    .await;
    i.attempt("outbox:3", DeliveryStatus::Delivered, 2, None)
        .await;
    i.attempt("outbox:4", DeliveryStatus::Delivered, 1, None)
        .await;
    wait_for(30, "rows 3 and 4 processed", || {
        db.count("id IN (3, 4) AND status = 'PROCESSED' AND error IS NULL") == 2
    })
    .await;
    assert_eq!(db.count("id = 3 AND attempts = 2"), 1);
    assert_eq!(i.log.inserted().len(), 4, "nothing stored twice");
}

async fn a_missing_table_is_reported(kind: Kind) {
    let db = Db::with_outbox(kind);
    let h = Harness::start(&format!(
        "sources:\n  - id: ob\n    kind: outbox\n    url: {}\n    table: no_such_table\n",
        db.url()
    ))
    .await;
    h.wait(30, "the source failed", |h| {
        h.status("ob").state == SourceState::Failed
    })
    .await;
    let err = h.status("ob").error.unwrap();
    assert!(
        err.contains("table `no_such_table` does not exist"),
        "{err}"
    );
}

/// Rows come out in id order — numeric order, `outbox:9` before `outbox:10` — in batches.
async fn rows_are_claimed_in_id_order(kind: Kind) {
    let db = Db::with_outbox(kind);
    db.insert_many(25, 0);
    let h = Harness::start(&config(&db, &format!("{COLUMNS}    batch_size: 7\n"))).await;
    h.wait(30, "25 events", |h| h.sink.all().len() == 25).await;
    let want: Vec<String> = (1..=25).map(|i| format!("outbox:{i}")).collect();
    assert_eq!(ce_ids(&h.sink.all()), want);
}

macro_rules! for_each_database {
    ($($test:ident),* $(,)?) => {
        mod postgres_db {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Kind::Pg).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Kind::My).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Kind::Lite).await;
                }
            )*
        }
    };
}

for_each_database!(
    rows_become_events_and_are_marked_processed,
    rows_are_claimed_in_id_order,
    whole_rows_are_the_data_and_processed_rows_can_be_deleted,
    malformed_rows_are_marked_failed_with_the_reason,
    two_instances_share_a_table_without_sending_a_row_twice,
    a_restart_resumes_where_it_stopped,
    a_failed_append_leaves_rows_pending_and_the_log_stores_them_once,
    delivered_rows_are_marked_after_their_deliveries,
    a_missing_table_is_reported,
);

/// PostgreSQL only: a trigger's `pg_notify` wakes the source long before its poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_wakes_the_source_at_once() {
    let db = Db::with_outbox(Kind::Pg);
    db.sql(
        "CREATE FUNCTION outbox_wake() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_notify('outbox_wake', ''); RETURN NULL; END $$;
         CREATE TRIGGER outbox_wake AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake();",
    );
    db.insert_many(1, 0);
    let yaml = config(
        &db,
        "    payload_column: payload\n    poll_interval: 10m\n    listen_channel: outbox_wake\n",
    );
    let h = Harness::start(&yaml).await;
    // The first poll happens at start; after it the source waits 10 minutes or a NOTIFY.
    h.wait(30, "the first row", |h| h.sink.all().len() == 1)
        .await;
    let started = Instant::now();
    db.insert_many(1, 1);
    h.wait(10, "the second row, woken by NOTIFY", |h| {
        h.sink.all().len() == 2
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    db.insert_many(3, 2);
    h.wait(10, "three more rows", |h| h.sink.all().len() == 5)
        .await;
}
