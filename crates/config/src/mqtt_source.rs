//! `kind: mqtt` (source) — subscribing with QoS 1 to MQTT topic filters in a persistent
//! session: the file's shape, the validated settings, and the validation between them.

use std::time::Duration;

use serde::Deserialize;

use crate::broker_source::{DecodeConfig, DecodeSettings};
use crate::duration::DurationText;
use crate::mqtt_destination::{
    MqttCredentials, is_topic_filter, validate_client_id, validate_credentials,
    validate_keep_alive, validate_url,
};
use crate::text::Text;
use crate::validate::Ctx;

/// `kind: mqtt` — messages on MQTT topics become events; each is acknowledged to the broker
/// (PUBACK) only after its event is durably in the log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Broker address, `mqtt://host:1883` (`tcp://` is accepted too; the port defaults to
    /// 1883); default `mqtt://127.0.0.1:1883`.
    #[serde(default)]
    pub url: Option<Text>,
    /// Topic filters to subscribe to with QoS 1, e.g. `site/+/turnstile/+/access` or
    /// `sensors/#`.
    pub topics: Vec<String>,
    /// MQTT client id, which names the broker's persistent session: keep it fixed, and
    /// unique per Estafeta instance (the broker disconnects an older client with the same
    /// id). Default `estafeta-<source id>`.
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
    /// How message payloads become events (see the broker sources' `decode:` block).
    #[serde(default)]
    pub decode: DecodeConfig,
}

/// A validated MQTT source.
#[derive(Debug, Clone)]
pub struct MqttSourceSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic filters, subscribed with QoS 1.
    pub topics: Vec<String>,
    /// Client id (names the persistent session).
    pub client_id: String,
    /// Credentials, if any.
    pub credentials: Option<MqttCredentials>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// How payloads are decoded.
    pub decode: DecodeSettings,
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &MqttSourceConfig,
) -> Option<MqttSourceSettings> {
    let (host, port) = validate_url(cx, p, c.url.as_ref());
    if c.topics.is_empty() {
        cx.err_entry(
            format!("{p}.topics"),
            "list at least one topic filter, e.g. `sensors/#`",
        );
    }
    for (i, filter) in c.topics.iter().enumerate() {
        if !is_topic_filter(filter) {
            cx.err_entry(
                format!("{p}.topics[{i}]"),
                format!(
                    "`{filter}` is not a topic filter: `+` must be a whole level and `#` the whole last level"
                ),
            );
        }
    }
    let client_id = match &c.client_id {
        Some(t) => validate_client_id(cx, p, t)?,
        None => format!("estafeta-{id}"),
    };
    let credentials = validate_credentials(cx, p, c.username.as_ref(), c.password.as_ref());
    validate_keep_alive(cx, p, c.keep_alive.0);
    let decode = crate::broker_source::validate(cx, &format!("{p}.decode"), &c.decode);
    Some(MqttSourceSettings {
        host,
        port,
        topics: c.topics.clone(),
        client_id,
        credentials,
        keep_alive: c.keep_alive.0,
        decode,
    })
}
