//! Providers: sources that pull. A [`Provider`] declares its id, the JSON Schema of its
//! settings and the credential types it accepts; it fetches records page by page from a
//! checkpoint and normalises them into events. A schedule runs one through
//! [`ProviderJob`], which stores each page's events in the log and only then — after the
//! whole run is durable — stores the provider's next checkpoint in the store's `cursors`
//! table, so a crash or an error repeats records (at-least-once) but never skips them.
//!
//! New providers are a folder here and one arm in [`registry`].

pub mod http;
mod job;
pub mod registry;

use async_trait::async_trait;
use estafeta_core::Event;
use serde_json::Value;

pub use job::{ProviderJob, cursor_key};

use crate::schedule::RunContext;

/// What the console needs to show a provider's form.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderInfo {
    /// The `kind` that selects it (`http` …).
    pub id: &'static str,
    /// What it does, in one line.
    pub description: &'static str,
    /// The JSON Schema of its settings (the `provider:` object).
    pub settings_schema: Value,
    /// Credential types it accepts (`api_key`, `bearer`, `basic`, `oauth2_client_credentials`).
    pub credential_types: &'static [&'static str],
}

/// Why a provider's fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// A template (URL, query, header) could not be rendered.
    #[error("template `{name}` could not be rendered")]
    Template {
        /// Which template.
        name: String,
        /// The cause.
        #[source]
        source: minijinja::Error,
    },
    /// The partner could not be reached or kept failing (after retries).
    #[error("request to {host} failed")]
    Request {
        /// The host (never the full URL, which may hold a key).
        host: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The partner answered with an error status (after retries, or a final 4xx).
    #[error("{host} answered {status}")]
    Status {
        /// The host.
        host: String,
        /// The status.
        status: u16,
    },
    /// The answer (or a token endpoint's) was not what the settings describe.
    #[error("{0}")]
    Answer(String),
    /// The URL a template or a next link produced is not a URL.
    #[error("not a valid URL")]
    Url(#[source] url::ParseError),
    /// Storing a page's events failed.
    #[error("the page's events could not be stored")]
    Sink(#[source] crate::sink::SinkError),
    /// The named credential (`auth: { credential: NAME }`) could not be used.
    #[error("the provider's auth credential could not be used")]
    Credential(#[source] http::CredentialError),
    /// The SSRF guard refused the request's address.
    #[error("request refused")]
    Refused(#[source] estafeta_destinations::webhook::ssrf::SsrfError),
    /// The run was cancelled (shutdown).
    #[error("cancelled")]
    Cancelled,
}

impl ProviderError {
    /// A request error, without the URL (which may hold a key in its query) in its text.
    pub(crate) fn request(host: String, source: reqwest::Error) -> Self {
        Self::Request {
            host,
            source: source.without_url(),
        }
    }
}

/// Where a provider hands its pages, as it fetches them.
#[async_trait]
pub trait PageSink: Send {
    /// Takes one page of raw records; `Ok` when they are stored.
    async fn page(&mut self, records: Vec<Value>) -> Result<(), ProviderError>;
}

/// What a fetch ended with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Records fetched.
    pub records: u64,
    /// Pages fetched.
    pub pages: u64,
    /// The checkpoint to store once everything handed to the sink is durable (`None`: keep
    /// the current one).
    pub next_checkpoint: Option<String>,
}

/// A source that pulls.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Its id (the `kind` of its settings).
    fn id(&self) -> &'static str;

    /// The JSON Schema of its settings (the `provider:` object).
    fn settings_schema(&self) -> Value;

    /// The credential types it accepts.
    fn credential_types(&self) -> &'static [&'static str];

    /// Fetches from `checkpoint` (the last stored one, `None` before the first run), handing
    /// each page's records to `pages` as they arrive.
    async fn fetch(
        &self,
        run: &RunContext,
        checkpoint: Option<&str>,
        pages: &mut dyn PageSink,
    ) -> Result<Fetched, ProviderError>;

    /// True when a run emits one event holding all its records (instead of one per record).
    fn per_run(&self) -> bool;

    /// Turns records into events. `first` is the run-wide index of the first record.
    fn normalise(&self, run: &RunContext, records: Vec<Value>, first: u64) -> Vec<Event>;
}
