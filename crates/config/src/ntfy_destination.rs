//! `kind: ntfy` — push notifications through an ntfy server (ntfy.sh or self-hosted): the
//! file's shape, the validated settings, and the validation between them.

use std::time::Duration;

use estafeta_core::template::TemplateSet;
use serde::Deserialize;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// The public server.
pub const DEFAULT_SERVER: &str = "https://ntfy.sh";

/// `kind: ntfy` — publish each delivery to a topic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtfyConfig {
    /// Server base URL (default `https://ntfy.sh`).
    #[serde(default)]
    pub url: Option<Text>,
    /// Topic name: letters, digits, `-` and `_`, up to 64.
    pub topic: Text,
    /// Notification title: a template over the event (default: the event type).
    #[serde(default)]
    pub title: Option<String>,
    /// `1`–`5` or `min`, `low`, `default`, `high`, `max`/`urgent` (default `3`).
    #[serde(default)]
    pub priority: Option<PriorityText>,
    /// Tags; names of emoji short codes (`warning`, `rotating_light`) show as emoji.
    #[serde(default)]
    pub tags: Vec<String>,
    /// URL opened when the notification is tapped: a template over the event.
    #[serde(default)]
    pub click: Option<String>,
    /// Render the message as Markdown in clients that support it.
    #[serde(default)]
    pub markdown: bool,
    /// Access token (`tk_…`), sent as `Authorization: Bearer`; use `${secret:…}`.
    #[serde(default)]
    pub token: Option<Text>,
    /// User for basic authentication (with `password`).
    #[serde(default)]
    pub username: Option<Text>,
    /// Password for basic authentication; use `${secret:…}`.
    #[serde(default)]
    pub password: Option<Text>,
    /// Time allowed for one request (default `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub timeout: DurationText,
    /// Allow a server on a private or loopback address (default false).
    #[serde(default)]
    pub allow_private_networks: bool,
}

/// A priority as written: a number or a name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PriorityText {
    /// `1`–`5`.
    Number(i64),
    /// `min`, `low`, `default`, `high`, `max`, `urgent`.
    Name(String),
}

impl PriorityText {
    fn level(&self) -> Option<u8> {
        match self {
            PriorityText::Number(n) => u8::try_from(*n).ok().filter(|n| (1..=5).contains(n)),
            PriorityText::Name(s) => match s.to_ascii_lowercase().as_str() {
                "min" | "1" => Some(1),
                "low" | "2" => Some(2),
                "default" | "3" => Some(3),
                "high" | "4" => Some(4),
                "max" | "urgent" | "5" => Some(5),
                _ => None,
            },
        }
    }
}

/// How the destination authenticates.
#[derive(Debug, Clone)]
pub enum NtfyAuth {
    /// No credentials (open topic).
    None,
    /// `Authorization: Bearer <token>`.
    Token(Secret),
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: Secret,
        /// Password.
        password: Secret,
    },
}

/// A validated ntfy destination.
#[derive(Debug, Clone)]
pub struct NtfySettings {
    /// Destination id.
    pub id: String,
    /// Server base URL, without a trailing slash.
    pub server: String,
    /// Topic.
    pub topic: String,
    /// Title template source, if any.
    pub title: Option<String>,
    /// 1–5.
    pub priority: u8,
    /// Tags.
    pub tags: Vec<String>,
    /// Click URL template source, if any.
    pub click: Option<String>,
    /// Markdown rendering.
    pub markdown: bool,
    /// Credentials.
    pub auth: NtfyAuth,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Whether private addresses may be reached.
    pub allow_private_networks: bool,
}

/// Names the destination's templates are compiled under.
#[must_use]
pub fn template_names(id: &str) -> (String, String) {
    (
        format!("destinations.{id}.title"),
        format!("destinations.{id}.click"),
    )
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &NtfyConfig,
) -> Option<NtfySettings> {
    let server = match &c.url {
        None => DEFAULT_SERVER.to_owned(),
        Some(t) => {
            let r = cx.resolve(t, &format!("{p}.url"))?;
            let text = r.value.expose().trim_end_matches('/').to_owned();
            match url::Url::parse(&text) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => cx.err_text(
                    t,
                    format!("{p}.url"),
                    "the ntfy server URL starts with http:// or https:// (default https://ntfy.sh)",
                ),
            }
            text
        }
    };
    let topic = cx.resolve(&c.topic, &format!("{p}.topic"))?.value;
    let topic = topic.expose().to_owned();
    if topic.is_empty()
        || topic.len() > 64
        || !topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        cx.err_text(
            &c.topic,
            format!("{p}.topic"),
            "a topic is 1 to 64 letters, digits, `-` or `_`",
        );
    }
    let priority = match &c.priority {
        None => 3,
        Some(pt) => pt.level().unwrap_or_else(|| {
            cx.err_text(
                &c.topic,
                format!("{p}.priority"),
                "a priority is 1 to 5, or min, low, default, high, max (urgent)",
            );
            3
        }),
    };
    for tag in &c.tags {
        if tag.trim().is_empty() || tag.contains(',') {
            cx.err_text(
                &c.topic,
                format!("{p}.tags"),
                format!("tag `{tag}` must be non-empty and without commas"),
            );
        }
    }
    let (title_name, click_name) = template_names(id);
    let mut templates = TemplateSet::new();
    for (name, src, field) in [
        (&title_name, &c.title, "title"),
        (&click_name, &c.click, "click"),
    ] {
        if let Some(src) = src
            && let Err(e) = templates.add(name, src)
        {
            cx.err_text(
                &c.topic,
                format!("{p}.{field}"),
                format!(
                    "template does not compile: {} (line {} of the template)",
                    e.message,
                    e.line.unwrap_or(1)
                ),
            );
        }
    }
    let auth = match (&c.token, &c.username, &c.password) {
        (None, None, None) => NtfyAuth::None,
        (Some(t), None, None) => NtfyAuth::Token(cx.resolve(t, &format!("{p}.token"))?.value),
        (None, Some(u), Some(pw)) => NtfyAuth::Basic {
            username: cx.resolve(u, &format!("{p}.username"))?.value,
            password: cx.resolve(pw, &format!("{p}.password"))?.value,
        },
        (Some(t), _, _) => {
            cx.err_text(
                t,
                format!("{p}.token"),
                "use either `token` or `username` + `password`, not both",
            );
            NtfyAuth::None
        }
        (None, _, _) => {
            cx.err_text(
                &c.topic,
                format!("{p}.username"),
                "basic authentication needs both `username` and `password`",
            );
            NtfyAuth::None
        }
    };
    if c.timeout.0.is_zero() {
        cx.err_text(&c.topic, format!("{p}.timeout"), "must be more than 0s");
    }
    Some(NtfySettings {
        id: id.to_owned(),
        server,
        topic,
        title: c.title.clone(),
        priority,
        tags: c.tags.clone(),
        click: c.click.clone(),
        markdown: c.markdown,
        auth,
        timeout: c.timeout.0,
        allow_private_networks: c.allow_private_networks,
    })
}
