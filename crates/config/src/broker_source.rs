//! The `decode:` block every broker source (`kafka`, `nats`, `amqp`, `mqtt`) shares: how a
//! message's bytes become an event. Validated here once, used by each broker source.

use serde::Deserialize;

pub use crate::postgres_source::Envelope;
use crate::validate::Ctx;

/// How messages are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Recognise each message: CloudEvents in binary mode (`ce_`/`ce-` headers) or structured
    /// mode (`specversion` in the JSON), a Debezium change event (`op` with `before`/`after`,
    /// with or without `schema`/`payload`), otherwise plain JSON.
    #[default]
    Auto,
    /// CloudEvents only (either mode); anything else is a failed record.
    Cloudevents,
    /// Any JSON value, taken as the event's `data`.
    Json,
    /// Debezium's JSON change events (with or without schema), turned into the same events
    /// the CDC sources produce; tombstones (empty values) are skipped.
    Debezium,
    /// The bytes as they are: UTF-8 text becomes a JSON string, anything else base64 data.
    Raw,
}

/// `decode:` — how messages become events (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// `auto` (default), `cloudevents`, `json`, `debezium` or `raw`.
    #[serde(default)]
    pub format: Format,
    /// The event type for messages that carry none (plain JSON, raw): default the topic,
    /// subject or routing key the message came on.
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    /// For Debezium change events: `estafeta` (default, `{before, after, op, source}` as the
    /// CDC sources write it) or `debezium` (Debezium's value kept as it is).
    #[serde(default)]
    pub envelope: Envelope,
}

/// The validated `decode:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeSettings {
    /// Format.
    pub format: Format,
    /// Fixed event type for messages without one.
    pub event_type: Option<String>,
    /// Envelope for Debezium change events.
    pub envelope: Envelope,
}

/// Checks a `decode:` block; `field` is its path (e.g. `sources[2].decode`).
pub(crate) fn validate(cx: &mut Ctx<'_>, field: &str, raw: &DecodeConfig) -> DecodeSettings {
    if let Some(t) = &raw.event_type
        && (t.trim().is_empty() || t.chars().any(char::is_whitespace))
    {
        cx.err_here(
            format!("{field}.type"),
            "an event type must be non-empty text without spaces, e.g. `orders.created`",
        );
    }
    DecodeSettings {
        format: raw.format,
        event_type: raw.event_type.clone(),
        envelope: raw.envelope,
    }
}
