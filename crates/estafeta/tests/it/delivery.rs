//! Delivery as a receiver and an operator see it: signed, filtered, templated, retried,
//! parked as dead, retried by hand, replayed, ordered.

use std::time::Duration;

use estafeta_testkit::WebhookReceiver;
use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Server, WHSEC, event, one_route, webhook};

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn delivers_signed_events_to_matching_webhooks_only() {
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "routes:\n  - id: all-orders\n    match: 'order.*'\n    to: [{{destination: hook}}]\n  - id: big\n    match: order.created\n    filter: 'data.total > 100 && subject.startsWith(\"br-\")'\n    to:\n      - destination: hook\n        template: '{{\"text\": \"Big order {{{{ id }}}} of {{{{ data.total }}}}\"}}'\ndestinations:\n{}",
        webhook("hook", &rx.url(), "    headers: { X-Team: integrations }\n")
    );
    let s = Server::start(dir.path(), &cfg).await;
    let mut big = event("o-1", "order.created", json!({"total": 150}));
    big["subject"] = json!("br-1");
    assert_eq!(s.post_event(&big).await.status(), 202);
    assert_eq!(
        s.post_event(&event("o-2", "order.created", json!({"total": 5})))
            .await
            .status(),
        202
    );
    assert_eq!(
        s.post_event(&event("u-1", "user.created", json!({})))
            .await
            .status(),
        202
    );
    assert!(rx.wait_for_count(3, T).await, "got {}", rx.count());
    // Nothing more arrives for the user event or the small order's template route.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 3);
    assert_eq!(rx.bad_signatures(), 0);
    let reqs = rx.requests();
    for r in &reqs {
        assert!(r.header("webhook-id").unwrap().starts_with("dlv_"));
        assert!(r.header("webhook-timestamp").is_some());
        assert!(r.header("webhook-signature").unwrap().starts_with("v1,"));
        assert_eq!(r.header("x-team"), Some("integrations"));
    }
    let templated: Vec<_> = reqs
        .iter()
        .filter_map(|r| r.json())
        .filter(|j| j.get("text").is_some())
        .collect();
    assert_eq!(templated.len(), 1);
    assert_eq!(templated[0]["text"], "Big order o-1 of 150");
    let structured: Vec<_> = reqs
        .iter()
        .filter(|r| r.header("content-type") == Some("application/cloudevents+json"))
        .filter_map(|r| r.json())
        .collect();
    assert_eq!(structured.len(), 2);
    assert!(
        structured
            .iter()
            .all(|e| e["specversion"] == "1.0" && e["type"] == "order.created")
    );
    // The deliveries are visible, delivered, with their attempt.
    let d = s
        .wait_json("/v1/deliveries?status=delivered", T, |v| {
            v["items"].as_array().unwrap().len() == 3
        })
        .await;
    let id = d["items"][0]["id"].as_str().unwrap();
    let one = s.get_json(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(one["history"][0]["outcome"], "delivered");
    assert_eq!(one["history"][0]["status_code"], 200);
    // Metrics count them.
    let m = s
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("estafeta_deliveries_delivered_total"), "{m}");
}

