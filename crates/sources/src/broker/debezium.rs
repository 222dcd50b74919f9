//! Debezium's JSON change events (with or without the `schema`/`payload` wrapper) turned into
//! the events Estafeta's own CDC sources produce: type `<table>.<op>`, subject the primary
//! key (read from the message key), key `<schema or database>.<table>:<key>`, and `data` in
//! the Estafeta envelope `{before, after, op, source}` or Debezium's value kept as it is.

use chrono::{DateTime, TimeZone as _, Utc};
use estafeta_config::broker_source::Envelope;
use estafeta_core::{Event, EventId, TenantId};
use serde_json::{Map, Value};

/// The change event's value without the `schema`/`payload` wrapper, if it has the shape of
/// one (an `op` and a `source` block, and `before` or `after`).
pub(super) fn unwrap(value: &Value) -> Option<&Map<String, Value>> {
    let obj = value.as_object()?;
    let inner = match obj.get("payload") {
        Some(Value::Object(p)) if obj.contains_key("schema") => p,
        _ => obj,
    };
    let shaped = inner.get("op").is_some_and(Value::is_string)
        && inner.get("source").is_some_and(Value::is_object)
        && (inner.contains_key("before") || inner.contains_key("after"));
    shaped.then_some(inner)
}

/// The primary key from a Debezium message key (`{"id": 1}`, or wrapped in
/// `schema`/`payload`), as the CDC sources write subjects: the value itself for one column,
/// `a=1,b=2` for several.
fn subject(key: Option<&[u8]>) -> Option<String> {
    let value: Value = serde_json::from_slice(key?).ok()?;
    let obj = match value {
        Value::Object(mut o) if o.contains_key("schema") && o.contains_key("payload") => {
            match o.remove("payload") {
                Some(Value::Object(p)) => p,
                _ => return None,
            }
        }
        Value::Object(o) => o,
        _ => return None,
    };
    let render = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match obj.len() {
        0 => None,
        1 => obj.values().next().map(render),
        _ => Some(
            obj.iter()
                .map(|(k, v)| format!("{k}={}", render(v)))
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

fn op_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "c" => "insert",
        "u" => "update",
        "d" => "delete",
        "r" => "read",
        "t" => "truncate",
        _ => return None,
    })
}

/// What the caller knows of the message besides its value.
pub(super) struct Origin<'a> {
    pub(super) source_id: &'a str,
    pub(super) ce_source: &'a str,
    pub(super) key: Option<&'a [u8]>,
    pub(super) ce_id: String,
    pub(super) envelope: Envelope,
}

/// The event for one change (`change` is the unwrapped value).
pub(super) fn event(change: &Map<String, Value>, origin: Origin<'_>) -> Result<Event, String> {
    let code = change.get("op").and_then(Value::as_str).unwrap_or_default();
    let op = op_name(code).ok_or_else(|| {
        format!("a Debezium change event with an unknown `op` `{code}` (expected c, u, d, r or t)")
    })?;
    let source = change
        .get("source")
        .and_then(Value::as_object)
        .ok_or("a Debezium change event without a `source` block")?;
    let table = source
        .get("table")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("a Debezium change event whose `source` block names no `table`")?;
    let namespace = source
        .get("schema")
        .and_then(Value::as_str)
        .or_else(|| source.get("db").and_then(Value::as_str));
    let qualified = match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}.{table}"),
        _ => table.to_owned(),
    };
    let subject = subject(origin.key);
    let now = Utc::now();
    let time = source
        .get("ts_ms")
        .or_else(|| change.get("ts_ms"))
        .and_then(Value::as_i64)
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or(now);
    let data = match origin.envelope {
        Envelope::Estafeta => {
            let mut d = Map::new();
            d.insert(
                "before".into(),
                change.get("before").cloned().unwrap_or(Value::Null),
            );
            d.insert(
                "after".into(),
                change.get("after").cloned().unwrap_or(Value::Null),
            );
            d.insert("op".into(), Value::from(op));
            d.insert("source".into(), Value::Object(source.clone()));
            Value::Object(d)
        }
        Envelope::Debezium => Value::Object(change.clone()),
    };
    let key = Some(match &subject {
        Some(s) => format!("{qualified}:{s}"),
        None => qualified,
    });
    Ok(Event {
        id: EventId::new(),
        tenant: TenantId::default(),
        source_id: origin.source_id.to_owned(),
        ce_id: origin.ce_id,
        ce_source: origin.ce_source.to_owned(),
        ty: format!("{table}.{op}"),
        subject,
        time: clamp(time, now),
        datacontenttype: Some("application/json".to_owned()),
        dataschema: None,
        key,
        extensions: Map::new(),
        data: Some(data),
        data_is_base64: false,
        received_at: now,
    })
}

