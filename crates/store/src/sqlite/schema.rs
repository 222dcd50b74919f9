//! The SQLite schema as an ordered list of migrations, and the code that brings a database
//! up to date when the store opens.

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::codec::ts;
use super::errors::from_sqlite;
use crate::{StoreError, StoreResult};

/// Migrations in order; migration `i` brings the schema to version `i + 1`. Never edit one
/// that has shipped: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r"
CREATE TABLE events (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant          TEXT NOT NULL,
    source_id       TEXT NOT NULL,
    ce_id           TEXT NOT NULL,
    ce_source       TEXT NOT NULL,
    type            TEXT NOT NULL,
    subject         TEXT,
    time            TEXT NOT NULL,
    datacontenttype TEXT,
    dataschema      TEXT,
    key             TEXT,
    extensions      TEXT,
    data            TEXT,
    data_is_base64  INTEGER NOT NULL,
    received_at     TEXT NOT NULL
) STRICT;
CREATE INDEX events_tenant_id ON events (tenant, id);
CREATE INDEX events_tenant_type_id ON events (tenant, type, id);
CREATE INDEX events_tenant_source_id ON events (tenant, source_id, id);
CREATE INDEX events_tenant_received ON events (tenant, received_at, id);

CREATE TABLE dedupe (
    tenant     TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL, -- microseconds since the Unix epoch
    PRIMARY KEY (tenant, dedupe_key)
) WITHOUT ROWID, STRICT;
CREATE INDEX dedupe_created_at ON dedupe (created_at);

CREATE TABLE deliveries (
    id             TEXT PRIMARY KEY NOT NULL,
    event_id       TEXT NOT NULL REFERENCES events (id),
    tenant         TEXT NOT NULL,
    route_id       TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    target_index   INTEGER NOT NULL,
    status         TEXT NOT NULL,
    attempts       INTEGER NOT NULL,
    next_at        TEXT,
    last_error     TEXT,
    key            TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
) STRICT;
CREATE INDEX deliveries_tenant_id ON deliveries (tenant, id);
CREATE INDEX deliveries_tenant_status_id ON deliveries (tenant, status, id);
CREATE INDEX deliveries_event_id ON deliveries (event_id, id);
CREATE INDEX deliveries_unfinished ON deliveries (destination_id, id) WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_destination_status ON deliveries (destination_id, status);

CREATE TABLE attempts (
    id               TEXT PRIMARY KEY NOT NULL,
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id),
    started_at       TEXT NOT NULL,
    duration_ms      INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_excerpt TEXT
) STRICT;
CREATE INDEX attempts_delivery_id ON attempts (delivery_id);

CREATE TABLE cursors (
    source_id  TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID, STRICT;

CREATE TABLE settings (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID, STRICT;
",
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Applies every missing migration in one transaction and returns the resulting version.
/// A database from a newer build is refused with [`StoreError::TooNew`] and left untouched.
pub(crate) fn migrate(conn: &mut Connection) -> StoreResult<i64> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(from_sqlite)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY NOT NULL,
            applied_at TEXT NOT NULL
        ) STRICT;",
    )
    .map_err(from_sqlite)?;
    let found: i64 = tx
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(from_sqlite)?
        .flatten()
        .unwrap_or(0);
    let supported = latest_version();
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    let now = ts(&Utc::now());
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tx.execute_batch(sql).map_err(from_sqlite)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, now],
        )
        .map_err(from_sqlite)?;
        tracing::info!(version, "store schema migrated");
    }
    tx.commit().map_err(from_sqlite)?;
    Ok(supported)
}

/// The schema version recorded in an open database (0 for an empty one).
pub(crate) fn current_version(conn: &Connection) -> StoreResult<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )
    .map_err(from_sqlite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op_and_newer_databases_are_refused() {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        assert_eq!(migrate(&mut conn).ok(), Some(latest_version()));
        assert_eq!(migrate(&mut conn).ok(), Some(latest_version()));
        assert_eq!(current_version(&conn).ok(), Some(latest_version()));
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 'later')",
            [latest_version() + 1],
        )
        .expect("insert a future version");
        match migrate(&mut conn) {
            Err(StoreError::TooNew { found, supported }) => {
                assert_eq!((found, supported), (latest_version() + 1, latest_version()));
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
    }
}
