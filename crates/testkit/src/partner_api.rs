//! `PartnerApi`: a local paginated partner API ("sales") of the kind the HTTP provider pulls
//! from, with every pagination style and auth method the provider supports.
//!
//! Records are `{"id": "s-00001", "amount": N, "updated_at": "<RFC 3339>"}`, in `updated_at`
//! order; `?since=T` keeps those updated strictly after `T`. Endpoints (all `GET`):
//! - `/v1/sales/pages?page=N&per_page=K` → `{"data": […], "page": N}` (pages from 1);
//! - `/v1/sales/offset?offset=O&limit=L` → `{"items": […]}`;
//! - `/v1/sales/cursor?cursor=C` → `{"data": […], "next_cursor": "…" | null}`;
//! - `/v1/sales/link?page=N` → a bare array, with `Link: <…>; rel="next"` until the last page;
//! - `/v1/sales/next?page=N` → `{"results": […], "next": "/v1/sales/next?page=…" | null}`.
//!
//! Auth (any one configured method is enough; none configured means open): `X-Api-Key`
//! header or `api_key` query parameter, `Authorization: Bearer <static token>`, or a token from
//! `POST /oauth/token` (client credentials as basic auth, form `grant_type=client_credentials`)
//! that expires after the configured lifetime, or HTTP basic auth. Else 401. With
//! [`PartnerApiBuilder::fail_next`] the next sales requests are answered 503. With [`PartnerApiBuilder::throttle_once`]
//! the first sales request is answered 429 with `Retry-After: 1`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::local::lock;

/// One request the API saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path_and_query: String,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Shared {
    records: Mutex<Vec<Value>>,
    page_size: usize,
    api_key: Option<String>,
    bearer: Option<String>,
    basic: Option<String>,
    oauth: Option<(String, String, Duration)>,
    tokens: Mutex<Vec<(String, Instant)>>,
    throttle: Mutex<bool>,
    failures: Mutex<usize>,
    requests: Mutex<Vec<PartnerRequest>>,
}

/// How to start a [`PartnerApi`].
#[derive(Debug, Default)]
pub struct PartnerApiBuilder {
    shared: Shared,
}

/// The record number `i` (from 0): `updated_at` is 2026-11-01T00:00:00Z plus `i` minutes.
#[must_use]
pub fn sale(i: usize) -> Value {
    let minutes = i % 60;
    let hours = (i / 60) % 24;
    let days = i / 1440;
    json!({
        "id": format!("s-{i:05}"),
        "amount": i * 10 + 5,
        "updated_at": format!("2026-11-{:02}T{hours:02}:{minutes:02}:00Z", days + 1),
    })
}

impl PartnerApiBuilder {
    /// Serves records `0..n` (see [`sale`]); keep `n` under 30 days of minutes.
    #[must_use]
    pub fn records(self, n: usize) -> Self {
        *lock(&self.shared.records) = (0..n).map(sale).collect();
        self
    }

    /// Page size when a request gives none (default 10).
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.shared.page_size = n.max(1);
        self
    }

    /// Accepts this API key (header `X-Api-Key` or query `api_key`).
    #[must_use]
    pub fn api_key(mut self, key: &str) -> Self {
        self.shared.api_key = Some(key.to_owned());
        self
    }

    /// Accepts this static bearer token.
    #[must_use]
    pub fn bearer(mut self, token: &str) -> Self {
        self.shared.bearer = Some(token.to_owned());
        self
    }

    /// Accepts HTTP basic auth with this user and password.
    #[must_use]
    pub fn basic(mut self, user: &str, password: &str) -> Self {
        self.shared.basic = Some(format!("{user}:{password}"));
        self
    }

    /// Answers the next `n` sales requests 503.
    #[must_use]
    pub fn fail_next(self, n: usize) -> Self {
        *lock(&self.shared.failures) = n;
        self
    }

    /// Issues tokens to this client at `/oauth/token`, valid for `lifetime`.
    #[must_use]
    pub fn oauth(mut self, client_id: &str, secret: &str, lifetime: Duration) -> Self {
        self.shared.oauth = Some((client_id.to_owned(), secret.to_owned(), lifetime));
        self
    }

    /// Answers the first sales request 429 with `Retry-After: 1`.
    #[must_use]
    pub fn throttle_once(self) -> Self {
        *lock(&self.shared.throttle) = true;
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start(mut self) -> PartnerApi {
        if self.shared.page_size == 0 {
            self.shared.page_size = 10;
        }
        let shared = Arc::new(self.shared);
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (addr, server) = crate::local::serve(app, false).await;
        PartnerApi {
            addr,
            shared,
            server,
        }
    }
}

