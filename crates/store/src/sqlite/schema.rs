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
    //
    // Every append and every recorded attempt is paid for by the single writer thread, per
    // B-tree it touches, so the schema keeps only the trees some query needs:
    //
    // - Ids are ULIDs made monotonically in-process: id order is creation order, and the
    //   first 48 bits are the creation time in milliseconds. Tables whose rows are read by
    //   id are clustered on it (`WITHOUT ROWID`), so the row IS the id index; new rows land
    //   at the right edge of the tree.
    // - `events` keeps the rowid layout (the row plus the automatic index on `id`, two
    //   trees): event rows carry the payload and are often KBs, and a `WITHOUT ROWID` row
    //   larger than about a quarter of a page spills into a private, mostly empty overflow
    //   page.
    // - No `(tenant, id)` indexes: listing a tenant's events or deliveries newest first walks
    //   the id index in reverse and filters on `tenant` (`+tenant` in the SQL). Today every
    //   row belongs to tenant `default`, so such an index would only duplicate the id index;
    //   a multi-tenant version where small tenants share a big database adds them back.
    // - No `received_at` index: an event's id is never older than its `received_at` (the
    //   ingest takes the time, then makes the id), so "received at or after T" starts at an
    //   id bound computed from T (see `queries::id_floor`), with the exact condition kept.
    // - `attempts` are only read per delivery, in order: the table is clustered on
    //   `(delivery_id, id)` and needs no other index.
    // - `deliveries` keeps: the id (clustered), `(tenant, status, id)` for status listings,
    //   `(event_id, id)` for an event's deliveries, and the partial index of unfinished
    //   deliveries per destination (the dispatcher's queue; the recovery scan merges it
    //   across destinations). Counts per destination and status scan the table: they run
    //   at startup and for the admin API, and were a full (index) scan before as well.
    // - `dedupe` is clustered on `(tenant, dedupe_key)`; `dedupe_created_at` lets the
    //   writer delete expired claims oldest first without scanning (its entries are
    //   appended at the right edge, so it costs little per commit).
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
CREATE INDEX events_tenant_type_id ON events (tenant, type, id);
CREATE INDEX events_tenant_source_id ON events (tenant, source_id, id);

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
) WITHOUT ROWID, STRICT;
CREATE INDEX deliveries_tenant_status_id ON deliveries (tenant, status, id);
CREATE INDEX deliveries_event_id ON deliveries (event_id, id);
CREATE INDEX deliveries_unfinished ON deliveries (destination_id, id) WHERE status IN ('pending', 'retrying');

CREATE TABLE attempts (
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id),
    id               TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    duration_ms      INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_excerpt TEXT,
    PRIMARY KEY (delivery_id, id)
) WITHOUT ROWID, STRICT;

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
    // 2: what each route step did during an attempt, as a JSON array (NULL when the route
    // has no steps, and for attempts recorded before this version). The new status
    // `filtered` needs no change: `status` is free text, and the partial index of unfinished
    // deliveries already leaves out every status but `pending` and `retrying`.
    r"
ALTER TABLE attempts ADD COLUMN steps TEXT;
",
    // 3: schedule runs. A tick is claimed by inserting its row before it runs; the unique
    // index on `(schedule_id, scheduled_at)` is what lets a tick be claimed only once, by
    // one process, even across restarts. Manual runs (`trigger = 'manual'`) stand for no
    // tick and are left out of it, so asking for a run twice in one instant records two.
    // The same partial index answers "latest tick per schedule" (where a schedule resumes);
    // `(schedule_id, id)` lists a schedule's runs newest first.
    r"
CREATE TABLE schedule_runs (
    id           TEXT PRIMARY KEY NOT NULL,
    schedule_id  TEXT NOT NULL,
    scheduled_at TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    status       TEXT NOT NULL,
    claimed_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    records      INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    next_fire_at TEXT
) WITHOUT ROWID, STRICT;
CREATE UNIQUE INDEX schedule_runs_tick ON schedule_runs (schedule_id, scheduled_at)
    WHERE trigger <> 'manual';
