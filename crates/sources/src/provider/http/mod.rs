//! `provider: { kind: http }` — the declarative HTTP provider: pulls records from a partner
//! API described in config (request templates with date helpers, auth, pagination, a JSON
//! path to the records, an incremental cursor) and emits them as events. See
//! `docs/sources/providers.md`.
//!
//! The checkpoint it keeps is the largest value of the `cursor.field` among the records it
//! fetched (templates read the last one as `cursor`); without a `cursor` it keeps none.

mod auth;
mod credential;
mod paging;
mod schema;
mod send;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use estafeta_config::provider_http::{EmitPer, HttpProviderSettings, PaginationSettings};
use estafeta_core::Event;
use estafeta_store::vault::Credentials;
use reqwest::{Method, Url};
use serde_json::Value;
use serde_json_path::JsonPath;

pub use self::credential::CredentialError;

use self::auth::Auth;
use self::send::Sender;
use super::{Fetched, PageSink, Provider, ProviderError, ProviderInfo};
use crate::schedule::RunContext;

mod template;

/// Why an HTTP provider could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The HTTP client.
    #[error("schedule `{id}`: the HTTP client could not be built")]
    Client {
        /// The schedule.
        id: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A template did not compile.
    #[error("schedule `{id}`: a provider template does not compile")]
    Template {
        /// The schedule.
        id: String,
        /// The cause.
        #[source]
        source: minijinja::Error,
    },
    /// A JSON path did not parse.
    #[error("schedule `{id}`: `{path}` is not a JSON path")]
    Path {
        /// The schedule.
        id: String,
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: serde_json_path::ParseError,
    },
}

/// The host of a URL, for messages (never the URL itself: it may hold a key).
pub(crate) fn host_of(url: &str) -> String {
    Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| "the partner".to_owned())
}

/// The credential types the HTTP provider accepts (its `auth.kind`s).
const CREDENTIAL_TYPES: &[&str] = &["api_key", "bearer", "basic", "oauth2_client_credentials"];

/// What the console shows for the HTTP provider.
#[must_use]
pub fn info() -> ProviderInfo {
    ProviderInfo {
        id: "http",
        description: "Pulls records from an HTTP JSON API: templated request, auth, pagination, JSON path, incremental cursor.",
        settings_schema: schema::settings_schema(),
        credential_types: CREDENTIAL_TYPES,
    }
}

/// A run's first request: method, URL (with the query templates) and headers.
type FirstRequest = (Method, Url, Vec<(String, String)>);

/// The HTTP provider of one schedule.
pub struct HttpProvider {
    settings: HttpProviderSettings,
    templates: template::Templates,
    /// Names of the query and header templates, with their parameter names.
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    records: JsonPath,
    cursor: Option<JsonPath>,
    id_field: Option<JsonPath>,
    next_path: Option<JsonPath>,
    sender: Sender,
}

