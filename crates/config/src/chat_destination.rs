//! `kind: slack | teams | discord | google_chat` — messages to a chat channel through its
//! incoming-webhook URL: the file's shape, the validated settings, and the validation.

use std::time::Duration;

use estafeta_core::template::Escape;
use serde::Deserialize;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// The chat service an incoming webhook belongs to: it fixes the request body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatService {
    /// Slack: `{"text": …}` in Slack's mrkdwn.
    Slack,
    /// Microsoft Teams (Workflows or Office 365 connector): an Adaptive Card.
    Teams,
    /// Discord: `{"content": …}`, mentions disabled.
    Discord,
    /// Google Chat: `{"text": …}`.
    GoogleChat,
}

impl ChatService {
    /// The `kind` name.
    #[must_use]
    pub fn kind(self) -> &'static str {
        match self {
            ChatService::Slack => "slack",
            ChatService::Teams => "teams",
            ChatService::Discord => "discord",
            ChatService::GoogleChat => "google_chat",
        }
    }

    /// How template values are escaped: Slack reads `&`, `<` and `>` as markup.
    #[must_use]
    pub fn escape(self) -> Escape {
        match self {
            ChatService::Slack => Escape::Html,
            _ => Escape::None,
        }
    }

    /// The service's limit on a message's text, in characters.
    #[must_use]
    pub fn max_chars(self) -> usize {
        match self {
            ChatService::Slack => 40_000,
            ChatService::Teams => 20_000,
            ChatService::Discord => 2_000,
            ChatService::GoogleChat => 4_096,
        }
    }
}

/// The settings every chat kind shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// The channel's incoming-webhook URL. It is a credential: use `${secret:…}`.
    pub url: Text,
    /// Time allowed for one request (default `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub timeout: DurationText,
    /// Allow a private or loopback address (default false).
    #[serde(default)]
    pub allow_private_networks: bool,
}

/// A validated chat destination.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// Destination id.
    pub id: String,
    /// Which service.
    pub service: ChatService,
    /// The incoming-webhook URL (a credential).
    pub url: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Whether private addresses may be reached.
    pub allow_private_networks: bool,
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    service: ChatService,
    c: &ChatConfig,
) -> Option<ChatSettings> {
    let url = cx.resolve(&c.url, &format!("{p}.url"))?.value;
    match url::Url::parse(url.expose()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => cx.err_text(
            &c.url,
            format!("{p}.url"),
            format!(
                "the {} incoming-webhook URL starts with https:// (copy it from the channel's webhook settings)",
                service.kind()
            ),
        ),
    }
    if c.timeout.0.is_zero() {
        cx.err_text(&c.url, format!("{p}.timeout"), "must be more than 0s");
    }
    Some(ChatSettings {
        id: id.to_owned(),
        service,
        url,
        timeout: c.timeout.0,
        allow_private_networks: c.allow_private_networks,
    })
}
