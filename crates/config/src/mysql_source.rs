//! `kind: mysql` — MySQL/MariaDB change data capture from the binary log: the file's shape,
//! the validated settings, and the validation between them.

use std::time::Duration;

use serde::Deserialize;

use crate::duration::DurationText;
pub use crate::postgres_source::{Envelope, NumericMode, SnapshotMode};
use crate::text::{Secret, Text};
use crate::validate::{Ctx, SourceKindSettings, SourceSettings};

/// `kind: mysql` — capture row changes from MySQL or MariaDB by reading the binary log
/// (`binlog_format=ROW`) as a replica does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSourceConfig {
    /// Connection URL, `mysql://USER[:PASSWORD]@HOST[:PORT]/`. The user needs
    /// `REPLICATION SLAVE`, `REPLICATION CLIENT` and `SELECT` on the captured tables.
    pub url: Text,
    /// Tables to capture, `database.table`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Capture every table of these databases (also tables created later).
    #[serde(default)]
    pub databases: Vec<String>,
    /// The replica id Estafeta registers with (default: derived from the source id, in
    /// 1073741824–2147483647). Must differ from the server's own `server_id`, from every
    /// other replica's and from every other source's.
    #[serde(default)]
    pub server_id: Option<u32>,
    /// `initial` (default): copy the tables' current rows, then stream changes;
    /// `never`: stream changes only; `initial_only`: copy the rows and stop.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Shape of `data`: `estafeta` (default) or `debezium`.
    #[serde(default)]
    pub envelope: Envelope,
    /// `DECIMAL` columns as `string` (default, exact) or `number` (a JSON number when it
    /// holds every digit, else still a string).
    #[serde(default)]
    pub numeric: NumericMode,
    /// Most events stored per write, and rows read per snapshot query (default 1000).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a change waits for its batch to fill (default `20ms`).
    #[serde(default = "default_batch_wait")]
    pub batch_wait: DurationText,
}

fn default_batch_size() -> usize {
    1000
}
fn default_batch_wait() -> DurationText {
    DurationText::from_millis(20)
}

/// A validated MySQL/MariaDB source.
#[derive(Debug, Clone)]
pub struct MysqlSourceSettings {
    /// Connection URL (may hold a password).
    pub url: Secret,
    /// Tables as (database, table).
    pub tables: Vec<(String, String)>,
    /// Databases captured whole.
    pub databases: Vec<String>,
    /// Replica id used on the binlog connection.
    pub server_id: u32,
    /// Snapshot mode.
    pub snapshot: SnapshotMode,
    /// Envelope.
    pub envelope: Envelope,
    /// Decimal rendering.
    pub numeric: NumericMode,
    /// Most events per durable write (and rows per snapshot query).
    pub batch_size: usize,
    /// Longest batching wait.
    pub batch_wait: Duration,
}

impl MysqlSourceSettings {
    /// Whether changes of `database.table` are captured.
    #[must_use]
    pub fn captures(&self, database: &str, table: &str) -> bool {
        self.databases.iter().any(|d| d == database)
            || self.tables.iter().any(|(d, t)| d == database && t == table)
    }
}

/// The default replica id for a source: a hash of its id in 1073741824–2147483647, far from
/// the small ids servers are usually given.
#[must_use]
pub fn default_server_id(source_id: &str) -> u32 {
    // FNV-1a, stable across builds and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in source_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    0x4000_0000 | (h & 0x3fff_ffff)
}

