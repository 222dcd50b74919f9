//! HTTP look-ups for a route's `enrich` steps, on the same outbound machinery as the HTTP
//! destinations (pooled client, SSRF guard, transport classification).
//!
//! A look-up sends one request to its URL, then to each fallback URL in order while the one
//! before fails to answer usefully (no connection, timeout, 5xx, 429); the whole list is
//! tried `attempts` times with a doubling pause. 401/403 end it at once as an
//! authentication failure naming the service; other 4xx end it with the service's answer
//! (404 may mean "nothing found" instead, per configuration). Answers are JSON (an empty
//! body is null) up to a size limit. With a cache, answers are kept for a TTL keyed by the
//! rendered request, and identical requests in flight at the same time share one call.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use estafeta_config::route_steps::{EnrichSettings, Method, NotFound};
use estafeta_core::{SendError, SendErrorKind};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::build_error::BuildError;
use crate::http_client::{ClientOptions, HttpClients};
use crate::webhook::outcome::{classify_transport, excerpt_text, parse_retry_after};
use crate::webhook::ssrf::refused_literal;

/// Longest `Retry-After` honoured between tries inside one attempt; a longer one fails the
/// attempt and hands the delay to the delivery's retry schedule.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(5);

/// One rendered request: the URLs in the order they are tried, and the body.
#[derive(Debug, Clone)]
pub struct LookupRequest {
    /// The primary URL first, then the fallbacks.
    pub urls: Vec<String>,
    /// The body, for methods that carry one.
    pub body: Option<String>,
}

/// A look-up's answer.
#[derive(Debug, Clone)]
pub struct LookupAnswer {
    /// The JSON answer (null for an empty body or a 404 read as "nothing found").
    pub value: Arc<Value>,
    /// True when the answer came from the cache (or from an identical call in flight).
    pub cached: bool,
    /// `host[:port]` and status of who answered.
    pub answered_by: Option<String>,
    /// What failed before the answer (earlier URLs, earlier tries).
    pub tried: Vec<String>,
}

/// A look-up that failed, classified for the delivery's retry machinery.
#[derive(Debug, Clone)]
pub struct LookupFailure {
    /// Retryable (no URL answered usefully) or final (authentication, other 4xx, bad JSON).
    pub error: Arc<SendError>,
    /// What failed, in order.
    pub tried: Vec<String>,
}

/// An `enrich` step's HTTP side.
pub struct Lookup {
    step: String,
    client: reqwest::Client,
    method: reqwest::Method,
    headers: HeaderMap,
    content_type: HeaderValue,
    service: Option<String>,
    attempts: u32,
    backoff: Duration,
    timeout: Duration,
    not_found: NotFound,
    allow_private_networks: bool,
    max_response_bytes: usize,
    permits: Semaphore,
    cache: Option<moka::future::Cache<String, Fetched>>,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("step", &self.step)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Fetched {
    value: Arc<Value>,
    answered_by: String,
    tried: Vec<String>,
}

/// How one request to one URL ended.
enum Try {
    Answer(Fetched),
    /// Worth trying the next URL (or the next round), with the delay the service asked for.
    Next(String, Option<Duration>),
    /// Stop: trying again will not help.
    Stop(SendError),
}

impl Lookup {
    /// Builds the look-up of route `route`'s step binding `settings.name`.
    ///
    /// # Errors
    /// A header that is not a valid HTTP header, or an HTTP client that cannot be built.
    pub fn new(
        route: &str,
        settings: &EnrichSettings,
        clients: &HttpClients,
    ) -> Result<Self, BuildError> {
        // Named like a destination in build errors: the route and the bound name.
        let step = format!("{route}/enrich:{}", settings.name);
        let client = clients
            .client(ClientOptions {
                timeout: settings.timeout,
                max_idle_per_host: settings.concurrency,
                allow_private_networks: settings.allow_private_networks,
            })
            .map_err(|source| BuildError::HttpClient {
                id: step.clone(),
                source,
            })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|source| {
                BuildError::InvalidHeaderName {
                    id: step.clone(),
                    name: name.clone(),
                    source,
                }
            })?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|source| {
                BuildError::InvalidHeaderValue {
                    id: step.clone(),
                    name: name.clone(),
                    source,
                }
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let content_type = HeaderValue::from_str(&settings.content_type).map_err(|source| {
            BuildError::InvalidHeaderValue {
                id: step.clone(),
                name: "content-type".to_owned(),
                source,
            }
        })?;
        let cache = settings.cache.map(|(ttl, max)| {
            moka::future::Cache::builder()
                .max_capacity(max)
                .time_to_live(ttl)
                .build()
        });
        Ok(Self {
            step,
            client,
            method: match settings.method {
                Method::Get => reqwest::Method::GET,
                Method::Post => reqwest::Method::POST,
                Method::Put => reqwest::Method::PUT,
                Method::Patch => reqwest::Method::PATCH,
            },
            headers,
            content_type,
            service: settings.service.clone(),
            attempts: settings.attempts.max(1),
            backoff: settings.backoff,
            timeout: settings.timeout,
            not_found: settings.not_found,
            allow_private_networks: settings.allow_private_networks,
            max_response_bytes: settings.max_response_bytes,
            permits: Semaphore::new(settings.concurrency.max(1)),
            cache,
        })
    }

