//! The ntfy destination: each delivery is published to a topic on an ntfy server (ntfy.sh or
//! self-hosted) as one JSON request to the server's root, which carries UTF-8 titles and
//! tags without header encoding.
//!
//! * The message is the route's rendered template; without one, the event's subject and its
//!   `data` as JSON. The title (default: the event type) and the click URL are templates of
//!   the destination itself.
//! * Answers: 2xx delivered; 429 retryable (after `Retry-After` when given); 5xx and 507
//!   retryable; 401/403 final, reported as an authentication failure; other 4xx (a bad
//!   topic, a message too large) final with ntfy's own error text.
//!
//! Errors and logs name the server's host, never a credential.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use estafeta_config::ntfy_destination::{NtfyAuth, NtfySettings, template_names};
use estafeta_core::template::TemplateSet;
use estafeta_core::{Destination, OutboundMessage, SendError, SendErrorKind, SendOk};
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};

use crate::build_error::BuildError;
use crate::http_client::{ClientOptions, Endpoint, HttpClients};
use crate::webhook::outcome::{excerpt_text, parse_retry_after};

/// An ntfy topic.
pub struct Ntfy {
    id: String,
    /// The server's root, where JSON publishes go.
    endpoint: Endpoint,
    topic: String,
    priority: u8,
    tags: Vec<String>,
    markdown: bool,
    templates: TemplateSet,
    has_title: bool,
    has_click: bool,
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Ntfy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ntfy")
            .field("id", &self.id)
            .field("host", &self.endpoint.host)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Ntfy {
    /// Builds the destination; `concurrency` sizes its connection pool.
    ///
    /// # Errors
    /// A server URL that is not http(s) with a host, a template that does not compile, a
    /// credential that is not a valid header value, or an HTTP client that cannot be built.
    pub fn new(
        settings: &NtfySettings,
        clients: &HttpClients,
        concurrency: usize,
    ) -> Result<Self, BuildError> {
        let id = settings.id.clone();
        let endpoint = Endpoint::new(
            &id,
            &format!("{}/", settings.server.trim_end_matches('/')),
            clients,
            ClientOptions {
                timeout: settings.timeout,
                max_idle_per_host: concurrency,
                allow_private_networks: settings.allow_private_networks,
            },
        )?;
        let (title_name, click_name) = template_names(&id);
        let mut templates = TemplateSet::new();
        for (name, src) in [
            (&title_name, &settings.title),
            (&click_name, &settings.click),
        ] {
            if let Some(src) = src {
                templates.add(name, src).map_err(|e| BuildError::Template {
                    id: id.clone(),
                    message: e.to_string(),
                })?;
            }
        }
        let authorization = match &settings.auth {
            NtfyAuth::None => None,
            NtfyAuth::Token(t) => Some(format!("Bearer {}", t.expose())),
            NtfyAuth::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    username.expose(),
                    password.expose()
                ))
            )),
        }
        .map(|v| {
            HeaderValue::from_str(&v)
                .map(|mut h| {
                    h.set_sensitive(true);
                    h
                })
                .map_err(|_| BuildError::Template {
                    id: id.clone(),
                    message: "the credentials contain characters a header cannot carry".into(),
                })
        })
        .transpose()?;
        Ok(Self {
            has_title: settings.title.is_some(),
            has_click: settings.click.is_some(),
            id,
            endpoint,
            topic: settings.topic.clone(),
            priority: settings.priority,
            tags: settings.tags.clone(),
            markdown: settings.markdown,
            templates,
            authorization,
        })
    }

    /// The JSON publish request for one delivery.
    fn request(&self, msg: &OutboundMessage) -> Result<Value, SendError> {
        let event = &msg.event;
        let message = if msg.content_type == "application/cloudevents+json" {
            let mut text = event.subject.clone().unwrap_or_default();
            if let Some(data) = &event.data {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&serde_json::to_string(data).unwrap_or_default());
            }
            if text.is_empty() {
                event.ty.clone()
            } else {
                text
            }
        } else {
            String::from_utf8_lossy(&msg.body).into_owned()
        };
        let (title_name, click_name) = template_names(&self.id);
        let render = |name: &str| {
            self.templates
                .render(name, event, &[])
                .map_err(|e| SendError::final_error(format!("cannot render the notification: {e}")))
        };
        let title = if self.has_title {
            render(&title_name)?
        } else {
            event.ty.clone()
        };
        let mut body = json!({
            "topic": self.topic,
            "message": message,
            "title": title,
            "priority": self.priority,
        });
        if !self.tags.is_empty() {
            body["tags"] = Value::from(self.tags.clone());
        }
        if self.has_click {
            let click = render(&click_name)?;
            if !click.trim().is_empty() {
                body["click"] = Value::from(click.trim());
            }
        }
        if self.markdown {
            body["markdown"] = Value::from(true);
        }
        Ok(body)
    }
}

