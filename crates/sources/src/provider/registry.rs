//! The one place a provider kind is wired in: its settings build it, and the catalog lists it
//! (for `GET /v1/plugins`).

use std::sync::Arc;

use estafeta_config::provider::ProviderSettings;
use estafeta_store::vault::Credentials;

use super::{Provider, ProviderInfo, http};

/// Builds the provider a schedule's settings describe; `credentials` is where it reads the
/// named credentials its settings use, at each run.
///
/// # Errors
/// The provider could not be built (for HTTP: the client).
pub fn build(
    schedule_id: &str,
    settings: &ProviderSettings,
    credentials: Option<Credentials>,
) -> Result<Arc<dyn Provider>, http::BuildError> {
    match settings {
        ProviderSettings::Http(s) => Ok(Arc::new(http::HttpProvider::new(
            schedule_id,
            s,
            credentials,
        )?)),
    }
}

/// Every provider kind, with its settings schema and credential types.
#[must_use]
pub fn catalog() -> Vec<ProviderInfo> {
    vec![http::info()]
}
