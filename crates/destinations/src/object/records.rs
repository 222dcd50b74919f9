//! What a delivery contributes to an object: its records.
//!
//! Without a route template the record is the event's `data` (the JSON payload as the
//! producer sent it; `null` when the event has none). With a template the record is the
//! rendered text parsed as JSON, so a route can pick and rename fields:
//! `template: '{"id": "{{ data.id }}", "total": {{ data.amount }}}'`. A record that is a
//! JSON array becomes one record per element (unless `split_arrays: false`), so an event
//! carrying a page of rows writes those rows.

use estafeta_core::OutboundMessage;
use serde_json::Value;

/// The lane's media type for a message rendered without a template (the CloudEvent).
const UNTEMPLATED: &str = "application/cloudevents+json";

/// A delivery whose record cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The route template's output does not parse as JSON.
    #[error(
        "delivery `{delivery}`: the route template must render one JSON value (a record), e.g. `{{\"id\": \"{{{{ data.id }}}}\"}}`; its output does not parse as JSON"
    )]
    NotJson {
        /// The delivery's id.
        delivery: String,
        /// The parser's reason.
        #[source]
        source: serde_json::Error,
    },
}

/// The records of `msgs`, in order. Messages whose event has no data contribute `null`.
pub(crate) fn collect(
    msgs: &[&OutboundMessage],
    split_arrays: bool,
) -> Result<Vec<Value>, RecordError> {
    let mut out = Vec::with_capacity(msgs.len());
    for msg in msgs {
        let record = if msg.content_type == UNTEMPLATED {
            msg.event.data.clone().unwrap_or(Value::Null)
        } else {
            serde_json::from_slice(&msg.body).map_err(|source| RecordError::NotJson {
                delivery: msg.delivery_id.to_string(),
                source,
            })?
        };
        match record {
            Value::Array(items) if split_arrays => out.extend(items),
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use chrono::Utc;
    use estafeta_core::event::parse_cloudevent;
    use estafeta_core::{DeliveryId, TenantId};
    use serde_json::json;

    use super::*;

    fn msg(data: Value, body: Option<&'static str>) -> OutboundMessage {
        let event = parse_cloudevent(
            json!({"specversion":"1.0","id":"e-1","source":"t","type":"t","data":data}),
            &TenantId::default(),
            "http",
            Utc::now(),
        )
        .unwrap();
        OutboundMessage {
            delivery_id: DeliveryId::new(),
            event: Arc::new(event),
            body: Bytes::from_static(body.unwrap_or("{\"ignored\":true}").as_bytes()),
            content_type: if body.is_some() {
                "application/json"
            } else {
                UNTEMPLATED
            },
            attempt: 1,
        }
    }

    #[test]
    fn data_by_default_template_output_when_templated() {
        let a = msg(json!({"id": 1}), None);
        let b = msg(json!({"id": 2}), Some(r#"{"renamed": 2}"#));
        let r = collect(&[&a, &b], true).unwrap();
        assert_eq!(r, vec![json!({"id": 1}), json!({"renamed": 2})]);
    }

    #[test]
    fn arrays_split_unless_told_not_to() {
        let a = msg(json!([{"id": 1}, {"id": 2}]), None);
        assert_eq!(collect(&[&a], true).unwrap().len(), 2);
        assert_eq!(collect(&[&a], false).unwrap().len(), 1);
    }

    #[test]
    fn template_output_that_is_not_json_names_the_delivery() {
        let a = msg(json!({}), Some("Order 7 shipped"));
        let err = collect(&[&a], true).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&a.delivery_id.to_string()), "{text}");
        assert!(text.contains("JSON"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
    }
}
