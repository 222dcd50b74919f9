//! `WebhookReceiver`: a local HTTP endpoint that records what it receives, verifies Standard
//! Webhooks signatures and answers as scripted. Cheap enough for load tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::local::lock;
use crate::signature;

/// One request as received (full mode).
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The client's address (the same for requests on one reused connection).
    pub peer: SocketAddr,
    /// The method (Estafeta always POSTs).
    pub method: Method,
    /// Path and query as sent.
    pub uri: Uri,
    /// All headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// When it arrived (monotonic clock).
    pub received_at: Instant,
    /// When it arrived (wall clock).
    pub received_at_system: SystemTime,
    /// Whether the Standard Webhooks signature verified; `None` when the receiver has no
    /// secret.
    pub signature_valid: Option<bool>,
}

impl ReceivedRequest {
    /// A header's value as text.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `webhook-id` header: the delivery id.
    #[must_use]
    pub fn delivery_id(&self) -> Option<&str> {
        self.header("webhook-id")
    }

    /// The body parsed as JSON.
    #[must_use]
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One arrival: all that counting-only mode keeps (full mode keeps it too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The `webhook-id` header, if any.
    pub delivery_id: Option<String>,
    /// When it arrived (monotonic clock).
    pub received_at: Instant,
}

#[derive(Debug, Clone)]
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Reply {
    fn status(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

#[derive(Debug)]
struct Script {
    queue: VecDeque<Reply>,
    default: Reply,
    delay: Duration,
}

#[derive(Debug)]
struct Shared {
    key: Option<Vec<u8>>,
    counting_only: bool,
    requests: Mutex<Vec<ReceivedRequest>>,
    arrivals: Mutex<Vec<Arrival>>,
    bad_signatures: AtomicUsize,
    count: watch::Sender<usize>,
    script: Mutex<Script>,
}

/// How to start a [`WebhookReceiver`].
#[derive(Debug, Default, Clone)]
pub struct ReceiverBuilder {
    secret: Option<String>,
    counting_only: bool,
}

impl ReceiverBuilder {
    /// Verify signatures with this `whsec_…` secret.
    ///
    /// # Panics
    /// When the secret is not `whsec_` followed by base64.
    #[must_use]
    pub fn secret(mut self, whsec: &str) -> Self {
        assert!(
            signature::decode_secret(whsec).is_some(),
            "not a whsec_ secret"
        );
        self.secret = Some(whsec.to_owned());
        self
    }

    /// Keep only the delivery id and arrival time of each request (and count bad
    /// signatures when a secret is set).
    #[must_use]
    pub fn counting_only(mut self) -> Self {
        self.counting_only = true;
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(self) -> WebhookReceiver {
        let shared = Arc::new(Shared {
            key: self.secret.as_deref().and_then(signature::decode_secret),
            counting_only: self.counting_only,
            requests: Mutex::new(Vec::new()),
            arrivals: Mutex::new(Vec::new()),
            bad_signatures: AtomicUsize::new(0),
            count: watch::Sender::new(0),
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                default: Reply::status(StatusCode::OK),
                delay: Duration::ZERO,
            }),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let (addr, server) = crate::local::serve(app, true).await;
        WebhookReceiver {
            addr,
            shared,
            server,
        }
    }
}

/// A local webhook endpoint on `127.0.0.1:<free port>`. Stops when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl WebhookReceiver {
    /// Options: a secret, counting-only mode.
    #[must_use]
    pub fn builder() -> ReceiverBuilder {
        ReceiverBuilder::default()
    }

    /// A receiver that records everything and answers 200.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// Like [`start`](Self::start), verifying signatures with a `whsec_…` secret.
    ///
    /// # Panics
    /// When the secret is not `whsec_` followed by base64.
    pub async fn start_with_secret(whsec: &str) -> Self {
        Self::builder().secret(whsec).start().await
    }

    /// A receiver that only counts and keeps arrivals (for load tests).
    pub async fn start_counting_only() -> Self {
        Self::builder().counting_only().start().await
    }

    /// `http://127.0.0.1:<port>/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests received so far, in arrival order (empty in counting-only mode).
    #[must_use]
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Delivery id and arrival time of every request so far, in arrival order.
    #[must_use]
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.shared.arrivals).clone()
    }

    /// How many requests arrived.
    #[must_use]
    pub fn count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// How many requests had a missing or wrong signature (only with a secret).
    #[must_use]
    pub fn bad_signatures(&self) -> usize {
        self.shared.bad_signatures.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` requests arrived; false when `timeout` passes first.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        crate::local::wait_for_count(&self.shared.count, n, timeout).await
    }

    /// Answers the next `n` requests with this status, headers and body (after replies
    /// queued earlier).
    ///
    /// # Panics
    /// When the status or a header is invalid.
    pub fn respond_with(
        &self,
        n: usize,
        status: u16,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) {
        let reply = Reply {
            status: StatusCode::from_u16(status).expect("valid status code"),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
                        HeaderValue::from_str(value).expect("valid header value"),
                    )
                })
                .collect(),
            body: body.into(),
        };
        lock(&self.shared.script)
            .queue
            .extend(std::iter::repeat_n(reply, n));
    }

    /// Answers the next `n` requests with `status` and an empty body.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.respond_with(n, status, &[], Bytes::new());
    }

    /// The answer when nothing is queued (200 at start).
    ///
    /// # Panics
    /// When the status is invalid.
    pub fn set_default(&self, status: u16) {
        lock(&self.shared.script).default =
            Reply::status(StatusCode::from_u16(status).expect("valid status code"));
    }

    /// Waits this long before every answer (zero at start).
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.script).delay = delay;
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let received_at = Instant::now();
    let signature_valid = shared
        .key
        .as_deref()
        .map(|key| signature::verify_request(key, &headers, &body));
    if signature_valid == Some(false) {
        shared.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    let delivery_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    lock(&shared.arrivals).push(Arrival {
        delivery_id,
        received_at,
    });
    if !shared.counting_only {
        let request = ReceivedRequest {
            peer,
            method,
            uri,
            headers,
            body,
            received_at,
            received_at_system: SystemTime::now(),
            signature_valid,
        };
        lock(&shared.requests).push(request);
    }
    shared.count.send_modify(|c| *c += 1);

    let (reply, delay) = {
        let mut script = lock(&shared.script);
        let reply = script
            .queue
            .pop_front()
            .unwrap_or_else(|| script.default.clone());
        (reply, script.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response.headers_mut().append(name, value);
    }
    response
}