impl HttpProvider {
    /// Builds the provider of schedule `id`. `credentials` is where `auth: { credential: … }`
    /// is read at each run (without it such a run fails naming the credential).
    ///
    /// # Errors
    /// The client, a template or a JSON path could not be built.
    pub fn new(
        id: &str,
        s: &HttpProviderSettings,
        credentials: Option<Credentials>,
    ) -> Result<Self, BuildError> {
        let path = |p: &str| {
            JsonPath::parse(p).map_err(|source| BuildError::Path {
                id: id.to_owned(),
                path: p.to_owned(),
                source,
            })
        };
        let mut sources = vec![
            ("method".to_owned(), s.method.as_str()),
            ("url".to_owned(), s.url.expose()),
        ];
        let query: Vec<_> = s
            .query
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), format!("query.{i}")))
            .collect();
        let headers: Vec<_> = s
            .headers
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), format!("headers.{i}")))
            .collect();
        for ((_, name), (_, v)) in query.iter().zip(&s.query) {
            sources.push((name.clone(), v.expose()));
        }
        for ((_, name), (_, v)) in headers.iter().zip(&s.headers) {
            sources.push((name.clone(), v.expose()));
        }
        let templates =
            template::Templates::new(sources).map_err(|source| BuildError::Template {
                id: id.to_owned(),
                source,
            })?;
        // No redirects, no proxy, and the SSRF guard unless private networks are allowed.
        let client = estafeta_destinations::HttpClients::new()
            .guarded_client(s.timeout, s.allow_private_networks)
            .map_err(|source| BuildError::Client {
                id: id.to_owned(),
                source,
            })?;
        let next_path = match &s.pagination {
            PaginationSettings::Cursor { path: p, .. }
            | PaginationSettings::NextUrl { path: p } => Some(path(p)?),
            _ => None,
        };
        Ok(Self {
            records: path(&s.records)?,
            cursor: s.cursor.as_ref().map(|(p, _)| path(p)).transpose()?,
            id_field: s.id_field.as_deref().map(path).transpose()?,
            next_path,
            query,
            headers,
            sender: Sender::new(
                client,
                Auth::new(s.auth.clone(), credentials, s.allow_private_networks),
                s.rate_limit.as_ref(),
                s.attempts,
                s.allow_private_networks,
            ),
            templates,
            settings: s.clone(),
        })
    }

    fn render(&self, name: &str, ctx: &minijinja::Value) -> Result<String, ProviderError> {
        self.templates
            .render(name, ctx)
            .map_err(|source| ProviderError::Template {
                name: name.to_owned(),
                source,
            })
    }

    /// The first page's URL, method and headers.
    fn first_request(&self, ctx: &minijinja::Value) -> Result<FirstRequest, ProviderError> {
        let method = self.render("method", ctx)?;
        let method = Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| ProviderError::Answer(format!("`{method}` is not an HTTP method")))?;
        let mut url = Url::parse(self.render("url", ctx)?.trim()).map_err(ProviderError::Url)?;
        for (key, name) in &self.query {
            let v = self.render(name, ctx)?;
            url.query_pairs_mut().append_pair(key, &v);
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (key, name) in &self.headers {
            headers.push((key.clone(), self.render(name, ctx)?));
        }
        Ok((method, url, headers))
    }
}

