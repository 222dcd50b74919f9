//! The decoder: one broker message in, one event out — decoded as the source's `decode:`
//! block says, or the failed record naming why it could not be.

use base64::Engine as _;
use chrono::Utc;
use estafeta_config::broker_source::{DecodeSettings, Format};
use estafeta_core::{Event, EventId, TenantId};
use serde_json::{Map, Value};

use super::Message;
use super::cloudevents::{self, content_type, is_json_media};
use super::debezium;
use super::undecodable;
use crate::status::StatusBoard;

/// Turns one source's messages into events.
pub(crate) struct Decoder {
    source_id: String,
    ce_source: String,
    settings: DecodeSettings,
    board: StatusBoard,
}

impl Decoder {
    /// A decoder for source `source_id` of `kind` (`kafka`, `nats`, …), whose events carry
    /// the CloudEvents source `/estafeta/<kind>/<id>` unless they bring their own.
    pub(crate) fn new(
        source_id: &str,
        kind: &'static str,
        settings: &DecodeSettings,
        board: StatusBoard,
    ) -> Self {
        Self {
            source_id: source_id.to_owned(),
            ce_source: format!("/estafeta/{kind}/{source_id}"),
            settings: settings.clone(),
            board,
        }
    }

    /// The event for `msg`: decoded, or the failed record with the reason when it cannot be
    /// (counted on the status board and in `estafeta_source_undecodable_total`). `None` only
    /// for a Debezium tombstone (an empty value with `format: debezium`), which carries
    /// nothing to store and may be acknowledged.
    pub(crate) fn decode(&self, msg: &Message<'_>) -> Option<Event> {
        match self.try_decode(msg) {
            Ok(Some(mut event)) => {
                if event.key.is_none() {
                    event.key = msg.key.map(key_text);
                }
                Some(event)
            }
            Ok(None) => None,
            Err(reason) => {
                tracing::warn!(source_id = %self.source_id, channel = %msg.channel, position = %msg.position, reason = %reason, "message could not be decoded; stored as a failed record");
                ::metrics::counter!(estafeta_core::metric_names::SOURCE_UNDECODABLE, "source" => self.source_id.clone()).increment(1);
                self.board.update(&self.source_id, |s| s.undecodable += 1);
                Some(undecodable::event(
                    msg,
                    &reason,
                    &self.source_id,
                    &self.ce_source,
                    self.ce_id(msg),
                ))
            }
        }
    }

    fn ce_id(&self, msg: &Message<'_>) -> String {
        msg.stable_id
            .clone()
            .unwrap_or_else(|| EventId::new().to_string())
    }

    fn try_decode(&self, msg: &Message<'_>) -> Result<Option<Event>, String> {
        let now = Utc::now();
        match self.settings.format {
            Format::Raw => Ok(Some(self.raw(msg))),
            Format::Cloudevents => {
                if cloudevents::is_binary(msg) {
                    return cloudevents::binary(msg, &self.source_id, now).map(Some);
                }
                let value = parse_json(msg)?;
                if value.get("specversion").is_none() {
                    return Err("not a CloudEvent: no `specversion` header and no `specversion` in the JSON (decode.format is `cloudevents`)".to_owned());
                }
                cloudevents::structured(value, &self.source_id, now).map(Some)
            }
            Format::Debezium => {
                if msg.payload.is_empty() {
                    return Ok(None);
                }
                let value = parse_json(msg)?;
                let change = debezium::unwrap(&value).ok_or(
                    "not a Debezium change event: no `op`, `source` and `before`/`after` (decode.format is `debezium`)",
                )?;
                debezium::event(change, self.origin(msg)).map(Some)
            }
            Format::Json => {
                let value = parse_json(msg)?;
                Ok(Some(self.plain(msg, value)))
            }
            Format::Auto => {
                if cloudevents::is_binary(msg) {
                    return cloudevents::binary(msg, &self.source_id, now).map(Some);
                }
                let value = parse_json(msg)?;
                if value.get("specversion").is_some() {
                    return cloudevents::structured(value, &self.source_id, now).map(Some);
                }
                if let Some(change) = debezium::unwrap(&value) {
                    return debezium::event(change, self.origin(msg)).map(Some);
                }
                Ok(Some(self.plain(msg, value)))
            }
        }
    }

    fn origin<'a>(&'a self, msg: &Message<'a>) -> debezium::Origin<'a> {
        debezium::Origin {
            source_id: &self.source_id,
            ce_source: &self.ce_source,
            key: msg.key,
            ce_id: self.ce_id(msg),
            envelope: self.settings.envelope,
        }
    }

    /// An event around `data` with the attributes the source supplies.
    fn wrap(&self, msg: &Message<'_>, data: Value, ct: &str, base64: bool) -> Event {
        let now = Utc::now();
        Event {
            id: EventId::new(),
            tenant: TenantId::default(),
            source_id: self.source_id.clone(),
            ce_id: self.ce_id(msg),
            ce_source: self.ce_source.clone(),
            ty: self
                .settings
                .event_type
                .clone()
                .unwrap_or_else(|| msg.channel.to_owned()),
            subject: None,
            time: msg.timestamp.unwrap_or(now).min(now),
            datacontenttype: Some(ct.to_owned()),
            dataschema: None,
            key: None,
            extensions: Map::new(),
            data: Some(data),
            data_is_base64: base64,
            received_at: now,
        }
    }

    fn plain(&self, msg: &Message<'_>, value: Value) -> Event {
        self.wrap(msg, value, "application/json", false)
    }

    fn raw(&self, msg: &Message<'_>) -> Event {
        let ct = content_type(msg)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned);
        if let Ok(text) = std::str::from_utf8(msg.payload) {
            if ct.as_deref().is_some_and(is_json_media)
                && let Ok(value) = serde_json::from_slice(msg.payload)
            {
                return self.plain(msg, value);
            }
            let ct = ct.unwrap_or_else(|| "text/plain; charset=utf-8".to_owned());
            return self.wrap(msg, Value::from(text), &ct, false);
        }
        let ct = ct.unwrap_or_else(|| "application/octet-stream".to_owned());
        let b64 = base64::engine::general_purpose::STANDARD.encode(msg.payload);
        self.wrap(msg, Value::from(b64), &ct, true)
    }
}

/// The payload as JSON, or the reason it is not.
fn parse_json(msg: &Message<'_>) -> Result<Value, String> {
    if msg.payload.is_empty() {
        return Err("an empty message (no JSON to read)".to_owned());
    }
    serde_json::from_slice(msg.payload).map_err(|e| format!("not valid JSON: {e}"))
}

/// A message key as text (base64 when it is not UTF-8).
fn key_text(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) => text.to_owned(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(key),
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
