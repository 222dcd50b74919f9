//! `kind: mqtt` (destination) — messages published with QoS 1 to an MQTT broker: the file's
//! shape, the validated settings, the validation between them, and the broker-address and
//! topic rules the MQTT source shares.

use std::time::Duration;

use estafeta_core::template::TemplateSet;
use serde::Deserialize;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// The broker address used when `url` is not set.
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";

/// The longest topic MQTT allows, in bytes.
const MAX_TOPIC_BYTES: usize = 65_535;

/// `kind: mqtt` — publish each delivery to a topic with QoS 1.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker address, `mqtt://host:1883` (`tcp://` is accepted too; the port defaults to
    /// 1883); default `mqtt://127.0.0.1:1883`.
    #[serde(default)]
    pub url: Option<Text>,
    /// Topic to publish to: a template over the event, e.g. `alerts/{{ type }}`. The
    /// rendered topic must not be empty nor contain the wildcards `+` and `#`.
    pub topic: String,
    /// Ask the broker to keep the last message of the topic for future subscribers
    /// (default false).
    #[serde(default)]
    pub retain: bool,
    /// MQTT client id; default `estafeta-<destination id>-<random>` (a fresh one per start,
    /// so two instances never disconnect each other).
    #[serde(default)]
    pub client_id: Option<Text>,
    /// User name (with `password`).
    #[serde(default)]
    pub username: Option<Text>,
    /// Password; use `${secret:…}`.
    #[serde(default)]
    pub password: Option<Text>,
    /// Keep-alive interval agreed with the broker (default `30s`, at least `5s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub keep_alive: DurationText,
    /// Time allowed for connecting and for one publish until the broker's PUBACK
    /// (default `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub timeout: DurationText,
}

/// User name and password.
#[derive(Debug, Clone)]
pub struct MqttCredentials {
    /// User name.
    pub username: Secret,
    /// Password.
    pub password: Secret,
}

/// A validated MQTT destination.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Destination id.
    pub id: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic template source.
    pub topic: String,
    /// Retain flag on every message.
    pub retain: bool,
    /// Client id, when configured (otherwise one is made at start).
    pub client_id: Option<String>,
    /// Credentials, if any.
    pub credentials: Option<MqttCredentials>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Connect and publish timeout.
    pub timeout: Duration,
}

/// The name the topic template is compiled under.
#[must_use]
pub fn topic_template_name(id: &str) -> String {
    format!("destinations.{id}.topic")
}

/// The host and port of an `mqtt://host[:port]` (or `tcp://`) address; a bare `host[:port]`
/// is taken as `mqtt://`.
#[must_use]
pub fn broker_address(url: &str) -> Option<(String, u16)> {
    let url = url.trim();
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("mqtt://{url}")
    };
    let parsed = url::Url::parse(&with_scheme).ok()?;
    if !matches!(parsed.scheme(), "mqtt" | "tcp")
        || !matches!(parsed.path(), "" | "/")
        || parsed.query().is_some()
        || !parsed.username().is_empty()
    {
        return None;
    }
    let host = parsed.host_str()?.trim_matches(['[', ']']).to_owned();
    if host.is_empty() {
        return None;
    }
    Some((host, parsed.port().unwrap_or(1883)))
}

/// True when `topic` can be published to: not empty, no wildcards (`+`, `#`), no NUL, at
/// most 65,535 bytes.
#[must_use]
pub fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES && !topic.contains(['+', '#', '\0'])
}

/// True when `filter` can be subscribed to: not empty, `+` only as a whole level, `#` only
/// as the whole last level, no NUL.
#[must_use]
pub fn is_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_BYTES || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| {
        if level.contains('#') {
            *level == "#" && i == last
        } else {
            !level.contains('+') || *level == "+"
        }
    })
}

/// Checks a broker address field; the host and port, or the default broker's.
pub(crate) fn validate_url(cx: &mut Ctx<'_>, p: &str, url: Option<&Text>) -> (String, u16) {
    let fallback = || ("127.0.0.1".to_owned(), 1883);
    let Some(t) = url else {
        return fallback();
    };
    let Some(resolved) = cx.resolve(t, &format!("{p}.url")) else {
        return fallback();
    };
    if let Some(address) = broker_address(resolved.value.expose()) {
        address
    } else {
        cx.err_text(
            t,
            format!("{p}.url"),
            "an MQTT broker address is `mqtt://host:1883` (TLS is not supported yet)",
        );
        fallback()
    }
}