/// `url` with `pairs` set (replacing parameters of the same name).
fn with_params(url: &Url, pairs: &[(&str, String)]) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !pairs.iter().any(|(p, _)| p == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = url.clone();
    {
        let mut q = out.query_pairs_mut();
        q.clear();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    out
}

#[async_trait]
impl Provider for HttpProvider {
    fn id(&self) -> &'static str {
        "http"
    }

    fn settings_schema(&self) -> Value {
        schema::settings_schema()
    }

    fn credential_types(&self) -> &'static [&'static str] {
        CREDENTIAL_TYPES
    }

    fn per_run(&self) -> bool {
        self.settings.per == EmitPer::Run
    }

    #[tracing::instrument(skip_all, fields(schedule_id = %run.schedule_id, provider = "http"))]
    async fn fetch(
        &self,
        run: &RunContext,
        checkpoint: Option<&str>,
        pages: &mut dyn PageSink,
    ) -> Result<Fetched, ProviderError> {
        let initial = self
            .settings
            .cursor
            .as_ref()
            .and_then(|(_, i)| i.as_deref());
        let checkpoint = checkpoint.or(initial);
        let auth = self.sender.auth.for_run().await?;
        let ctx = template::context(run, checkpoint);
        let (method, base, headers) = self.first_request(&ctx)?;
        let p = &self.settings.pagination;
        let mut next_cursor = checkpoint.map(str::to_owned);
        let mut out = Fetched::default();
        // Where the next page is: a number, an offset, a body cursor or a URL.
        let mut number = match p {
            PaginationSettings::PageNumber { start, .. } => *start,
            _ => 0,
        };
        let mut token: Option<String> = None;
        let mut url = base.clone();
        loop {
            if run.cancel.is_cancelled() {
                return Err(ProviderError::Cancelled);
            }
            let page_url = match p {
                PaginationSettings::PageNumber {
                    param,
                    size_param,
                    size,
                    ..
                } => {
                    let mut pairs = vec![(param.as_str(), number.to_string())];
                    if let (Some(sp), Some(sz)) = (size_param, size) {
                        pairs.push((sp.as_str(), sz.to_string()));
                    }
                    with_params(&base, &pairs)
                }
                PaginationSettings::OffsetLimit {
                    offset_param,
                    limit_param,
                    limit,
                } => with_params(
                    &base,
                    &[
                        (offset_param.as_str(), number.to_string()),
                        (limit_param.as_str(), limit.to_string()),
                    ],
                ),
                PaginationSettings::Cursor { param, .. } => match &token {
                    Some(t) => with_params(&base, &[(param.as_str(), t.clone())]),
                    None => base.clone(),
                },
                PaginationSettings::None
                | PaginationSettings::LinkHeader
                | PaginationSettings::NextUrl { .. } => url.clone(),
            };
            let res = self
                .sender
                .send(&run.cancel, &auth, &method, &page_url, &headers)
                .await?;
            let link = res
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(paging::link_next);
            let host = host_of(page_url.as_str());
            let bytes = res
                .bytes()
                .await
                .map_err(|source| ProviderError::request(host, source))?;
            let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
                ProviderError::Answer(format!(
                    "the answer is not JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
            let records = paging::records(&self.records, &body);
            let n = records.len() as u64;
            if let Some(path) = &self.cursor {
                for r in &records {
                    if let Some(v) = paging::text(path, r) {
                        paging::keep_max(&mut next_cursor, v);
                    }
                }
            }
            out.pages += 1;
            out.records += n;
            if n > 0 {
                pages.page(records).await?;
            }
            let next = match p {
                PaginationSettings::None => None,
                PaginationSettings::PageNumber { size, .. } => {
                    (n > 0 && size.is_none_or(|s| n >= s)).then(|| {
                        number += 1;
                        page_url.clone()
                    })
                }
                PaginationSettings::OffsetLimit { limit, .. } => (n >= *limit).then(|| {
                    number += n;
                    page_url.clone()
                }),
                PaginationSettings::Cursor { .. } => {
                    token = self
                        .next_path
                        .as_ref()
                        .and_then(|np| paging::text(np, &body));
                    token.as_ref().map(|_| page_url.clone())
                }
                PaginationSettings::LinkHeader => link
                    .map(|l| page_url.join(&l))
                    .transpose()
                    .map_err(ProviderError::Url)?,
                PaginationSettings::NextUrl { .. } => self
                    .next_path
                    .as_ref()
                    .and_then(|np| paging::text(np, &body))
                    .map(|l| page_url.join(&l))
                    .transpose()
                    .map_err(ProviderError::Url)?,
            };
            match next {
                None => break,
                Some(_) if out.pages >= u64::from(self.settings.max_pages) => {
                    tracing::warn!(pages = out.pages, "provider stopped at max_pages");
                    break;
                }
                Some(u) => url = u,
            }
        }
        out.next_checkpoint = if self.cursor.is_some() {
            next_cursor
        } else {
            None
        };
        Ok(out)
    }

    fn normalise(&self, run: &RunContext, records: Vec<Value>, first: u64) -> Vec<Event> {
        let ty = &self.settings.event_type;
        if self.per_run() {
            if records.is_empty() {
                return Vec::new();
            }
            return vec![run.event(ty, Some(Value::Array(records)), None)];
        }
        records
            .into_iter()
            .enumerate()
            .map(|(i, record)| {
                let id = self
                    .id_field
                    .as_ref()
                    .and_then(|p| paging::text(p, &record));
                let version = self.cursor.as_ref().and_then(|p| paging::text(p, &record));
                let part = format!("r{}", first + i as u64);
                let mut ev = run.event(ty, Some(record), Some(&part));
                if let Some(id) = id {
                    // Stable across runs: the same record (in the same version) is stored once.
                    ev.ce_id = match version {
                        Some(v) => format!("{}:{id}:{v}", run.schedule_id),
                        None => format!("{}:{id}", run.schedule_id),
                    };
                    ev.key = Some(id);
                }
                ev
            })
            .collect()
    }
}
