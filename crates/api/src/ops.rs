//! The operations API: events, deliveries, attempts, retries, replays, routes and
//! destinations.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use estafeta_core::{DeliveryId, DeliveryStatus, EventId};
use estafeta_engine::ReplayFrom;
use estafeta_store::{DeliveryQuery, EventQuery};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::problem::Problem;

const DEFAULT_LIMIT: usize = 50;

fn parse_time(field: &str, v: Option<&String>) -> Result<Option<DateTime<Utc>>, Problem> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                Problem::bad_request(format!("`{s}` is not an RFC 3339 time ({e})")).field(field)
            })
    })
    .transpose()
}

fn limit(l: Option<usize>) -> Result<usize, Problem> {
    match l {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(Problem::bad_request("limit must be between 1 and 1000").field("limit")),
    }
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsParams {
    #[serde(rename = "type")]
    ty: Option<String>,
    source: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) async fn list_events(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    p: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(p) = p.map_err(query_problem)?;
    let q = EventQuery {
        tenant: who.tenant,
        ty: p.ty,
        source_id: p.source,
        since: parse_time("since", p.since.as_ref())?,
        until: parse_time("until", p.until.as_ref())?,
        limit: limit(p.limit)?,
        cursor: p.cursor,
    };
    let page = state.engine.store().list_events(&q).await?;
    Ok(Json(json!(page)))
}

fn parse_id<T: std::str::FromStr>(field: &str, s: &str) -> Result<T, Problem>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| Problem::bad_request(e.to_string()).field(field))
}

pub(crate) async fn get_event(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let id: EventId = parse_id("id", &id)?;
    let store = state.engine.store();
    let event = store
        .get_event(&who.tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no event `{id}`")))?;
    let deliveries = store.deliveries_for_event(id).await?;
    let mut v = json!(event);
    v["deliveries"] = json!(deliveries);
    Ok(Json(v))
}

/// Query of `GET /v1/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveriesParams {
    status: Option<String>,
    route: Option<String>,
    destination: Option<String>,
    event: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(crate) async fn list_deliveries(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    p: Result<Query<DeliveriesParams>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(p) = p.map_err(query_problem)?;
    let status = p
        .status
        .as_deref()
        .map(|s| {
            s.parse::<DeliveryStatus>()
                .map_err(|e| Problem::bad_request(e.to_string()).field("status"))
        })
        .transpose()?;
    let event_id = p
        .event
        .as_deref()
        .map(|s| parse_id::<EventId>("event", s))
        .transpose()?;
    let q = DeliveryQuery {
        tenant: who.tenant,
        status,
        route_id: p.route,
        destination_id: p.destination,
        event_id,
        limit: limit(p.limit)?,
        cursor: p.cursor,
    };
    let page = state.engine.store().list_deliveries(&q).await?;
    Ok(Json(json!(page)))
}

pub(crate) async fn get_delivery(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let id: DeliveryId = parse_id("id", &id)?;
    let store = state.engine.store();
    let d = store
        .get_delivery(&who.tenant, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no delivery `{id}`")))?;
    let attempts = store.attempts(id).await?;
    let mut v = json!(d);
    v["history"] = json!(attempts);
    Ok(Json(v))
}

pub(crate) async fn retry_delivery(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let id: DeliveryId = parse_id("id", &id)?;
    let d = state.engine.retry_delivery(&who.tenant, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(d))))
}

/// Body of `POST /v1/routes/{id}/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayBody {
    /// Replay events received at or after this time.
    from: Option<String>,
    /// Replay events after this event id.
    after_event: Option<String>,
}

pub(crate) async fn replay_route(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(route): Path<String>,
    body: Result<Json<ReplayBody>, JsonRejection>,
) -> Result<Json<Value>, Problem> {
    let Json(body) = body.map_err(|e| {
        Problem::bad_request(format!(
            "send a JSON body with `from` (an RFC 3339 time) or `after_event` (an event id): {}",
            e.body_text()
        ))
    })?;
    let from = match (body.from.as_ref(), body.after_event.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "give either `from` or `after_event`, not both",
            ));
        }
        (Some(t), None) => ReplayFrom::Time(parse_time("from", Some(t))?.unwrap_or_else(Utc::now)),
        (None, Some(e)) => ReplayFrom::AfterEvent(parse_id("after_event", e)?),
        (None, None) => {
            return Err(Problem::bad_request(
                "give `from` (an RFC 3339 time) or `after_event` (an event id)",
            ));
        }
    };
    // Run to the end even if the client goes away: a replay stopped halfway would leave
    // some events re-sent and others not.
    let engine = state.engine.clone();
    let report = tokio::spawn(async move { engine.replay(&who.tenant, &route, from).await })
        .await
        .map_err(|_| Problem::unavailable("the replay was interrupted; run it again"))??;
    Ok(Json(json!(report)))
}

pub(crate) async fn list_routes(State(state): State<AppState>) -> Json<Value> {
    let items: Vec<Value> = state
        .engine
        .router()
        .route_ids()
        .map(|id| json!({"id": id}))
        .collect();
    Json(json!({ "items": items }))
}

pub(crate) async fn list_destinations(
    State(state): State<AppState>,
) -> Result<Json<Value>, Problem> {
    let counts = state.engine.store().delivery_counts().await?;
    let items: Vec<Value> = state
        .engine
        .destination_stats()
        .into_iter()
        .map(|s| {
            let mut by_status = serde_json::Map::new();
            for c in counts.iter().filter(|c| c.destination_id == s.id) {
                by_status.insert(c.status.to_string(), json!(c.count));
            }
            json!({"id": s.id, "queued": s.queued, "in_flight": s.in_flight,
                   "circuit_open": s.circuit_open, "deliveries": by_status})
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /v1/sources`: every source with its state, counters, snapshot progress and slot
/// health.
pub(crate) async fn list_sources(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "items": state.sources.list() }))
}

/// `GET /v1/sources/{id}`.
pub(crate) async fn get_source(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    state
        .sources
        .get(&id)
        .map(|s| Json(json!(s)))
        .ok_or_else(|| Problem::not_found(format!("no source `{id}`")))
}

fn query_problem(e: QueryRejection) -> Problem {
    Problem::bad_request(format!("invalid query string: {}", e.body_text()))
}
