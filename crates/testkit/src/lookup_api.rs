//! `LookupApi`: a local "person records" look-up API of the kind a Brazilian integration
//! team calls before letting a visitor in — `GET /v1/records/{document}` and
//! `POST /v1/search` behind a bearer token, answering the court records found for a CPF.
//!
//! What it answers:
//! - `GET /v1/records/{document}` (the document percent-encoded in the path) and
//!   `POST /v1/search` with `{"document": "…"}`: 200 with
//!   `{"document": "<as asked>", "hits": N, "records": [{"court", "case", "kind"}, …]}`;
//!   an unknown document is `hits: 0, records: []`. Documents are compared by their letters
//!   and digits, so `123.456.789-00` and `12345678900` are the same person.
//! - A missing or wrong `Authorization: Bearer <token>`: 401 with
//!   `{"error": "unauthorized", "message": "…"}` and a `WWW-Authenticate` header (RFC 6750).
//! - While [`LookupApi::set_down`] is on: 503 `{"error": "service_unavailable", …}` to
//!   everything. After [`LookupApi::stop`] (or drop) the port is closed: connections are
//!   refused.
//! - A body that is not `{"document": "<text>"}`: 400; other paths: 404; other methods: 405.
//!
//! Every answer waits the configured delay first (an API's latency, for benchmarks).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::local::lock;

/// How long [`LookupApi::stop`] waits for answers in flight before closing them anyway.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One record of a person: a court case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRecord {
    /// The court, e.g. `TJSP`.
    pub court: String,
    /// The case number, e.g. `1002345-67.2024.8.26.0100`.
    pub case: String,
    /// What kind of case, e.g. `criminal`.
    pub kind: String,
}

impl LookupRecord {
    /// A record.
    #[must_use]
    pub fn new(court: &str, case: &str, kind: &str) -> Self {
        Self {
            court: court.to_owned(),
            case: case.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

/// One request to the API, answered or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    /// The HTTP method.
    pub method: String,
    /// The path as sent (percent-encoded).
    pub path: String,
    /// The bearer token sent, if any.
    pub bearer: Option<String>,
    /// The document asked for, when the request named one.
    pub document: Option<String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Book {
    requests: Vec<LookupRequest>,
    documents: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    token: Mutex<String>,
    // Normalised document → records.
    records: Mutex<HashMap<String, Vec<LookupRecord>>>,
    delay: Mutex<Duration>,
    down: AtomicBool,
    book: Mutex<Book>,
    seen: watch::Sender<usize>,
    answered: watch::Sender<usize>,
}

/// How to start a [`LookupApi`].
#[derive(Debug, Clone)]
pub struct LookupApiBuilder {
    token: String,
    records: HashMap<String, Vec<LookupRecord>>,
    delay: Duration,
}

impl LookupApiBuilder {
    /// Adds a record to a document (a document may have several).
    #[must_use]
    pub fn record(mut self, document: &str, record: LookupRecord) -> Self {
        self.records
            .entry(normalise(document))
            .or_default()
            .push(record);
        self
    }

    /// Adds records to a document.
    #[must_use]
    pub fn records(
        mut self,
        document: &str,
        records: impl IntoIterator<Item = LookupRecord>,
    ) -> Self {
        self.records
            .entry(normalise(document))
            .or_default()
            .extend(records);
        self
    }

    /// Waits this long before every answer (default none).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(self) -> LookupApi {
        let shared = Arc::new(Shared {
            token: Mutex::new(self.token),
            records: Mutex::new(self.records),
            delay: Mutex::new(self.delay),
            down: AtomicBool::new(false),
            book: Mutex::new(Book::default()),
            seen: watch::Sender::new(0),
            answered: watch::Sender::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(64 * 1024))
            .with_state(Arc::clone(&shared));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr, server) = crate::local::serve_until(app, stop_rx).await;
        LookupApi {
            addr,
            shared,
            stop: Mutex::new(Some(stop_tx)),
            server: Mutex::new(Some(server)),
        }
    }
}

/// A local records look-up API on `127.0.0.1:<free port>`. Stops when dropped.
#[derive(Debug)]
pub struct LookupApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for LookupApi {
    fn drop(&mut self) {
        if let Some(tx) = lock(&self.stop).take() {
            let _ = tx.send(());
        }
        if let Some(server) = lock(&self.server).take() {
            server.abort();
        }
    }
}

impl LookupApi {
    /// Options for an API that accepts `token`: records, a delay.
    #[must_use]
    pub fn builder(token: &str) -> LookupApiBuilder {
        LookupApiBuilder {
            token: token.to_owned(),
            records: HashMap::new(),
            delay: Duration::ZERO,
        }
    }

    /// `http://127.0.0.1:<port>`: the API's base; look-ups are at `{base}/v1/records/…`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on (or listened on, once stopped).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a record to a document from now on.
    pub fn add_record(&self, document: &str, record: LookupRecord) {
        lock(&self.shared.records)
            .entry(normalise(document))
            .or_default()
            .push(record);
    }

    /// From now on only this token is accepted.
    pub fn set_token(&self, token: &str) {
        token.clone_into(&mut lock(&self.shared.token));
    }

    /// From now on every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// While `down` is true every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Closes the port: when this returns, new connections are refused and every open
    /// connection is closed (answers in flight are finished first, for up to 10 s).
    pub async fn stop(&self) {
        if let Some(tx) = lock(&self.stop).take() {
            let _ = tx.send(());
        }
        let server = lock(&self.server).take();
        if let Some(mut server) = server
            && tokio::time::timeout(STOP_GRACE, &mut server).await.is_err()
        {
            server.abort();
            let _ = server.await;
        }
    }

    /// How many requests arrived so far, refused ones included.
    #[must_use]
    pub fn request_count(&self) -> usize {
        *self.shared.seen.borrow()
    }

    /// Every request so far, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<LookupRequest> {
        lock(&self.shared.book).requests.clone()
    }

    /// The documents looked up with success (200), as asked, in order.
    #[must_use]
    pub fn documents(&self) -> Vec<String> {
        lock(&self.shared.book).documents.clone()
    }

    /// Waits until at least `n` requests arrived; false when `timeout` passes first.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        crate::local::wait_for_count(&self.shared.seen, n, timeout).await
    }

