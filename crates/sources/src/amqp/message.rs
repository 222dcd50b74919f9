//! The broker-neutral view of an AMQP delivery for the shared decoder: payload, headers
//! (with the `content_type` property as `content-type`), routing key, position, the
//! `message_id` as the stable id, and the `timestamp` property.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::types::AMQPValue;

use crate::broker::Message;

/// A delivery's headers as bytes: strings as they are, numbers and booleans as text; tables
/// and arrays are left out.
pub(super) fn headers(d: &Delivery) -> Vec<(&str, Cow<'_, [u8]>)> {
    let mut out = Vec::new();
    if let Some(table) = d.properties.headers() {
        for (name, value) in table {
            let bytes: Cow<'_, [u8]> = match value {
                AMQPValue::LongString(s) => Cow::Borrowed(s.as_bytes()),
                AMQPValue::ShortString(s) => Cow::Borrowed(s.as_str().as_bytes()),
                AMQPValue::ByteArray(b) => Cow::Borrowed(b.as_slice()),
                AMQPValue::Boolean(b) => Cow::Owned(b.to_string().into_bytes()),
                AMQPValue::ShortShortInt(n) => Cow::Owned(n.to_string().into_bytes()),
                AMQPValue::ShortShortUInt(n) => Cow::Owned(n.to_string().into_bytes()),
                AMQPValue::ShortInt(n) => Cow::Owned(n.to_string().into_bytes()),
                AMQPValue::ShortUInt(n) => Cow::Owned(n.to_string().into_bytes()),
                AMQPValue::LongInt(n) => Cow::Owned(n.to_string().into_bytes()),
                AMQPValue::LongUInt(n) => Cow::Owned(n.to_string().into_bytes()),
                AMQPValue::LongLongInt(n) => Cow::Owned(n.to_string().into_bytes()),
                AMQPValue::Timestamp(n) => Cow::Owned(n.to_string().into_bytes()),
                _ => continue,
            };
            out.push((name.as_str(), bytes));
        }
    }
    let has_content_type = out.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-type") || n.eq_ignore_ascii_case("content_type")
    });
    if let (Some(ct), false) = (d.properties.content_type(), has_content_type) {
        out.push(("content-type", Cow::Borrowed(ct.as_str().as_bytes())));
    }
    out
}

/// The message the decoder sees; `headers` come from [`headers`] of the same delivery.
pub(super) fn view<'a>(
    d: &'a Delivery,
    queue: &str,
    headers: &'a [(&'a str, Cow<'a, [u8]>)],
) -> Message<'a> {
    Message {
        payload: &d.data,
        headers: headers.iter().map(|(n, v)| (*n, v.as_ref())).collect(),
        key: None,
        channel: d.routing_key.as_str(),
        position: format!("{queue}#{}", d.delivery_tag),
        stable_id: d
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str())
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        timestamp: d
            .properties
            .timestamp()
            .and_then(|t| i64::try_from(t).ok())
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0)),
    }
}
