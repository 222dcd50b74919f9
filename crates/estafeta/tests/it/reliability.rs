//! Crashes and restarts: `kill -9` while ingesting and delivering, SIGTERM, retries that
//! outlive the process.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estafeta_testkit::WebhookReceiver;
use serde_json::json;

use crate::server::{Server, event, one_route};

const T: Duration = Duration::from_secs(60);

fn seqs_delivered(rx: &WebhookReceiver) -> HashSet<i64> {
    rx.requests()
        .iter()
        .filter_map(|r| r.json())
        .filter_map(|j| j["data"]["n"].as_i64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_ingesting_and_delivering_loses_nothing_accepted() {
    let rx = WebhookReceiver::start().await;
    rx.set_delay(Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_route(
        &rx.url(),
        "    concurrency: 8\n    retry: { schedule: [0s, 100ms, 100ms, 100ms, 100ms, 100ms], jitter: 0 }\n",
    );
    let s = Server::start(dir.path(), &cfg).await;
    let url = s.url.clone();
    let accepted = Arc::new(Mutex::new(Vec::<i64>::new()));
    let http = reqwest::Client::new();
    let mut senders = Vec::new();
    for w in 0..8i64 {
        let (url, acc, http) = (url.clone(), Arc::clone(&accepted), http.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..10_000i64 {
                let n = w * 100_000 + i;
                let ev = event(&format!("n-{n}"), "t", json!({"n": n}));
                let r = http
                    .post(format!("{url}/v1/events"))
                    .bearer_auth(crate::server::TOKEN)
                    .header("content-type", "application/cloudevents+json")
                    .body(ev.to_string())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => acc.lock().unwrap().push(n),
                    _ => return, // the server died
                }
            }
        }));
    }
    // Let some events be accepted and some delivered, then pull the plug.
    let start = std::time::Instant::now();
    while accepted.lock().unwrap().len() < 300 {
        assert!(start.elapsed() < T, "ingest too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rx.wait_for_count(50, T).await);
    // Kill while a backlog is waiting, so the crash interrupts delivery even when the
    // machine is busy and ingest is slow.
    let start = std::time::Instant::now();
    while accepted.lock().unwrap().len() < seqs_delivered(&rx).len() + 50 {
        assert!(
            start.elapsed() < T,
            "no backlog formed: delivery kept up with ingest"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.kill9().await;
    for h in senders {
        let _ = h.await;
    }
    let accepted: HashSet<i64> = accepted.lock().unwrap().iter().copied().collect();
    let delivered_before = seqs_delivered(&rx);
    assert!(
        delivered_before.len() < accepted.len(),
        "the crash must interrupt delivery for the test to mean something"
    );

    let s = Server::start_with_file(dir.path(), &dir.path().join("estafeta.yaml")).await;
    let deadline = std::time::Instant::now() + T;
    loop {
        let delivered = seqs_delivered(&rx);
        let missing: Vec<_> = accepted.difference(&delivered).take(5).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "accepted but never delivered, e.g. {missing:?} (of {})",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every accepted event is in the log exactly once.
    let mut seen = 0;
    let mut cursor = String::new();
    loop {
        let page = s.get_json(&format!("/v1/events?limit=1000{cursor}")).await;
        seen += page["items"].as_array().unwrap().len();
        match page["next"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    assert!(
        seen >= accepted.len(),
        "log has {seen}, accepted {}",
        accepted.len()
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_attempts_and_exits_cleanly() {
    let rx = WebhookReceiver::start().await;
    rx.set_delay(Duration::from_millis(700));
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_route(&rx.url(), "");
    let s = Server::start(dir.path(), &cfg).await;
    for i in 0..5 {
        s.post_event(&event(&format!("g-{i}"), "t", json!({"n": i})))
            .await;
    }
    // Wait until the attempts are in flight (the receiver holds them for 700 ms).
    let start = std::time::Instant::now();
    while rx.count() < 5 {
        assert!(start.elapsed() < T);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = s.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    // Their results were written before exit: nothing is sent again after a restart.
    let s = Server::start_with_file(dir.path(), &dir.path().join("estafeta.yaml")).await;
    let v = s.get_json("/v1/deliveries?status=delivered").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 5, "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 5);
}

#[tokio::test]
async fn retries_survive_a_restart() {
    let rx = WebhookReceiver::start().await;
    rx.set_default(503);
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_route(
        &rx.url(),
        "    retry: { schedule: [0s, 2s, 2s], jitter: 0 }\n    circuit_breaker: { enabled: false }\n",
    );
    let s = Server::start(dir.path(), &cfg).await;
    s.post_event(&event("s-1", "t", json!({"n": 1}))).await;
    s.wait_json("/v1/deliveries?status=retrying", T, |v| {
        !v["items"].as_array().unwrap().is_empty()
    })
    .await;
    s.kill9().await;
    rx.set_default(200);
    let s = Server::start_with_file(dir.path(), &dir.path().join("estafeta.yaml")).await;
    let v = s
        .wait_json("/v1/deliveries?status=delivered", T, |v| {
            !v["items"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(v["items"][0]["attempts"], 2);
}

#[tokio::test]
async fn a_backlog_larger_than_memory_waits_in_the_store_and_is_all_delivered_once() {
    let rx = WebhookReceiver::start().await;
    rx.set_delay(Duration::from_millis(2));
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_route(&rx.url(), "    concurrency: 4\n    queue_capacity: 20\n");
    let s = Server::start(dir.path(), &cfg).await;
    let batch: Vec<serde_json::Value> = (0..600)
        .map(|i| event(&format!("q-{i}"), "t", json!({"n": i})))
        .collect();
    for chunk in batch.chunks(100) {
        assert_eq!(s.post_batch(chunk).await.status(), 202);
    }
    // Memory holds at most 20 of them at a time; the rest come back from the store.
    let depth = s.get_json("/v1/destinations").await;
    assert!(
        depth["items"][0]["queued"].as_u64().unwrap() <= 20,
        "{depth}"
    );
    assert!(rx.wait_for_count(600, T).await, "delivered {}", rx.count());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 600, "each delivery sent once");
    assert_eq!(seqs_delivered(&rx).len(), 600);
}
