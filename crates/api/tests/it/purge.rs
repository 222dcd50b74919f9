//! `POST /v1/purge` and `GET /v1/audit`: admin only, a dry run deletes nothing, a real purge
//! deletes events (keeping those with unfinished deliveries) or old files under a prefix,
//! and every purge is in the audit log with the token's name.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use estafeta_api::{AppState, Auth};
use estafeta_engine::Engine;
use serde_json::{Value, json};

use super::{TOKEN, call, req};

const MEMBER: &str = "member-token-not-admin-0123";

async fn state(dir: &std::path::Path) -> AppState {
    let mut st = super::state(dir).await;
    let files = dir.join("files");
    let yaml = format!(
        "destinations:\n  - id: archive\n    kind: file\n    path: {}\n",
        files.display()
    );
    let config =
        estafeta_config::load_str(&yaml, "test", &estafeta_config::ProcessLookup::default())
            .unwrap();
    let built = estafeta_destinations::build(
        &config.destinations[0],
        &estafeta_destinations::HttpClients::new(),
    )
    .unwrap();
    let store = Arc::clone(st.engine.store());
    st.engine = Engine::start(&config, store, vec![built]).await.unwrap();
    st.auth = Arc::new(Auth::from_token(TOKEN).with_token(MEMBER, "ops-member", false));
    st
}

fn post(body: &Value) -> Request<Body> {
    req(
        "POST",
        "/v1/purge",
        Some("application/json"),
        &body.to_string(),
    )
}

async fn ingest(st: &AppState, id: &str) -> String {
    let ev = json!({"specversion":"1.0","id":id,"source":"s","type":"visit.created","data":{"cpf":"123"}});
    let (status, v) = call(
        st,
        req(
            "POST",
            "/v1/events",
            Some("application/cloudevents+json"),
            &ev.to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    v["ids"][0].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn purge_and_audit_are_for_admin_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let body = json!({"events": {"before": Utc::now()}});
    for (method, uri, body) in [
        ("POST", "/v1/purge", body.to_string()),
        ("GET", "/v1/audit", String::new()),
    ] {
        let anonymous = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        assert_eq!(call(&st, anonymous).await.0, StatusCode::UNAUTHORIZED);
        let member = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {MEMBER}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, problem) = call(&st, member).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(problem["status"], 403);
    }
    // A member's token still reads events: only purge and audit are admin-only.
    let member = Request::builder()
        .uri("/v1/events")
        .header("authorization", format!("Bearer {MEMBER}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&st, member).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_dry_run_deletes_nothing_and_a_purge_deletes_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let a = ingest(&st, "a").await;
    let b = ingest(&st, "b").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Utc::now();
    let later = ingest(&st, "c").await;

    let (status, v) = call(
        &st,
        post(&json!({"events": {"before": cutoff, "type": "visit.created"}, "dry_run": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["events"]["counts"]["events"], 2);
    assert_eq!(v["events"]["sample"], json!([a, b]));
    for id in [&a, &b] {
        let (status, _) = call(&st, req("GET", &format!("/v1/events/{id}"), None, "")).await;
        assert_eq!(status, StatusCode::OK, "a dry run deletes nothing");
    }

    let (status, v) = call(&st, post(&json!({"events": {"before": cutoff}}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["events"]["counts"]["events"], 2);
    for id in [&a, &b] {
        let (status, _) = call(&st, req("GET", &format!("/v1/events/{id}"), None, "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _) = call(&st, req("GET", &format!("/v1/events/{later}"), None, "")).await;
    assert_eq!(status, StatusCode::OK, "newer events stay");

    let (status, audit) = call(&st, req("GET", "/v1/audit", None, "")).await;
    assert_eq!(status, StatusCode::OK);
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{audit}");
    assert_eq!(items[0]["actor"], "admin");
    assert_eq!(items[0]["kind"], "events");
    assert_eq!(items[0]["dry_run"], false);
    assert_eq!(items[0]["counts"]["events"], 2);
    assert_eq!(items[1]["dry_run"], true);
    assert_eq!(items[1]["scope"]["type"], "visit.created");
}

#[tokio::test]
async fn old_files_under_a_prefix_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let files = dir.path().join("files");
    for (key, days) in [
        ("sales/old.csv", 40_u64),
        ("sales/new.csv", 1),
        ("hr/old.csv", 40),
    ] {
        let path = files.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"a\n").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
            .unwrap();
    }
    let body = json!({"objects": {"destination": "archive", "prefix": "sales/", "older_than": "30d"}, "dry_run": true});
    let (status, v) = call(&st, post(&body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["objects"]["matched"], 1);
    assert_eq!(v["objects"]["sample"], json!(["sales/old.csv"]));
    assert!(files.join("sales/old.csv").exists());

    let body =
        json!({"objects": {"destination": "archive", "prefix": "sales/", "older_than": "30d"}});
    let (status, v) = call(&st, post(&body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["objects"]["deleted"], 1);
    assert!(!files.join("sales/old.csv").exists());
    assert!(files.join("sales/new.csv").exists());
    assert!(files.join("hr/old.csv").exists());

    let (_, audit) = call(&st, req("GET", "/v1/audit?limit=1", None, "")).await;
    assert_eq!(audit["items"][0]["kind"], "objects");
    assert_eq!(audit["items"][0]["scope"]["destination"], "archive");
    assert_eq!(audit["items"][0]["counts"]["deleted"], 1);
    assert!(audit["next"].is_string());
}

#[tokio::test]
async fn bad_requests_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    for (body, want) in [
        (json!({}), StatusCode::BAD_REQUEST),
        (
            json!({"events": {"before": Utc::now()}, "objects": {"destination": "archive", "older_than": "1d"}}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"events": {"source": "s"}}), StatusCode::BAD_REQUEST),
        (
            json!({"objects": {"destination": "archive"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"objects": {"destination": "nowhere", "older_than": "1d"}}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"events": {"before": Utc::now()}, "surprise": 1}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, v) = call(&st, post(&body)).await;
        assert_eq!(status, want, "{body} → {v}");
        assert!(
            v["type"]
                .as_str()
                .unwrap()
                .starts_with("https://estafeta.dev/problems/")
        );
    }
    let (status, _) = call(&st, req("GET", "/v1/audit?limit=0", None, "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