    /// Waits until at least `n` look-ups were answered with 200; false when `timeout`
    /// passes first.
    pub async fn wait_for_documents(&self, n: usize, timeout: Duration) -> bool {
        crate::local::wait_for_count(&self.shared.answered, n, timeout).await
    }
}

/// The letters and digits of a document: how documents are compared.
fn normalise(document: &str) -> String {
    document
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// An answer: status and JSON body.
struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn error(status: StatusCode, error: &str, message: &str) -> Self {
        Self {
            status,
            body: json!({"error": error, "message": message}),
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let delay = *lock(&shared.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let bearer = bearer(&headers);
    let (document, reply) = match answer(&shared, &method, &uri, bearer.as_deref(), &body) {
        Ok((document, reply)) => (Some(document), reply),
        Err(reply) => (None, reply),
    };
    {
        let mut book = lock(&shared.book);
        book.requests.push(LookupRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            bearer,
            document: document.clone(),
            status: reply.status.as_u16(),
        });
        if let Some(d) = document {
            book.documents.push(d);
            shared.answered.send_modify(|n| *n += 1);
        }
    }
    shared.seen.send_modify(|n| *n += 1);
    let mut response = Response::new(Body::from(reply.body.to_string()));
    *response.status_mut() = reply.status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if reply.status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="records", error="invalid_token""#),
        );
    }
    if reply.status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = if uri.path() == "/v1/search" {
            "POST"
        } else {
            "GET"
        };
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    response
}

/// The token of an `Authorization: Bearer …` header (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The document asked for and the answer, or the refusal.
fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    bearer: Option<&str>,
    body: &[u8],
) -> Result<(String, Reply), Reply> {
    use StatusCode as S;
    if shared.down.load(Ordering::SeqCst) {
        let message = "the records service is temporarily unavailable";
        return Err(Reply::error(
            S::SERVICE_UNAVAILABLE,
            "service_unavailable",
            message,
        ));
    }
    let path = uri.path();
    let by_path = path.strip_prefix("/v1/records/");
    let known = by_path.is_some_and(|d| !d.is_empty() && !d.contains('/')) || path == "/v1/search";
    if !known {
        return Err(Reply::error(S::NOT_FOUND, "not_found", "no such resource"));
    }
    if *method
        != if by_path.is_some() {
            Method::GET
        } else {
            Method::POST
        }
    {
        let message = "use GET /v1/records/{document} or POST /v1/search";
        return Err(Reply::error(
            S::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        ));
    }
    let refused = match bearer {
        None => Some("missing bearer token: send Authorization: Bearer <token>"),
        Some(token) if token != *lock(&shared.token) => Some("invalid or expired token"),
        Some(_) => None,
    };
    if let Some(message) = refused {
        return Err(Reply::error(S::UNAUTHORIZED, "unauthorized", message));
    }
    let document = match by_path {
        Some(encoded) => percent_decode(encoded),
        None => serde_json::from_slice::<SearchBody>(body)
            .ok()
            .map(|b| b.document),
    };
    let Some(document) = document.filter(|d| !normalise(d).is_empty()) else {
        let message = r#"name a document: GET /v1/records/{document} or POST /v1/search with {"document": "…"}"#;
        return Err(Reply::error(S::BAD_REQUEST, "bad_request", message));
    };
    let records = lock(&shared.records)
        .get(&normalise(&document))
        .cloned()
        .unwrap_or_default();
    let body = json!({"document": document, "hits": records.len(), "records": records});
    Ok((
        document,
        Reply {
            status: S::OK,
            body,
        },
    ))
}

