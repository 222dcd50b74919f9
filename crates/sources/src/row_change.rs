//! Row changes to events, shared by the change-data-capture sources: type `<table>.<op>`,
//! subject the primary key, key `<schema or database>.<table>:<key>`, and `data` in the
//! Estafeta shape (`{before, after, op, source}`) or Debezium's JSON value shape
//! (`{before, after, source, op: c|u|d|r|t, ts_ms, transaction}`). Each source supplies its
//! rows already as JSON and its own `source` blocks (PostgreSQL: LSN and txid; MySQL: binlog
//! file, position, GTID, server id).

use chrono::{DateTime, Utc};
use estafeta_config::postgres_source::Envelope;
use estafeta_core::{Event, EventId, TenantId};
use serde_json::{Map, Number, Value, json};

/// The kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
    Read,
}

impl Op {
    /// The name in event types and in the Estafeta envelope.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Read => "read",
        }
    }

    /// Debezium's one-letter code.
    pub(crate) fn debezium(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
            Op::Read => "r",
        }
    }
}

/// What every event of one source shares.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) source_id: String,
    /// CloudEvents `source`, e.g. `/estafeta/mysql/<id>`.
    pub(crate) ce_source: String,
    pub(crate) envelope: Envelope,
}

/// One change of one row, ready to become an event.
#[derive(Debug)]
pub(crate) struct Change<'a> {
    /// `schema.table` (PostgreSQL) or `database.table` (MySQL): the key's prefix.
    pub(crate) qualified: &'a str,
    /// The table's own name: the event type's prefix.
    pub(crate) table: &'a str,
    pub(crate) op: Op,
    pub(crate) before: Option<Value>,
    pub(crate) after: Option<Value>,
    /// The primary key's columns, in key order (empty: no key, no subject).
    pub(crate) key_columns: &'a [&'a str],
    /// Fields added to the Estafeta envelope after `source` (e.g. `unchanged_toast`).
    pub(crate) extra: Map<String, Value>,
    /// The CloudEvents id: stable across re-reads, so a change read twice is stored once.
    pub(crate) ce_id: String,
    /// When the change was committed (or made), if known.
    pub(crate) time: Option<DateTime<Utc>>,
}

impl Shape {
    /// The event for a change, with the source's own `source` block for each envelope.
    pub(crate) fn event(&self, change: Change<'_>, source: Value, debezium_source: Value) -> Event {
        let subject = change
            .after
            .as_ref()
            .or(change.before.as_ref())
            .and_then(|row| key_text(change.key_columns, row));
        let data = match self.envelope {
            Envelope::Estafeta => {
                let mut d = Map::new();
                d.insert("before".into(), change.before.unwrap_or(Value::Null));
                d.insert("after".into(), change.after.unwrap_or(Value::Null));
                d.insert("op".into(), Value::from(change.op.name()));
                d.insert("source".into(), source);
                d.extend(change.extra);
                Value::Object(d)
            }
            Envelope::Debezium => json!({
                "before": change.before,
                "after": change.after,
                "source": debezium_source,
                "op": change.op.debezium(),
                "ts_ms": Utc::now().timestamp_millis(),
                "transaction": null,
            }),
        };
        let now = Utc::now();
        let key = Some(match &subject {
            Some(s) => format!("{}:{s}", change.qualified),
            None => change.qualified.to_owned(),
        });
        Event {
            id: EventId::new(),
            tenant: TenantId::default(),
            source_id: self.source_id.clone(),
            ce_id: change.ce_id,
            ce_source: self.ce_source.clone(),
            ty: format!("{}.{}", change.table, change.op.name()),
            subject,
            time: change.time.unwrap_or(now),
            datacontenttype: Some("application/json".to_owned()),
            dataschema: None,
            key,
            extensions: Map::new(),
            data: Some(data),
            data_is_base64: false,
            received_at: now,
        }
    }
}

/// The primary key as text: the value itself for a one-column key, `a=1,b=2` otherwise.
pub(crate) fn key_text(keys: &[&str], row: &Value) -> Option<String> {
    let row = row.as_object()?;
    let render = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match keys {
        [] => None,
        [one] => row.get(*one).map(render),
        many => {
            let parts: Option<Vec<String>> = many
                .iter()
                .map(|c| row.get(*c).map(|v| format!("{c}={}", render(v))))
                .collect();
            parts.map(|p| p.join(","))
        }
    }
}

/// A JSON number only when it holds every digit of the decimal text `s` (integers within
/// 64 bits, decimals that round-trip through `f64`); `None` otherwise.
pub(crate) fn exact_number(s: &str) -> Option<Value> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(Value::Number(n.into()));
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(Value::Number(n.into()));
    }
    let f: f64 = s.parse().ok()?;
    let n = Number::from_f64(f)?;
    let canonical = |t: &str| -> String {
        let t = t.trim_start_matches('+');
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            t.to_owned()
        }
    };
    (canonical(&n.to_string()) == canonical(s)).then_some(Value::Number(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(envelope: Envelope) -> Shape {
        Shape {
            source_id: "db".into(),
            ce_source: "/estafeta/test/db".into(),
            envelope,
        }
    }

    fn change(op: Op, before: Option<Value>, after: Option<Value>) -> Change<'static> {
        Change {
            qualified: "shop.orders",
            table: "orders",
            op,
            before,
            after,
            key_columns: &["id"],
            extra: Map::new(),
            ce_id: "f:4:0:0".into(),
            time: None,
        }
    }

    #[test]
    fn estafeta_envelope_carries_key_type_and_source() {
        let e = shape(Envelope::Estafeta).event(
            change(Op::Insert, None, Some(json!({"id": 5, "n": "a"}))),
            json!({"connector": "test"}),
            Value::Null,
        );
        assert_eq!(e.ty, "orders.insert");
        assert_eq!(e.subject.as_deref(), Some("5"));
        assert_eq!(e.key.as_deref(), Some("shop.orders:5"));
        assert_eq!(e.ce_source, "/estafeta/test/db");
        let d = e.data.unwrap();
        assert_eq!(d["op"], json!("insert"));
        assert_eq!(d["before"], Value::Null);
        assert_eq!(d["source"]["connector"], json!("test"));
    }

    #[test]
    fn debezium_envelope_and_delete_subject() {
        let e = shape(Envelope::Debezium).event(
            change(Op::Delete, Some(json!({"id": "x"})), None),
            Value::Null,
            json!({"connector": "mysql"}),
        );
        assert_eq!(e.subject.as_deref(), Some("x"));
        let d = e.data.unwrap();
        assert_eq!(d["op"], json!("d"));
        assert_eq!(d["after"], Value::Null);
        assert_eq!(d["source"]["connector"], json!("mysql"));
        assert!(d["ts_ms"].as_i64().is_some());
    }

    #[test]
    fn composite_and_missing_keys() {
        let row = json!({"a": 1, "b": "x"});
        assert_eq!(key_text(&["a", "b"], &row).as_deref(), Some("a=1,b=x"));
        assert_eq!(key_text(&[], &row), None);
        assert_eq!(key_text(&["c"], &row), None);
    }

    #[test]
    fn exact_numbers_only() {
        assert_eq!(exact_number("42"), Some(json!(42)));
        assert_eq!(exact_number("18446744073709551615"), Some(json!(u64::MAX)));
        assert_eq!(exact_number("12.50"), Some(json!(12.5)));
        assert_eq!(exact_number("12345678901234567890.123456789"), None);
    }
}
