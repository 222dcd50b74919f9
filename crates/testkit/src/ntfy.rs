//! `FakeNtfy`: a local ntfy server for publishing. It takes JSON publishes at `/`, header
//! (and query) publishes at `/<topic>` and `GET /<topic>/publish`, checks topics, priorities,
//! tokens and passwords the way ntfy does, answers ntfy's error objects and scripted rate
//! limits, and records what it accepted.
//!
//! Where it knowingly differs from ntfy:
//! - A body that ntfy would keep as an attachment (over the message limit, 4096 bytes by
//!   default, not UTF-8, or sent with a `Filename`) is refused with 413
//!   `{"code":41301,…,"error":"attachment too large, or bandwidth limit reached"}`, as by a
//!   server whose attachment size limit is zero. The fake stores no attachments.
//! - `delay`, `email`, `call` and `actions` are accepted and not interpreted: the message is
//!   recorded at once.
//! - Access control is a list of tokens and users, and protected topics (all, or those
//!   given to [`FakeNtfy::protect_topic`]); a credential may publish to every protected
//!   topic unless [`FakeNtfy::allow_only`] limits it. Unprotected topics are open to all.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::local::lock;

/// ntfy's default message size limit, in bytes.
const DEFAULT_MESSAGE_LIMIT: usize = 4096;
/// How long ntfy.sh keeps messages: `expires` is `time` plus this.
const CACHE_SECS: i64 = 12 * 3600;
/// Topic names ntfy reserves for itself.
const DISALLOWED_TOPICS: &[&str] = &[
    "docs", "static", "file", "app", "metrics", "account", "settings", "signup", "login", "v1",
];

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtfyMessage {
    /// The id answered (12 random letters and digits).
    pub id: String,
    /// When it was accepted, in Unix seconds.
    pub time: i64,
    /// The topic.
    pub topic: String,
    /// The message as ntfy keeps it: trimmed, `triggered` when empty.
    pub message: String,
    /// The title, if any.
    pub title: Option<String>,
    /// The tags, in order.
    pub tags: Vec<String>,
    /// The priority, 1 to 5, when one was given (ntfy's default is 3).
    pub priority: Option<u8>,
    /// The click URL, if any.
    pub click: Option<String>,
    /// The icon URL, if any.
    pub icon: Option<String>,
    /// The attachment URL, if any.
    pub attach: Option<String>,
    /// Whether the message is Markdown (`content_type` `text/markdown`).
    pub markdown: bool,
    /// The credential that authenticated the publish: `token:<token>` or `user:<name>`.
    /// Always `None` on a fake without access control, which ignores credentials.
    pub auth: Option<String>,
}

/// One request to the fake, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtfyRequest {
    /// The HTTP method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// ntfy's error `code` (e.g. 42901) when refused.
    pub code: Option<u32>,
}

/// Access control for [`FakeNtfy::start_with_auth`]: which credentials are valid, and
/// whether every topic is protected. More topics are protected with
/// [`FakeNtfy::protect_topic`]; [`FakeNtfy::allow_only`] limits a credential to some.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Valid tokens (`tk_…`), sent as `Authorization: Bearer <token>` (or as the password
    /// of an empty user name).
    pub tokens: Vec<String>,
    /// Valid users as (name, password), sent as `Authorization: Basic base64(name:password)`.
    pub users: Vec<(String, String)>,
    /// Whether every topic is protected: anonymous publishes get 403.
    pub protect_all: bool,
}

impl Auth {
    /// ntfy's rules: no header, or one that is neither Basic nor Bearer, is anonymous; a
    /// Basic or Bearer credential that is not valid is 401, whatever the topic. Returns the
    /// credential's label (`token:<token>`, `user:<name>`).
    fn authenticate(
        &self,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Result<Option<String>, NtfyError> {
        let mut value = headers
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .unwrap_or_default();
        // `?auth=` carries the header base64url-encoded (for WebSocket clients).
        if let Some(encoded) = query.get("authorization").or_else(|| query.get("auth")) {
            let decoded = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| UNAUTHORIZED)?;
            value = String::from_utf8_lossy(&decoded).trim().to_owned();
        }
        let lower = value.to_ascii_lowercase();
        if !lower.starts_with("basic ") && !lower.starts_with("bearer ") {
            return Ok(None);
        }
        let label = match value.strip_prefix("Bearer") {
            Some(token) => self.by_token(token.trim()),
            None => self.by_basic(&value[6..]),
        };
        label.map(Some).ok_or(UNAUTHORIZED)
    }

