//! The one place a provider kind is wired in: its settings build it, and the catalog lists it
//! (for `GET /v1/plugins`).

use std::sync::Arc;

use estafeta_config::provider::ProviderSettings;

use super::{Provider, ProviderInfo, http};

/// Builds the provider a schedule's settings describe.
///
/// # Errors
/// The provider could not be built (for HTTP: the client).
pub fn build(
    schedule_id: &str,
    settings: &ProviderSettings,
) -> Result<Arc<dyn Provider>, http::BuildError> {
    match settings {
        ProviderSettings::Http(s) => Ok(Arc::new(http::HttpProvider::new(schedule_id, s)?)),
    }
}

/// Every provider kind, with its settings schema and credential types.
#[must_use]
pub fn catalog() -> Vec<ProviderInfo> {
    vec![http::info()]
}
