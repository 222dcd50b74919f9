//! `kind: nats` as a source — a durable JetStream pull consumer whose messages are stored
//! and only then acknowledged: the file's shape, the validated settings, and the validation
//! between them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::broker_source::{DecodeConfig, DecodeSettings};
use crate::duration::DurationText;
use crate::nats_destination::{ConnectionFields, NatsAuth, validate_connection};
use crate::text::Text;
use crate::validate::Ctx;

/// `kind: nats` (source) — consume a JetStream stream through a durable consumer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Server address (`nats://host:4222`, `tls://host:4222`; several separated by commas);
    /// default `nats://127.0.0.1:4222`.
    #[serde(default)]
    pub url: Option<Text>,
    /// The JetStream stream to read (it must exist).
    pub stream: String,
    /// The durable consumer's name (default `estafeta-<source id>`). It keeps the position
    /// on the server, so a restart goes on where it stopped. Created when missing; its
    /// settings are updated at start when they changed (the start position cannot be).
    #[serde(default)]
    pub consumer: Option<String>,
    /// Only the stream's messages on this subject (wildcards `*` and `>` allowed, e.g.
    /// `orders.>`); default all of them.
    #[serde(default)]
    pub subject: Option<String>,
    /// Where a new consumer starts: `earliest` (default: everything in the stream),
    /// `latest` (only messages published from now on) or an RFC 3339 time.
    #[serde(default)]
    pub start: Option<String>,
    /// Most messages handed over and not yet acknowledged (default 10000): the
    /// back-pressure on the server.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: u32,
    /// Most messages asked for and stored at once (default 500).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// How long the server waits for an acknowledgement before delivering a message again
    /// (default `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub ack_wait: DurationText,
    /// Authentication token; use `${secret:…}`.
    #[serde(default)]
    pub token: Option<Text>,
    /// User name (with `password`).
    #[serde(default)]
    pub username: Option<Text>,
    /// Password; use `${secret:…}`.
    #[serde(default)]
    pub password: Option<Text>,
    /// How messages become events.
    #[serde(default)]
    pub decode: DecodeConfig,
}

fn default_max_ack_pending() -> u32 {
    10_000
}

fn default_batch_size() -> u32 {
    500
}

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsStart {
    /// Every message in the stream.
    Earliest,
    /// Messages published after the consumer was created.
    Latest,
    /// Messages published at or after this time.
    Time(DateTime<Utc>),
}

/// A validated NATS source.
#[derive(Debug, Clone)]
pub struct NatsSourceSettings {
    /// Server address(es), as configured.
    pub url: String,
    /// Credentials.
    pub auth: NatsAuth,
    /// Stream name.
    pub stream: String,
    /// Durable consumer name.
    pub consumer: String,
    /// Subject filter (none: all).
    pub subject: Option<String>,
    /// Start position of a new consumer.
    pub start: NatsStart,
    /// Most unacknowledged messages.
    pub max_ack_pending: u32,
    /// Messages per fetch.
    pub batch_size: u32,
    /// Redelivery delay.
    pub ack_wait: Duration,
    /// Decoding.
    pub decode: DecodeSettings,
}

/// True for a stream or consumer name NATS accepts (no spaces, `.`, `*`, `>`, path
/// separators).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
}

/// True for a subject filter: `.`-separated tokens, `*` for one token, `>` only last.
fn is_filter(s: &str) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    !s.is_empty()
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.chars().any(|c| c.is_whitespace() || c.is_control())
                && (*t == "*" || *t == ">" || !t.contains(['*', '>']))
                && (*t != ">" || i + 1 == tokens.len())
        })
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &NatsSourceConfig,
) -> Option<NatsSourceSettings> {
    let (url, auth) = validate_connection(
        cx,
        p,
        &ConnectionFields {
            url: &c.url,
            token: &c.token,
            username: &c.username,
            password: &c.password,
        },
    )?;
    if !is_name(&c.stream) {
        cx.err_entry(
            format!("{p}.stream"),
            format!(
                "`{}` is not a stream name (no spaces, `.`, `*`, `>` or slashes)",
                c.stream
            ),
        );
    }
    let consumer = c.consumer.clone().unwrap_or_else(|| {
        let clean: String = id
            .chars()
            .map(|ch| if is_name(&ch.to_string()) { ch } else { '_' })
            .collect();
        format!("estafeta-{clean}")
    });
    if !is_name(&consumer) {
        cx.err_entry(
            format!("{p}.consumer"),
            format!("`{consumer}` is not a consumer name (no spaces, `.`, `*`, `>` or slashes)"),
        );
    }
    if let Some(s) = &c.subject
        && !is_filter(s)
    {
        cx.err_entry(
            format!("{p}.subject"),
            format!("`{s}` is not a subject filter: tokens separated by `.`, `*` for one token, `>` only at the end"),
        );
    }
    let start = match c.start.as_deref().map(str::trim) {
        None | Some("earliest") => NatsStart::Earliest,
        Some("latest") => NatsStart::Latest,
        Some(t) => match DateTime::parse_from_rfc3339(t) {
            Ok(at) => NatsStart::Time(at.with_timezone(&Utc)),
            Err(_) => {
                cx.err_entry(
                    format!("{p}.start"),
                    format!("`{t}` is not `earliest`, `latest` or an RFC 3339 time such as `2026-11-01T00:00:00Z`"),
                );
                NatsStart::Earliest
            }
        },
    };
    if c.max_ack_pending == 0 {
        cx.err_entry(format!("{p}.max_ack_pending"), "must be at least 1");
    }
    if c.batch_size == 0 {
        cx.err_entry(format!("{p}.batch_size"), "must be at least 1");
    }
    if c.ack_wait.0 < Duration::from_secs(1) {
        cx.err_entry(format!("{p}.ack_wait"), "must be at least 1s");
    }
    let decode = crate::broker_source::validate(cx, &format!("{p}.decode"), &c.decode);
    Some(NatsSourceSettings {
        url,
        auth,
        stream: c.stream.clone(),
        consumer,
        subject: c.subject.clone(),
        start,
        max_ack_pending: c.max_ack_pending,
        batch_size: c.batch_size,
        ack_wait: c.ack_wait.0,
        decode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters() {
        assert!(is_name("ORDERS"));
        assert!(is_name("estafeta-orders_1"));
        assert!(!is_name("a.b"));
        assert!(!is_name("a b"));
        assert!(!is_name(""));
        assert!(is_filter("orders.>"));
        assert!(is_filter("orders.*.created"));
        assert!(is_filter("orders"));
        assert!(!is_filter("orders.>.x"));
        assert!(!is_filter("orders..x"));
        assert!(!is_filter("ord*ers"));
        assert!(!is_filter(""));
    }
}
