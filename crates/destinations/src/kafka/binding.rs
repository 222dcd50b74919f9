//! The CloudEvents Kafka protocol binding: how one delivery becomes a Kafka message's value
//! and headers, in structured or binary mode. Pure: no client, testable alone.

use base64::Engine as _;
use bytes::Bytes;
use chrono::SecondsFormat;
use estafeta_core::OutboundMessage;
use serde_json::Value;

/// The media type of a structured CloudEvent body.
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// A message's value and headers, ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The value; `None` for an event without data in binary mode.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Structured mode: the delivery's body (the CloudEvent as JSON, or the route's rendered
/// template) with its `content-type`.
#[must_use]
pub fn structured(msg: &OutboundMessage) -> Layout {
    let mut headers = vec![(
        "content-type".to_owned(),
        msg.content_type.as_bytes().to_vec(),
    )];
    headers.push(delivery_header(msg));
    Layout {
        value: Some(msg.body.clone()),
        headers,
    }
}

/// Binary mode: the event's data in the value (or the route's rendered template when the
/// route has one), the CloudEvents attributes as `ce_` headers.
///
/// # Errors
/// Base64 data that does not decode.
pub fn binary(msg: &OutboundMessage) -> Result<Layout, String> {
    let e = &msg.event;
    let mut headers: Vec<(String, Vec<u8>)> = Vec::with_capacity(10 + e.extensions.len());
    let mut put =
        |name: &str, value: &str| headers.push((name.to_owned(), value.as_bytes().to_vec()));
    put("ce_specversion", "1.0");
    put("ce_id", &e.ce_id);
    put("ce_source", &e.ce_source);
    put("ce_type", &e.ty);
    put(
        "ce_time",
        &e.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    );
    if let Some(s) = &e.subject {
        put("ce_subject", s);
    }
    if let Some(s) = &e.dataschema {
        put("ce_dataschema", s);
    }
    if let Some(k) = &e.key {
        put("ce_partitionkey", k);
    }
    for (name, value) in &e.extensions {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        put(&format!("ce_{}", name.to_ascii_lowercase()), &text);
    }
    let (value, content_type) = if msg.content_type == CLOUDEVENTS_JSON {
        data_value(e)?
    } else {
        (Some(msg.body.clone()), Some(msg.content_type.to_owned()))
    };
    if let Some(ct) = content_type {
        put("content-type", &ct);
    }
    headers.push(delivery_header(msg));
    Ok(Layout { value, headers })
}

/// The event's data as bytes, with its media type.
fn data_value(e: &estafeta_core::Event) -> Result<(Option<Bytes>, Option<String>), String> {
    let Some(data) = &e.data else {
        return Ok((None, e.datacontenttype.clone()));
    };
    let declared = e.datacontenttype.clone();
    if e.data_is_base64 {
        let text = data.as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|err| format!("the event's data_base64 does not decode: {err}"))?;
        return Ok((
            Some(Bytes::from(bytes)),
            declared.or_else(|| Some("application/octet-stream".to_owned())),
        ));
    }
    let is_json = declared.as_deref().is_none_or(|ct| ct.contains("json"));
    match data {
        Value::String(s) if !is_json => Ok((Some(Bytes::from(s.clone())), declared)),
        other => Ok((
            Some(Bytes::from(other.to_string())),
            declared.or_else(|| Some("application/json".to_owned())),
        )),
    }
}

fn delivery_header(msg: &OutboundMessage) -> (String, Vec<u8>) {
    (
        "X-Estafeta-Delivery".to_owned(),
        msg.delivery_id.to_string().into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use estafeta_core::{DeliveryId, Event, EventId, TenantId};
    use serde_json::json;

    use super::*;

    fn event(data: Option<Value>, ct: Option<&str>) -> Event {
        let mut extensions = serde_json::Map::new();
        extensions.insert("traceparent".into(), json!("00-abc-01"));
        extensions.insert("priority".into(), json!(3));
        Event {
            id: EventId::new(),
            tenant: TenantId::default(),
            source_id: "http".into(),
            ce_id: "o-1".into(),
            ce_source: "/shop".into(),
            ty: "order.created".into(),
            subject: Some("orders/1".into()),
            time: Utc::now(),
            datacontenttype: ct.map(str::to_owned),
            dataschema: None,
            key: Some("customer-7".into()),
            extensions,
            data,
            data_is_base64: false,
            received_at: Utc::now(),
        }
    }

    fn msg(e: Event, body: &str, ct: &'static str) -> OutboundMessage {
        OutboundMessage {
            delivery_id: DeliveryId::new(),
            event: Arc::new(e),
            body: Bytes::from(body.to_owned()),
            content_type: ct,
            attempt: 1,
        }
    }

    fn header<'a>(l: &'a Layout, name: &str) -> Option<&'a str> {
        l.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    #[test]
    fn binary_mode_puts_data_in_the_value_and_attributes_in_ce_headers() {
        let m = msg(
            event(Some(json!({"total": 5})), None),
            "{}",
            CLOUDEVENTS_JSON,
        );
        let l = binary(&m).unwrap();
        assert_eq!(l.value.as_deref(), Some(&b"{\"total\":5}"[..]));
        assert_eq!(header(&l, "ce_specversion"), Some("1.0"));
        assert_eq!(header(&l, "ce_id"), Some("o-1"));
        assert_eq!(header(&l, "ce_type"), Some("order.created"));
        assert_eq!(header(&l, "ce_source"), Some("/shop"));
        assert_eq!(header(&l, "ce_subject"), Some("orders/1"));
        assert_eq!(header(&l, "ce_traceparent"), Some("00-abc-01"));
        assert_eq!(header(&l, "ce_priority"), Some("3"));
        assert_eq!(header(&l, "content-type"), Some("application/json"));
        assert!(header(&l, "X-Estafeta-Delivery").is_some());
    }

    #[test]
    fn binary_mode_keeps_text_and_base64_data_as_bytes() {
        let m = msg(
            event(Some(json!("hello")), Some("text/plain")),
            "",
            CLOUDEVENTS_JSON,
        );
        assert_eq!(binary(&m).unwrap().value.as_deref(), Some(&b"hello"[..]));
        let mut e = event(Some(json!("AAEC")), None);
        e.data_is_base64 = true;
        let l = binary(&msg(e, "", CLOUDEVENTS_JSON)).unwrap();
        assert_eq!(l.value.as_deref(), Some(&[0u8, 1, 2][..]));
        assert_eq!(header(&l, "content-type"), Some("application/octet-stream"));
    }

    #[test]
    fn binary_mode_sends_a_rendered_template_as_the_value() {
        let m = msg(
            event(Some(json!({})), None),
            "order 1 paid",
            "text/plain; charset=utf-8",
        );
        let l = binary(&m).unwrap();
        assert_eq!(l.value.as_deref(), Some(&b"order 1 paid"[..]));
        assert_eq!(
            header(&l, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(header(&l, "ce_type"), Some("order.created"));
    }

    #[test]
    fn structured_mode_sends_the_body_with_its_content_type() {
        let m = msg(
            event(None, None),
            "{\"specversion\":\"1.0\"}",
            CLOUDEVENTS_JSON,
        );
        let l = structured(&m);
        assert_eq!(l.value.as_deref(), Some(&b"{\"specversion\":\"1.0\"}"[..]));
        assert_eq!(header(&l, "content-type"), Some(CLOUDEVENTS_JSON));
        assert!(header(&l, "ce_id").is_none());
    }
}
