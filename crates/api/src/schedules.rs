//! `/v1/schedules`: the configured schedules with their next tick and last run, a schedule's
//! run history, and running one now.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use estafeta_sources::schedule::{ScheduleInfo, TriggerError};
use estafeta_store::{RunTrigger, ScheduleRun};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::problem::Problem;

const DEFAULT_LIMIT: usize = 50;

/// A run as the API shows it: the record plus `manual`.
fn run_json(run: &ScheduleRun) -> Value {
    let mut v = json!(run);
    v["manual"] = json!(run.trigger == RunTrigger::Manual);
    v
}

async fn with_last_run(state: &AppState, info: ScheduleInfo) -> Result<Value, Problem> {
    let last = state
        .engine
        .store()
        .list_runs(&info.id, 1, None)
        .await?
        .items
        .first()
        .map(run_json);
    let mut v = json!(info);
    v["last_run"] = last.unwrap_or(Value::Null);
    Ok(v)
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("no schedule `{id}`; see GET /v1/schedules"))
}

/// `GET /v1/schedules`.
pub(crate) async fn list_schedules(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let mut items = Vec::new();
    for info in state.schedules.list() {
        items.push(with_last_run(&state, info).await?);
    }
    Ok(Json(json!({ "items": items })))
}

/// `GET /v1/schedules/{id}`.
pub(crate) async fn get_schedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let info = state.schedules.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(Json(with_last_run(&state, info).await?))
}

/// Query of `GET /v1/schedules/{id}/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsParams {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/schedules/{id}/runs`: newest first.
pub(crate) async fn list_runs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Result<Query<RunsParams>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(p) =
        p.map_err(|e| Problem::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let limit = match p.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(Problem::bad_request("limit must be between 1 and 1000").field("limit"));
        }
    };
    if state.schedules.get(&id).is_none() {
        return Err(not_found(&id));
    }
    let page = state.engine.store().list_runs(&id, limit, p.cursor).await?;
    let items: Vec<Value> = page.items.iter().map(run_json).collect();
    let mut v = json!({ "items": items });
    if let Some(next) = page.next {
        v["next"] = json!(next);
    }
    Ok(Json(v))
}

/// `POST /v1/schedules/{id}/run`: 202 with the queued run; 409 (recorded as skipped) while
/// the schedule's run is still going.
pub(crate) async fn run_now(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    match state.schedules.trigger(&id).await {
        Ok(run) => Ok((StatusCode::ACCEPTED, Json(run_json(&run)))),
        Err(TriggerError::NotFound(_)) => Err(not_found(&id)),
        Err(e @ TriggerError::Busy(_)) => {
            Err(
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict").detail(format!(
                    "{e}; the request was recorded as a skipped run — try again when the run ends"
                )),
            )
        }
        Err(TriggerError::Store(e)) => Err(e.into()),
    }
}
