//! Chat channels through their incoming webhooks — Slack, Microsoft Teams, Discord and Google
//! Chat. They share the webhook destination's HTTP machinery (pooled client, no redirects,
//! the SSRF guard, answers classified the same way: 2xx delivered; 408/425/429/5xx retried,
//! 429 after `Retry-After`; other 4xx final) and differ in the body they send:
//!
//! * Slack: `{"text": …}` (mrkdwn; template values have `&`, `<`, `>` escaped);
//! * Teams: a message with one Adaptive Card holding the text (accepted by Workflows and by
//!   the older Office 365 connectors);
//! * Discord: `{"content": …, "allowed_mentions": {"parse": []}}` — an event's text can never
//!   ping `@everyone` or a role;
//! * Google Chat: `{"text": …}`.
//!
//! The text is the route's rendered template, or the event type, subject and `data` as JSON.
//! Texts over the service's limit are cut with `…`. The URL is a credential: errors and logs
//! name its host only.

use std::time::Instant;

use estafeta_config::chat_destination::{ChatService, ChatSettings};
use estafeta_core::{Destination, OutboundMessage, SendError, SendOk};
use serde_json::{Value, json};

use crate::build_error::BuildError;
use crate::http_client::{ClientOptions, Endpoint, HttpClients};
use crate::webhook::outcome::classify_response;

/// A chat channel's incoming webhook.
pub struct Chat {
    id: String,
    service: ChatService,
    endpoint: Endpoint,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("id", &self.id)
            .field("service", &self.service)
            .field("host", &self.endpoint.host)
            .finish_non_exhaustive()
    }
}

impl Chat {
    /// Builds the destination; `concurrency` sizes its connection pool.
    ///
    /// # Errors
    /// A URL that is not http(s) with a host, or an HTTP client that cannot be built.
    pub fn new(
        settings: &ChatSettings,
        clients: &HttpClients,
        concurrency: usize,
    ) -> Result<Self, BuildError> {
        let endpoint = Endpoint::new(
            &settings.id,
            settings.url.expose(),
            clients,
            ClientOptions {
                timeout: settings.timeout,
                max_idle_per_host: concurrency,
                allow_private_networks: settings.allow_private_networks,
            },
        )?;
        Ok(Self {
            id: settings.id.clone(),
            service: settings.service,
            endpoint,
        })
    }
}

/// The request body for `text` on `service`.
fn body(service: ChatService, text: &str) -> Value {
    match service {
        ChatService::Slack | ChatService::GoogleChat => json!({ "text": text }),
        ChatService::Discord => json!({
            "content": text,
            "allowed_mentions": { "parse": [] },
        }),
        ChatService::Teams => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{ "type": "TextBlock", "text": text, "wrap": true }],
                },
            }],
        }),
    }
}

/// The text of a delivery: the rendered template, or the event type, subject and data.
fn text(msg: &OutboundMessage, service: ChatService) -> String {
    let text = if msg.content_type == "application/cloudevents+json" {
        let event = &msg.event;
        let mut s = event.ty.clone();
        if let Some(subject) = &event.subject {
            s.push_str(" — ");
            s.push_str(subject);
        }
        if let Some(data) = &event.data {
            let json = serde_json::to_string_pretty(data).unwrap_or_default();
            let json = if service == ChatService::Slack {
                estafeta_core::template::Escape::Html.apply(&json)
            } else {
                json
            };
            s.push_str("\n```\n");
            s.push_str(&json);
            s.push_str("\n```");
        }
        s
    } else {
        String::from_utf8_lossy(&msg.body).into_owned()
    };
    crate::telegram::truncate(&text, service.max_chars())
}

#[async_trait::async_trait]
impl Destination for Chat {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        self.service.kind()
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        self.endpoint.check()?;
        let text = text(msg, self.service);
        if text.trim().is_empty() {
            return Err(SendError::final_error(
                "the message is empty: the template rendered no text",
            ));
        }
        let started = Instant::now();
        let ep = &self.endpoint;
        let result = match ep
            .client
            .post(ep.url.clone())
            .json(&body(self.service, &text))
            .send()
            .await
        {
            Ok(resp) => classify_response(resp, &ep.host).await,
            Err(err) => Err(ep.transport_error(err)),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => {
                tracing::debug!(dest_id = %self.id, kind = self.service.kind(), host = %ep.host, elapsed_ms, "chat message sent")
            }
            Err(err) => {
                tracing::debug!(dest_id = %self.id, kind = self.service.kind(), host = %ep.host,
                status = ?err.status_code, retryable = err.is_retryable(), elapsed_ms, error = %err, "chat message failed")
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_each_services_shape() {
        assert_eq!(body(ChatService::Slack, "hi"), json!({"text": "hi"}));
        assert_eq!(body(ChatService::GoogleChat, "hi"), json!({"text": "hi"}));
        assert_eq!(
            body(ChatService::Discord, "hi")["allowed_mentions"],
            json!({"parse": []})
        );
        let teams = body(ChatService::Teams, "hi");
        assert_eq!(
            teams["attachments"][0]["content"]["body"][0]["text"],
            json!("hi")
        );
        assert_eq!(
            teams["attachments"][0]["contentType"],
            json!("application/vnd.microsoft.card.adaptive")
        );
    }
}