/// A database or table name Estafeta can quote safely (`` ` `` doubled): anything non-empty
/// up to 64 characters without NUL.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= 64 && !s.contains('\0')
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &MysqlSourceConfig,
    earlier: &[SourceSettings],
) -> Option<MysqlSourceSettings> {
    let url = cx.resolve(&c.url, &format!("{p}.url"))?;
    match url::Url::parse(url.value.expose()) {
        Ok(u) if u.scheme() == "mysql" && u.host().is_some() => {}
        Ok(u) if u.scheme() == "mysql" => cx.err_text(
            &c.url,
            format!("{p}.url"),
            "the URL names no host; write `mysql://USER:PASSWORD@HOST:3306/`",
        ),
        Ok(u) => cx.err_text(
            &c.url,
            format!("{p}.url"),
            format!(
                "scheme `{}` is not supported; write `mysql://USER:PASSWORD@HOST:3306/` (also for MariaDB)",
                u.scheme()
            ),
        ),
        Err(e) => cx.err_text(&c.url, format!("{p}.url"), format!("not a valid URL ({e})")),
    }
    let mut tables = Vec::new();
    for (i, t) in c.tables.iter().enumerate() {
        match t.split_once('.') {
            Some((d, n)) if valid_name(d.trim()) && valid_name(n.trim()) && !n.contains('.') => {
                tables.push((d.trim().to_owned(), n.trim().to_owned()));
            }
            _ => cx.err_text(
                &c.url,
                format!("{p}.tables[{i}]"),
                format!("`{t}` is not a table name; write `database.table`"),
            ),
        }
    }
    let mut databases = Vec::new();
    for (i, d) in c.databases.iter().enumerate() {
        if valid_name(d.trim()) {
            databases.push(d.trim().to_owned());
        } else {
            cx.err_text(
                &c.url,
                format!("{p}.databases[{i}]"),
                format!("`{d}` is not a database name"),
            );
        }
    }
    if c.tables.is_empty() && c.databases.is_empty() {
        cx.err_text(
            &c.url,
            format!("{p}.tables"),
            "name the tables to capture (`tables: [shop.orders]`) or whole `databases`",
        );
    }
    if c.batch_size == 0 || c.batch_size > 100_000 {
        cx.err_text(
            &c.url,
            format!("{p}.batch_size"),
            "must be between 1 and 100000",
        );
    }
    let server_id = c.server_id.unwrap_or_else(|| default_server_id(id));
    if server_id == 0 {
        cx.err_text(
            &c.url,
            format!("{p}.server_id"),
            "must be between 1 and 4294967295",
        );
    }
    for other in earlier {
        if let SourceKindSettings::Mysql(o) = &other.kind
            && o.server_id == server_id
        {
            cx.err_text(
                &c.url,
                format!("{p}.server_id"),
                format!(
                    "server_id {server_id} is also used by source `{}`; each MySQL source needs its own",
                    other.id
                ),
            );
        }
    }
    Some(MysqlSourceSettings {
        url: url.value,
        tables,
        databases,
        server_id,
        snapshot: c.snapshot,
        envelope: c.envelope,
        numeric: c.numeric,
        batch_size: c.batch_size,
        batch_wait: c.batch_wait.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_server_ids_are_stable_and_high() {
        let a = default_server_id("orders-db");
        assert_eq!(a, default_server_id("orders-db"));
        assert_ne!(a, default_server_id("orders-db2"));
        assert!((0x4000_0000..=0x7fff_ffff).contains(&a));
    }

    fn load(yaml: &str) -> Result<crate::Config, crate::ConfigErrors> {
        crate::load_str(yaml, "t.yaml", &crate::ProcessLookup::default())
    }

    #[test]
    fn a_valid_source_gets_its_defaults() {
        let c = load(
            "sources:\n  - id: shop\n    kind: mysql\n    url: mysql://cdc:pw@db:3306/\n    tables: [shop.orders]\n    databases: [crm]\n",
        )
        .unwrap();
        let SourceKindSettings::Mysql(s) = &c.sources[0].kind else {
            panic!("not a mysql source");
        };
        assert_eq!(s.tables, vec![("shop".to_owned(), "orders".to_owned())]);
        assert_eq!(s.databases, vec!["crm".to_owned()]);
        assert_eq!(s.server_id, default_server_id("shop"));
        assert_eq!(s.batch_size, 1000);
        assert_eq!(s.snapshot, SnapshotMode::Initial);
        assert_eq!(c.sources[0].kind.name(), "mysql");
    }

    #[test]
    fn problems_are_named() {
        let e = load(
            "sources:\n  - id: a\n    kind: mysql\n    url: postgres://x@db/\n    tables: [orders]\n    server_id: 9\n  - id: b\n    kind: mysql\n    url: mysql://x@db/\n    server_id: 9\n    batch_size: 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("scheme `postgres` is not supported"), "{e}");
        assert!(e.contains("`orders` is not a table name"), "{e}");
        assert!(e.contains("name the tables to capture"), "{e}");
        assert!(e.contains("server_id 9 is also used by source `a`"), "{e}");
        assert!(e.contains("sources[1].batch_size"), "{e}");
        let e = load(
            "sources:\n  - id: a\n    kind: mysql\n    url: mysql://x@db/\n    tables: [s.t]\n    slot: x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("slot"), "unknown keys are refused: {e}");
    }

    #[test]
    fn captures_listed_tables_and_whole_databases() {
        let s = MysqlSourceSettings {
            url: Secret::new(String::new()),
            tables: vec![("shop".into(), "orders".into())],
            databases: vec!["crm".into()],
            server_id: 7,
            snapshot: SnapshotMode::Initial,
            envelope: Envelope::Estafeta,
            numeric: NumericMode::String,
            batch_size: 10,
            batch_wait: Duration::from_millis(5),
        };
        assert!(s.captures("shop", "orders"));
        assert!(!s.captures("shop", "items"));
        assert!(s.captures("crm", "anything"));
    }
}