/// The body of `POST /v1/search`.
#[derive(Debug, Deserialize)]
struct SearchBody {
    document: String,
}

/// Decodes `%XX` escapes; `None` when an escape is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const T: Duration = Duration::from_secs(10);

    /// One HTTP/1.1 exchange on a fresh connection: status and JSON body.
    async fn call(api: &LookupApi, head: &str, body: &str) -> std::io::Result<(u16, Value)> {
        let mut tcp = tokio::net::TcpStream::connect(api.addr()).await?;
        let request = format!(
            "{head}\r\nHost: records.test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await?;
        let status = raw[9..12].parse().expect("status code");
        let (_, body) = raw.split_once("\r\n\r\n").expect("head and body");
        Ok((status, serde_json::from_str(body).expect("JSON body")))
    }

    async fn api() -> LookupApi {
        LookupApi::builder("tk")
            .record("123.456.789-00", LookupRecord::new("TJSP", "1", "criminal"))
            .record("12345678900", LookupRecord::new("TRF3", "2", "civil"))
            .start()
            .await
    }

    #[tokio::test]
    async fn answers_records_by_path_and_by_search_behind_the_token() {
        let api = api().await;
        let (status, v) = call(
            &api,
            "GET /v1/records/123.456.789-00 HTTP/1.1\r\nAuthorization: Bearer tk",
            "",
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(v["document"], "123.456.789-00");
        assert_eq!(v["hits"], 2);
        assert_eq!(v["records"][1]["court"], "TRF3");
        let (status, v) = call(
            &api,
            "POST /v1/search HTTP/1.1\r\nAuthorization: bearer tk\r\nContent-Type: application/json",
            r#"{"document": "987.654.321-00"}"#,
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            v,
            json!({"document": "987.654.321-00", "hits": 0, "records": []})
        );
        let (status, v) = call(
            &api,
            "GET /v1/records/1 HTTP/1.1\r\nAuthorization: Bearer nope",
            "",
        )
        .await
        .unwrap();
        assert_eq!((status, v["error"].as_str()), (401, Some("unauthorized")));
        let (status, _) = call(&api, "GET /v1/records/1 HTTP/1.1", "").await.unwrap();
        assert_eq!(status, 401);
        let (status, _) = call(
            &api,
            "POST /v1/search HTTP/1.1\r\nAuthorization: Bearer tk",
            "{}",
        )
        .await
        .unwrap();
        assert_eq!(status, 400);
        let (status, _) = call(&api, "GET /v2/x HTTP/1.1\r\nAuthorization: Bearer tk", "")
            .await
            .unwrap();
        assert_eq!(status, 404);
        assert!(api.wait_for_requests(6, T).await);
        assert_eq!(api.request_count(), 6);
        assert_eq!(api.documents(), ["123.456.789-00", "987.654.321-00"]);
        assert_eq!(api.requests()[2].bearer.as_deref(), Some("nope"));
    }

    #[tokio::test]
    async fn down_answers_503_and_stop_refuses_connections() {
        let api = api().await;
        api.set_down(true);
        let (status, v) = call(
            &api,
            "GET /v1/records/1 HTTP/1.1\r\nAuthorization: Bearer tk",
            "",
        )
        .await
        .unwrap();
        assert_eq!(
            (status, v["error"].as_str()),
            (503, Some("service_unavailable"))
        );
        api.set_down(false);
        // An idle keep-alive connection is closed by `stop` too.
        let mut idle = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
        idle.write_all(
            b"GET /v1/records/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tk\r\n\r\n",
        )
        .await
        .unwrap();
        assert!(api.wait_for_documents(1, T).await);
        api.stop().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(T, idle.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(_))), "the idle connection stayed open");
        let refused = tokio::net::TcpStream::connect(api.addr()).await;
        assert_eq!(
            refused.map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
    }
}
