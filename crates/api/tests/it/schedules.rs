//! `/v1/schedules` against running schedules: listing with the next tick and last run, a
//! manual run recorded with `manual: true`, history newest first, unknown ids, and the
//! OpenAPI document naming every run field and state.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use estafeta_api::{AppState, Auth};
use estafeta_engine::Engine;
use estafeta_sources::Sources;
use estafeta_store::{RunStatus, SqliteOptions, SqliteStore, Store};
use serde_json::{Value, json};

use super::{TOKEN, call, req};

const CONFIG: &str = "sources:
  - id: nightly
    kind: schedule
    cron: \"0 0 * * *\"
    timezone: America/Sao_Paulo
    type: report.due
  - id: five-minutes
    kind: schedule
    cron: rate(5 minutes)
    priority: low
  - id: partner-pull
    kind: schedule
    at: \"2099-01-01T00:00:00Z\"
    provider:
      kind: http
      url: https://partner.example/v1/sales
";

async fn state(dir: &std::path::Path) -> (AppState, Sources) {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::new(dir.join("t.db")))
            .await
            .unwrap(),
    );
    let config =
        estafeta_config::load_str(CONFIG, "test", &estafeta_config::ProcessLookup::default())
            .unwrap();
    let engine = Engine::start(&config, Arc::clone(&store), Vec::new())
        .await
        .unwrap();
    let vault = estafeta_store::vault::Vault::new(
        Arc::clone(&store),
        estafeta_store::vault::MasterKey::generate(),
    );
    let sources = Sources::start(
        &config.sources,
        Arc::new(engine.clone()),
        store,
        &vault.credentials(),
    );
    let state = AppState {
        vault,
        engine,
        auth: Arc::new(Auth::from_token(TOKEN)),
        max_body_bytes: 4096,
        metrics: None,
        http_sources: Arc::new(vec!["http".to_owned()]),
        sources: sources.board().clone(),
        schedules: sources.schedules().clone(),
    };
    (state, sources)
}

/// Polls `GET uri` until `pred` holds (10 s at most).
async fn wait(st: &AppState, uri: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let (status, v) = call(st, req("GET", uri, None, "")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if pred(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out on {uri}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_run_now_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let (st, sources) = state(dir.path()).await;
    let list = wait(&st, "/v1/schedules", |v| {
        v["items"][0]["next_fire_at"].is_string()
    })
    .await;
    let nightly = &list["items"][0];
    assert_eq!(nightly["id"], "nightly");
    assert_eq!(
        (
            &nightly["spec_kind"],
            &nightly["spec"],
            &nightly["timezone"]
        ),
        (
            &json!("cron"),
            &json!("0 0 * * *"),
            &json!("America/Sao_Paulo")
        )
    );
    // Midnight in São Paulo is 03:00 UTC.
    assert!(
        nightly["next_fire_at"]
            .as_str()
            .unwrap()
            .ends_with("T03:00:00Z"),
        "{nightly}"
    );
    assert_eq!(nightly["last_run"], Value::Null);
    assert_eq!(list["items"][1]["priority"], "low");
    assert_eq!(list["items"][1]["spec"], "rate(5 minutes)");
    assert_eq!(
        nightly["job"],
        json!({"kind": "emit", "event_type": "report.due"})
    );
    assert_eq!(
        list["items"][2]["job"],
        json!({"kind": "provider", "provider": "http"})
    );

    let (status, run) = call(&st, req("POST", "/v1/schedules/nightly/run", None, "")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    assert_eq!(
        (&run["manual"], &run["trigger"]),
        (&json!(true), &json!("manual"))
    );
    assert_eq!(run["status"], "queued");
    let id = run["id"].as_str().unwrap().to_owned();

    let runs = wait(&st, "/v1/schedules/nightly/runs", |v| {
        v["items"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(runs["items"][0]["id"], id.as_str());
    assert_eq!(runs["items"][0]["records"], 1);
    assert!(runs["items"][0]["finished_at"].is_string());
    let (_, one) = call(&st, req("GET", "/v1/schedules/nightly", None, "")).await;
    assert_eq!(one["last_run"]["id"], id.as_str());

    // The run's event is in the log under the schedule's source id.
    let (_, events) = call(&st, req("GET", "/v1/events?source=nightly", None, "")).await;
    let e = &events["items"][0];
    assert_eq!(
        (&e["type"], &e["extensions"]["runid"]),
        (&json!("report.due"), &json!(id))
    );

    for _ in 0..2 {
        let (status, _) = call(&st, req("POST", "/v1/schedules/nightly/run", None, "")).await;
        assert!(status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT);
        wait(&st, "/v1/schedules/nightly/runs?limit=1", |v| {
            v["items"][0]["status"] != "queued" && v["items"][0]["status"] != "running"
        })
        .await;
    }
    let (_, page) = call(
        &st,
        req("GET", "/v1/schedules/nightly/runs?limit=2", None, ""),
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let (_, rest) = call(
        &st,
        req(
            "GET",
            &format!("/v1/schedules/nightly/runs?limit=2&cursor={next}"),
            None,
            "",
        ),
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["id"], id.as_str());

    for (method, uri) in [
        ("GET", "/v1/schedules/nope"),
        ("GET", "/v1/schedules/nope/runs"),
        ("POST", "/v1/schedules/nope/run"),
    ] {
        let (status, p) = call(&st, req(method, uri, None, "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert!(
            p["detail"].as_str().unwrap().contains("no schedule `nope`"),
            "{p}"
        );
    }
    let (status, p) = call(
        &st,
        req("GET", "/v1/schedules/nightly/runs?limit=0", None, ""),
    )
    .await;
    assert_eq!(
        (status, &p["field"]),
        (StatusCode::BAD_REQUEST, &json!("limit"))
    );
    sources.shutdown(Duration::from_secs(5)).await;
}

/// The run states, triggers and fields in the OpenAPI document are the ones the API answers.
#[test]
fn the_openapi_document_names_every_run_field_and_state() {
    let doc: Value = serde_json::from_str(estafeta_api::OPENAPI).unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ScheduleRunStatus"]["enum"],
        json!(RunStatus::ALL.map(RunStatus::as_str))
    );
    assert_eq!(
        schemas["ScheduleRunTrigger"]["enum"],
        json!(["tick", "catch_up", "manual"])
    );
    let run = estafeta_store::ScheduleRun {
        id: estafeta_core::ScheduleRunId::new(),
        schedule_id: "s".to_owned(),
        scheduled_at: chrono::Utc::now(),
        trigger: estafeta_store::RunTrigger::Manual,
        status: RunStatus::Succeeded,
        claimed_at: chrono::Utc::now(),
        started_at: None,
        finished_at: None,
        records: 0,
        error: None,
        next_fire_at: None,
    };
    let mut fields: Vec<String> = json!(run).as_object().unwrap().keys().cloned().collect();
    fields.push("manual".to_owned());
    fields.sort();
    let mut documented: Vec<String> = schemas["ScheduleRun"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    documented.sort();
    assert_eq!(documented, fields);
}
