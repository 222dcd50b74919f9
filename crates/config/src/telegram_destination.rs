//! `kind: telegram` — messages to a Telegram chat through the Bot API: the file's shape, the
//! validated settings, and the validation between them.

use std::time::Duration;

use estafeta_core::template::Escape;
use serde::Deserialize;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// Telegram's own API endpoint.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// `kind: telegram` — send each delivery as a Bot API `sendMessage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot's token from @BotFather (`123456789:AA…`); use `${secret:…}`.
    pub token: Text,
    /// The chat: a numeric id (groups and channels are negative, e.g. `-1001234567890`) or
    /// `@channelusername`.
    pub chat_id: Text,
    /// How Telegram reads the text: `none` (default, plain text), `html` or `markdown_v2`.
    /// Values printed by the route's template are escaped for the mode.
    #[serde(default)]
    pub parse_mode: ParseMode,
    /// Deliver silently (no sound).
    #[serde(default)]
    pub disable_notification: bool,
    /// The topic of a forum supergroup to post in.
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    /// Texts longer than Telegram's 4,096 characters: `split` (default) into several
    /// messages at line breaks, or `truncate` with an ellipsis.
    #[serde(default)]
    pub long_messages: LongMessages,
    /// Bot API base URL (default `https://api.telegram.org`); set it for a self-hosted Bot
    /// API server.
    #[serde(default)]
    pub api_url: Option<Text>,
    /// Time allowed for one request (default `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub timeout: DurationText,
    /// Allow a Bot API server on a private or loopback address (default false).
    #[serde(default)]
    pub allow_private_networks: bool,
}

/// Telegram's `parse_mode`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseMode {
    /// Plain text.
    #[default]
    None,
    /// Telegram's HTML subset.
    #[serde(alias = "HTML")]
    Html,
    /// MarkdownV2.
    #[serde(alias = "MarkdownV2")]
    MarkdownV2,
}

impl ParseMode {
    /// The value of the API's `parse_mode` field, if any.
    #[must_use]
    pub fn api_name(self) -> Option<&'static str> {
        match self {
            ParseMode::None => None,
            ParseMode::Html => Some("HTML"),
            ParseMode::MarkdownV2 => Some("MarkdownV2"),
        }
    }

    /// How template values are escaped for this mode.
    #[must_use]
    pub fn escape(self) -> Escape {
        match self {
            ParseMode::None => Escape::None,
            ParseMode::Html => Escape::Html,
            ParseMode::MarkdownV2 => Escape::MarkdownV2,
        }
    }
}

/// What to do with a text over Telegram's length limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongMessages {
    /// Several messages, cut at line breaks (or spaces) where possible.
    #[default]
    Split,
    /// One message, cut with `…`.
    Truncate,
}

/// A validated Telegram destination.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    /// Destination id.
    pub id: String,
    /// Bot token (in the request path: never logged).
    pub token: Secret,
    /// Chat id or `@channel`.
    pub chat_id: String,
    /// Parse mode.
    pub parse_mode: ParseMode,
    /// Silent delivery.
    pub disable_notification: bool,
    /// Forum topic.
    pub message_thread_id: Option<i64>,
    /// Over-long texts.
    pub long_messages: LongMessages,
    /// Bot API base URL, without a trailing slash.
    pub api_url: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Whether private addresses may be reached.
    pub allow_private_networks: bool,
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &TelegramConfig,
) -> Option<TelegramSettings> {
    let token = cx.resolve(&c.token, &format!("{p}.token"))?.value;
    let well_formed = token.expose().split_once(':').is_some_and(|(bot, key)| {
        !bot.is_empty()
            && bot.bytes().all(|b| b.is_ascii_digit())
            && !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !well_formed {
        cx.err_text(
            &c.token,
            format!("{p}.token"),
            "a bot token looks like `123456789:AAH…` (digits, a colon, letters, digits, `_` or `-`); get one from @BotFather",
        );
    }
    let chat_id = cx.resolve(&c.chat_id, &format!("{p}.chat_id"))?.value;
    let chat = chat_id.expose().trim().to_owned();
    let numeric = chat
        .strip_prefix('-')
        .unwrap_or(&chat)
        .bytes()
        .all(|b| b.is_ascii_digit())
        && !chat.trim_start_matches('-').is_empty();
    let username = chat
        .strip_prefix('@')
        .is_some_and(|u| u.len() >= 4 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    if !numeric && !username {
        cx.err_text(
            &c.chat_id,
            format!("{p}.chat_id"),
            "a chat id is a number (groups and channels are negative, e.g. `-1001234567890`) or `@channelusername`",
        );
    }
    let api_url = match &c.api_url {
        None => DEFAULT_API_URL.to_owned(),
        Some(t) => {
            let r = cx.resolve(t, &format!("{p}.api_url"))?;
            let text = r.value.expose().trim_end_matches('/').to_owned();
            match url::Url::parse(&text) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => cx.err_text(
                    t,
                    format!("{p}.api_url"),
                    "the Bot API base URL starts with http:// or https:// (default https://api.telegram.org)",
                ),
            }
            text
        }
    };
    if c.timeout.0.is_zero() {
        cx.err_text(&c.token, format!("{p}.timeout"), "must be more than 0s");
    }
    Some(TelegramSettings {
        id: id.to_owned(),
        token,
        chat_id: chat,
        parse_mode: c.parse_mode,
        disable_notification: c.disable_notification,
        message_thread_id: c.message_thread_id,
        long_messages: c.long_messages,
        api_url,
        timeout: c.timeout.0,
        allow_private_networks: c.allow_private_networks,
    })
}
