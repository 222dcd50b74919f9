//! `FakeTelegram`: a local Telegram Bot API. It answers `sendMessage` and `getMe` like
//! `api.telegram.org` — token, chat, text and `MarkdownV2` / `HTML` / `Markdown` markup are
//! checked against the Bot API's documented formatting rules, errors are the Bot API's error
//! objects — answers scripted rate limits and failures, and records what it accepted.
//!
//! Where it knowingly differs from the real service:
//! - HTML is strict by default: a bare `>`, or a `&` that starts no entity, is refused with
//!   a `can't parse entities` error that only this fake gives. The Bot API documentation
//!   requires them escaped; the live server lets them through. See
//!   [`FakeTelegram::set_strict_html`].
//! - The 4096-character limit counts Unicode scalar values of the parsed, trimmed text;
//!   Telegram's own count may differ for characters outside the Basic Multilingual Plane.
//! - Every chat id (a number or `@username`) exists unless marked unknown or blocked; any
//!   `message_thread_id` is accepted; `multipart/form-data` bodies are refused; message ids
//!   count up across all chats.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::local::lock;

/// The longest text `sendMessage` takes, in characters after entity parsing.
const MAX_TEXT_CHARS: usize = 4096;

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramMessage {
    /// The id answered in `result.message_id` (1, 2, … across all chats).
    pub message_id: i64,
    /// `chat_id` as sent: digits (maybe negative) or `@username`.
    pub chat_id: String,
    /// `text` as sent, markup included.
    pub text: String,
    /// The text as Telegram shows it: markup parsed away, trimmed.
    pub plain_text: String,
    /// `parse_mode` as sent, if any.
    pub parse_mode: Option<String>,
    /// `disable_notification`.
    pub disable_notification: bool,
    /// `message_thread_id`, if any.
    pub message_thread_id: Option<i64>,
}

/// One call to the fake, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramRequest {
    /// The method as written in the path (`sendMessage`), or the path when it names none.
    pub method: String,
    /// The status answered.
    pub status: u16,
    /// The `description` answered with an error.
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    RateLimit(u64),
    Status(StatusCode),
}

#[derive(Debug, Default)]
struct Book {
    messages: Vec<TelegramMessage>,
    requests: Vec<TelegramRequest>,
    faults: VecDeque<Fault>,
    unknown_chats: HashSet<String>,
    blocked_chats: HashSet<String>,
    lenient_html: bool,
}

#[derive(Debug)]
struct Shared {
    token: String,
    book: Mutex<Book>,
    accepted: watch::Sender<usize>,
}