    fn by_token(&self, token: &str) -> Option<String> {
        self.tokens
            .iter()
            .any(|t| t == token)
            .then(|| format!("token:{token}"))
    }

    fn by_basic(&self, encoded: &str) -> Option<String> {
        let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
        let (name, password) = decoded.split_once(':')?;
        if name.is_empty() {
            return self.by_token(password); // ntfy reads an empty user's password as a token
        }
        self.users
            .iter()
            .any(|(n, p)| n == name && p == password)
            .then(|| format!("user:{name}"))
    }
}

/// ntfy's error object.
#[derive(Debug, Clone)]
struct NtfyError {
    code: u32,
    http: u16,
    error: Cow<'static, str>,
    link: &'static str,
}

const fn ntfy_error(code: u32, error: &'static str, link: &'static str) -> NtfyError {
    NtfyError {
        code,
        http: (code / 100) as u16,
        error: Cow::Borrowed(error),
        link,
    }
}

const AUTH_LINK: &str = "https://ntfy.sh/docs/publish/#authentication";
const LIMITS_LINK: &str = "https://ntfy.sh/docs/publish/#limitations";
const NOT_FOUND: NtfyError = ntfy_error(40401, "page not found", "");
const UNAUTHORIZED: NtfyError = ntfy_error(40101, "unauthorized", AUTH_LINK);
const FORBIDDEN: NtfyError = ntfy_error(40301, "forbidden", AUTH_LINK);
const TOO_MANY_REQUESTS: NtfyError =
    ntfy_error(42901, "limit reached: too many requests", LIMITS_LINK);
const PRIORITY_INVALID: NtfyError = ntfy_error(
    40007,
    "invalid priority parameter",
    "https://ntfy.sh/docs/publish/#message-priority",
);
const TOPIC_INVALID: NtfyError = ntfy_error(40009, "invalid request: topic invalid", "");
const TOPIC_DISALLOWED: NtfyError =
    ntfy_error(40010, "invalid request: topic name is not allowed", "");
const ATTACH_URL_INVALID: NtfyError = ntfy_error(
    40013,
    "invalid request: attachment URL is invalid",
    "https://ntfy.sh/docs/publish/#attachments",
);
const ICON_URL_INVALID: NtfyError = ntfy_error(
    40021,
    "invalid request: icon URL is invalid",
    "https://ntfy.sh/docs/publish/#icons",
);
const JSON_INVALID: NtfyError = ntfy_error(
    40024,
    "invalid request: request body must be valid JSON",
    "",
);
const ATTACHMENT_TOO_LARGE: NtfyError = ntfy_error(
    41301,
    "attachment too large, or bandwidth limit reached",
    LIMITS_LINK,
);
const JSON_TOO_LARGE: NtfyError = ntfy_error(41303, "JSON body too large", "");
const INTERNAL_ERROR: NtfyError = ntfy_error(50001, "internal server error", "");

impl NtfyError {
    /// `fail_next`'s answer: `{"code":<status>01,"http":<status>,"error":"<reason>"}`, which
    /// for 500 is ntfy's own `internal server error`.
    fn status(status: StatusCode) -> Self {
        let reason = status.canonical_reason().unwrap_or("error");
        Self {
            code: u32::from(status.as_u16()) * 100 + 1,
            http: status.as_u16(),
            error: Cow::Owned(reason.to_ascii_lowercase()),
            link: "",
        }
    }

    fn json(&self) -> Value {
        let mut body =
            serde_json::json!({"code": self.code, "http": self.http, "error": self.error});
        if !self.link.is_empty() {
            body["link"] = Value::from(self.link);
        }
        body
    }
}

#[derive(Debug, Default)]
struct Book {
    messages: Vec<NtfyMessage>,
    requests: Vec<NtfyRequest>,
    faults: VecDeque<NtfyError>,
    protected: HashSet<String>,
    // Credential label → the protected topics it may publish to (absent: all).
    only: HashMap<String, HashSet<String>>,
}

