//! `provider:` of a schedule — which provider a run pulls through. One variant per provider
//! (tagged by `kind`); a new provider adds a variant here, its settings module, and one arm in
//! `estafeta_sources::provider::registry`.

use serde::Deserialize;

use crate::provider_http::{HttpProviderConfig, HttpProviderSettings};
use crate::validate::Ctx;

/// A schedule's `provider:` as written.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// The declarative HTTP provider.
    Http(Box<HttpProviderConfig>),
}

/// A validated provider.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    /// The declarative HTTP provider.
    Http(Box<HttpProviderSettings>),
}

impl ProviderSettings {
    /// The provider's id (`http` …).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
        }
    }
}

pub(crate) fn validate(cx: &mut Ctx<'_>, p: &str, c: &ProviderConfig) -> Option<ProviderSettings> {
    match c {
        ProviderConfig::Http(h) => {
            crate::provider_http::validate(cx, p, h).map(|s| ProviderSettings::Http(Box::new(s)))
        }
    }
}
