//! PostgreSQL row changes to events: pgoutput rows to JSON and the PostgreSQL `source`
//! blocks; the event shape itself is [`crate::row_change`]'s, shared with the other
//! capture sources.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use estafeta_config::postgres_source::{Envelope, NumericMode};
use estafeta_core::Event;
use pg_walstream::RowData;
use serde_json::{Map, Value, json};

pub(crate) use crate::row_change::Op;
use crate::row_change::{Change, Shape};

/// Debezium's marker for a value that was not sent (an unchanged TOASTed column).
const DEBEZIUM_UNAVAILABLE: &str = "__debezium_unavailable_value";

/// A column of a captured table.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: Arc<str>,
    pub(crate) type_oid: u32,
    pub(crate) is_key: bool,
}

/// A captured table's shape, from a pgoutput `Relation` message or the catalog.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) schema: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) columns: Vec<Column>,
}

/// Where a change came from in the WAL.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The CloudEvents id: stable across re-reads, so a change read twice is stored once.
    pub(crate) ce_id: String,
    pub(crate) lsn: String,
    pub(crate) txid: Option<u32>,
    pub(crate) commit_time: Option<DateTime<Utc>>,
    pub(crate) snapshot: bool,
}

/// Builds events for one source.
#[derive(Debug, Clone)]
pub(crate) struct EventBuilder {
    source_id: String,
    database: String,
    envelope: Envelope,
    numeric: NumericMode,
    /// What every event of the source shares, made once.
    shape: Shape,
}

impl EventBuilder {
    pub(crate) fn new(
        source_id: String,
        database: String,
        envelope: Envelope,
        numeric: NumericMode,
    ) -> Self {
        let shape = Shape {
            source_id: source_id.clone(),
            ce_source: format!("/estafeta/postgres/{source_id}"),
            envelope,
        };
        Self {
            source_id,
            database,
            envelope,
            numeric,
            shape,
        }
    }

    /// An event for a row change. `before`/`after` as pgoutput sent them.
    pub(crate) fn row_event(
        &self,
        table: &Table,
        op: Op,
        before: Option<&RowData>,
        after: Option<&RowData>,
        origin: &Origin,
    ) -> Event {
        let (mut after_json, unchanged) = match after {
            Some(row) => {
                let (v, u) = self.row_json(table, row, op == Op::Update);
                (Some(v), u)
            }
            None => (None, Vec::new()),
        };
        let before_json = before.map(|row| self.row_json(table, row, false).0);
        let mut extra = Map::new();
        match self.envelope {
            Envelope::Estafeta if !unchanged.is_empty() => {
                extra.insert("unchanged_toast".into(), Value::from(unchanged));
            }
            Envelope::Debezium => {
                if let Some(Value::Object(m)) = after_json.as_mut() {
                    for c in &unchanged {
                        m.insert(c.clone(), Value::from(DEBEZIUM_UNAVAILABLE));
                    }
                }
            }
            Envelope::Estafeta => {}
        }
        self.event(table, op, before_json, after_json, extra, origin)
    }

    /// An event for a truncated table.
    pub(crate) fn truncate_event(
        &self,
        table: &Table,
        cascade: bool,
        restart_identity: bool,
        origin: &Origin,
    ) -> Event {
        let mut extra = Map::new();
        extra.insert("cascade".into(), Value::from(cascade));
        extra.insert("restart_identity".into(), Value::from(restart_identity));
        self.event(table, Op::Truncate, None, None, extra, origin)
    }

    fn event(
        &self,
        table: &Table,
        op: Op,
        before: Option<Value>,
        after: Option<Value>,
        extra: Map<String, Value>,
        origin: &Origin,
    ) -> Event {
        let qualified = format!("{}.{}", table.schema, table.name);
        let keys: Vec<&str> = table
            .columns
            .iter()
            .filter(|c| c.is_key)
            .map(|c| &*c.name)
            .collect();
        let (source, debezium) = match self.envelope {
            Envelope::Estafeta => (self.source_block(table, origin), Value::Null),
            Envelope::Debezium => (Value::Null, self.debezium_source(table, origin)),
        };
        self.shape.event(
            Change {
                qualified: &qualified,
                table: &table.name,
                op,
                before,
                after,
                key_columns: &keys,
                extra,
                ce_id: origin.ce_id.clone(),
                time: origin.commit_time,
            },
            source,
            debezium,
        )
    }

