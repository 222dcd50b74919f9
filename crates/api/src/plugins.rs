//! `GET /v1/plugins`: the provider kinds (settings JSON Schema, credential types) and the
//! destination kinds (a minimal JSON Schema each), for the console's forms.

use axum::Json;
use serde_json::{Value, json};

/// `GET /v1/plugins`.
pub(crate) async fn list_plugins() -> Json<Value> {
    Json(json!({
        "providers": estafeta_sources::provider::registry::catalog(),
        "destinations": estafeta_destinations::catalog::catalog(),
    }))
}