    /// Runs the look-up.
    ///
    /// # Errors
    /// The look-up failed; see [`LookupFailure`].
    pub async fn call(&self, req: &LookupRequest) -> Result<LookupAnswer, LookupFailure> {
        let Some(cache) = &self.cache else {
            return self.fetch(req).await.map(|f| answer(f, false));
        };
        let key = cache_key(self.method.as_str(), req);
        // Identical requests in flight share one call; only answers are kept, not failures.
        let ran = std::sync::atomic::AtomicBool::new(false);
        let result = cache
            .try_get_with(key, async {
                ran.store(true, std::sync::atomic::Ordering::Relaxed);
                self.fetch(req).await
            })
            .await;
        let cached = !ran.load(std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(f) => Ok(answer(f, cached)),
            Err(failure) => Err(LookupFailure::clone(&failure)),
        }
    }

    async fn fetch(&self, req: &LookupRequest) -> Result<Fetched, LookupFailure> {
        let mut tried = Vec::new();
        let mut pause = self.backoff;
        let mut last: Option<(String, Option<Duration>)> = None;
        for round in 0..self.attempts {
            if round > 0 {
                let asked = last.as_ref().and_then(|(_, after)| *after);
                let wait = asked.map_or(pause, |a| a.max(pause));
                if wait > MAX_INLINE_WAIT {
                    break;
                }
                tokio::time::sleep(wait).await;
                pause = pause.saturating_mul(2);
            }
            for url in &req.urls {
                match self.try_url(url, req.body.as_deref()).await {
                    Try::Answer(mut f) => {
                        f.tried = tried;
                        return Ok(f);
                    }
                    Try::Next(reason, after) => {
                        tried.push(reason.clone());
                        last = Some((reason, after));
                    }
                    Try::Stop(err) => {
                        tried.push(err.message.clone());
                        return Err(LookupFailure {
                            error: Arc::new(err),
                            tried,
                        });
                    }
                }
            }
        }
        let after = last.as_ref().and_then(|(_, a)| *a);
        let mut summary = format!(
            "{} did not answer ({} tr{} of {} URL{})",
            self.service_name(req),
            self.attempts,
            if self.attempts == 1 { "y" } else { "ies" },
            req.urls.len(),
            if req.urls.len() == 1 { "" } else { "s" },
        );
        if let Some((reason, _)) = &last {
            let _ = write!(summary, "; last: {reason}");
        }
        let mut error = SendError::retryable(summary);
        error.kind = SendErrorKind::Retryable { after };
        Err(LookupFailure {
            error: Arc::new(error),
            tried,
        })
    }

    /// The service's configured name, or the primary URL's host.
    fn service_name(&self, req: &LookupRequest) -> String {
        match &self.service {
            Some(s) => s.clone(),
            None => req
                .urls
                .first()
                .and_then(|u| reqwest::Url::parse(u).ok())
                .map_or_else(|| "the look-up service".to_owned(), |u| host_of(&u)),
        }
    }