    /// The row as a JSON object, and the columns that were not sent (unchanged TOAST values
    /// of an update's new row).
    fn row_json(
        &self,
        table: &Table,
        row: &RowData,
        detect_unchanged: bool,
    ) -> (Value, Vec<String>) {
        let mut m = Map::with_capacity(row.len());
        for (i, (name, value)) in row.iter().enumerate() {
            // pgoutput sends columns in table order: the i-th is usually the one.
            let oid = match table.columns.get(i) {
                Some(c) if c.name == *name => c.type_oid,
                _ => table
                    .columns
                    .iter()
                    .find(|c| c.name == *name)
                    .map_or(25, |c| c.type_oid),
            };
            m.insert(
                name.to_string(),
                super::decode::column_to_json(oid, value, self.numeric),
            );
        }
        let unchanged = if detect_unchanged {
            table
                .columns
                .iter()
                .filter(|c| !m.contains_key(&*c.name))
                .map(|c| c.name.to_string())
                .collect()
        } else {
            Vec::new()
        };
        (Value::Object(m), unchanged)
    }

    fn source_block(&self, table: &Table, origin: &Origin) -> Value {
        json!({
            "connector": "postgres",
            "name": self.source_id,
            "db": self.database,
            "schema": &*table.schema,
            "table": &*table.name,
            "lsn": origin.lsn,
            "txid": origin.txid,
            "commit_time": origin.commit_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            "snapshot": origin.snapshot,
        })
    }

    fn debezium_source(&self, table: &Table, origin: &Origin) -> Value {
        json!({
            "version": concat!("estafeta-", env!("CARGO_PKG_VERSION")),
            "connector": "postgresql",
            "name": self.source_id,
            "ts_ms": origin.commit_time.map_or_else(|| Utc::now().timestamp_millis(), |t| t.timestamp_millis()),
            "snapshot": if origin.snapshot { "true" } else { "false" },
            "db": self.database,
            "sequence": null,
            "schema": &*table.schema,
            "table": &*table.name,
            "txId": origin.txid,
            "lsn": lsn_number(&origin.lsn),
            "xmin": null,
        })
    }
}

/// `0/16B3748` → 23803720 (Debezium writes LSNs as numbers).
fn lsn_number(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Formats an LSN as PostgreSQL does.
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pg_walstream::ColumnValue;

    fn table() -> Table {
        Table {
            schema: "public".into(),
            name: "visitors".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    type_oid: 23,
                    is_key: true,
                },
                Column {
                    name: "name".into(),
                    type_oid: 25,
                    is_key: false,
                },
                Column {
                    name: "photo".into(),
                    type_oid: 17,
                    is_key: false,
                },
            ],
        }
    }

    fn origin() -> Origin {
        Origin {
            ce_id: "0/10:1".into(),
            lsn: "0/10".into(),
            txid: Some(7),
            commit_time: None,
            snapshot: false,
        }
    }

    fn builder(envelope: Envelope) -> EventBuilder {
        EventBuilder::new("pg".into(), "app".into(), envelope, NumericMode::String)
    }

    #[test]
    fn update_marks_unchanged_toast_columns() {
        let after = RowData::from_pairs(vec![
            ("id", ColumnValue::text("5")),
            ("name", ColumnValue::text("Ana")),
        ]);
        let e = builder(Envelope::Estafeta).row_event(
            &table(),
            Op::Update,
            None,
            Some(&after),
            &origin(),
        );
        assert_eq!(e.ty, "visitors.update");
        assert_eq!(e.subject.as_deref(), Some("5"));
        assert_eq!(e.key.as_deref(), Some("public.visitors:5"));
        let d = e.data.unwrap();
        assert_eq!(d["after"], json!({"id": 5, "name": "Ana"}));
        assert_eq!(d["unchanged_toast"], json!(["photo"]));
        assert_eq!(d["source"]["txid"], json!(7));

        let e = builder(Envelope::Debezium).row_event(
            &table(),
            Op::Update,
            None,
            Some(&after),
            &origin(),
        );
        let d = e.data.unwrap();
        assert_eq!(d["op"], json!("u"));
        assert_eq!(d["after"]["photo"], json!(DEBEZIUM_UNAVAILABLE));
        assert_eq!(d["source"]["lsn"], json!(16));
    }

    #[test]
    fn delete_takes_its_subject_from_the_old_key() {
        let before = RowData::from_pairs(vec![("id", ColumnValue::text("9"))]);
        let e = builder(Envelope::Estafeta).row_event(
            &table(),
            Op::Delete,
            Some(&before),
            None,
            &origin(),
        );
        assert_eq!(e.subject.as_deref(), Some("9"));
        assert_eq!(e.data.unwrap()["after"], Value::Null);
    }

    #[test]
    fn lsns_format_like_postgres() {
        assert_eq!(format_lsn(0x1_6B37_4D48), "1/6B374D48");
        assert_eq!(lsn_number("1/6B374D48"), Some(0x1_6B37_4D48));
    }
}