/// A local Bot API on `127.0.0.1:<free port>` for one bot token. Stops when dropped.
#[derive(Debug)]
pub struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeTelegram {
    /// Binds 127.0.0.1 on a free port and serves the bot with this token.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(token: &str) -> Self {
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            book: Mutex::new(Book::default()),
            accepted: watch::Sender::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let (addr, server) = crate::local::serve(app, false).await;
        Self {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`: the Bot API base; methods are at
    /// `{base}/bot{token}/{method}`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on this chat answers 400 `Bad Request: chat not found`.
    pub fn add_unknown_chat(&self, chat_id: impl ToString) {
        lock(&self.shared.book)
            .unknown_chats
            .insert(chat_id.to_string());
    }

    /// From now on this chat answers 403 `Forbidden: bot was blocked by the user`.
    pub fn add_blocked_chat(&self, chat_id: impl ToString) {
        lock(&self.shared.book)
            .blocked_chats
            .insert(chat_id.to_string());
    }

    /// Whether HTML text must write `>` and `&` as entities (true at start, as the Bot API
    /// documentation asks); false accepts them bare, as the live server does.
    pub fn set_strict_html(&self, strict: bool) {
        lock(&self.shared.book).lenient_html = !strict;
    }

    /// The next `n` `sendMessage` calls (after failures queued earlier) answer 429
    /// `Too Many Requests: retry after S` with `parameters.retry_after` and `Retry-After`.
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        let fault = Fault::RateLimit(retry_after_secs);
        lock(&self.shared.book)
            .faults
            .extend(std::iter::repeat_n(fault, n));
    }

    /// The next `n` `sendMessage` calls (after failures queued earlier) answer `status`
    /// (meant for 5xx) with `{"ok":false,"error_code":status,"description":"Bad Gateway"}`
    /// (the status's reason phrase).
    ///
    /// # Panics
    /// When the status is invalid.
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("valid status code");
        lock(&self.shared.book)
            .faults
            .extend(std::iter::repeat_n(Fault::Status(status), n));
    }

    /// The messages accepted so far, in order.
    #[must_use]
    pub fn messages(&self) -> Vec<TelegramMessage> {
        lock(&self.shared.book).messages.clone()
    }

    /// Every call so far, rejected ones included, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<TelegramRequest> {
        lock(&self.shared.book).requests.clone()
    }

    /// Waits until at least `n` messages were accepted; false when `timeout` passes first.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> bool {
        crate::local::wait_for_count(&self.shared.accepted, n, timeout).await
    }
}

/// An answer: status, the JSON object, and `Retry-After` for 429.
struct Reply {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

impl Reply {
    fn ok(result: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body: json!({"ok": true, "result": result}),
            retry_after: None,
        }
    }

    fn error(status: StatusCode, description: &str) -> Self {
        Self {
            status,
            body: json!({"ok": false, "error_code": status.as_u16(), "description": description}),
            retry_after: None,
        }
    }

    fn bad_request(what: &str) -> Self {
        Self::error(StatusCode::BAD_REQUEST, &format!("Bad Request: {what}"))
    }

    fn fault(fault: Fault) -> Self {
        match fault {
            Fault::RateLimit(secs) => {
                let mut reply = Self::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("Too Many Requests: retry after {secs}"),
                );
                reply.body["parameters"] = json!({"retry_after": secs});
                reply.retry_after = Some(secs);
                reply
            }
            Fault::Status(status) => {
                Self::error(status, status.canonical_reason().unwrap_or("Error"))
            }
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let path = uri.path();
    let (method, reply) = match path.strip_prefix("/bot").and_then(|p| p.split_once('/')) {
        Some((token, method)) => (
            method.to_owned(),
            dispatch(&shared, token, method, &uri, &headers, &body),
        ),
        None => (
            path.to_owned(),
            Reply::error(StatusCode::NOT_FOUND, "Not Found"),
        ),
    };
    let description = reply.body["description"].as_str().map(str::to_owned);
    lock(&shared.book).requests.push(TelegramRequest {
        method,
        status: reply.status.as_u16(),
        description,
    });
    let mut response = Response::new(Body::from(reply.body.to_string()));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = reply.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn dispatch(
    shared: &Shared,
    token: &str,
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    if token != shared.token {
        return Reply::error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    // Method names are case-insensitive in the Bot API.
    match method.to_ascii_lowercase().as_str() {
        "getme" => Reply::ok(bot_user(&shared.token)),
        "sendmessage" => {
            if let Some(fault) = lock(&shared.book).faults.pop_front() {
                return Reply::fault(fault);
            }
            match parameters(uri, headers, body) {
                Ok(params) => send_message(shared, &params),
                Err(reply) => reply,
            }
        }
        _ => Reply::error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// Query, form or JSON parameters as the Bot API reads them: JSON scalars become their
/// text, objects and arrays their JSON text.
fn parameters(
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, Reply> {
    let mut params: HashMap<String, String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if body.is_empty() {
        return Ok(params);
    }
    if content_type.starts_with("application/json") {
        let Ok(Value::Object(object)) = serde_json::from_slice(body) else {
            return Err(Reply::bad_request("can't parse JSON object"));
        };
        for (name, value) in object {
            let value = match value {
                Value::Null => continue,
                Value::String(s) => s,
                other => other.to_string(),
            };
            params.insert(name, value);
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    } else if content_type.starts_with("multipart/form-data") {
        return Err(Reply::bad_request(
            "FakeTelegram does not read multipart/form-data bodies",
        ));
    }
    Ok(params)
}

fn send_message(shared: &Shared, params: &HashMap<String, String>) -> Reply {
    let param = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let Some(chat_id) = param("chat_id") else {
        return Reply::bad_request("chat_id is empty");
    };
    let text = params.get("text").map_or("", String::as_str);
    let lenient_html = lock(&shared.book).lenient_html;
    let parse_mode = param("parse_mode");
    let parsed = match parse_mode.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(text.to_owned()),
        Some("markdownv2") => markup::markdown_v2(text),
        Some("html") => markup::html(text, !lenient_html),
        Some("markdown") => markup::markdown(text),
        Some(_) => return Reply::bad_request("unsupported parse_mode"),
    };
    let plain = match parsed {
        Ok(plain) => plain.trim().to_owned(),
        Err(e) => return Reply::bad_request(&format!("can't parse entities: {e}")),
    };
    if plain.is_empty() {
        return Reply::bad_request("message text is empty");
    }
    if plain.chars().count() > MAX_TEXT_CHARS {
        return Reply::bad_request("message is too long");
    }
    let thread = match param("message_thread_id").map(str::parse::<i64>) {
        None => None,
        Some(Ok(thread)) => Some(thread),
        Some(Err(_)) => return Reply::bad_request("message thread not found"),
    };
    let Some(chat) = chat(chat_id) else {
        return Reply::bad_request("chat not found");
    };
    let mut book = lock(&shared.book);
    if book.unknown_chats.contains(chat_id) {
        return Reply::bad_request("chat not found");
    }
    if book.blocked_chats.contains(chat_id) {
        return Reply::error(
            StatusCode::FORBIDDEN,
            "Forbidden: bot was blocked by the user",
        );
    }
    let message_id = i64::try_from(book.messages.len()).unwrap_or(i64::MAX) + 1;
    let date = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut result = json!({
        "message_id": message_id,
        "from": bot_user(&shared.token),
        "chat": chat,
        "date": date,
        "text": plain,
    });
    if let Some(thread) = thread {
        result["message_thread_id"] = json!(thread);
        result["is_topic_message"] = json!(true);
    }
    book.messages.push(TelegramMessage {
        message_id,
        chat_id: chat_id.to_owned(),
        text: text.to_owned(),
        plain_text: plain,
        parse_mode: parse_mode.map(str::to_owned),
        disable_notification: param("disable_notification")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1")),
        message_thread_id: thread,
    });
    let count = book.messages.len();
    drop(book);
    shared.accepted.send_replace(count);
    Reply::ok(result)
}

/// The bot as `getMe` and `result.from` show it; its id is the token's number.
fn bot_user(token: &str) -> Value {
    let id: i64 = token
        .split_once(':')
        .and_then(|(id, _)| id.parse().ok())
        .unwrap_or(0);
    json!({"id": id, "is_bot": true, "first_name": "Estafeta Test Bot", "username": "estafeta_test_bot"})
}

/// The `chat` object for a chat id, or None when it cannot name a chat.
fn chat(chat_id: &str) -> Option<Value> {
    if let Some(name) = chat_id.strip_prefix('@') {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let id = name
            .bytes()
            .fold(0_i64, |h, b| (h * 31 + i64::from(b)) % 1_000_000_000);
        return Some(
            json!({"id": -1_000_000_000_000 - id, "type": "channel", "title": name, "username": name}),
        );
    }
    let id: i64 = chat_id.parse().ok().filter(|id| *id != 0)?;
    let kind = match id {
        1.. => "private",
        ..=-1_000_000_000_000 => "supergroup",
        _ => "group",
    };
    Some(json!({"id": id, "type": kind}))
}

mod markup;

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const TOKEN: &str = "123456:ABC-test";

    struct Answer {
        status: u16,
        head: String,
        json: Value,
    }

    /// One HTTP/1.1 request on a fresh connection.
    async fn call(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> Answer {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        Answer {
            status: head[9..12].parse().unwrap(),
            head: head.to_ascii_lowercase(),
            json: serde_json::from_str(body).unwrap(),
        }
    }

    async fn send(fake: &FakeTelegram, body: Value) -> Answer {
        let path = format!("/bot{TOKEN}/sendMessage");
        call(fake.addr(), &path, "application/json", &body.to_string()).await
    }

    fn description(answer: &Answer) -> &str {
        answer.json["description"].as_str().unwrap()
    }

    #[tokio::test]
    async fn records_json_and_form_messages() {
        let fake = FakeTelegram::start(TOKEN).await;
        let first = send(&fake, json!({"chat_id": 42, "text": "hello", "disable_notification": true, "message_thread_id": 7})).await;
        assert_eq!(first.status, 200);
        let result = &first.json["result"];
        assert_eq!(first.json["ok"], json!(true));
        assert_eq!(result["message_id"], json!(1));
        assert_eq!(result["chat"], json!({"id": 42, "type": "private"}));
        assert_eq!(result["from"]["id"], json!(123_456));
        assert_eq!(result["text"], json!("hello"));
        assert!(result["date"].as_u64().unwrap() > 1_600_000_000);

        let path = format!("/bot{TOKEN}/sendmessage");
        let form = "chat_id=-1001234567890&text=*hi*+there%21&parse_mode=Markdown";
        let second = call(
            fake.addr(),
            &path,
            "application/x-www-form-urlencoded",
            form,
        )
        .await;
        assert_eq!(second.status, 200, "{}", second.json);
        assert_eq!(second.json["result"]["message_id"], json!(2));
        assert_eq!(second.json["result"]["chat"]["type"], json!("supergroup"));

        assert!(fake.wait_for_messages(2, Duration::from_secs(5)).await);
        let messages = fake.messages();
        assert_eq!(messages[0].chat_id, "42");
        assert!(messages[0].disable_notification);
        assert_eq!(messages[0].message_thread_id, Some(7));
        assert_eq!(messages[1].text, "*hi* there!");
        assert_eq!(messages[1].plain_text, "hi there!");
        assert_eq!(messages[1].parse_mode.as_deref(), Some("Markdown"));
        assert!(!fake.wait_for_messages(3, Duration::from_millis(50)).await);
    }

    #[tokio::test]
    async fn answers_the_bot_api_errors() {
        let fake = FakeTelegram::start(TOKEN).await;
        let wrong = call(
            fake.addr(),
            "/bot1:nope/sendMessage",
            "application/json",
            "{}",
        )
        .await;
        assert_eq!(wrong.status, 401);
        assert_eq!(
            wrong.json,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
        );
        let unknown = call(
            fake.addr(),
            &format!("/bot{TOKEN}/sendFoo"),
            "application/json",
            "{}",
        )
        .await;
        assert_eq!(unknown.status, 404);
        assert_eq!(
            unknown.json,
            json!({"ok": false, "error_code": 404, "description": "Not Found"})
        );

        fake.add_unknown_chat(-5);
        fake.add_blocked_chat("@gone");
        let cases = [
            (
                json!({"chat_id": 1}),
                400,
                "Bad Request: message text is empty",
            ),
            (json!({"text": "x"}), 400, "Bad Request: chat_id is empty"),
            (
                json!({"chat_id": 1, "text": "x".repeat(4097)}),
                400,
                "Bad Request: message is too long",
            ),
            (
                json!({"chat_id": -5, "text": "x"}),
                400,
                "Bad Request: chat not found",
            ),
            (
                json!({"chat_id": "@gone", "text": "x"}),
                403,
                "Forbidden: bot was blocked by the user",
            ),
            (
                json!({"chat_id": 1, "text": "x", "parse_mode": "BBCode"}),
                400,
                "Bad Request: unsupported parse_mode",
            ),
        ];
        for (body, status, expected) in cases {
            let answer = send(&fake, body).await;
            assert_eq!((answer.status, description(&answer)), (status, expected));
        }
        let ok = send(&fake, json!({"chat_id": 1, "text": "é".repeat(4096)})).await;
        assert_eq!(ok.status, 200);
        assert_eq!(fake.requests().len(), 9);
        assert_eq!(fake.requests()[0].status, 401);
    }

    #[tokio::test]
    async fn rate_limits_and_failures_come_first() {
        let fake = FakeTelegram::start(TOKEN).await;
        fake.rate_limit_next(1, 3);
        fake.fail_next(1, 502);
        let limited = send(&fake, json!({"chat_id": 1, "text": "x"})).await;
        assert_eq!(limited.status, 429);
        assert_eq!(
            limited.json,
            json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3", "parameters": {"retry_after": 3}})
        );
        assert!(limited.head.contains("\r\nretry-after: 3"));
        let failed = send(&fake, json!({"chat_id": 1, "text": "x"})).await;
        assert_eq!(
            failed.json,
            json!({"ok": false, "error_code": 502, "description": "Bad Gateway"})
        );
        let sent = send(&fake, json!({"chat_id": 1, "text": "x"})).await;
        assert_eq!(sent.status, 200);
        assert_eq!(sent.json["result"]["message_id"], json!(1));
        let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 502, 200]);
    }

    #[tokio::test]
    async fn checks_markup() {
        let fake = FakeTelegram::start(TOKEN).await;
        let unescaped = send(
            &fake,
            json!({"chat_id": 1, "text": "Version 1.0", "parse_mode": "MarkdownV2"}),
        )
        .await;
        assert_eq!(unescaped.status, 400);
        assert_eq!(
            description(&unescaped),
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
        );
        let escaped = send(
            &fake,
            json!({"chat_id": 1, "text": "*Version* 1\\.0", "parse_mode": "MarkdownV2"}),
        )
        .await;
        assert_eq!(escaped.status, 200);
        assert_eq!(escaped.json["result"]["text"], json!("Version 1.0"));

        let unbalanced = send(
            &fake,
            json!({"chat_id": 1, "text": "<b>bold <i>both</b></i>", "parse_mode": "HTML"}),
        )
        .await;
        assert_eq!(
            description(&unbalanced),
            "Bad Request: can't parse entities: Unmatched end tag at byte offset 15, expected \"</i>\", found \"</b>\""
        );
        let bare = json!({"chat_id": 1, "text": "a > b", "parse_mode": "html"});
        assert_eq!(send(&fake, bare.clone()).await.status, 400);
        fake.set_strict_html(false);
        assert_eq!(send(&fake, bare).await.status, 200);
        let empty = send(
            &fake,
            json!({"chat_id": 1, "text": "<b> </b>", "parse_mode": "HTML"}),
        )
        .await;
        assert_eq!(description(&empty), "Bad Request: message text is empty");
        assert_eq!(fake.messages().len(), 2);
    }
}