/// Checks `username` + `password`.
pub(crate) fn validate_credentials(
    cx: &mut Ctx<'_>,
    p: &str,
    username: Option<&Text>,
    password: Option<&Text>,
) -> Option<MqttCredentials> {
    match (username, password) {
        (None, None) => None,
        (Some(u), Some(pw)) => Some(MqttCredentials {
            username: cx.resolve(u, &format!("{p}.username"))?.value,
            password: cx.resolve(pw, &format!("{p}.password"))?.value,
        }),
        (Some(t), None) | (None, Some(t)) => {
            cx.err_text(
                t,
                format!("{p}.username"),
                "authentication needs both `username` and `password`",
            );
            None
        }
    }
}

/// Checks a keep-alive interval (MQTT counts it in whole seconds, at most 65,535).
pub(crate) fn validate_keep_alive(cx: &mut Ctx<'_>, p: &str, keep_alive: Duration) {
    if keep_alive < Duration::from_secs(5) || keep_alive > Duration::from_secs(65_535) {
        cx.err_entry(format!("{p}.keep_alive"), "must be between 5s and 65535s");
    }
}

/// Checks a client id (MQTT allows up to 65,535 bytes; brokers may ask for less).
pub(crate) fn validate_client_id(cx: &mut Ctx<'_>, p: &str, t: &Text) -> Option<String> {
    let id = cx
        .resolve(t, &format!("{p}.client_id"))?
        .value
        .expose()
        .to_owned();
    if id.trim().is_empty() || id.len() > 65_535 || id.chars().any(char::is_control) {
        cx.err_text(
            t,
            format!("{p}.client_id"),
            "must be non-empty text without control characters",
        );
    }
    Some(id)
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &MqttConfig,
) -> Option<MqttSettings> {
    let (host, port) = validate_url(cx, p, c.url.as_ref());
    let mut templates = TemplateSet::new();
    if c.topic.trim().is_empty() {
        cx.err_entry(format!("{p}.topic"), "must name a topic");
    } else if let Err(e) = templates.add(&topic_template_name(id), &c.topic) {
        cx.err_entry(
            format!("{p}.topic"),
            format!(
                "template does not compile: {} (line {} of the template)",
                e.message,
                e.line.unwrap_or(1)
            ),
        );
    } else if !c.topic.contains("{{") && !c.topic.contains("{%") && !is_topic_name(&c.topic) {
        cx.err_entry(
            format!("{p}.topic"),
            format!(
                "`{}` is not a topic to publish to: the wildcards `+` and `#` are only for subscribing",
                c.topic
            ),
        );
    }
    let client_id = match &c.client_id {
        Some(t) => Some(validate_client_id(cx, p, t)?),
        None => None,
    };
    let credentials = validate_credentials(cx, p, c.username.as_ref(), c.password.as_ref());
    validate_keep_alive(cx, p, c.keep_alive.0);
    if c.timeout.0.is_zero() {
        cx.err_entry(format!("{p}.timeout"), "must be more than 0s");
    }
    Some(MqttSettings {
        id: id.to_owned(),
        host,
        port,
        topic: c.topic.clone(),
        retain: c.retain,
        client_id,
        credentials,
        keep_alive: c.keep_alive.0,
        timeout: c.timeout.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_have_no_wildcards() {
        assert!(is_topic_name("site/1/turnstile"));
        assert!(is_topic_name("/leading/slash"));
        assert!(!is_topic_name(""));
        assert!(!is_topic_name("site/+/x"));
        assert!(!is_topic_name("site/#"));
    }

    #[test]
    fn topic_filters_place_wildcards_on_whole_levels() {
        assert!(is_topic_filter("site/+/turnstile/+/access"));
        assert!(is_topic_filter("site/#"));
        assert!(is_topic_filter("#"));
        assert!(is_topic_filter("+"));
        assert!(!is_topic_filter(""));
        assert!(!is_topic_filter("site/#/x"));
        assert!(!is_topic_filter("site/a+/x"));
        assert!(!is_topic_filter("site/a#"));
    }

    #[test]
    fn broker_addresses_default_the_port() {
        assert_eq!(
            broker_address("mqtt://broker.example:8883"),
            Some(("broker.example".to_owned(), 8883))
        );
        assert_eq!(
            broker_address("127.0.0.1"),
            Some(("127.0.0.1".to_owned(), 1883))
        );
        assert_eq!(broker_address("tcp://h"), Some(("h".to_owned(), 1883)));
        assert_eq!(broker_address("mqtts://h:8883"), None);
        assert_eq!(broker_address("http://h"), None);
        assert_eq!(broker_address("mqtt://h/path"), None);
    }
}
