//! `/v1/secrets`: store, list and delete named secrets (what `${secret:NAME}` in config
//! resolves from). Values go in and never come out: a listing shows names and times only.
//! Nothing here logs a value.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use estafeta_store::vault::VaultError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::problem::Problem;

/// Body of `PUT /v1/secrets/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutSecret {
    value: String,
}

/// 201 for a record just created, 200 for one replaced.
pub(crate) fn stored_status<T: PartialEq>(created_at: &T, updated_at: &T) -> StatusCode {
    if created_at == updated_at {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// 204 (after `log`) when a record was deleted; `None` when there was none.
pub(crate) fn deleted(found: bool, log: impl FnOnce()) -> Option<StatusCode> {
    found.then(|| {
        log();
        StatusCode::NO_CONTENT
    })
}

/// How vault failures answer; the error text of a failed decryption or store call stays in
/// the server log (names only, never values).
pub(crate) fn vault_problem(e: VaultError) -> Problem {
    match e {
        VaultError::BadName(_) => Problem::bad_request(e.to_string()).field("name"),
        VaultError::Invalid(ref problems) => {
            Problem::bad_request(problems.join("; ")).field("fields")
        }
        VaultError::Store(s) => s.into(),
        VaultError::Crypto { .. } => {
            tracing::error!(error = %e, "vault record cannot be decrypted");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            )
            .detail(
                "a stored value cannot be decrypted with the master key in use; see the server log",
            )
        }
    }
}

/// Secrets and credentials are for admin tokens only: 403 for any other.
pub(crate) fn require_admin(who: &Principal) -> Result<(), Problem> {
    if who.admin {
        Ok(())
    } else {
        Err(
            Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .detail("only an admin token may read or change secrets and credentials"),
        )
    }
}

fn body_problem(e: &JsonRejection) -> Problem {
    Problem::bad_request(format!("invalid JSON body: {}", e.body_text()))
}

/// `GET /v1/secrets`: names and times, never values.
pub(crate) async fn list_secrets(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<Value>, Problem> {
    require_admin(&who)?;
    let items = state.vault.list_secrets().await.map_err(vault_problem)?;
    Ok(Json(json!({ "items": items })))
}

/// `PUT /v1/secrets/{name}` with `{"value": "…"}`: 201 when created, 200 when replaced.
pub(crate) async fn put_secret(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Json<PutSecret>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    require_admin(&who)?;
    let Json(body) = body.map_err(|e| body_problem(&e))?;
    let info = state
        .vault
        .put_secret(&name, &body.value)
        .await
        .map_err(vault_problem)?;
    let status = stored_status(&info.created_at, &info.updated_at);
    tracing::info!(secret = %info.name, "secret stored");
    Ok((status, Json(json!(info))))
}

/// `DELETE /v1/secrets/{name}`: 204, or 404 when there is none.
pub(crate) async fn delete_secret(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    require_admin(&who)?;
    let found = state
        .vault
        .delete_secret(&name)
        .await
        .map_err(vault_problem)?;
    deleted(found, || {
        tracing::info!(secret = %name, "secret deleted");
    })
    .ok_or_else(|| Problem::not_found(format!("no secret `{name}`; see GET /v1/secrets")))
}
