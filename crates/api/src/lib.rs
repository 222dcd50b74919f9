//! Estafeta's HTTP API: ingest (`POST /v1/events`), the operations API under `/v1`, health
//! and readiness probes and Prometheus metrics. [`app`] builds the router; it is tested
//! without a socket.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod auth;
mod credentials;
mod ingest;
mod ops;
mod plugins;
pub mod problem;
mod purge;
mod schedules;
mod secrets;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use estafeta_engine::Engine;
use metrics_exporter_prometheus::PrometheusHandle;

pub use auth::{Auth, token_digest};
pub use problem::Problem;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The running engine (and through it the store).
    pub engine: Engine,
    /// Accepted tokens.
    pub auth: Arc<Auth>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// Ids of the configured `http` sources; `POST /v1/events?source=ID` picks one
    /// (default `http`).
    pub http_sources: Arc<Vec<String>>,
    /// Status of every source (`/v1/sources`, `/readyz`).
    pub sources: estafeta_sources::StatusBoard,
    /// The running schedules (`/v1/schedules`).
    pub schedules: estafeta_sources::Schedules,
    /// Secrets and credentials, sealed with the master key (`/v1/secrets`,
    /// `/v1/credentials`).
    pub vault: estafeta_store::vault::Vault,
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/purge", post(purge::purge))
        .route("/audit", get(purge::list_audit))
        .route("/events", post(ingest::post_events).get(ops::list_events))
        .route("/events/{id}", get(ops::get_event))
        .route("/deliveries", get(ops::list_deliveries))
        .route("/deliveries/{id}", get(ops::get_delivery))
        .route("/deliveries/{id}/retry", post(ops::retry_delivery))
        .route("/routes", get(ops::list_routes))
        .route("/routes/{id}/replay", post(ops::replay_route))
        .route("/destinations", get(ops::list_destinations))
        .route("/sources", get(ops::list_sources))
        .route("/sources/{id}", get(ops::get_source))
        .route("/plugins", get(plugins::list_plugins))
        .route("/schedules", get(schedules::list_schedules))
        .route("/schedules/{id}", get(schedules::get_schedule))
        .route("/schedules/{id}/runs", get(schedules::list_runs))
        .route("/schedules/{id}/run", post(schedules::run_now))
        .route("/secrets", get(secrets::list_secrets))
        .route(
            "/secrets/{name}",
            put(secrets::put_secret).delete(secrets::delete_secret),
        )
        .route("/credentials", get(credentials::list_credentials))
        .route(
            "/credentials/{name}",
            get(credentials::get_credential)
                .put(credentials::put_credential)
                .delete(credentials::delete_credential),
        );
    let protected = Router::new()
        .nest("/v1", v1)
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(protected)
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi))
        .route("/readyz", get(readyz))
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            )
            .detail("this endpoint does not accept that method; see /openapi.json")
        })
        // Ingest reads the body itself with its own limit and a problem document; this
        // outer bound stops anything else from buffering more.
        .layer(axum::extract::DefaultBodyLimit::max(
            state.max_body_bytes.saturating_add(1),
        ))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.engine.store().ping().await.is_err() {
        return Problem::unavailable("the store does not answer").into_response();
    }
    let down = state.sources.not_ready();
    if !down.is_empty() {
        let names: Vec<String> = down
            .iter()
            .map(|s| {
                format!(
                    "`{}` ({})",
                    s.id,
                    serde_json::to_value(s.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )
            })
            .collect();
        return Problem::unavailable(format!(
            "sources not taking events in: {}; see /v1/sources",
            names.join(", ")
        ))
        .into_response();
    }
    (StatusCode::OK, "ready").into_response()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The OpenAPI 3.1 document of this API, kept beside the code and checked against the router
/// by the tests.
pub const OPENAPI: &str = include_str!("../openapi/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
