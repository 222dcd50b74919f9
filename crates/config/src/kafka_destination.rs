//! `kind: kafka` (destination) — each delivery produced to a Kafka topic by an idempotent
//! producer with `acks=all`: the file's shape, the validated settings, and the checks between.

use std::time::Duration;

use estafeta_core::template::TemplateSet;
use serde::Deserialize;

use crate::duration::DurationText;
use crate::kafka_connection::{KafkaConnection, SaslConfig, is_topic_name};
use crate::text::Text;
use crate::validate::Ctx;

/// `kind: kafka` — produce each delivery to a topic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaDestinationConfig {
    /// Bootstrap brokers, `host:port` separated by commas; default `127.0.0.1:9092`.
    #[serde(default)]
    pub brokers: Option<Text>,
    /// Connect with TLS (default false).
    #[serde(default)]
    pub tls: bool,
    /// A PEM file of CA certificates to trust instead of the system's (with `tls: true`).
    #[serde(default)]
    pub ca_file: Option<Text>,
    /// SASL authentication (`mechanism`, `username`, `password`).
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// Topic to produce to: a name, or a template over the event such as
    /// `orders.{{ type }}`. The rendered name must be 1–249 letters, digits, `.`, `_`, `-`.
    pub topic: String,
    /// Message key: a template over the event; default the event's key (`partitionkey`),
    /// so the events of one key keep their partition and their order. No key when empty.
    #[serde(default)]
    pub key: Option<String>,
    /// `structured` (default): the value is the delivery's body (the CloudEvent as JSON, or
    /// the route's rendered template). `binary`: the value is the event's data and the
    /// CloudEvents attributes travel as `ce_` headers (CloudEvents Kafka binding).
    #[serde(default)]
    pub mode: KafkaMode,
    /// `none` (default), `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// Time allowed for one message to be acknowledged by the cluster, retries included
    /// (default `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub timeout: DurationText,
    /// Produce up to `max_events` deliveries together (`{max_events: 500, max_wait: 5ms}`):
    /// handed to the producer at once and acknowledged together, they share the outcome. Off
    /// by default.
    #[serde(default)]
    pub batch: Option<crate::model::BatchConfig>,
}

/// How a CloudEvent is laid out in a Kafka message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaMode {
    /// The whole event in the value.
    #[default]
    Structured,
    /// The data in the value, the attributes in `ce_` headers.
    Binary,
}

/// Producer compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// None.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// librdkafka's `compression.codec` value.
    #[must_use]
    pub fn codec(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// A validated Kafka destination.
#[derive(Debug, Clone)]
pub struct KafkaDestinationSettings {
    /// Destination id.
    pub id: String,
    /// Where the cluster is and how to authenticate.
    pub connection: KafkaConnection,
    /// Topic template source.
    pub topic: String,
    /// Key template source; `None` means the event's key.
    pub key: Option<String>,
    /// Structured or binary.
    pub mode: KafkaMode,
    /// Compression codec.
    pub compression: Compression,
    /// Delivery timeout.
    pub timeout: Duration,
    /// `(max_events, max_wait)` when deliveries are produced in batches.
    pub batch: Option<(usize, Duration)>,
}

/// The name the topic template is compiled under.
#[must_use]
pub fn topic_template_name(id: &str) -> String {
    format!("destinations.{id}.topic")
}

/// The name the key template is compiled under.
#[must_use]
pub fn key_template_name(id: &str) -> String {
    format!("destinations.{id}.key")
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &KafkaDestinationConfig,
) -> Option<KafkaDestinationSettings> {
    let connection = crate::kafka_connection::validate(
        cx,
        p,
        c.brokers.as_ref(),
        c.tls,
        c.ca_file.as_ref(),
        c.sasl.as_ref(),
    )?;
    let mut templates = TemplateSet::new();
    let mut compile = |cx: &mut Ctx<'_>, field: &str, name: String, source: &str| {
        if let Err(e) = templates.add(&name, source) {
            cx.err_entry(
                format!("{p}.{field}"),
                format!(
                    "template does not compile: {} (line {} of the template)",
                    e.message,
                    e.line.unwrap_or(1)
                ),
            );
        }
    };
    if c.topic.trim().is_empty() {
        cx.err_entry(format!("{p}.topic"), "must name a topic");
    } else if is_template(&c.topic) {
        compile(cx, "topic", topic_template_name(id), &c.topic);
    } else if !is_topic_name(&c.topic) {
        cx.err_entry(
            format!("{p}.topic"),
            format!(
                "`{}` is not a Kafka topic name: 1 to 249 letters, digits, `.`, `_` or `-`",
                c.topic
            ),
        );
    }
    if let Some(key) = &c.key {
        compile(cx, "key", key_template_name(id), key);
    }
    let at = cx.entry_pos();
    let batch = crate::validate::validate_batch(cx, p, c.batch.as_ref(), at);
    if c.timeout.0 < Duration::from_secs(1) {
        cx.err_entry(format!("{p}.timeout"), "must be at least 1s");
    }
    Some(KafkaDestinationSettings {
        id: id.to_owned(),
        connection,
        topic: c.topic.clone(),
        key: c.key.clone(),
        mode: c.mode,
        compression: c.compression,
        timeout: c.timeout.0,
        batch,
    })
}