#[tokio::test]
async fn endpoint_down_then_up_gets_everything() {
    let rx = WebhookReceiver::start().await;
    rx.set_default(503);
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_route(
        &rx.url(),
        "    retry: { schedule: [0s, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms, 200ms], jitter: 0 }\n    circuit_breaker: { enabled: false }\n",
    );
    let s = Server::start(dir.path(), &cfg).await;
    for i in 0..20 {
        assert_eq!(
            s.post_event(&event(&format!("e-{i}"), "t", json!({"i": i})))
                .await
                .status(),
            202
        );
    }
    assert!(
        rx.wait_for_count(20, T).await,
        "the failing endpoint is attempted"
    );
    rx.set_default(200);
    s.wait_json("/v1/deliveries?status=delivered&limit=100", T, |v| {
        v["items"].as_array().unwrap().len() == 20
    })
    .await;
    let d = s.get_json("/v1/deliveries?limit=1").await;
    let id = d["items"][0]["id"].as_str().unwrap();
    let one = s.get_json(&format!("/v1/deliveries/{id}")).await;
    let attempts = one["history"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{one}");
    assert_eq!(attempts[0]["outcome"], "retryable");
    assert_eq!(attempts[0]["status_code"], 503);
    assert_eq!(attempts.last().unwrap()["outcome"], "delivered");
}

#[tokio::test]
async fn dead_after_the_last_attempt_then_retried_by_the_api() {
    let rx = WebhookReceiver::start().await;
    rx.set_default(500);
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_route(
        &rx.url(),
        "    retry: { schedule: [0s, 50ms, 50ms], jitter: 0 }\n",
    );
    let s = Server::start(dir.path(), &cfg).await;
    s.post_event(&event("d-1", "t", json!({}))).await;
    let dead = s
        .wait_json("/v1/deliveries?status=dead", T, |v| {
            !v["items"].as_array().unwrap().is_empty()
        })
        .await;
    let d = &dead["items"][0];
    assert_eq!(d["attempts"], 3);
    assert!(d["last_error"].as_str().unwrap().contains("500"), "{d}");
    assert_eq!(rx.count(), 3);
    rx.set_default(200);
    let id = d["id"].as_str().unwrap();
    let r = s
        .req(Method::POST, &format!("/v1/deliveries/{id}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    s.wait_json(&format!("/v1/deliveries/{id}"), T, |v| {
        v["status"] == "delivered"
    })
    .await;
    assert_eq!(rx.count(), 4);
    // Another tenant's or an unknown delivery is not found.
    let r = s
        .req(
            Method::POST,
            "/v1/deliveries/dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV/retry",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn final_errors_are_not_retried_and_retry_after_is_honoured() {
    let rx = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_route(
        &rx.url(),
        "    retry: { schedule: [0s, 10ms, 10ms], jitter: 0 }\n",
    );
    let s = Server::start(dir.path(), &cfg).await;
    rx.fail_next(1, 422);
    s.post_event(&event("f-1", "t", json!({}))).await;
    let dead = s
        .wait_json("/v1/deliveries?status=dead", T, |v| {
            !v["items"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(dead["items"][0]["attempts"], 1, "a 4xx is final");

    rx.respond_with(1, 429, &[("retry-after", "1")], "");
    s.post_event(&event("f-2", "t", json!({}))).await;
    let start = std::time::Instant::now();
    assert!(rx.wait_for_count(3, T).await);
    let arrivals = rx.arrivals();
    let gap = arrivals[2]
        .received_at
        .duration_since(arrivals[1].received_at);
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After: 1 must delay the retry, got {gap:?}"
    );
    assert!(start.elapsed() < T);
}

#[tokio::test]
async fn render_and_filter_errors_fail_the_delivery_with_the_reason() {
    let rx = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "routes:\n  - id: tmpl\n    match: a\n    to:\n      - destination: hook\n        template: 'hello {{{{ data.name.first }}}}'\n  - id: filt\n    match: b\n    filter: 'data.total > 1'\n    to: [{{destination: hook}}]\ndestinations:\n{}",
        webhook("hook", &rx.url(), "")
    );
    let s = Server::start(dir.path(), &cfg).await;
    assert_eq!(
        s.post_event(&event("a-1", "a", json!({"name": "flat"})))
            .await
            .status(),
        202
    );
    assert_eq!(
        s.post_event(&event("b-1", "b", json!({"total": "not a number"})))
            .await
            .status(),
        202
    );
    let dead = s
        .wait_json("/v1/deliveries?status=dead", T, |v| {
            v["items"].as_array().unwrap().len() == 2
        })
        .await;
    let errors: Vec<String> = dead["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["last_error"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("routes.tmpl.to[0].template")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("route `filt`") && e.contains("data.total > 1")),
        "{errors:?}"
    );
    assert_eq!(rx.count(), 0);
    // The server is fine.
    assert_eq!(
        s.post_event(&event("a-2", "a", json!({"name": {"first": "Ana"}})))
            .await
            .status(),
        202
    );
    assert!(rx.wait_for_count(1, T).await);
    assert_eq!(rx.requests()[0].body, "hello Ana".as_bytes());
}

#[tokio::test]
async fn replay_sends_a_routes_events_again() {
    let rx = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "routes:\n  - id: r\n    match: 'x.*'\n    to: [{{destination: hook}}]\ndestinations:\n{}",
        webhook("hook", &rx.url(), "")
    );
    let s = Server::start(dir.path(), &cfg).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    for i in 0..5 {
        s.post_event(&event(&format!("r-{i}"), "x.y", json!({"i": i})))
            .await;
    }
    s.post_event(&event("other", "z", json!({}))).await;
    assert!(rx.wait_for_count(5, T).await);
    let r = s
        .req(Method::POST, "/v1/routes/r/replay")
        .json(&json!({"from": before.to_rfc3339()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["scanned"], 6);
    assert_eq!(report["matched"], 5);
    assert!(rx.wait_for_count(10, T).await);
    let ids: std::collections::HashSet<_> = rx
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 10, "replayed deliveries carry new ids");
    let r = s
        .req(Method::POST, "/v1/routes/nope/replay")
        .json(&json!({"from": before.to_rfc3339()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn ordering_by_key_delivers_one_at_a_time_in_log_order() {
    let rx = WebhookReceiver::start().await;
    rx.set_delay(Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "routes:\n  - id: r\n    ordering: key\n    to: [{{destination: hook}}]\ndestinations:\n{}",
        webhook(
            "hook",
            &rx.url(),
            "    concurrency: 16\n    retry: { schedule: [0s, 50ms, 50ms, 50ms, 50ms], jitter: 0 }\n"
        )
    );
    let s = Server::start(dir.path(), &cfg).await;
    // The first deliveries fail once: later ones for the same key must wait for them.
    rx.fail_next(2, 503);
    let mut batch = Vec::new();
    for i in 0..30 {
        let mut e = event(&format!("k-{i}"), "t", json!({"seq": i}));
        e["partitionkey"] = json!(format!("customer-{}", i % 3));
        batch.push(e);
    }
    let r = s.post_batch(&batch).await;
    assert_eq!(r.status(), 202);
    assert!(rx.wait_for_count(30, T).await);
    for k in 0..3 {
        let seqs: Vec<i64> = rx
            .requests()
            .iter()
            .filter_map(|r| r.json())
            .filter(|j| j["partitionkey"] == format!("customer-{k}"))
            .map(|j| j["data"]["seq"].as_i64().unwrap())
            .collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "key customer-{k} out of order");
        assert_eq!(seqs.len(), 10);
    }
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let rx = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "routes:\n  - id: r\n    to: [{{destination: guarded}}]\ndestinations:\n  - id: guarded\n    kind: webhook\n    url: {}\n",
        rx.url()
    );
    let s = Server::start(dir.path(), &cfg).await;
    s.post_event(&event("p-1", "t", json!({}))).await;
    let dead = s
        .wait_json("/v1/deliveries?status=dead", T, |v| {
            !v["items"].as_array().unwrap().is_empty()
        })
        .await;
    let err = dead["items"][0]["last_error"].as_str().unwrap();
    assert!(err.contains("allow_private_networks"), "{err}");
    assert_eq!(rx.count(), 0);
}

#[tokio::test]
async fn batch_mode_sends_many_events_in_one_signed_request() {
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    rx.set_delay(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_route(
        &rx.url(),
        "    concurrency: 1\n    batch: { max_events: 50, max_wait: 100ms }\n",
    );
    let s = Server::start(dir.path(), &cfg).await;
    let batch: Vec<Value> = (0..100)
        .map(|i| event(&format!("m-{i}"), "t", json!({"i": i})))
        .collect();
    s.post_batch(&batch).await;
    s.wait_json("/v1/deliveries?status=delivered&limit=200", T, |v| {
        v["items"].as_array().unwrap().len() == 100
    })
    .await;
    let reqs = rx.requests();
    assert!(
        reqs.len() < 100,
        "batched into fewer requests, got {}",
        reqs.len()
    );
    assert_eq!(rx.bad_signatures(), 0);
    let total: usize = reqs
        .iter()
        .map(|r| r.json().unwrap().as_array().unwrap().len())
        .sum();
    assert_eq!(total, 100);
    assert!(
        reqs.iter()
            .all(|r| r.header("content-type") == Some("application/cloudevents-batch+json"))
    );
}

#[tokio::test]
async fn the_circuit_breaker_pauses_a_failing_endpoint_and_resumes_it() {
    let rx = WebhookReceiver::start().await;
    rx.set_default(503);
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_route(
        &rx.url(),
        "    concurrency: 4\n    retry: { schedule: [0s, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms], jitter: 0 }\n    circuit_breaker: { failure_window: 300ms, probe_interval: 1s }\n",
    );
    let s = Server::start(dir.path(), &cfg).await;
    for i in 0..20 {
        s.post_event(&event(&format!("cb-{i}"), "t", json!({"i": i})))
            .await;
    }
    // It opens once the endpoint has failed for the window.
    s.wait_json("/v1/destinations", T, |v| {
        v["items"][0]["circuit_open"] == true
    })
    .await;
    // While open, only probes go out: about one per second.
    let before = rx.count();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during = rx.count() - before;
    assert!(
        during <= 4,
        "{during} requests while open; expected only probes"
    );
    // Nothing is dropped or dead meanwhile.
    let dead = s.get_json("/v1/deliveries?status=dead").await;
    assert!(dead["items"].as_array().unwrap().is_empty(), "{dead}");
    // The endpoint recovers: a probe succeeds and everything is delivered.
    rx.set_default(200);
    s.wait_json("/v1/deliveries?status=delivered&limit=100", T, |v| {
        v["items"].as_array().unwrap().len() == 20
    })
    .await;
    s.wait_json("/v1/destinations", T, |v| {
        v["items"][0]["circuit_open"] == false
    })
    .await;
}
