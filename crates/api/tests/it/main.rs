//! The API router tested without a socket (`app().oneshot(…)`), on a real SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use estafeta_api::{AppState, Auth, app};
use estafeta_engine::Engine;
use estafeta_store::{SqliteOptions, SqliteStore, Store};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const TOKEN: &str = "api-test-token-0123456789";

async fn state(dir: &std::path::Path) -> AppState {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::new(dir.join("t.db")))
            .await
            .unwrap(),
    );
    let config =
        estafeta_config::load_str("", "test", &estafeta_config::ProcessLookup::default()).unwrap();
    let engine = Engine::start(&config, store, Vec::new()).await.unwrap();
    AppState {
        engine,
        auth: Arc::new(Auth::from_token(TOKEN)),
        max_body_bytes: 4096,
        metrics: None,
        http_sources: Arc::new(vec!["http".to_owned()]),
        sources: estafeta_sources::StatusBoard::default(),
    }
}

fn req(method: &str, uri: &str, ct: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

async fn call(state: &AppState, r: Request<Body>) -> (StatusCode, Value) {
    let resp = app(state.clone()).oneshot(r).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn ingest_then_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let ev =
        json!({"specversion":"1.0","id":"a","source":"s","type":"t","subject":"x","data":{"k":1}});
    let (status, v) = call(
        &st,
        req(
            "POST",
            "/v1/events",
            Some("application/cloudevents+json"),
            &ev.to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = v["ids"][0].as_str().unwrap().to_owned();
    let (status, got) = call(&st, req("GET", &format!("/v1/events/{id}"), None, "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["subject"], "x");
    assert_eq!(got["data"]["k"], 1);
    assert_eq!(got["deliveries"], json!([]));
}

#[tokio::test]
async fn every_v1_route_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    for (method, uri) in [
        ("GET", "/v1/events"),
        ("POST", "/v1/events"),
        ("GET", "/v1/events/evt_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("GET", "/v1/deliveries"),
        ("GET", "/v1/deliveries/dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        (
            "POST",
            "/v1/deliveries/dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV/retry",
        ),
        ("GET", "/v1/routes"),
        ("POST", "/v1/routes/r/replay"),
        ("GET", "/v1/destinations"),
        ("GET", "/metrics"),
    ] {
        let r = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = app(st.clone()).oneshot(r).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    let r = Request::builder()
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app(st.clone()).oneshot(r).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn problems_name_the_field_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let (status, p) = call(
        &st,
        req(
            "POST",
            "/v1/events",
            Some("application/json"),
            r#"{"specversion":"1.0","id":"a","source":"s"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["field"], "type");
    assert_eq!(p["status"], 400);
    let big = format!(
        r#"{{"specversion":"1.0","id":"a","source":"s","type":"t","data":"{}"}}"#,
        "x".repeat(5000)
    );
    let (status, _) = call(
        &st,
        req("POST", "/v1/events", Some("application/json"), &big),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, p) = call(
        &st,
        req(
            "POST",
            "/v1/events",
            Some("application/cloudevents-batch+json"),
            "[]",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    let (status, p) = call(&st, req("GET", "/v1/events?limit=0", None, "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["field"], "limit");
    let (status, p) = call(
        &st,
        req(
            "POST",
            "/v1/routes/nope/replay",
            Some("application/json"),
            r#"{"from":"2026-01-01T00:00:00Z"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
}

#[tokio::test]
async fn an_unavailable_store_answers_503_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    st.engine.store().close().await;
    let ev = json!({"specversion":"1.0","id":"a","source":"s","type":"t"});
    let resp = app(st.clone())
        .oneshot(req(
            "POST",
            "/v1/events",
            Some("application/json"),
            &ev.to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.to_lowercase().contains("sqlite"),
        "no database text reaches the client: {text}"
    );
    let r = Request::builder()
        .uri("/readyz")
        .body(Body::empty())
        .unwrap();
    let ready = app(st.clone()).oneshot(r).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Reopening shows nothing was written.
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("t.db")))
        .await
        .unwrap();
    let page = store
        .list_events(&estafeta_store::EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(page.items.is_empty());
}

/// The checked-in OpenAPI document and the router agree: every documented operation is
/// routed, and every route is documented.
#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let doc: Value = serde_json::from_str(estafeta_api::OPENAPI).unwrap();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            let concrete = path.replace(
                "{id}",
                if path.starts_with("/v1/events") {
                    "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV"
                } else if path.starts_with("/v1/deliveries") {
                    "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV"
                } else {
                    "r"
                },
            );
            let resp = app(st.clone())
                .oneshot(req(
                    &method.to_uppercase(),
                    &concrete,
                    Some("application/json"),
                    "{}",
                ))
                .await
                .unwrap();
            assert!(
                resp.status() != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} not routed"
            );
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains("no such endpoint"),
                "{method} {path} not routed"
            );
        }
    }
    documented.sort();
    let mut routed = vec![
        "GET /healthz",
        "GET /metrics",
        "GET /openapi.json",
        "GET /readyz",
        "GET /v1/deliveries",
        "GET /v1/deliveries/{id}",
        "GET /v1/destinations",
        "GET /v1/events",
        "GET /v1/events/{id}",
        "GET /v1/routes",
        "GET /v1/sources",
        "GET /v1/sources/{id}",
        "POST /v1/deliveries/{id}/retry",
        "POST /v1/events",
        "POST /v1/routes/{id}/replay",
    ];
    routed.sort_unstable();
    assert_eq!(documented, routed);
    // Served as JSON without a token.
    let r = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .unwrap();
    let resp = app(st.clone()).oneshot(r).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn query_and_method_errors_are_problem_documents_and_sources_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let (status, p) = call(&st, req("GET", "/v1/events?limit=abc", None, "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("invalid query string"),
        "{p}"
    );
    let (status, p) = call(&st, req("GET", "/v1/deliveries?colour=red", None, "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    let (status, p) = call(&st, req("DELETE", "/v1/events", None, "")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(p["status"], 405);
    let (status, p) = call(
        &st,
        req(
            "POST",
            "/v1/routes/r/replay",
            Some("application/json"),
            "{oops",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("from"), "{p}");
    let ev = json!({"specversion":"1.0","id":"a","source":"s","type":"t"});
    let (status, p) = call(
        &st,
        req(
            "POST",
            "/v1/events?source=partners",
            Some("application/json"),
            &ev.to_string(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(p["field"], "source");
}

#[tokio::test]
async fn sources_are_listed_and_an_unknown_one_is_a_404() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let resp = app(st.clone())
        .oneshot(req("GET", "/v1/sources", None, ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app(st.clone())
        .oneshot(req("GET", "/v1/sources/nope", None, ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Without a token: 401.
    let r = Request::builder()
        .uri("/v1/sources")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app(st).oneshot(r).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
