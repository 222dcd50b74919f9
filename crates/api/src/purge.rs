//! `POST /v1/purge` (delete events, or objects under a destination's prefix, on demand;
//! `dry_run` reports what would go) and `GET /v1/audit` (the audit log of deletions). Both
//! are for admin tokens only; every purge, dry or real, is recorded in the audit log with
//! the token's name as the actor.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use estafeta_config::DurationText;
use estafeta_core::TenantId;
use estafeta_engine::retention::{RetentionError, SAMPLE};
use estafeta_store::retention::EventPurge;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::problem::Problem;

/// The body of `POST /v1/purge`: exactly one of `events` and `objects`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    events: Option<EventsPurge>,
    objects: Option<ObjectsPurge>,
    #[serde(default)]
    dry_run: bool,
}

/// Events to delete: received before `before`, optionally of one source, type or tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsPurge {
    before: DateTime<Utc>,
    source: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    tenant: Option<String>,
}

/// Objects to delete: under `prefix` of an `s3`/`file` destination, last modified before
/// `before` or longer ago than `older_than`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectsPurge {
    destination: String,
    #[serde(default)]
    prefix: String,
    older_than: Option<DurationText>,
    before: Option<DateTime<Utc>>,
}

fn forbidden() -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
        .detail("only an admin token may purge data or read the audit log")
}

fn problem(err: RetentionError) -> Problem {
    match err {
        RetentionError::UnknownDestination(id) => Problem::not_found(format!(
            "there is no `s3` or `file` destination `{id}`; see GET /v1/destinations"
        ))
        .field("objects.destination"),
        RetentionError::Objects(source) => {
            tracing::warn!(error = %source, "purge: objects could not be purged");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "object-store-failed",
                "The object store failed",
            )
            .detail(format!(
                "{source}; objects deleted before the failure stay deleted (see GET /v1/audit)"
            ))
        }
        RetentionError::Store(e) => e.into(),
    }
}

/// `POST /v1/purge`.
pub(crate) async fn purge(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    body: Result<Json<PurgeRequest>, JsonRejection>,
) -> Result<Json<Value>, Problem> {
    if !who.admin {
        return Err(forbidden());
    }
    let Json(req) =
        body.map_err(|e| Problem::bad_request(format!("invalid body: {}", e.body_text())))?;
    let retention = state.engine.retention();
    match (req.events, req.objects) {
        (Some(e), None) => {
            let mut filter = EventPurge::before(e.before);
            filter.tenant = Some(e.tenant.map_or_else(|| who.tenant.clone(), TenantId::new));
            filter.source_id = e.source;
            filter.ty = e.ty;
            let report = retention
                .purge_events(&filter, req.dry_run, &who.name)
                .await
                .map_err(problem)?;
            Ok(Json(json!({ "dry_run": req.dry_run, "events": report })))
        }
        (None, Some(o)) => {
            let before = match (o.before, o.older_than) {
                (Some(b), None) => b,
                (None, Some(d)) => {
                    Utc::now() - chrono::Duration::from_std(d.0).unwrap_or(chrono::Duration::MAX)
                }
                _ => {
                    return Err(Problem::bad_request(
                        "give exactly one of `before` (a time) and `older_than` (e.g. `30d`)",
                    )
                    .field("objects"));
                }
            };
            let report = retention
                .purge_objects(&o.destination, &o.prefix, before, req.dry_run, &who.name)
                .await
                .map_err(problem)?;
            Ok(Json(json!({
                "dry_run": req.dry_run,
                "objects": {
                    "destination": o.destination,
                    "prefix": o.prefix,
                    "before": before,
                    "matched": report.matched,
                    "deleted": report.deleted,
                    "bytes": report.bytes,
                    "sample": report.sample,
                    "sample_size": SAMPLE,
                },
            })))
        }
        _ => Err(Problem::bad_request(
            "give exactly one of `events` and `objects`; see docs/retention.md",
        )),
    }
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/audit`: the audit log, newest first.
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    p: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    if !who.admin {
        return Err(forbidden());
    }
    let Query(p) =
        p.map_err(|e| Problem::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let limit = match p.limit {
        None => 50,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(Problem::bad_request("limit must be between 1 and 1000").field("limit"));
        }
    };
    let page = state.engine.store().list_audit(limit, p.cursor).await?;
    let mut v = json!({ "items": page.items });
    if let Some(next) = page.next {
        v["next"] = json!(next);
    }
    Ok(Json(v))
}
