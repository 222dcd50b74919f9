//! The Telegram destination: each delivery is a Bot API `sendMessage` to one chat.
//!
//! * The text is the route's rendered template (its printed values already escaped for the
//!   parse mode by the template engine); without a template, a default message names the
//!   event type and subject and shows `data` as JSON, escaped for the mode.
//! * Texts over Telegram's 4,096 characters are split into several messages at line breaks
//!   (or truncated with `…`, as configured). A failure part-way retries the whole delivery,
//!   so a retried split message may repeat its first parts (at least once, as everywhere).
//! * Answers are classified from Telegram's JSON: `ok: true` delivered; 429 retryable after
//!   the `retry_after` Telegram gives; 5xx retryable; 401/404 (a wrong token) final, reported
//!   as an authentication failure; 400 (chat not found, text that does not parse) and 403
//!   (bot blocked or removed) final with Telegram's description.
//!
//! The token is part of the request path: errors and logs never show the URL.

use std::time::{Duration, Instant};

use estafeta_config::telegram_destination::{LongMessages, ParseMode, TelegramSettings};
use estafeta_core::template::Escape;
use estafeta_core::{Destination, OutboundMessage, SendError, SendErrorKind, SendOk};
use serde_json::{Value, json};

use crate::build_error::BuildError;
use crate::http_client::{ClientOptions, Endpoint, HttpClients};
use crate::webhook::outcome::excerpt_text;

/// Telegram's limit on a message's text, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// A Telegram chat reached through the Bot API.
pub struct Telegram {
    id: String,
    /// `…/bot<token>/sendMessage`: the URL holds the token, never shown.
    endpoint: Endpoint,
    chat_id: Value,
    parse_mode: ParseMode,
    disable_notification: bool,
    message_thread_id: Option<i64>,
    long_messages: LongMessages,
}

impl std::fmt::Debug for Telegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telegram")
            .field("id", &self.id)
            .field("host", &self.endpoint.host)
            .field("parse_mode", &self.parse_mode)
            .finish_non_exhaustive()
    }
}

impl Telegram {
    /// Builds the destination; `concurrency` sizes its connection pool.
    ///
    /// # Errors
    /// An API URL that is not http(s) with a host, or an HTTP client that cannot be built.
    pub fn new(
        settings: &TelegramSettings,
        clients: &HttpClients,
        concurrency: usize,
    ) -> Result<Self, BuildError> {
        let endpoint = Endpoint::new(
            &settings.id,
            &format!(
                "{}/bot{}/sendMessage",
                settings.api_url.trim_end_matches('/'),
                settings.token.expose()
            ),
            clients,
            ClientOptions {
                timeout: settings.timeout,
                max_idle_per_host: concurrency,
                allow_private_networks: settings.allow_private_networks,
            },
        )?;
        let chat_id = settings
            .chat_id
            .parse::<i64>()
            .map_or_else(|_| Value::from(settings.chat_id.clone()), Value::from);
        Ok(Self {
            id: settings.id.clone(),
            endpoint,
            chat_id,
            parse_mode: settings.parse_mode,
            disable_notification: settings.disable_notification,
            message_thread_id: settings.message_thread_id,
            long_messages: settings.long_messages,
        })
    }

    /// The text of a delivery: the rendered template, or the default message.
    fn text(&self, msg: &OutboundMessage) -> String {
        if msg.content_type != "application/cloudevents+json" {
            return String::from_utf8_lossy(&msg.body).into_owned();
        }
        default_text(&msg.event, self.parse_mode)
    }

    async fn send_one(&self, text: &str) -> Result<SendOk, SendError> {
        let mut body = json!({
            "chat_id": self.chat_id,
            "text": text,
        });
        if let Some(mode) = self.parse_mode.api_name() {
            body["parse_mode"] = Value::from(mode);
        }
        if self.disable_notification {
            body["disable_notification"] = Value::from(true);
        }
        if let Some(thread) = self.message_thread_id {
            body["message_thread_id"] = Value::from(thread);
        }
        let started = Instant::now();
        let ep = &self.endpoint;
        let result = match ep.client.post(ep.url.clone()).json(&body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.unwrap_or_default();
                classify(status, &bytes, &ep.host)
            }
            Err(err) => Err(ep.transport_error(err)),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => {
                tracing::debug!(dest_id = %self.id, host = %ep.host, elapsed_ms, "telegram message sent")
            }
            Err(err) => {
                tracing::debug!(dest_id = %self.id, host = %ep.host, status = ?err.status_code,
                retryable = err.is_retryable(), elapsed_ms, error = %err, "telegram message failed")
            }
        }
        result
    }
}

#[async_trait::async_trait]
impl Destination for Telegram {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "telegram"
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        self.endpoint.check()?;
        let text = self.text(msg);
        if text.trim().is_empty() {
            return Err(SendError::final_error(
                "the message is empty: the template rendered no text (Telegram refuses empty messages)",
            ));
        }
        let parts = match self.long_messages {
            LongMessages::Split => split(&text, MAX_TEXT_CHARS),
            LongMessages::Truncate => vec![truncate(&text, MAX_TEXT_CHARS)],
        };
        let count = parts.len();
        let mut last = SendOk::default();
        for (i, part) in parts.iter().enumerate() {
            last = self.send_one(part).await.map_err(|mut e| {
                if count > 1 {
                    e.message = format!("part {} of {count}: {}", i + 1, e.message);
                }
                e
            })?;
        }
        Ok(last)
    }
}

