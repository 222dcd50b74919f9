//! The API router tested without a socket (`app().oneshot(…)`), on a real SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod plugins;
mod purge;
mod schedules;
mod vault;

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
    let vault = estafeta_store::vault::Vault::new(
        Arc::clone(&store),
        estafeta_store::vault::MasterKey::generate(),
    );
    let engine = Engine::start(&config, store, Vec::new()).await.unwrap();
    AppState {
        vault,
        engine,
        auth: Arc::new(Auth::from_token(TOKEN)),
        max_body_bytes: 4096,
        metrics: None,
        http_sources: Arc::new(vec!["http".to_owned()]),
        sources: estafeta_sources::StatusBoard::default(),
        schedules: estafeta_sources::Schedules::default(),
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
        ("GET", "/v1/plugins"),
        ("POST", "/v1/purge"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/schedules"),
        ("GET", "/v1/schedules/nightly"),
        ("GET", "/v1/schedules/nightly/runs"),
        ("POST", "/v1/schedules/nightly/run"),
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
    // Estafeta's own event types cannot be posted (a client could fake failed records).
    let (status, p) = call(
        &st,
        req(
            "POST",
            "/v1/events",
            Some("application/cloudevents-batch+json"),
            r#"[{"specversion":"1.0","id":"a","source":"s","type":"order.created"},
                {"specversion":"1.0","id":"b","source":"s","type":"estafeta.message.undecodable"}]"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert_eq!(p["field"], "[1].type");
    assert!(p["detail"].as_str().unwrap().contains("reserved"), "{p}");
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
        "GET /v1/plugins",
        "POST /v1/purge",
        "GET /v1/audit",
        "GET /v1/schedules",
        "GET /v1/schedules/{id}",
        "GET /v1/schedules/{id}/runs",
        "GET /v1/sources",
        "GET /v1/sources/{id}",
        "POST /v1/deliveries/{id}/retry",
        "POST /v1/events",
        "POST /v1/routes/{id}/replay",
        "POST /v1/schedules/{id}/run",
        "GET /v1/secrets",
        "PUT /v1/secrets/{name}",
        "DELETE /v1/secrets/{name}",
        "GET /v1/credentials",
        "GET /v1/credentials/{name}",
        "PUT /v1/credentials/{name}",
        "DELETE /v1/credentials/{name}",
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

/// A delivery that a route's `filter` step stopped is listed with `?status=filtered`, and
/// its attempt shows the step traces.
#[tokio::test]
async fn filtered_deliveries_are_listed_with_their_step_traces() {
    use estafeta_core::{
        Attempt, AttemptId, AttemptOutcome, Delivery, DeliveryId, DeliveryStatus, Event, EventId,
        StepOutcome, StepTrace, TenantId,
    };
    use estafeta_store::{AttemptRecord, NewEvent};

    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let store = st.engine.store();
    let now = chrono::Utc::now();
    let event = Event {
        id: EventId::new(),
        tenant: TenantId::default(),
        source_id: "http".to_owned(),
        ce_id: "a".to_owned(),
        ce_source: "shop".to_owned(),
        ty: "order.created".to_owned(),
        subject: None,
        time: now,
        datacontenttype: None,
        dataschema: None,
        key: None,
        extensions: serde_json::Map::new(),
        data: Some(json!({"total": 5})),
        data_is_base64: false,
        received_at: now,
    };
    let delivery = Delivery {
        id: DeliveryId::new(),
        event_id: event.id,
        tenant: event.tenant.clone(),
        route_id: "big-orders".to_owned(),
        destination_id: "shop-webhook".to_owned(),
        target_index: 0,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_at: Some(now),
        last_error: None,
        key: None,
        created_at: now,
        updated_at: now,
    };
    let id = delivery.id;
    store
        .append(vec![NewEvent {
            event: Arc::new(event),
            dedupe_key: None,
            deliveries: vec![delivery],
        }])
        .await
        .unwrap();
    let step = |step: &str, name: &str, outcome| StepTrace {
        step: step.to_owned(),
        name: Some(name.to_owned()),
        outcome,
        duration_ms: 1,
        answered_by: None,
        output: None,
        detail: None,
    };
    store
        .record_attempts(vec![AttemptRecord {
            attempt: Attempt {
                id: AttemptId::new(),
                delivery_id: id,
                started_at: now,
                duration_ms: 2,
                outcome: AttemptOutcome::Filtered,
                status_code: None,
                error: None,
                response_excerpt: None,
                steps: vec![
                    step("enrich", "customer", StepOutcome::Ok),
                    step("filter", "data.total > 100", StepOutcome::Filtered),
                ],
            },
            status: DeliveryStatus::Filtered,
            attempts: 1,
            next_at: None,
            last_error: None,
        }])
        .await
        .unwrap();

    let (status, page) = call(&st, req("GET", "/v1/deliveries?status=filtered", None, "")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["id"], id.to_string());
    assert_eq!(page["items"][0]["status"], "filtered");
    let (_, dead) = call(&st, req("GET", "/v1/deliveries?status=dead", None, "")).await;
    assert_eq!(dead["items"], json!([]));

    let (status, one) = call(&st, req("GET", &format!("/v1/deliveries/{id}"), None, "")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    let attempt = &one["history"][0];
    assert_eq!(attempt["outcome"], "filtered");
    assert_eq!(
        attempt["steps"],
        json!([
            {"step": "enrich", "name": "customer", "outcome": "ok", "duration_ms": 1},
            {"step": "filter", "name": "data.total > 100", "outcome": "filtered", "duration_ms": 1}
        ])
    );

    let (status, p) = call(&st, req("GET", "/v1/deliveries?status=skipped", None, "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["field"], "status");
    assert!(p["detail"].as_str().unwrap().contains("filtered"), "{p}");
}

/// The states, outcomes and step traces in the OpenAPI document are the ones the API
/// answers with.
#[test]
fn the_openapi_document_names_every_status_and_step_field() {
    use estafeta_core::{AttemptOutcome, DeliveryStatus, StepOutcome, StepTrace};

    let doc: Value = serde_json::from_str(estafeta_api::OPENAPI).unwrap();
    let schemas = &doc["components"]["schemas"];
    let statuses = DeliveryStatus::ALL.map(DeliveryStatus::as_str);
    assert_eq!(schemas["DeliveryStatus"]["enum"], json!(statuses));
    let outcomes = [
        AttemptOutcome::Delivered,
        AttemptOutcome::Retryable,
        AttemptOutcome::Final,
        AttemptOutcome::Filtered,
    ]
    .map(AttemptOutcome::as_str);
    assert_eq!(
        schemas["Attempt"]["properties"]["outcome"]["enum"],
        json!(outcomes)
    );
    let step_outcomes = [
        StepOutcome::Ok,
        StepOutcome::Cached,
        StepOutcome::Filtered,
        StepOutcome::Failed,
        StepOutcome::Continued,
    ];
    assert_eq!(
        schemas["StepTrace"]["properties"]["outcome"]["enum"],
        json!(step_outcomes)
    );
    let full = StepTrace {
        step: "enrich".to_owned(),
        name: Some("customer".to_owned()),
        outcome: StepOutcome::Ok,
        duration_ms: 3,
        answered_by: Some("crm:443 200".to_owned()),
        output: Some("{}".to_owned()),
        detail: Some("primary timed out".to_owned()),
    };
    let fields = serde_json::to_value(full).unwrap();
    let documented = schemas["StepTrace"]["properties"].as_object().unwrap();
    let mut want: Vec<&String> = fields.as_object().unwrap().keys().collect();
    let mut got: Vec<&String> = documented.keys().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(
        schemas["Attempt"]["properties"]["steps"]["items"]["$ref"],
        "#/components/schemas/StepTrace"
    );
}
