//! Database capture end to end: PostgreSQL → the real binary → a signed webhook, through a
//! `kill -9` in the middle of a 50,000-row transaction.

use std::collections::HashSet;
use std::time::Duration;

use estafeta_testkit::WebhookReceiver;
use estafeta_testkit::postgres::TestDb;

use crate::server::{Server, WHSEC, webhook};

const T: Duration = Duration::from_secs(180);

/// Row ids seen by the receiver (batch bodies are arrays of CloudEvents).
fn ids(rx: &WebhookReceiver) -> HashSet<i64> {
    rx.requests()
        .iter()
        .filter_map(|r| r.json())
        .flat_map(|j| match j {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        })
        .filter_map(|e| e["data"]["after"]["id"].as_i64())
        .collect()
}

fn config(db: &TestDb, rx: &WebhookReceiver) -> String {
    format!(
        "sources:\n  - id: shop\n    kind: postgres\n    url: {}\n    tables: [public.orders]\n    slot: {}\n    publication: {}_pub\n\
         routes:\n  - id: orders\n    from: [shop]\n    match: \"orders.*\"\n    to: [{{destination: hook}}]\n\
         destinations:\n{}",
        db.url(),
        db.name(),
        db.name(),
        webhook(
            "hook",
            &rx.url(),
            "    concurrency: 8\n    batch: {max_events: 500, max_wait: 10ms}\n"
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50k_row_transaction_survives_kill_9_every_row_delivered_and_logged_once() {
    let db = TestDb::create();
    db.sql("CREATE TABLE orders (id int PRIMARY KEY, total numeric, note text); INSERT INTO orders VALUES (0, 1, 'before')");
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(&db, &rx)).await;
    s.wait_json("/v1/sources/shop", T, |v| v["state"] == "running")
        .await;
    assert!(ids(&rx).contains(&0) || rx.wait_for_count(1, T).await);

    db.sql("INSERT INTO orders SELECT g, g * 1.5, 'order ' || g FROM generate_series(1, 50000) g");
    // Kill as soon as part of the transaction is in the log (stored, not yet confirmed:
    // the position is confirmed only with the commit, after the last row).
    let start = std::time::Instant::now();
    let stored = loop {
        let n = s.get_json("/v1/sources/shop").await["events"]
            .as_u64()
            .unwrap_or(0);
        if n >= 2 {
            break n;
        }
        assert!(start.elapsed() < T, "nothing stored");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    s.kill9().await;
    assert!(
        stored < 50_001,
        "the crash must interrupt the stream for the test to mean something"
    );

    let s = Server::start_with_file(dir.path(), &dir.path().join("estafeta.yaml")).await;
    let deadline = std::time::Instant::now() + T;
    loop {
        let got = ids(&rx);
        if (0..=50_000).all(|i| got.contains(&i)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the restart {} of 50,001 rows were delivered",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rx.bad_signatures(), 0);

    // The part of the transaction stored before the crash came again after the restart and
    // was recognised: the log holds every row exactly once.
    let mut logged: Vec<i64> = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(c) => format!("/v1/events?source=shop&limit=1000&cursor={c}"),
            None => "/v1/events?source=shop&limit=1000".to_owned(),
        };
        let page = s.get_json(&path).await;
        logged.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["data"]["after"]["id"].as_i64()),
        );
        match page["next"].as_str() {
            Some(c) => next = Some(c.to_owned()),
            None => break,
        }
    }
    let distinct: HashSet<i64> = logged.iter().copied().collect();
    assert_eq!(distinct.len(), 50_001);
    assert_eq!(logged.len(), 50_001, "a change stored twice in the log");
    assert!(
        s.logs().contains("will be read again and skipped"),
        "the restart found no stored change to skip: {}",
        s.logs()
    );

    let src = s.get_json("/v1/sources/shop").await;
    assert_eq!(src["kind"], "postgres");
    assert!(src["position"].as_str().is_some(), "{src}");
    assert!(s.logs().contains("streaming changes"));

    // The CLI shows the source.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args([
            "sources",
            "list",
            "--url",
            &s.url,
            "--token",
            crate::server::TOKEN,
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("shop") && text.contains("running"),
        "{text}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args([
            "sources",
            "get",
            "shop",
            "--json",
            "--url",
            &s.url,
            "--token",
            crate::server::TOKEN,
        ])
        .output()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "shop");
}

#[tokio::test]
async fn a_setup_problem_shows_in_sources_and_readyz() {
    let db = TestDb::create();
    db.sql("CREATE TABLE nokey (a int)");
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&db, &rx).replace("public.orders", "public.nokey");
    let s = Server::start(dir.path(), &cfg).await;
    let v = s
        .wait_json("/v1/sources", T, |v| {
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["state"] == "failed")
        })
        .await;
    let shop = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "shop")
        .unwrap()
        .clone();
    assert!(
        shop["error"].as_str().unwrap().contains("primary key"),
        "{shop}"
    );
    let ready = reqwest::get(format!("{}/readyz", s.url)).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("`shop` (failed)"), "{body}");
}
