//! `POST /v1/events`: one CloudEvent or a batch, answered 202 only once the events are on
//! disk.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use estafeta_core::event::parse_cloudevent;
use estafeta_core::matcher::SYSTEM_PREFIX;
use estafeta_engine::Incoming;
use estafeta_store::AppendOutcome;
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::Principal;
use crate::problem::Problem;

/// Most events in one batch request.
pub(crate) const MAX_BATCH: usize = 10_000;

/// Query of `POST /v1/events`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IngestParams {
    /// The `http` source to ingest through (default `http`).
    source: Option<String>,
}

#[derive(Serialize)]
struct Accepted {
    /// Estafeta ids of the events, in request order.
    ids: Vec<String>,
    /// How many of them were already stored (same id or idempotency key).
    duplicates: usize,
}

/// Handles `POST /v1/events`.
pub(crate) async fn post_events(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    query: Result<Query<IngestParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let Query(params) = query
        .map_err(|e| Problem::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let source_id = params.source.unwrap_or_else(|| "http".to_owned());
    if !state.http_sources.contains(&source_id) {
        return Err(
            Problem::not_found(format!("no http source `{source_id}` is configured"))
                .field("source"),
        );
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let batch_ct = match ct.as_str() {
        "application/cloudevents-batch+json" => true,
        "application/json" | "application/cloudevents+json" | "" => false,
        other => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .detail(format!(
                "`{other}` is not accepted; send application/cloudevents+json, application/json or application/cloudevents-batch+json"
            )));
        }
    };
    let limit = state.max_body_bytes;
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
        )
        .detail(format!(
            "the body is larger than the limit of {limit} bytes"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let bytes = read_limited(body, limit, declared)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => too_large(),
            ReadError::Broken(e) => Problem::bad_request(format!("cannot read the body: {e}")),
        })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Problem::bad_request(format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
        .field("$")
    })?;
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    if idem.as_ref().is_some_and(|k| k.len() > 255) {
        return Err(
            Problem::bad_request("Idempotency-Key is longer than 255 characters")
                .field("Idempotency-Key"),
        );
    }
    let now = Utc::now();
    let was_array = value.is_array();
    let items = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) if !batch_ct => vec![obj],
        _ if batch_ct => {
            return Err(
                Problem::bad_request("a batch must be a JSON array of CloudEvents").field("$"),
            );
        }
        _ => {
            return Err(Problem::bad_request(
                "expected a CloudEvent JSON object or an array of them",
            )
            .field("$"));
        }
    };
    let is_batch = batch_ct || was_array;
    if items.is_empty() {
        return Err(Problem::bad_request("the batch is empty").field("$"));
    }
    if items.len() > MAX_BATCH {
        return Err(
            Problem::bad_request(format!("a batch holds at most {MAX_BATCH} events")).field("$"),
        );
    }
    let mut incoming = Vec::with_capacity(items.len());
    let n = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let event = parse_cloudevent(item, &who.tenant, &source_id, now).map_err(|e| {
            let e = if is_batch { e.in_batch(i) } else { e };
            Problem::bad_request(format!("invalid CloudEvent: {}", e.message)).field(e.field)
        })?;
        if event.ty.starts_with(SYSTEM_PREFIX) {
            let field = if is_batch {
                format!("[{i}].type")
            } else {
                "type".to_owned()
            };
            return Err(Problem::bad_request(format!(
                "invalid CloudEvent: type `{}` is in the `{SYSTEM_PREFIX}` namespace, which is reserved for events Estafeta itself emits",
                event.ty
            ))
            .field(field));
        }
        let dedupe_key = match &idem {
            Some(k) if n == 1 => format!("idem:{k}"),
            Some(k) => format!("idem:{k}:{i}"),
            None => format!("ce:{}\u{1f}{}", event.ce_source, event.ce_id),
        };
        incoming.push(Incoming {
            event,
            dedupe_key: Some(dedupe_key),
        });
    }
    let outcomes = state.engine.ingest(incoming).await?;
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, AppendOutcome::Duplicate(_)))
        .count();
    let ids = outcomes.iter().map(|o| o.id().to_string()).collect();
    Ok((StatusCode::ACCEPTED, Json(Accepted { ids, duplicates })).into_response())
}

enum ReadError {
    TooLarge,
    Broken(axum::Error),
}

/// Reads the body up to `limit` bytes. A larger body is still drained (up to a bound) so the
/// client, which usually sends everything before reading, gets the 413 instead of a reset.
async fn read_limited(
    body: Body,
    limit: usize,
    declared: Option<usize>,
) -> Result<bytes::Bytes, ReadError> {
    const DRAIN_FACTOR: usize = 16;
    let drain_bound = limit.saturating_mul(DRAIN_FACTOR);
    if declared.is_some_and(|n| n > drain_bound) {
        return Err(ReadError::TooLarge);
    }
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Broken)?;
        total = total.saturating_add(chunk.len());
        if total > drain_bound {
            return Err(ReadError::TooLarge);
        }
        if total <= limit {
            buf.extend_from_slice(&chunk);
        }
    }
    if total > limit {
        return Err(ReadError::TooLarge);
    }
    Ok(buf.freeze())
}
