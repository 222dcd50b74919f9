//! MySQL row changes to events: rows to JSON by the table's shape, and the MySQL `source`
//! blocks (binlog file and position, row, server id, GTID, thread). The event shape itself
//! is [`crate::row_change`]'s, shared with the PostgreSQL source.

use chrono::{DateTime, Utc};
use estafeta_config::mysql_source::{Envelope, NumericMode};
use estafeta_core::Event;
use serde_json::{Map, Value, json};

use super::schema::TableDef;
use crate::row_change::{Change, Op, Shape};

/// Where a change came from in the binlog.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The CloudEvents id: stable across re-reads, so a change read twice is stored once.
    pub(crate) ce_id: String,
    pub(crate) file: String,
    /// Position of the rows event in `file` (the snapshot's position for snapshot rows).
    pub(crate) pos: u64,
    /// The row's index in its rows event.
    pub(crate) row: u32,
    /// The server that wrote the change.
    pub(crate) server_id: Option<u32>,
    /// The transaction's GTID (`domain-server-sequence` on MariaDB, `uuid:n` on MySQL).
    pub(crate) gtid: Option<String>,
    /// The client thread that made the change, when the binlog says.
    pub(crate) thread: Option<u32>,
    /// When the change was made (the binlog event's time, whole seconds).
    pub(crate) time: Option<DateTime<Utc>>,
    pub(crate) snapshot: bool,
}

/// Builds events for one source.
#[derive(Debug, Clone)]
pub(crate) struct EventBuilder {
    shape: Shape,
    pub(crate) numeric: NumericMode,
}

impl EventBuilder {
    pub(crate) fn new(source_id: &str, envelope: Envelope, numeric: NumericMode) -> Self {
        Self {
            shape: Shape {
                source_id: source_id.to_owned(),
                ce_source: format!("/estafeta/mysql/{source_id}"),
                envelope,
            },
            numeric,
        }
    }

    /// An event for a row change; `before`/`after` are JSON objects of the row.
    pub(crate) fn row_event(
        &self,
        table: &TableDef,
        op: Op,
        before: Option<Value>,
        after: Option<Value>,
        origin: &Origin,
    ) -> Event {
        let qualified = table.qualified();
        let keys = table.key_names();
        let (source, debezium) = match self.shape.envelope {
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
                extra: Map::new(),
                ce_id: origin.ce_id.clone(),
                time: origin.time,
            },
            source,
            debezium,
        )
    }

    fn source_block(&self, table: &TableDef, o: &Origin) -> Value {
        json!({
            "connector": "mysql",
            "name": self.shape.source_id,
            "db": &*table.db,
            "table": &*table.name,
            "file": o.file,
            "pos": o.pos,
            "row": o.row,
            "server_id": o.server_id,
            "gtid": o.gtid,
            "thread": o.thread,
            "ts_ms": o.time.map(|t| t.timestamp_millis()),
            "snapshot": o.snapshot,
        })
    }

    fn debezium_source(&self, table: &TableDef, o: &Origin) -> Value {
        json!({
            "version": concat!("estafeta-", env!("CARGO_PKG_VERSION")),
            "connector": "mysql",
            "name": self.shape.source_id,
            "ts_ms": o.time.map_or_else(|| Utc::now().timestamp_millis(), |t| t.timestamp_millis()),
            "snapshot": if o.snapshot { "true" } else { "false" },
            "db": &*table.db,
            "sequence": null,
            "table": &*table.name,
            "server_id": o.server_id.unwrap_or(0),
            "gtid": o.gtid,
            "file": o.file,
            "pos": o.pos,
            "row": o.row,
            "thread": o.thread,
            "query": null,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::schema::{Col, Kind};

    fn table() -> TableDef {
        TableDef {
            db: "shop".into(),
            name: "orders".into(),
            columns: vec![
                Col {
                    name: "id".into(),
                    kind: Kind::Int,
                },
                Col {
                    name: "status".into(),
                    kind: Kind::Text { latin1: false },
                },
            ],
            keys: vec![0],
        }
    }

    fn origin() -> Origin {
        Origin {
            ce_id: "mariadb-bin.000001:300:0:0".into(),
            file: "mariadb-bin.000001".into(),
            pos: 420,
            row: 0,
            server_id: Some(1),
            gtid: Some("0-1-7".into()),
            thread: None,
            time: None,
            snapshot: false,
        }
    }

    #[test]
    fn estafeta_shape() {
        let e = EventBuilder::new("shop-db", Envelope::Estafeta, NumericMode::String).row_event(
            &table(),
            Op::Update,
            Some(json!({"id": 3, "status": "new"})),
            Some(json!({"id": 3, "status": "paid"})),
            &origin(),
        );
        assert_eq!(e.ty, "orders.update");
        assert_eq!(e.subject.as_deref(), Some("3"));
        assert_eq!(e.key.as_deref(), Some("shop.orders:3"));
        assert_eq!(e.ce_source, "/estafeta/mysql/shop-db");
        let d = e.data.unwrap();
        assert_eq!(d["before"]["status"], json!("new"));
        assert_eq!(d["source"]["file"], json!("mariadb-bin.000001"));
        assert_eq!(d["source"]["gtid"], json!("0-1-7"));
    }

    #[test]
    fn debezium_shape() {
        let mut t = table();
        t.keys.clear();
        let e = EventBuilder::new("shop-db", Envelope::Debezium, NumericMode::String).row_event(
            &t,
            Op::Insert,
            None,
            Some(json!({"id": 3})),
            &origin(),
        );
        assert_eq!(e.subject, None, "no primary key, no subject");
        assert_eq!(e.key.as_deref(), Some("shop.orders"));
        let d = e.data.unwrap();
        assert_eq!(d["op"], json!("c"));
        assert_eq!(d["source"]["connector"], json!("mysql"));
        assert_eq!(d["source"]["pos"], json!(420));
        assert_eq!(d["source"]["server_id"], json!(1));
    }
}
