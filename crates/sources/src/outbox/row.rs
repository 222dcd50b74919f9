//! Claimed rows and the events made from them: the stable CloudEvents id `<table>:<id>`, the
//! type (fixed or from a column), subject, key and the JSON `data` — or the reason a row
//! cannot become an event.

use std::fmt;

use chrono::Utc;
use estafeta_config::outbox_source::OutboxSourceSettings;
use estafeta_core::{Event, EventId, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A row's id as the database gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum RowId {
    /// An integer id (MySQL, SQLite).
    Int(i64),
    /// Any other id, as text (every PostgreSQL id is read as text and cast back).
    Text(String),
}

impl fmt::Display for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// What a row holds for the event's `data`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    /// The payload column is NULL.
    Null,
    /// JSON text to parse: the payload column, or the whole row rendered by the database.
    Text(Vec<u8>),
    /// The whole row, already as JSON.
    Json(Value),
}

/// One pending row read by a claim.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawRow {
    pub(crate) id: RowId,
    pub(crate) payload: Payload,
    pub(crate) ty: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) key: Option<String>,
}

/// Turns claimed rows into events for one source.
pub(crate) struct EventMaker<'a> {
    pub(crate) source_id: &'a str,
    pub(crate) settings: &'a OutboxSourceSettings,
}

impl EventMaker<'_> {
    /// The event for a row, or why the row cannot be sent (the reason names columns and
    /// positions, never the payload's content).
    pub(crate) fn event(&self, row: RawRow) -> Result<Event, String> {
        let s = self.settings;
        let data = match row.payload {
            Payload::Json(v) => v,
            Payload::Null => {
                return Err(format!(
                    "the payload column `{}` is NULL",
                    s.payload_column.as_deref().unwrap_or_default()
                ));
            }
            Payload::Text(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    return Err(format!(
                        "the payload column `{}` is not valid JSON ({e})",
                        s.payload_column.as_deref().unwrap_or("*")
                    ));
                }
            },
        };
        let ty = match row.ty.filter(|t| !t.trim().is_empty()) {
            Some(t) => t,
            None => match s.default_type() {
                Some(t) => t.to_owned(),
                None => {
                    return Err(format!(
                        "the type column `{}` is empty and no fallback `type` is configured",
                        s.type_column.as_deref().unwrap_or_default()
                    ));
                }
            },
        };
        // The id is taken after the time, as the store requires.
        let now = Utc::now();
        Ok(Event {
            id: EventId::new(),
            tenant: TenantId::default(),
            source_id: self.source_id.to_owned(),
            ce_id: format!("{}:{}", s.table_label, row.id),
            ce_source: format!("/estafeta/outbox/{}", self.source_id),
            ty,
            subject: row.subject,
            time: now,
            datacontenttype: Some("application/json".to_owned()),
            dataschema: None,
            key: row.key,
            extensions: Map::new(),
            data: Some(data),
            data_is_base64: false,
            received_at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml_extra: &str) -> OutboxSourceSettings {
        let yaml = format!(
            "sources:\n  - id: ob\n    kind: outbox\n    url: sqlite://x.db\n    table: public.outbox\n{yaml_extra}"
        );
        let c =
            estafeta_config::load_str(&yaml, "t.yaml", &estafeta_config::ProcessLookup::default())
                .unwrap();
        match &c.sources[0].kind {
            estafeta_config::SourceKindSettings::Outbox(o) => (**o).clone(),
            _ => unreachable!(),
        }
    }

    fn row(payload: Payload, ty: Option<&str>) -> RawRow {
        RawRow {
            id: RowId::Int(7),
            payload,
            ty: ty.map(str::to_owned),
            subject: Some("order-1".into()),
            key: Some("k".into()),
        }
    }

    #[test]
    fn a_row_becomes_an_event_with_a_stable_id() {
        let s = settings("    payload_column: payload\n    type: order.created\n");
        let m = EventMaker {
            source_id: "ob",
            settings: &s,
        };
        let e = m
            .event(row(Payload::Text(br#"{"total": 5}"#.to_vec()), None))
            .unwrap();
        assert_eq!(e.ce_id, "public.outbox:7");
        assert_eq!(e.ty, "order.created");
        assert_eq!(e.subject.as_deref(), Some("order-1"));
        assert_eq!(e.key.as_deref(), Some("k"));
        assert_eq!(e.data, Some(serde_json::json!({"total": 5})));
        assert_eq!(e.ce_source, "/estafeta/outbox/ob");
    }

    #[test]
    fn types_come_from_the_column_then_the_fallback_then_the_table() {
        let s = settings("    type_column: kind\n    type: fallback\n");
        let m = EventMaker {
            source_id: "ob",
            settings: &s,
        };
        let j = || Payload::Json(serde_json::json!({}));
        assert_eq!(m.event(row(j(), Some("a.b"))).unwrap().ty, "a.b");
        assert_eq!(m.event(row(j(), Some(" "))).unwrap().ty, "fallback");
        let s = settings("    type_column: kind\n");
        let m = EventMaker {
            source_id: "ob",
            settings: &s,
        };
        assert!(m.event(row(j(), None)).unwrap_err().contains("`kind`"));
        let s = settings("");
        let m = EventMaker {
            source_id: "ob",
            settings: &s,
        };
        assert_eq!(m.event(row(j(), None)).unwrap().ty, "outbox");
    }

    #[test]
    fn bad_payloads_are_reasons_without_the_content() {
        let s = settings("    payload_column: body\n");
        let m = EventMaker {
            source_id: "ob",
            settings: &s,
        };
        let err = m
            .event(row(Payload::Text(b"{secret: 1".to_vec()), None))
            .unwrap_err();
        assert!(err.contains("`body` is not valid JSON"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(
            m.event(row(Payload::Null, None))
                .unwrap_err()
                .contains("NULL")
        );
        let err = m
            .event(row(Payload::Text(vec![b'"', 0xff, b'"']), None))
            .unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn row_ids_round_trip_as_json() {
        let ids = vec![RowId::Int(1), RowId::Text("a-1".into())];
        let text = serde_json::to_string(&ids).unwrap();
        assert_eq!(text, r#"[1,"a-1"]"#);
        assert_eq!(serde_json::from_str::<Vec<RowId>>(&text).unwrap(), ids);
    }
}