/// A local partner API on `127.0.0.1:<free port>`. Stops when dropped.
#[derive(Debug)]
pub struct PartnerApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for PartnerApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl PartnerApi {
    /// Options: records, page size, auth, throttling.
    #[must_use]
    pub fn builder() -> PartnerApiBuilder {
        PartnerApiBuilder::default()
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends records `from..to` (see [`sale`]).
    pub fn add_records(&self, from: usize, to: usize) {
        lock(&self.shared.records).extend((from..to).map(sale));
    }

    /// Every request so far.
    #[must_use]
    pub fn requests(&self) -> Vec<PartnerRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Makes every issued token invalid (as a partner revoking them would).
    pub fn revoke_tokens(&self) {
        for (_, until) in lock(&self.shared.tokens).iter_mut() {
            *until = Instant::now();
        }
    }

    /// Tokens issued by `/oauth/token` so far.
    #[must_use]
    pub fn tokens_issued(&self) -> usize {
        lock(&self.shared.tokens).len()
    }
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn num(q: &[(String, String)], name: &str, default: usize) -> usize {
    param(q, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn authorised(s: &Shared, headers: &HeaderMap, q: &[(String, String)]) -> bool {
    if s.api_key.is_none() && s.bearer.is_none() && s.basic.is_none() && s.oauth.is_none() {
        return true;
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(key) = &s.api_key
        && (header("x-api-key") == Some(key) || param(q, "api_key") == Some(key))
    {
        return true;
    }
    if let Some(basic) = &s.basic
        && header("authorization")
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|b| b == basic.as_bytes())
    {
        return true;
    }
    let Some(token) = header("authorization").and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    if s.bearer.as_deref() == Some(token) {
        return true;
    }
    lock(&s.tokens)
        .iter()
        .any(|(t, until)| t == token && Instant::now() < *until)
}

fn issue_token(s: &Shared, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Value) {
    let Some((id, secret, lifetime)) = &s.oauth else {
        return (StatusCode::NOT_FOUND, json!({"error": "not_found"}));
    };
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    if basic.as_deref() != Some(&format!("{id}:{secret}")) {
        return (StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
    }
    if param(&form, "grant_type") != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type"}),
        );
    }
    let mut tokens = lock(&s.tokens);
    let token = format!("tok-{}", tokens.len() + 1);
    tokens.push((token.clone(), Instant::now() + *lifetime));
    (
        StatusCode::OK,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime.as_secs()}),
    )
}

/// The records of a page: after `since`, from `start`, at most `n`; and whether more follow.
fn slice(s: &Shared, q: &[(String, String)], start: usize, n: usize) -> (Vec<Value>, bool) {
    let records = lock(&s.records);
    let since = param(q, "since").filter(|v| !v.is_empty());
    let kept: Vec<&Value> = records
        .iter()
        .filter(|r| since.is_none_or(|t| r["updated_at"].as_str().is_some_and(|u| u > t)))
        .collect();
    let page = kept
        .iter()
        .skip(start)
        .take(n)
        .map(|v| (*v).clone())
        .collect();
    (page, kept.len() > start + n)
}

fn sales(s: &Shared, path: &str, q: &[(String, String)]) -> (StatusCode, Value, Option<String>) {
    let size = num(q, "per_page", num(q, "limit", s.page_size)).max(1);
    let with = |page: usize| {
        let mut kept: Vec<String> = q
            .iter()
            .filter(|(k, _)| k != "page" && k != "api_key")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        kept.push(format!("page={page}"));
        format!("{path}?{}", kept.join("&"))
    };
    match path {
        "/v1/sales/pages" => {
            let page = num(q, "page", 1).max(1);
            let (data, _) = slice(s, q, (page - 1) * size, size);
            (StatusCode::OK, json!({"data": data, "page": page}), None)
        }
        "/v1/sales/offset" => {
            let (items, _) = slice(s, q, num(q, "offset", 0), size);
            (StatusCode::OK, json!({"items": items}), None)
        }
        "/v1/sales/cursor" => {
            let start = param(q, "cursor")
                .and_then(|c| c.strip_prefix('c'))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let (data, more) = slice(s, q, start, size);
            let next = more.then(|| format!("c{}", start + size));
            (
                StatusCode::OK,
                json!({"data": data, "next_cursor": next}),
                None,
            )
        }
        "/v1/sales/link" => {
            let page = num(q, "page", 1).max(1);
            let (data, more) = slice(s, q, (page - 1) * size, size);
            let link = more.then(|| format!("<{}>; rel=\"next\"", with(page + 1)));
            (StatusCode::OK, Value::Array(data), link)
        }
        "/v1/sales/next" => {
            let page = num(q, "page", 1).max(1);
            let (data, more) = slice(s, q, (page - 1) * size, size);
            let next = more.then(|| with(page + 1));
            (StatusCode::OK, json!({"results": data, "next": next}), None)
        }
        _ => (StatusCode::NOT_FOUND, json!({"error": "not_found"}), None),
    }
}

/// Whether this request is one of the failures asked for (and counts it).
fn take_failure(s: &Shared) -> bool {
    let mut f = lock(&s.failures);
    let fail = *f > 0;
    *f = f.saturating_sub(1);
    fail
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let q = query(&uri);
    let mut retry_after = false;
    let (status, body, link) = if uri.path() == "/oauth/token" && method == Method::POST {
        let (st, b) = issue_token(&s, &headers, &body);
        (st, b, None)
    } else if method != Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method"}),
            None,
        )
    } else if !authorised(&s, &headers, &q) {
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthorized"}),
            None,
        )
    } else if take_failure(&s) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "unavailable"}),
            None,
        )
    } else if std::mem::take(&mut *lock(&s.throttle)) {
        retry_after = true;
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "slow down"}),
            None,
        )
    } else {
        sales(&s, uri.path(), &q)
    };
    lock(&s.requests).push(PartnerRequest {
        method: method.to_string(),
        path_and_query: uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        status: status.as_u16(),
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LINK, link);
    }
    response
}
