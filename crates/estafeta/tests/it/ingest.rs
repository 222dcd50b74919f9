//! Ingest as a client sees it: accepted, de-duplicated, refused with the right status.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Server, event};

#[tokio::test]
async fn duplicate_ids_and_idempotency_keys_yield_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    let ev = event("dup-1", "order.created", json!({"total": 1}));
    let a: Value = s.post_event(&ev).await.json().await.unwrap();
    let b: Value = s.post_event(&ev).await.json().await.unwrap();
    assert_eq!(a["ids"], b["ids"]);
    assert_eq!(b["duplicates"], 1);

    let send_with_key = |id: &str| {
        s.req(Method::POST, "/v1/events")
            .header("content-type", "application/json")
            .header("idempotency-key", "key-42")
            .body(event(id, "order.created", json!({})).to_string())
            .send()
    };
    let c: Value = send_with_key("k-1").await.unwrap().json().await.unwrap();
    let d: Value = send_with_key("k-2").await.unwrap().json().await.unwrap();
    assert_eq!(c["ids"], d["ids"], "same Idempotency-Key, one event");
    let list = s.get_json("/v1/events?limit=100").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn batches_are_accepted_and_listed_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    let batch: Vec<Value> = (0..250)
        .map(|i| {
            event(
                &format!("b-{i}"),
                if i % 2 == 0 { "a.even" } else { "a.odd" },
                json!({"i": i}),
            )
        })
        .collect();
    let r = s.post_batch(&batch).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 250);
    // Paginate the even ones: 125, in pages of 50, with no repeats.
    let mut seen = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let page = s
            .get_json(&format!("/v1/events?type=a.even&limit=50{cursor}"))
            .await;
        for e in page["items"].as_array().unwrap() {
            assert_eq!(e["type"], "a.even");
            assert!(seen.insert(e["id"].as_str().unwrap().to_owned()));
        }
        match page["next"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 125);
    let one = &v["ids"][0];
    let got = s
        .get_json(&format!("/v1/events/{}", one.as_str().unwrap()))
        .await;
    assert_eq!(got["ce_id"], "b-0");
    assert_eq!(got["data"]["i"], 0);
}

#[tokio::test]
async fn bad_input_gets_its_specific_status_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    let post = |ct: &'static str, body: String| {
        s.req(Method::POST, "/v1/events")
            .header("content-type", ct)
            .body(body)
            .send()
    };
    // Malformed JSON names line and column.
    let r = post(
        "application/json",
        "{\"specversion\": \"1.0\",\n \"id\": }".into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("line 2"), "{p}");
    // Missing attribute names the field.
    let r = post(
        "application/json",
        json!({"specversion":"1.0","source":"s","type":"t"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "id");
    // Wrong type in a batch names the index.
    let batch =
        json!([event("ok", "t", json!({})), {"specversion":"1.0","id":"x","source":"s","type":5}]);
    let r = post("application/cloudevents-batch+json", batch.to_string())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "[1].type");
    // Nothing of the refused batch was stored.
    let list = s.get_json("/v1/events").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    // Too large.
    let big = event("big", "t", json!({"blob": "x".repeat(1_100_000)}));
    let r = post("application/json", big.to_string()).await.unwrap();
    assert_eq!(r.status(), 413);
    // Unsupported media type.
    let r = post("text/plain", "hello".into()).await.unwrap();
    assert_eq!(r.status(), 415);
    // No token, wrong token.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/events", s.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .get(format!("{}/v1/events", s.url))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "metrics need a token too");
    // Unknown ids and bad ids.
    let r = s
        .req(Method::GET, "/v1/events/evt_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s.req(Method::GET, "/v1/events/nope").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .req(Method::GET, "/v1/deliveries?status=lost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Still serving.
    let r = s.post_event(&event("after", "t", json!({}))).await;
    assert_eq!(r.status(), 202);
    let h = reqwest::get(format!("{}/healthz", s.url)).await.unwrap();
    assert_eq!(h.status(), 200);
    let h = reqwest::get(format!("{}/readyz", s.url)).await.unwrap();
    assert_eq!(h.status(), 200);
    assert!(!s.logs().contains("panicked"), "{}", s.logs());
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn check_command_reports_every_problem_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "routes:\n  - id: r\n    match: 'order.*'\n    filter: 'data.total >'\n    to:\n      - destination: nowhere\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:4:")
            && err.contains("routes[0].filter: route `r`: filter does not compile"),
        "{err}"
    );
    assert!(
        err.contains(
            "bad.yaml:6:22: routes[0].to[0].destination: no destination with id `nowhere`"
        ),
        "{err}"
    );
    let good =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args(["check", "--config"])
        .arg(&good)
        .env("HOOK_URL", "http://127.0.0.1:9/hooks")
        .env("ESTAFETA_SECRET_SHOP_WHSEC", crate::server::WHSEC)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_cli_sends_lists_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
            .args(args)
            .env("ESTAFETA_URL", &s.url)
            .env("ESTAFETA_TOKEN", crate::server::TOKEN)
            .output()
            .unwrap()
    };
    let out = cli(&[
        "events",
        "send",
        "--type",
        "order.created",
        "--id",
        "cli-1",
        "--data",
        r#"{"total": 42}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(id.starts_with("evt_"), "{id}");
    let out = cli(&["events", "get", &id, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["total"], 42);
    let out = cli(&["events", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("order.created"));
    let out = cli(&["deliveries", "list", "--status", "dead", "--json"]);
    assert!(out.status.success());
    // A clear message, not a crash, for bad input and a wrong token.
    let out = cli(&["events", "send", "--type", "t", "--data", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data is not valid JSON"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args([
            "events",
            "list",
            "--url",
            &s.url,
            "--token",
            "wrong-wrong-wrong-wrong",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn events_can_come_in_through_a_named_http_source() {
    let rx = estafeta_testkit::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "sources:\n  - id: partners\n    kind: http\nroutes:\n  - id: from-partners\n    from: partners\n    to: [{{destination: hook}}]\ndestinations:\n{}",
        crate::server::webhook("hook", &rx.url(), "")
    );
    let s = Server::start(dir.path(), &cfg).await;
    // Through the default source: the route does not take it.
    assert_eq!(
        s.post_event(&event("p-0", "t", json!({}))).await.status(),
        202
    );
    let r = s
        .req(Method::POST, "/v1/events?source=partners")
        .header("content-type", "application/cloudevents+json")
        .body(event("p-1", "t", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(rx.wait_for_count(1, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 1);
    assert_eq!(rx.requests()[0].json().unwrap()["id"], "p-1");
    let list = s.get_json("/v1/events?source=partners").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}
