//! CloudEvents carried by a broker message: binary mode (attributes in headers, the data in
//! the payload) and structured mode (the whole event as JSON in the payload). Header
//! prefixes of the protocol bindings are all accepted: `ce_` (Kafka), `ce-` (HTTP style,
//! common on NATS), `cloudEvents:` and `cloudEvents_` (AMQP).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use estafeta_core::event::parse_cloudevent;
use estafeta_core::{Event, TenantId};
use serde_json::{Map, Value};

use super::Message;

const PREFIXES: &[&str] = &["ce_", "ce-", "cloudevents:", "cloudevents_"];

/// The CloudEvents attribute a header carries, if it is one (`ce_type` → `type`).
fn attribute(header: &str) -> Option<String> {
    let lower = header.to_ascii_lowercase();
    PREFIXES
        .iter()
        .find_map(|p| lower.strip_prefix(p).map(str::to_owned))
        .filter(|a| !a.is_empty())
}

/// Whether the message is a binary-mode CloudEvent (it has a `specversion` header).
pub(super) fn is_binary(msg: &Message<'_>) -> bool {
    msg.headers
        .iter()
        .any(|(name, _)| attribute(name).as_deref() == Some("specversion"))
}

/// The message's `content-type` header, if any.
pub(super) fn content_type<'a>(msg: &Message<'a>) -> Option<&'a [u8]> {
    msg.headers
        .iter()
        .find(|(name, _)| {
            name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("content_type")
        })
        .map(|(_, v)| *v)
}

/// True for `application/json`, `text/json` and `…+json` media types (parameters ignored).
pub(super) fn is_json_media(ct: &str) -> bool {
    let base = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    base == "application/json" || base == "text/json" || base.ends_with("+json")
}

/// A binary-mode CloudEvent: attributes from the headers, data from the payload (JSON when
/// the content type says so or is absent, text or base64 otherwise).
pub(super) fn binary(
    msg: &Message<'_>,
    source_id: &str,
    now: DateTime<Utc>,
) -> Result<Event, String> {
    let mut obj = Map::new();
    for (name, value) in &msg.headers {
        let Some(attr) = attribute(name) else {
            continue;
        };
        let text = std::str::from_utf8(value)
            .map_err(|_| format!("CloudEvents header `{name}` is not UTF-8 text"))?;
        obj.insert(attr, Value::from(text));
    }
    let ct = match content_type(msg) {
        Some(v) => Some(
            std::str::from_utf8(v)
                .map_err(|_| "the `content-type` header is not UTF-8 text".to_owned())?
                .to_owned(),
        ),
        None => obj
            .get("datacontenttype")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    if let Some(ct) = &ct {
        obj.insert("datacontenttype".into(), Value::from(ct.as_str()));
    }
    if !msg.payload.is_empty() {
        let json = ct.as_deref().is_none_or(is_json_media);
        if json {
            let data: Value = serde_json::from_slice(msg.payload).map_err(|e| {
                format!("the data of a binary-mode CloudEvent is not valid JSON: {e}")
            })?;
            obj.insert("data".into(), data);
        } else if let Ok(text) = std::str::from_utf8(msg.payload) {
            obj.insert("data".into(), Value::from(text));
        } else {
            obj.insert(
                "data_base64".into(),
                Value::from(base64::engine::general_purpose::STANDARD.encode(msg.payload)),
            );
        }
    }
    parse_cloudevent(Value::Object(obj), &TenantId::default(), source_id, now)
        .map_err(|e| format!("not a valid binary-mode CloudEvent: {e}"))
}

/// A structured-mode CloudEvent already parsed as JSON.
pub(super) fn structured(
    value: Value,
    source_id: &str,
    now: DateTime<Utc>,
) -> Result<Event, String> {
    parse_cloudevent(value, &TenantId::default(), source_id, now)
        .map_err(|e| format!("not a valid structured-mode CloudEvent: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(headers: Vec<(&'a str, &'a [u8])>, payload: &'a [u8]) -> Message<'a> {
        Message {
            payload,
            headers,
            key: None,
            channel: "orders",
            position: "orders[0]@1".into(),
            stable_id: None,
            timestamp: None,
        }
    }

    #[test]
    fn binary_mode_reads_every_binding_prefix() {
        for prefix in ["ce_", "ce-", "cloudEvents:", "cloudEvents_"] {
            let names: Vec<String> = ["specversion", "id", "source", "type", "subject"]
                .iter()
                .map(|a| format!("{prefix}{a}"))
                .collect();
            let values: [&[u8]; 5] = [b"1.0", b"e1", b"/shop", b"order.created", b"o-9"];
            let headers = names
                .iter()
                .map(String::as_str)
                .zip(values)
                .chain([("content-type", b"application/json".as_slice())])
                .collect();
            let m = msg(headers, br#"{"total": 10}"#);
            assert!(is_binary(&m), "{prefix}");
            let e = binary(&m, "k", Utc::now()).unwrap();
            assert_eq!(e.ce_id, "e1");
            assert_eq!(e.ty, "order.created");
            assert_eq!(e.subject.as_deref(), Some("o-9"));
            assert_eq!(e.data, Some(serde_json::json!({"total": 10})));
            assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        }
    }

    #[test]
    fn binary_mode_keeps_text_and_bytes() {
        let base: Vec<(&str, &[u8])> = vec![
            ("ce_specversion", b"1.0"),
            ("ce_id", b"1"),
            ("ce_source", b"/s"),
            ("ce_type", b"t"),
        ];
        let mut h = base.clone();
        h.push(("content-type", b"text/plain"));
        let e = binary(&msg(h, b"hello"), "k", Utc::now()).unwrap();
        assert_eq!(e.data, Some(Value::from("hello")));
        let mut h = base;
        h.push(("content-type", b"application/octet-stream"));
        let e = binary(&msg(h, &[0xff, 0x00]), "k", Utc::now()).unwrap();
        assert!(e.data_is_base64);
    }

    #[test]
    fn binary_mode_errors_name_the_attribute() {
        let h: Vec<(&str, &[u8])> = vec![("ce_specversion", b"1.0"), ("ce_id", b"1")];
        let err = binary(&msg(h, b"{}"), "k", Utc::now()).unwrap_err();
        assert!(err.contains("source"), "{err}");
        let h: Vec<(&str, &[u8])> = vec![
            ("ce_specversion", b"1.0"),
            ("ce_id", b"1"),
            ("ce_source", b"/s"),
            ("ce_type", b"t"),
        ];
        let err = binary(&msg(h, b"{oops"), "k", Utc::now()).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
    }
}
