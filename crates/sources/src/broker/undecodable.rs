//! The failed record for a message that could not be decoded: an event of type
//! `estafeta.message.undecodable` whose data names the reason, where the message came from
//! and carries its bytes (up to 256 KiB), so nothing is skipped in silence and the message
//! can be inspected, routed to an alert, or fixed and sent again.

use base64::Engine as _;
use estafeta_core::{Event, EventId, TenantId};
use serde_json::{Map, Value};

use super::{Message, UNDECODABLE_TYPE};

/// Most payload bytes kept in a failed record.
const MAX_KEPT: usize = 256 * 1024;

/// Text when the bytes are UTF-8, base64 otherwise: `(field suffix, value)`.
fn bytes_value(bytes: &[u8]) -> (&'static str, Value) {
    match std::str::from_utf8(bytes) {
        Ok(text) => ("", Value::from(text)),
        Err(_) => (
            "_base64",
            Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// The failed record for `msg`.
pub(super) fn event(
    msg: &Message<'_>,
    reason: &str,
    source_id: &str,
    ce_source: &str,
    ce_id: String,
) -> Event {
    let mut data = Map::new();
    data.insert("reason".into(), Value::from(reason));
    data.insert("channel".into(), Value::from(msg.channel));
    data.insert("position".into(), Value::from(msg.position.as_str()));
    if let Some(key) = msg.key {
        let (suffix, v) = bytes_value(key);
        data.insert(format!("key{suffix}"), v);
    }
    if !msg.headers.is_empty() {
        let headers: Map<String, Value> = msg
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    (*name).to_owned(),
                    Value::from(String::from_utf8_lossy(value).into_owned()),
                )
            })
            .collect();
        data.insert("headers".into(), Value::Object(headers));
    }
    data.insert("size".into(), Value::from(msg.payload.len()));
    let kept = &msg.payload[..msg.payload.len().min(MAX_KEPT)];
    // A cut may split a UTF-8 character: then the kept bytes go as base64.
    let (suffix, v) = bytes_value(kept);
    data.insert(format!("payload{suffix}"), v);
    if kept.len() < msg.payload.len() {
        data.insert("truncated".into(), Value::Bool(true));
    }
    let now = chrono::Utc::now();
    Event {
        id: EventId::new(),
        tenant: TenantId::default(),
        source_id: source_id.to_owned(),
        ce_id,
        ce_source: ce_source.to_owned(),
        ty: UNDECODABLE_TYPE.to_owned(),
        subject: Some(msg.channel.to_owned()),
        time: msg.timestamp.unwrap_or(now).min(now),
        datacontenttype: Some("application/json".to_owned()),
        dataschema: None,
        key: None,
        extensions: Map::new(),
        data: Some(Value::Object(data)),
        data_is_base64: false,
        received_at: now,
    }
}