impl Book {
    fn authorize(
        &self,
        auth: &Auth,
        credential: Option<&str>,
        topic: &str,
    ) -> Result<(), NtfyError> {
        if !auth.protect_all && !self.protected.contains(topic) {
            return Ok(());
        }
        match credential {
            Some(c) if self.only.get(c).is_none_or(|topics| topics.contains(topic)) => Ok(()),
            _ => Err(FORBIDDEN),
        }
    }
}

#[derive(Debug)]
struct Shared {
    auth: Option<Auth>,
    message_limit: usize,
    book: Mutex<Book>,
    accepted: watch::Sender<usize>,
}

/// How to start a [`FakeNtfy`].
#[derive(Debug, Clone)]
pub struct NtfyBuilder {
    auth: Option<Auth>,
    message_limit: usize,
}

impl Default for NtfyBuilder {
    fn default() -> Self {
        Self {
            auth: None,
            message_limit: DEFAULT_MESSAGE_LIMIT,
        }
    }
}

impl NtfyBuilder {
    /// Check credentials and protect topics (without this, credentials are ignored and
    /// every topic is open, as on a server without an auth file).
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The largest message body in bytes (4096 by default); larger bodies get 413.
    #[must_use]
    pub fn message_limit(mut self, bytes: usize) -> Self {
        self.message_limit = bytes;
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(self) -> FakeNtfy {
        let shared = Arc::new(Shared {
            auth: self.auth,
            message_limit: self.message_limit,
            book: Mutex::new(Book::default()),
            accepted: watch::Sender::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let (addr, server) = crate::local::serve(app, false).await;
        FakeNtfy {
            addr,
            shared,
            server,
        }
    }
}

/// A local ntfy server on `127.0.0.1:<free port>`. Stops when dropped.
#[derive(Debug)]
pub struct FakeNtfy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakeNtfy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeNtfy {
    /// Options: access control, the message limit.
    #[must_use]
    pub fn builder() -> NtfyBuilder {
        NtfyBuilder::default()
    }

    /// A server without access control.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A server that checks credentials and protects topics.
    pub async fn start_with_auth(auth: Auth) -> Self {
        Self::builder().auth(auth).start().await
    }

    /// `http://127.0.0.1:<port>`: publish to `{base}/` (JSON) or `{base}/<topic>`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The messages accepted so far, in order.
    #[must_use]
    pub fn messages(&self) -> Vec<NtfyMessage> {
        lock(&self.shared.book).messages.clone()
    }

    /// Every request so far, refused ones included, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<NtfyRequest> {
        lock(&self.shared.book).requests.clone()
    }

    /// Waits until at least `n` messages were accepted; false when `timeout` passes first.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> bool {
        crate::local::wait_for_count(&self.shared.accepted, n, timeout).await
    }

    /// From now on only valid credentials may publish to `topic` (403 otherwise). Without
    /// access control ([`start_with_auth`](Self::start_with_auth)) every topic stays open.
    pub fn protect_topic(&self, topic: &str) {
        lock(&self.shared.book).protected.insert(topic.to_owned());
    }

    /// From now on this credential — `token:<token>` or `user:<name>`, as in
    /// [`NtfyMessage::auth`] — may publish to these protected topics only (403 on others).
    pub fn allow_only(&self, credential: &str, topics: &[&str]) {
        let topics = topics.iter().map(|t| (*t).to_owned()).collect();
        lock(&self.shared.book)
            .only
            .insert(credential.to_owned(), topics);
    }

    /// The next `n` publishes (after failures queued earlier) answer 429
    /// `{"code":42901,"http":429,"error":"limit reached: too many requests",…}`, after
    /// authentication as ntfy's request limiter does.
    pub fn rate_limit_next(&self, n: usize) {
        lock(&self.shared.book)
            .faults
            .extend(std::iter::repeat_n(TOO_MANY_REQUESTS, n));
    }

    /// The next `n` publishes (after failures queued earlier) answer `status` (meant for
    /// 5xx) with `{"code":<status>01,"http":<status>,"error":"<reason phrase>"}`.
    ///
    /// # Panics
    /// When the status is invalid.
    pub fn fail_next(&self, n: usize, status: u16) {
        let error = NtfyError::status(StatusCode::from_u16(status).expect("valid status code"));
        lock(&self.shared.book)
            .faults
            .extend(std::iter::repeat_n(error, n));
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let (status, code, json) = match publish(&shared, &method, &uri, &headers, &body) {
        Ok(json) => (StatusCode::OK, None, json),
        Err(e) => (
            StatusCode::from_u16(e.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Some(e.code),
            e.json(),
        ),
    };
    lock(&shared.book).requests.push(NtfyRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        status: status.as_u16(),
        code,
    });
    let mut response = Response::new(Body::from(format!("{json}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// ntfy's topic name rule: `^[-_A-Za-z0-9]{1,64}$`.
fn valid_topic(topic: &str) -> bool {
    (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

enum Route {
    Health,
    Json,
    Topic(String),
}

fn route(method: &Method, path: &str) -> Result<Route, NtfyError> {
    let put_or_post = *method == Method::POST || *method == Method::PUT;
    if put_or_post && path == "/" {
        return Ok(Route::Json);
    }
    if *method == Method::GET && path == "/v1/health" {
        return Ok(Route::Health);
    }
    match path.strip_prefix('/').unwrap_or(path).split_once('/') {
        None if put_or_post && valid_topic(&path[1..]) => Ok(Route::Topic(path[1..].to_owned())),
        Some((topic, "publish" | "send" | "trigger"))
            if *method == Method::GET && valid_topic(topic) =>
        {
            Ok(Route::Topic(topic.to_owned()))
        }
        _ => Err(NOT_FOUND),
    }
}

/// Publish parameters, read as ntfy reads them: a header first, then the query.
struct Params {
    headers: HashMap<String, String>,
    query: HashMap<String, String>,
}

impl Params {
    fn get(&self, names: &[&str]) -> Option<String> {
        let find = |map: &HashMap<String, String>| {
            names.iter().find_map(|n| {
                map.get(*n)
                    .map(|v| v.trim())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            })
        };
        find(&self.headers).or_else(|| find(&self.query))
    }

    fn flag(&self, names: &[&str]) -> bool {
        self.get(names)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "yes" | "true"))
    }
}

/// The JSON publish format; unknown fields are ignored, `null` is as absent.
#[derive(Debug, Deserialize)]
struct JsonPublish {
    topic: Option<String>,
    message: Option<String>,
    title: Option<String>,
    tags: Option<Vec<String>>,
    priority: Option<i64>,
    click: Option<String>,
    icon: Option<String>,
    attach: Option<String>,
    filename: Option<String>,
    markdown: Option<bool>,
    #[serde(rename = "delay")]
    _delay: Option<String>,
    #[serde(rename = "email")]
    _email: Option<String>,
    #[serde(rename = "actions")]
    _actions: Option<Vec<Value>>,
}

/// Turns a JSON publish into the topic, headers and body of a header publish, as ntfy does.
fn from_json(
    body: &[u8],
    limit: usize,
    params: &mut Params,
) -> Result<(String, Vec<u8>), NtfyError> {
    if body.len() > limit * 2 {
        return Err(JSON_TOO_LARGE);
    }
    let publish: JsonPublish = serde_json::from_slice(body).map_err(|_| JSON_INVALID)?;
    let topic = publish.topic.unwrap_or_default();
    if !valid_topic(&topic) {
        return Err(TOPIC_INVALID);
    }
    let mut set = |name: &str, value: Option<String>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            params.headers.insert(name.to_owned(), value);
        }
    };
    set("x-title", publish.title);
    set(
        "x-priority",
        publish.priority.filter(|p| *p != 0).map(|p| p.to_string()),
    );
    set("x-tags", publish.tags.map(|t| t.join(",")));
    set("x-click", publish.click);
    set("x-icon", publish.icon);
    set("x-attach", publish.attach);
    set("x-filename", publish.filename);
    set(
        "x-markdown",
        publish.markdown.filter(|m| *m).map(|_| "yes".to_owned()),
    );
    let message = publish.message.filter(|m| !m.is_empty());
    Ok((
        topic,
        message
            .unwrap_or_else(|| "triggered".to_owned())
            .into_bytes(),
    ))
}

fn publish(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, NtfyError> {
    let query: HashMap<String, String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let credential = match &shared.auth {
        Some(auth) => auth.authenticate(headers, &query)?,
        None => None,
    };
    let route = route(method, uri.path())?;
    if !matches!(route, Route::Health)
        && let Some(fault) = lock(&shared.book).faults.pop_front()
    {
        return Err(fault);
    }
    let mut params = Params {
        headers: HashMap::new(),
        query,
    };
    for (name, value) in headers {
        params
            .headers
            .entry(name.as_str().to_owned())
            .or_insert_with(|| String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let (topic, body) = match route {
        Route::Health => return Ok(serde_json::json!({"healthy": true})),
        Route::Json => from_json(body, shared.message_limit, &mut params)?,
        Route::Topic(topic) => (topic, body.to_vec()),
    };
    if DISALLOWED_TOPICS.contains(&topic.as_str()) {
        return Err(TOPIC_DISALLOWED);
    }
    if let Some(auth) = &shared.auth {
        lock(&shared.book).authorize(auth, credential.as_deref(), &topic)?;
    }
    let mut message = message(&params, &body, shared.message_limit, topic)?;
    message.auth = credential;
    let json = serde_json::to_value(Published::from(&message)).map_err(|_| INTERNAL_ERROR)?;
    let mut book = lock(&shared.book);
    book.messages.push(message);
    let count = book.messages.len();
    drop(book);
    shared.accepted.send_replace(count);
    Ok(json)
}

fn message(
    params: &Params,
    body: &[u8],
    limit: usize,
    topic: String,
) -> Result<NtfyMessage, NtfyError> {
    let url = |names: &[&str], error: NtfyError| match params.get(names) {
        Some(u) if !u.starts_with("http://") && !u.starts_with("https://") => Err(error),
        other => Ok(other),
    };
    let attach = url(&["x-attach", "attach", "a"], ATTACH_URL_INVALID)?;
    let icon = url(&["x-icon", "icon"], ICON_URL_INVALID)?;
    let priority = match params
        .get(&["x-priority", "priority", "prio", "p"])
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "" => None,
        "1" | "min" => Some(1),
        "2" | "low" => Some(2),
        "3" | "default" => Some(3),
        "4" | "high" => Some(4),
        "5" | "max" | "urgent" => Some(5),
        p if p.starts_with("u=") => Some(3), // RFC 9218's Priority header, added by proxies
        _ => return Err(PRIORITY_INVALID),
    };
    let filename = params.get(&["x-filename", "filename", "file", "f"]);
    let text = match std::str::from_utf8(body) {
        Ok(text) if attach.is_some() || (filename.is_none() && body.len() <= limit) => text.trim(),
        _ => return Err(ATTACHMENT_TOO_LARGE),
    };
    let message = if text.is_empty() {
        params
            .get(&["x-message", "message", "m"])
            .map(|m| decode_header(&m.replace("\\n", "\n")))
            .unwrap_or_else(|| "triggered".to_owned())
    } else {
        text.to_owned()
    };
    let content_type = params.get(&["content-type"]).unwrap_or_default();
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Ok(NtfyMessage {
        id: random_id(),
        time,
        topic,
        message,
        title: params
            .get(&["x-title", "title", "t"])
            .map(|t| decode_header(&t)),
        tags: params
            .get(&["x-tags", "tags", "tag", "ta"])
            .map(|tags| {
                tags.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(decode_header)
                    .collect()
            })
            .unwrap_or_default(),
        priority,
        click: params.get(&["x-click", "click"]),
        icon,
        attach,
        markdown: params.flag(&["x-markdown", "markdown", "md"])
            || content_type.eq_ignore_ascii_case("text/markdown"),
        auth: None,
    })
}

/// The message as ntfy answers it (and streams it to subscribers).
#[derive(Debug, Serialize)]
struct Published<'a> {
    id: &'a str,
    time: i64,
    expires: i64,
    event: &'static str,
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    click: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attachment: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'static str>,
}

impl<'a> From<&'a NtfyMessage> for Published<'a> {
    fn from(m: &'a NtfyMessage) -> Self {
        Self {
            id: &m.id,
            time: m.time,
            expires: m.time + CACHE_SECS,
            event: "message",
            topic: &m.topic,
            title: m.title.as_deref(),
            message: &m.message,
            priority: m.priority,
            tags: &m.tags,
            click: m.click.as_deref(),
            icon: m.icon.as_deref(),
            attachment: m.attach.as_ref().map(|url| {
                let name = url
                    .rsplit('/')
                    .next()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("attachment");
                serde_json::json!({"name": name, "url": url})
            }),
            content_type: m.markdown.then_some("text/markdown"),
        }
    }
}

/// 12 random letters and digits, like ntfy's message ids.
fn random_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let state = RandomState::new();
    (0..12_u8)
        .map(|i| char::from(ALPHABET[(state.hash_one(i) % 62) as usize]))
        .collect()
}

/// Decodes RFC 2047 encoded words (`=?UTF-8?B?…?=`, `=?UTF-8?Q?…?=`) as ntfy does for
/// titles, messages and tags sent in headers; anything else is kept as is.
fn decode_header(value: &str) -> String {
    if !value.starts_with("=?") {
        return value.to_owned();
    }
    let words: Option<Vec<String>> = value.split_whitespace().map(decode_word).collect();
    words.map_or_else(|| value.to_owned(), |w| w.concat())
}

fn decode_word(word: &str) -> Option<String> {
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let (charset, encoding, text) = (parts.next()?, parts.next()?, parts.next()?);
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let bytes = if encoding.eq_ignore_ascii_case("b") {
        STANDARD.decode(text).ok()?
    } else if encoding.eq_ignore_ascii_case("q") {
        let mut bytes = Vec::with_capacity(text.len());
        let mut rest = text.as_bytes();
        while let Some((&c, tail)) = rest.split_first() {
            rest = tail;
            match c {
                b'_' => bytes.push(b' '),
                b'=' => {
                    let hex = std::str::from_utf8(rest.get(..2)?).ok()?;
                    bytes.push(u8::from_str_radix(hex, 16).ok()?);
                    rest = &rest[2..];
                }
                c => bytes.push(c),
            }
        }
        bytes
    } else {
        return None;
    };
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Answer {
        status: u16,
        json: Value,
    }

    /// One HTTP/1.1 request on a fresh connection.
    async fn call(
        fake: &FakeNtfy,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut tcp = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            fake.addr(),
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        Answer {
            status: head[9..12].parse().unwrap(),
            json: serde_json::from_str(body).unwrap(),
        }
    }

    async fn post_json(fake: &FakeNtfy, headers: &[(&str, &str)], body: Value) -> Answer {
        call(fake, "POST", "/", headers, &body.to_string()).await
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    #[tokio::test]
    async fn json_publish_is_answered_and_recorded() {
        let fake = FakeNtfy::start().await;
        let body = json!({"topic": "alerts", "message": " Disk *full* ", "title": "db-1",
            "tags": ["warning", "skull"], "priority": 4, "click": "https://example.com/x",
            "markdown": true, "unknown": {"ignored": 1}});
        let answer = post_json(&fake, &[], body).await;
        assert_eq!(answer.status, 200, "{}", answer.json);
        let json = &answer.json;
        assert_eq!(json["id"].as_str().unwrap().len(), 12);
        assert_eq!(json["event"], json!("message"));
        assert_eq!(json["topic"], json!("alerts"));
        assert_eq!(json["message"], json!("Disk *full*"));
        assert_eq!(json["title"], json!("db-1"));
        assert_eq!(json["tags"], json!(["warning", "skull"]));
        assert_eq!(json["priority"], json!(4));
        assert_eq!(json["click"], json!("https://example.com/x"));
        assert_eq!(json["content_type"], json!("text/markdown"));
        assert_eq!(
            json["expires"].as_i64().unwrap() - json["time"].as_i64().unwrap(),
            CACHE_SECS
        );

        assert!(fake.wait_for_messages(1, Duration::from_secs(5)).await);
        let m = &fake.messages()[0];
        assert_eq!(m.id, json["id"].as_str().unwrap());
        assert_eq!(
            (m.topic.as_str(), m.message.as_str(), m.priority),
            ("alerts", "Disk *full*", Some(4))
        );
        assert_eq!(m.title.as_deref(), Some("db-1"));
        assert_eq!(m.tags, ["warning", "skull"]);
        assert!(m.markdown);
        assert_eq!(m.auth, None);
        assert!(!fake.wait_for_messages(2, Duration::from_millis(50)).await);
    }

    #[tokio::test]
    async fn header_publish_is_answered_and_recorded() {
        let fake = FakeNtfy::start().await;
        let headers = [
            ("Title", "=?UTF-8?B?w4lxdWlwZQ==?="),
            ("Priority", "urgent"),
            ("Tags", "a, b,,c"),
            ("X-Click", "https://example.com"),
            ("md", "yes"),
        ];
        let answer = call(&fake, "PUT", "/ops_team-1", &headers, "hello\n").await;
        assert_eq!(answer.status, 200, "{}", answer.json);
        assert_eq!(answer.json["title"], json!("Équipe"));
        assert_eq!(answer.json["priority"], json!(5));
        let plain = call(&fake, "POST", "/ops?t=Hi&p=default", &[], "").await;
        assert_eq!(plain.json["message"], json!("triggered"));
        assert_eq!(plain.json["priority"], json!(3));
        assert_eq!(plain.json.get("content_type"), None);
        let by_get = call(&fake, "GET", "/ops/trigger?m=from%20get&ta=x", &[], "").await;
        assert_eq!(by_get.json["message"], json!("from get"));

        let messages = fake.messages();
        assert_eq!(messages.len(), 3);
        let m = &messages[0];
        assert_eq!(
            (m.topic.as_str(), m.message.as_str(), m.priority),
            ("ops_team-1", "hello", Some(5))
        );
        assert_eq!(m.tags, ["a", "b", "c"]);
        assert_eq!(m.click.as_deref(), Some("https://example.com"));
        assert!(m.markdown);
        assert_eq!(
            (messages[1].title.as_deref(), messages[1].priority),
            (Some("Hi"), Some(3))
        );
        assert_eq!(
            (messages[2].tags.as_slice(), messages[2].priority),
            (["x".to_owned()].as_slice(), None)
        );
        assert_eq!(by_get.json.get("priority"), None);
    }

    #[tokio::test]
    async fn refuses_like_ntfy() {
        let fake = FakeNtfy::start().await;
        let small = FakeNtfy::builder().message_limit(10).start().await;
        let refused = [
            (
                post_json(&fake, &[], json!({"topic": "a", "priority": 7})).await,
                400,
                40007,
            ),
            (
                call(&fake, "POST", "/a", &[("Priority", "highest")], "x").await,
                400,
                40007,
            ),
            (
                post_json(&fake, &[], json!({"message": "no topic"})).await,
                400,
                40009,
            ),
            (
                post_json(&fake, &[], json!({"topic": "bad/topic"})).await,
                400,
                40009,
            ),
            (
                post_json(&fake, &[], json!({"topic": "a", "priority": "high"})).await,
                400,
                40024,
            ),
            (call(&fake, "POST", "/", &[], "not json").await, 400, 40024),
            (call(&fake, "POST", "/docs", &[], "x").await, 400, 40010),
            (
                call(&fake, "POST", "/bad.topic", &[], "x").await,
                404,
                40401,
            ),
            (
                call(&small, "POST", "/a", &[], "01234567890").await,
                413,
                41301,
            ),
            (
                call(&fake, "POST", "/a", &[("Icon", "ftp://x")], "x").await,
                400,
                40021,
            ),
        ];
        for (answer, status, code) in refused {
            assert_eq!(
                (answer.status, answer.json["code"].as_u64()),
                (status, Some(code)),
                "{}",
                answer.json
            );
            assert_eq!(answer.json["http"], json!(status));
        }
        assert_eq!(
            call(&fake, "POST", "/a", &[("Priority", "highest")], "x")
                .await
                .json,
            json!({"code": 40007, "http": 400, "error": "invalid priority parameter",
                "link": "https://ntfy.sh/docs/publish/#message-priority"})
        );
        let at_limit = call(&small, "POST", "/a", &[], "0123456789").await;
        assert_eq!(at_limit.status, 200, "{}", at_limit.json);
        let json_limit = json!({"topic": "a", "message": "x".repeat(20)});
        assert_eq!(
            post_json(&small, &[], json_limit).await.json["code"],
            json!(41303)
        );
        assert!(fake.messages().is_empty());
        assert_eq!(fake.requests().len(), 10);
    }

    #[tokio::test]
    async fn rate_limits_and_failures() {
        let fake = FakeNtfy::start().await;
        fake.rate_limit_next(1);
        fake.fail_next(1, 503);
        let limited = call(&fake, "POST", "/a", &[], "x").await;
        assert_eq!(limited.status, 429);
        assert_eq!(
            limited.json,
            json!({"code": 42901, "http": 429, "error": "limit reached: too many requests",
                "link": "https://ntfy.sh/docs/publish/#limitations"})
        );
        let failed = call(&fake, "POST", "/a", &[], "x").await;
        assert_eq!(
            failed.json,
            json!({"code": 50301, "http": 503, "error": "service unavailable"})
        );
        assert_eq!(call(&fake, "POST", "/a", &[], "x").await.status, 200);
        let codes: Vec<_> = fake.requests().iter().map(|r| (r.status, r.code)).collect();
        assert_eq!(codes, [(429, Some(42901)), (503, Some(50301)), (200, None)]);
    }

    #[tokio::test]
    async fn checks_tokens_and_users() {
        let auth = Auth {
            tokens: vec!["tk_good".into(), "tk_ops".into()],
            users: vec![("alice".into(), "secret".into())],
            protect_all: false,
        };
        let fake = FakeNtfy::start_with_auth(auth).await;
        fake.protect_topic("alerts");
        fake.protect_topic("ops");
        fake.allow_only("token:tk_ops", &["ops"]);
        let bearer = |t: &str| format!("Bearer {t}");
        let cases = [
            ("alerts", None, 403, Some(40301)),
            ("alerts", Some(bearer("tk_wrong")), 401, Some(40101)),
            ("open", Some(bearer("tk_wrong")), 401, Some(40101)),
            ("alerts", Some(basic("alice", "nope")), 401, Some(40101)),
            ("alerts", Some(bearer("tk_ops")), 403, Some(40301)),
            ("ops", Some(bearer("tk_ops")), 200, None),
            ("alerts", Some(bearer("tk_good")), 200, None),
            ("alerts", Some(basic("alice", "secret")), 200, None),
            ("alerts", Some(basic("", "tk_good")), 200, None),
            ("open", None, 200, None),
        ];
        for (topic, credential, status, code) in cases {
            let headers: Vec<(&str, &str)> = credential
                .iter()
                .map(|c| ("Authorization", c.as_str()))
                .collect();
            let answer = post_json(&fake, &headers, json!({"topic": topic, "message": "m"})).await;
            assert_eq!(
                (
                    answer.status,
                    answer.json["code"].as_u64().map(|c| c as u32)
                ),
                (status, code),
                "{topic} {credential:?}"
            );
        }
        let unauthorized = post_json(
            &fake,
            &[("Authorization", "Bearer tk_x")],
            json!({"topic": "a"}),
        )
        .await;
        assert_eq!(
            unauthorized.json,
            json!({"code": 40101, "http": 401, "error": "unauthorized",
                "link": "https://ntfy.sh/docs/publish/#authentication"})
        );
        let auth_param = URL_SAFE_NO_PAD.encode(basic("alice", "secret"));
        let by_query = call(
            &fake,
            "POST",
            &format!("/alerts?auth={auth_param}"),
            &[],
            "q",
        )
        .await;
        assert_eq!(by_query.status, 200);

        let everywhere = Auth {
            protect_all: true,
            ..Auth::default()
        };
        let closed = FakeNtfy::start_with_auth(everywhere).await;
        assert_eq!(call(&closed, "POST", "/any", &[], "x").await.status, 403);

        let used: Vec<_> = fake.messages().into_iter().map(|m| m.auth).collect();
        let expected = [
            "token:tk_ops",
            "token:tk_good",
            "user:alice",
            "token:tk_good",
        ];
        assert_eq!(used[..4], expected.map(|s| Some(s.to_owned())));
        assert_eq!(used[4..], [None, Some("user:alice".to_owned())]);
    }

    #[test]
    fn decodes_encoded_words() {
        assert_eq!(
            decode_header("=?UTF-8?Q?caf=C3=A9_au_lait?="),
            "café au lait"
        );
        assert_eq!(decode_header("=?utf-8?b?w6k=?= =?utf-8?b?w6k=?="), "éé");
        assert_eq!(decode_header("=?latin1?Q?x?="), "=?latin1?Q?x?=");
        assert_eq!(decode_header("plain"), "plain");
    }
}