CREATE INDEX schedule_runs_schedule_id ON schedule_runs (schedule_id, id);
",
    // 4: secrets and named credentials. Private fields are sealed by the caller
    // (XChaCha20-Poly1305 under the master key) before they reach the store: `sealed` is a
    // JSON object of field name → base64(nonce || ciphertext || tag), `key_id` names the
    // master key that sealed them (key rotation rewrites both in one transaction). `public`
    // holds the fields that may be shown (a credential's header name, user name, token URL).
    r"
CREATE TABLE vault (
    kind            TEXT NOT NULL, -- 'secret' | 'credential'
    name            TEXT NOT NULL,
    credential_type TEXT,
    public          TEXT NOT NULL,
    sealed          TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID, STRICT;
",
    // 5: the audit log of deletions (retention passes and purges): who (`actor`: a token's
    // name or `retention`), what (`kind`: `events` or `objects`; `scope`: the filter as
    // JSON), how much (`counts` as JSON), whether it was a dry run, and when. Ids are
    // `aud_` + ULID, so id order is time order and listing newest first walks the key.
    r"
CREATE TABLE audit_log (
    id      TEXT PRIMARY KEY NOT NULL,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    scope   TEXT NOT NULL,
    counts  TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    error   TEXT
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

    /// A database written by a version-1 build: migration 1 only, one delivery with one
    /// attempt recorded in the version-1 columns.
    fn version_1_database() -> (Connection, estafeta_core::DeliveryId) {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        let tx = conn.transaction().expect("transaction");
        tx.execute_batch(
            "CREATE TABLE schema_migrations (
                version    INTEGER PRIMARY KEY NOT NULL,
                applied_at TEXT NOT NULL
            ) STRICT;
            INSERT INTO schema_migrations (version, applied_at)
                VALUES (1, '2026-01-01T00:00:00.000000000Z');",
        )
        .expect("version table");
        tx.execute_batch(MIGRATIONS[0]).expect("migration 1");
        let delivery = estafeta_core::DeliveryId::new();
        let event = estafeta_core::EventId::new();
        let at = "2026-01-01T00:00:00.000000000Z";
        tx.execute(
            "INSERT INTO events (id, tenant, source_id, ce_id, ce_source, type, time,
                 data_is_base64, received_at)
             VALUES (?1, 'default', 'http', 'a', 's', 't', ?2, 0, ?2)",
            rusqlite::params![event.to_string(), at],
        )
        .expect("event");
        tx.execute(
            "INSERT INTO deliveries (id, event_id, tenant, route_id, destination_id,
                 target_index, status, attempts, created_at, updated_at)
             VALUES (?1, ?2, 'default', 'r', 'd', 0, 'delivered', 1, ?3, ?3)",
            rusqlite::params![delivery.to_string(), event.to_string(), at],
        )
        .expect("delivery");
        tx.execute(
            "INSERT INTO attempts (delivery_id, id, started_at, duration_ms, outcome,
                 status_code)
             VALUES (?1, ?2, ?3, 12, 'delivered', 200)",
            rusqlite::params![
                delivery.to_string(),
                estafeta_core::AttemptId::new().to_string(),
                at
            ],
        )
        .expect("attempt");
        tx.commit().expect("commit");
        (conn, delivery)
    }

    #[test]
    fn a_version_1_database_migrates_and_its_attempts_read_without_steps() {
        let (mut conn, delivery) = version_1_database();
        assert_eq!(current_version(&conn).ok(), Some(1));
        assert_eq!(migrate(&mut conn).ok(), Some(latest_version()));
        assert_eq!(current_version(&conn).ok(), Some(latest_version()));
        let attempts = super::super::queries::attempts(&conn, delivery).expect("read attempts");
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].status_code, Some(200));
        assert!(attempts[0].steps.is_empty());
    }
}
