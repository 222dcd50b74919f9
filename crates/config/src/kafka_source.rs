//! `kind: kafka` (source) — a consumer group reading topics (or a pattern) whose offsets are
//! committed only after the events are durably stored: the file's shape, the validated
//! settings, and the checks between.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::broker_source::{DecodeConfig, DecodeSettings};
use crate::kafka_connection::{KafkaConnection, SaslConfig, is_topic_name};
use crate::text::Text;
use crate::validate::Ctx;

/// `kind: kafka` — consume topics in a consumer group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
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
    /// Topics to read. Either this or `topic_pattern`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression naming the topics to read (e.g. `dbserver1\.inventory\..*`);
    /// topics created later are picked up. Either this or `topics`.
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Consumer group (default `estafeta-<source id>`); its committed offsets are where
    /// reading resumes.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Where a group without committed offsets starts: `earliest` (default), `latest`, or an
    /// RFC 3339 time (messages with an earlier timestamp are skipped).
    #[serde(default)]
    pub start: Option<String>,
    /// Most messages stored in one append (default 500).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// How messages become events (see the `decode:` block).
    #[serde(default)]
    pub decode: DecodeConfig,
}

fn default_batch() -> usize {
    500
}

/// Which topics are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// These topics.
    Topics(Vec<String>),
    /// Topics matching this regular expression.
    Pattern(String),
}

/// Where a group without committed offsets starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest message kept.
    Earliest,
    /// Only messages produced from now on.
    Latest,
    /// The oldest message kept, skipping messages whose timestamp is earlier.
    Timestamp(DateTime<Utc>),
}

/// A validated Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSourceSettings {
    /// Source id.
    pub id: String,
    /// Where the cluster is and how to authenticate.
    pub connection: KafkaConnection,
    /// Topics or pattern.
    pub subscription: Subscription,
    /// Consumer group.
    pub group_id: String,
    /// Start position for a group without offsets.
    pub start: StartPosition,
    /// Most messages per append.
    pub batch_size: usize,
    /// Decoding.
    pub decode: DecodeSettings,
}

impl Subscription {
    /// What librdkafka subscribes to (a pattern starts with `^`).
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::Topics(t) => t.clone(),
            Self::Pattern(p) if p.starts_with('^') => vec![p.clone()],
            Self::Pattern(p) => vec![format!("^{p}")],
        }
    }
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &KafkaSourceConfig,
) -> Option<KafkaSourceSettings> {
    let connection = crate::kafka_connection::validate(
        cx,
        p,
        c.brokers.as_ref(),
        c.tls,
        c.ca_file.as_ref(),
        c.sasl.as_ref(),
    )?;
    let subscription = match (c.topics.is_empty(), &c.topic_pattern) {
        (false, None) => {
            for t in &c.topics {
                if !is_topic_name(t) {
                    cx.err_entry(
                        format!("{p}.topics"),
                        format!("`{t}` is not a Kafka topic name: 1 to 249 letters, digits, `.`, `_` or `-` (use `topic_pattern` for a regular expression)"),
                    );
                }
            }
            Subscription::Topics(c.topics.clone())
        }
        (true, Some(pattern)) => {
            if pattern.trim().is_empty() {
                cx.err_entry(format!("{p}.topic_pattern"), "must not be empty");
            }
            Subscription::Pattern(pattern.clone())
        }
        (false, Some(_)) => {
            cx.err_entry(
                format!("{p}.topics"),
                "set either `topics` or `topic_pattern`, not both",
            );
            Subscription::Topics(c.topics.clone())
        }
        (true, None) => {
            cx.err_entry(
                format!("{p}.topics"),
                "name the topics to read (`topics: [orders]`) or a `topic_pattern`",
            );
            Subscription::Topics(Vec::new())
        }
    };
    let group_id = c
        .group_id
        .clone()
        .unwrap_or_else(|| format!("estafeta-{id}"));
    if group_id.trim().is_empty() {
        cx.err_entry(format!("{p}.group_id"), "must not be empty");
    }
    let start = match c.start.as_deref().map(str::trim) {
        None | Some("earliest") => StartPosition::Earliest,
        Some("latest") => StartPosition::Latest,
        Some(other) => match DateTime::parse_from_rfc3339(other) {
            Ok(t) => StartPosition::Timestamp(t.with_timezone(&Utc)),
            Err(_) => {
                cx.err_entry(
                    format!("{p}.start"),
                    format!("`{other}` is not `earliest`, `latest` or an RFC 3339 time such as `2026-01-31T00:00:00Z`"),
                );
                StartPosition::Earliest
            }
        },
    };
    if c.batch_size == 0 || c.batch_size > 10_000 {
        cx.err_entry(format!("{p}.batch_size"), "must be between 1 and 10000");
    }
    let decode = crate::broker_source::validate(cx, &format!("{p}.decode"), &c.decode);
    Some(KafkaSourceSettings {
        id: id.to_owned(),
        connection,
        subscription,
        group_id,
        start,
        batch_size: c.batch_size.clamp(1, 10_000),
        decode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_anchored_for_librdkafka() {
        assert_eq!(
            Subscription::Pattern("db\\..*".into()).names(),
            vec!["^db\\..*".to_owned()]
        );
        assert_eq!(
            Subscription::Pattern("^db".into()).names(),
            vec!["^db".to_owned()]
        );
        assert_eq!(
            Subscription::Topics(vec!["a".into(), "b".into()]).names(),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }
}