    async fn try_url(&self, url: &str, body: Option<&str>) -> Try {
        let url = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                return Try::Stop(SendError::final_error(format!(
                    "enrichment `{}`: the rendered URL is not an http(s) URL with a host",
                    self.step
                )));
            }
        };
        let host = host_of(&url);
        if !self.allow_private_networks
            && let Some(ssrf) = url.host().and_then(|h| refused_literal(&h))
        {
            return Try::Stop(SendError::final_error(ssrf.to_string()).with_source(ssrf));
        }
        let service = self.service.clone().unwrap_or_else(|| host.clone());
        let mut rb = self
            .client
            .request(self.method.clone(), url)
            .headers(self.headers.clone());
        if let Some(body) = body {
            rb = rb
                .header(CONTENT_TYPE, self.content_type.clone())
                .body(body.to_owned());
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return Try::Stop(SendError::retryable("the look-up is shutting down"));
        };
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(err) => {
                let e = classify_transport(err, &host, self.timeout);
                return if e.is_retryable() {
                    Try::Next(e.message, None)
                } else {
                    Try::Stop(e)
                };
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = match self.read_body(resp).await {
            Ok(b) => b,
            Err(reason) => return Try::Next(format!("{host}: {reason}"), None),
        };
        let excerpt = || excerpt_text(&bytes[..bytes.len().min(crate::webhook::EXCERPT_LIMIT)]);
        match status {
            200..=299 => {
                let value = if bytes.iter().all(u8::is_ascii_whitespace) {
                    Value::Null
                } else {
                    match serde_json::from_slice::<Value>(&bytes) {
                        Ok(v) => v,
                        Err(e) => {
                            return Try::Stop(
                                SendError::final_error(format!(
                                    "{service} answered HTTP {status} with a body that is not JSON ({e})"
                                ))
                                .with_status(status)
                                .with_excerpt(excerpt()),
                            );
                        }
                    }
                };
                Try::Answer(Fetched {
                    value: Arc::new(value),
                    answered_by: format!("{host} (HTTP {status})"),
                    tried: Vec::new(),
                })
            }
            404 if self.not_found == NotFound::Null => Try::Answer(Fetched {
                value: Arc::new(Value::Null),
                answered_by: format!("{host} (HTTP 404: nothing found)"),
                tried: Vec::new(),
            }),
            401 | 403 => Try::Stop(
                SendError::final_error(format!(
                    "{service} refused the credentials (HTTP {status}): authentication failed; check the look-up's token or headers"
                ))
                .with_status(status)
                .with_excerpt(excerpt()),
            ),
            408 | 425 | 429 | 500..=599 => Try::Next(format!("{host}: HTTP {status}"), retry_after),
            _ => Try::Stop(
                SendError::final_error(format!("{service} answered HTTP {status}"))
                    .with_status(status)
                    .with_excerpt(excerpt()),
            ),
        }
    }

    /// Reads the answer up to the size limit.
    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if out.len() + chunk.len() > self.max_response_bytes {
                        return Err(format!(
                            "the answer is larger than {} bytes (max_response_bytes)",
                            self.max_response_bytes
                        ));
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(out),
                Err(e) => {
                    let e = e.without_url();
                    return Err(if e.is_timeout() {
                        format!("the answer did not arrive within {:?}", self.timeout)
                    } else {
                        format!("the answer broke off ({e})")
                    });
                }
            }
        }
    }
}

fn answer(f: Fetched, cached: bool) -> LookupAnswer {
    LookupAnswer {
        value: f.value,
        cached,
        answered_by: Some(f.answered_by),
        tried: f.tried,
    }
}

fn host_of(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

fn cache_key(method: &str, req: &LookupRequest) -> String {
    let mut key = String::from(method);
    for u in &req.urls {
        key.push('\n');
        key.push_str(u);
    }
    key.push('\u{0}');
    if let Some(b) = &req.body {
        key.push_str(b);
    }
    key
}