#[async_trait::async_trait]
impl Destination for Ntfy {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "ntfy"
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        self.endpoint.check()?;
        let body = self.request(msg)?;
        let ep = &self.endpoint;
        let mut req = ep.client.post(ep.url.clone()).json(&body);
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let started = Instant::now();
        let result = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let bytes = resp.bytes().await.unwrap_or_default();
                classify(status, retry_after, &bytes, &ep.host)
            }
            Err(err) => Err(ep.transport_error(err)),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => {
                tracing::debug!(dest_id = %self.id, host = %ep.host, elapsed_ms, "ntfy notification published")
            }
            Err(err) => {
                tracing::debug!(dest_id = %self.id, host = %ep.host, status = ?err.status_code,
                retryable = err.is_retryable(), elapsed_ms, error = %err, "ntfy notification failed")
            }
        }
        result
    }
}

/// ntfy's answer, classified; its error JSON is `{"code":40101,"http":401,"error":"…"}`.
fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    host: &str,
) -> Result<SendOk, SendError> {
    let excerpt = excerpt_text(&body[..body.len().min(crate::webhook::EXCERPT_LIMIT)]);
    if (200..300).contains(&status) {
        return Ok(SendOk {
            status_code: Some(status),
            response_excerpt: excerpt,
        });
    }
    let reason = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {status}"));
    let err = match status {
        429 => {
            let mut e = SendError::retryable(format!("ntfy rate limit at {host}: {reason}"));
            e.kind = SendErrorKind::Retryable { after: retry_after };
            e
        }
        401 | 403 => SendError::final_error(format!(
            "ntfy refused the credentials for the topic (authentication failed, HTTP {status} from {host}: {reason}); check `token` or `username`/`password`"
        )),
        408 | 500..=599 => SendError::retryable(format!("HTTP {status} from {host}: {reason}")),
        _ => SendError::final_error(format!(
            "ntfy rejected the notification (HTTP {status} from {host}: {reason})"
        )),
    };
    Err(err.with_status(status).with_excerpt(excerpt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ntfy_answers() {
        assert!(classify(200, None, br#"{"id":"x","event":"message"}"#, "h").is_ok());
        let rate = classify(
            429,
            Some(Duration::from_secs(3)),
            br#"{"code":42901,"http":429,"error":"limit reached: too many requests"}"#,
            "h",
        )
        .unwrap_err();
        assert_eq!(
            rate.kind,
            SendErrorKind::Retryable {
                after: Some(Duration::from_secs(3))
            }
        );
        let auth = classify(
            403,
            None,
            br#"{"code":40301,"http":403,"error":"forbidden"}"#,
            "h",
        )
        .unwrap_err();
        assert!(!auth.is_retryable());
        assert!(
            auth.message.contains("authentication failed"),
            "{}",
            auth.message
        );
        let big = classify(
            413,
            None,
            br#"{"code":41301,"http":413,"error":"request entity too large"}"#,
            "h",
        )
        .unwrap_err();
        assert!(!big.is_retryable());
        assert!(big.message.contains("request entity too large"));
        assert!(classify(507, None, b"", "h").unwrap_err().is_retryable());
    }
}