/// A commit time is never later than the arrival time (clock skew between hosts).
fn clamp(time: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    time.min(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn origin(key: Option<&[u8]>, envelope: Envelope) -> Origin<'_> {
        Origin {
            source_id: "k",
            ce_source: "/estafeta/kafka/k",
            key,
            ce_id: "orders[0]@7".into(),
            envelope,
        }
    }

    fn value() -> Value {
        json!({
            "before": null,
            "after": {"id": 42, "total": "10.50"},
            "source": {"connector": "postgresql", "db": "shop", "schema": "public",
                       "table": "orders", "ts_ms": 1_700_000_000_000_i64, "lsn": 123},
            "op": "c",
            "ts_ms": 1_700_000_000_100_i64
        })
    }

    #[test]
    fn plain_and_wrapped_values_give_the_cdc_event_shape() {
        let wrapped = json!({"schema": {"type": "struct"}, "payload": value()});
        let key = br#"{"schema": {"type": "struct"}, "payload": {"id": 42}}"#;
        for v in [value(), wrapped] {
            let change = unwrap(&v).unwrap();
            let e = event(change, origin(Some(key), Envelope::Estafeta)).unwrap();
            assert_eq!(e.ty, "orders.insert");
            assert_eq!(e.subject.as_deref(), Some("42"));
            assert_eq!(e.key.as_deref(), Some("public.orders:42"));
            let d = e.data.unwrap();
            assert_eq!(d["op"], "insert");
            assert_eq!(d["after"]["total"], "10.50");
            assert_eq!(d["source"]["lsn"], 123);
            assert_eq!(e.time.timestamp_millis(), 1_700_000_000_000);
        }
    }

    #[test]
    fn debezium_envelope_keeps_the_value_and_mysql_uses_the_database() {
        let mut v = value();
        v["source"] = json!({"connector": "mysql", "db": "shop", "table": "orders"});
        v["op"] = json!("u");
        let change = unwrap(&v).unwrap();
        let e = event(
            change,
            origin(Some(br#"{"a": 1, "b": "x"}"#), Envelope::Debezium),
        )
        .unwrap();
        assert_eq!(e.ty, "orders.update");
        assert_eq!(e.subject.as_deref(), Some("a=1,b=x"));
        assert_eq!(e.key.as_deref(), Some("shop.orders:a=1,b=x"));
        assert_eq!(e.data.unwrap()["op"], "u");
    }

    #[test]
    fn other_json_is_not_a_change_event_and_bad_ops_are_named() {
        assert!(unwrap(&json!({"op": "c", "id": 1})).is_none());
        assert!(unwrap(&json!([1, 2])).is_none());
        let mut v = value();
        v["op"] = json!("x");
        let err = event(unwrap(&v).unwrap(), origin(None, Envelope::Estafeta)).unwrap_err();
        assert!(err.contains("`x`"), "{err}");
        let mut v = value();
        v["source"] = json!({"connector": "postgresql"});
        let err = event(unwrap(&v).unwrap(), origin(None, Envelope::Estafeta)).unwrap_err();
        assert!(err.contains("table"), "{err}");
    }
}