/// Telegram's answer to a result: `ok` delivered, the rest classified by `error_code`.
fn classify(status: u16, body: &[u8], host: &str) -> Result<SendOk, SendError> {
    let answer: Option<Value> = serde_json::from_slice(body).ok();
    let excerpt = excerpt_text(&body[..body.len().min(crate::webhook::EXCERPT_LIMIT)]);
    let ok = answer
        .as_ref()
        .and_then(|a| a["ok"].as_bool())
        .unwrap_or(false);
    if ok && (200..300).contains(&status) {
        return Ok(SendOk {
            status_code: Some(status),
            response_excerpt: excerpt,
        });
    }
    let code = answer
        .as_ref()
        .and_then(|a| a["error_code"].as_u64())
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(status);
    let description = answer
        .as_ref()
        .and_then(|a| a["description"].as_str())
        .unwrap_or("no description")
        .to_owned();
    let err = match code {
        429 => {
            let after = answer
                .as_ref()
                .and_then(|a| a["parameters"]["retry_after"].as_u64())
                .map(Duration::from_secs);
            let mut e =
                SendError::retryable(format!("Telegram rate limit from {host}: {description}"));
            e.kind = SendErrorKind::Retryable { after };
            e
        }
        401 | 404 => SendError::final_error(format!(
            "Telegram refused the bot token (authentication failed, HTTP {code} from {host}: {description}); check the destination's `token`"
        )),
        403 => SendError::final_error(format!(
            "Telegram refused to post to the chat (HTTP 403: {description}); add the bot to the chat or unblock it"
        )),
        400 => {
            let hint = match answer
                .as_ref()
                .and_then(|a| a["parameters"]["migrate_to_chat_id"].as_i64())
            {
                Some(new_id) => format!("; the group moved: set `chat_id: \"{new_id}\"`"),
                None => String::new(),
            };
            SendError::final_error(format!(
                "Telegram rejected the message (HTTP 400: {description}){hint}"
            ))
        }
        408 | 500..=599 => SendError::retryable(format!("HTTP {code} from {host}: {description}")),
        _ => SendError::final_error(format!("HTTP {code} from {host}: {description}")),
    };
    Err(err.with_status(code).with_excerpt(excerpt))
}

/// The message when the route gives no template: the event type, its subject, and `data`
/// as indented JSON, escaped for the parse mode.
fn default_text(event: &estafeta_core::Event, mode: ParseMode) -> String {
    let data = event
        .data
        .as_ref()
        .map(|d| serde_json::to_string_pretty(d).unwrap_or_default())
        .unwrap_or_default();
    let subject = event.subject.as_deref().unwrap_or("");
    match mode {
        ParseMode::None => {
            let mut s = event.ty.clone();
            if !subject.is_empty() {
                s.push_str(&format!(" — {subject}"));
            }
            if !data.is_empty() {
                s.push('\n');
                s.push_str(&data);
            }
            s
        }
        ParseMode::Html => {
            let e = |t: &str| Escape::Html.apply(t);
            let mut s = format!("<b>{}</b>", e(&event.ty));
            if !subject.is_empty() {
                s.push_str(&format!(" — {}", e(subject)));
            }
            if !data.is_empty() {
                s.push_str(&format!("\n<pre>{}</pre>", e(&data)));
            }
            s
        }
        ParseMode::MarkdownV2 => {
            let e = |t: &str| Escape::MarkdownV2.apply(t);
            let mut s = format!("*{}*", e(&event.ty));
            if !subject.is_empty() {
                s.push_str(&format!(" — {}", e(subject)));
            }
            if !data.is_empty() {
                // Inside a code block only ` and \ are escaped.
                let code = data.replace('\\', "\\\\").replace('`', "\\`");
                s.push_str(&format!("\n```\n{code}\n```"));
            }
            s
        }
    }
}

/// `text` in parts of at most `max` characters, cut after the last line break (else the
/// last space) that fits, else hard at `max`.
fn split(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max {
        let hard = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let window = &rest[..hard];
        let cut = window
            .rfind('\n')
            .or_else(|| window.rfind(' '))
            .filter(|&i| i > 0)
            .map_or(hard, |i| i + 1);
        parts.push(rest[..cut].trim_end().to_owned());
        rest = &rest[cut..];
    }
    if !rest.trim().is_empty() || parts.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

/// `text` cut to at most `max` characters, ending with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_line_breaks_and_never_exceeds_the_limit() {
        let text = "aaaa\nbbbb\ncccc";
        assert_eq!(split(text, 10), vec!["aaaa\nbbbb", "cccc"]);
        assert_eq!(split("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(split("short", 10), vec!["short"]);
        let long = "é".repeat(9000);
        let parts = split(&long, MAX_TEXT_CHARS);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= MAX_TEXT_CHARS));
        assert_eq!(parts.concat(), long);
    }

    #[test]
    fn truncates_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn classifies_telegram_answers() {
        let ok = classify(200, br#"{"ok":true,"result":{"message_id":1}}"#, "h");
        assert!(ok.is_ok());
        let rate = classify(
            429,
            br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#,
            "h",
        )
        .unwrap_err();
        assert_eq!(
            rate.kind,
            SendErrorKind::Retryable {
                after: Some(Duration::from_secs(7))
            }
        );
        let auth = classify(
            401,
            br#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
            "h",
        )
        .unwrap_err();
        assert!(!auth.is_retryable());
        assert!(
            auth.message.contains("authentication failed"),
            "{}",
            auth.message
        );
        let chat = classify(
            400,
            br#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#,
            "h",
        )
        .unwrap_err();
        assert!(!chat.is_retryable());
        assert!(chat.message.contains("chat not found"));
        let down = classify(502, b"<html>bad gateway</html>", "h").unwrap_err();
        assert!(down.is_retryable());
    }
}
