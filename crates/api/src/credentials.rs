//! `/v1/credentials`: named credentials of a declared type. Public fields are shown as
//! they are; a private field only as `{"set": true}`. Values are never logged or returned.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use estafeta_store::vault::CredentialType;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::problem::Problem;
use crate::secrets::{deleted, require_admin, stored_status, vault_problem};

/// Body of `PUT /v1/credentials/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutCredential {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    fields: Map<String, Value>,
}

fn not_found(name: &str) -> Problem {
    Problem::not_found(format!("no credential `{name}`; see GET /v1/credentials"))
}

/// `GET /v1/credentials`.
pub(crate) async fn list_credentials(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, Problem> {
    require_admin(&who)?;
    let items = state
        .vault
        .list_credentials()
        .await
        .map_err(vault_problem)?;
    Ok(Json(json!({ "items": items })))
}

/// `GET /v1/credentials/{name}`.
pub(crate) async fn get_credential(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    require_admin(&who)?;
    let view = state
        .vault
        .credential_view(&name)
        .await
        .map_err(vault_problem)?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(json!(view)))
}

/// `PUT /v1/credentials/{name}` with `{"type": "basic", "fields": {…}}`: creates or
/// replaces (201 / 200). Private fields left out keep their stored values.
pub(crate) async fn put_credential(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Json<PutCredential>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    require_admin(&who)?;
    let Json(body) =
        body.map_err(|e| Problem::bad_request(format!("invalid JSON body: {}", e.body_text())))?;
    let kind: CredentialType = body
        .kind
        .parse()
        .map_err(|m: String| Problem::bad_request(m).field("type"))?;
    let view = state
        .vault
        .put_credential(&name, kind, &body.fields)
        .await
        .map_err(vault_problem)?;
    let status = stored_status(&view.created_at, &view.updated_at);
    tracing::info!(credential = %view.name, kind = %view.kind, "credential stored");
    Ok((status, Json(json!(view))))
}

/// `DELETE /v1/credentials/{name}`: 204, or 404.
pub(crate) async fn delete_credential(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    require_admin(&who)?;
    let found = state
        .vault
        .delete_credential(&name)
        .await
        .map_err(vault_problem)?;
    deleted(found, || {
        tracing::info!(credential = %name, "credential deleted");
    })
    .ok_or_else(|| not_found(&name))
}
