//! The SQL of the vault table (secrets and credentials, private fields already sealed by the
//! caller): upsert, delete, the all-in-one-transaction rewrite used by key rotation, and the
//! reads. Writes run inside the writer's transaction.

use rusqlite::{Connection, Row, params};

use super::codec::{parse_ts, ts};
use super::errors::{corrupt, from_sqlite};
use crate::vault::{VaultKind, VaultRecord};
use crate::{StoreError, StoreResult};

const COLUMNS: &str = "kind, name, credential_type, public, sealed, key_id, created_at, updated_at";

/// A vault write for the writer thread.
#[derive(Debug)]
pub(crate) enum VaultOp {
    /// Create or replace one record (its first `created_at` is kept).
    Put(VaultRecord),
    /// Delete one record; counts 1 when it existed.
    Delete { kind: VaultKind, name: String },
    /// Replace the sealed fields and key id of existing records, all or none.
    Rewrite(Vec<VaultRecord>),
}

impl VaultOp {
    pub(crate) fn weight(&self) -> usize {
        let one = |r: &VaultRecord| 200 + r.name.len() + r.public.len() + r.sealed.len();
        match self {
            Self::Put(r) => one(r),
            Self::Delete { name, .. } => 100 + name.len(),
            Self::Rewrite(rs) => rs.iter().map(one).sum(),
        }
    }

    pub(crate) fn run(&self, conn: &Connection) -> StoreResult<u64> {
        match self {
            Self::Put(r) => {
                conn.prepare_cached(
                    "INSERT INTO vault (kind, name, credential_type, public, sealed, key_id,
                         created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (kind, name) DO UPDATE SET
                         credential_type = excluded.credential_type,
                         public = excluded.public, sealed = excluded.sealed,
                         key_id = excluded.key_id, updated_at = excluded.updated_at",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        r.kind.as_str(),
                        r.name,
                        r.credential_type,
                        r.public,
                        r.sealed,
                        r.key_id,
                        ts(&r.created_at),
                        ts(&r.updated_at)
                    ])
                })
                .map_err(from_sqlite)?;
                Ok(1)
            }
            Self::Delete { kind, name } => {
                let n = conn
                    .execute(
                        "DELETE FROM vault WHERE kind = ?1 AND name = ?2",
                        params![kind.as_str(), name],
                    )
                    .map_err(from_sqlite)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
            Self::Rewrite(records) => {
                let mut stmt = conn
                    .prepare_cached(
                        "UPDATE vault SET sealed = ?3, key_id = ?4
                         WHERE kind = ?1 AND name = ?2",
                    )
                    .map_err(from_sqlite)?;
                for r in records {
                    stmt.execute(params![r.kind.as_str(), r.name, r.sealed, r.key_id])
                        .map_err(from_sqlite)?;
                }
                Ok(u64::try_from(records.len()).unwrap_or(0))
            }
        }
    }
}

fn record(row: &Row<'_>) -> rusqlite::Result<[Option<String>; 8]> {
    let mut out: [Option<String>; 8] = Default::default();
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = row.get(i)?;
    }
    Ok(out)
}

fn decode(cols: [Option<String>; 8]) -> StoreResult<VaultRecord> {
    let [
        kind,
        name,
        credential_type,
        public,
        sealed,
        key_id,
        created,
        updated,
    ] = cols;
    let need = |v: Option<String>| v.ok_or_else(|| corrupt("a vault row has an empty column"));
    let kind = need(kind)?;
    Ok(VaultRecord {
        kind: VaultKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("unknown vault record kind `{kind}`")))?,
        name: need(name)?,
        credential_type,
        public: need(public)?,
        sealed: need(sealed)?,
        key_id: need(key_id)?,
        created_at: parse_ts(&need(created)?)?,
        updated_at: parse_ts(&need(updated)?)?,
    })
}

/// One record.
pub(crate) fn get(
    conn: &Connection,
    kind: VaultKind,
    name: &str,
) -> StoreResult<Option<VaultRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM vault WHERE kind = ?1 AND name = ?2");
    let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
    let mut rows = stmt
        .query_map(params![kind.as_str(), name], record)
        .map_err(from_sqlite)?;
    rows.next()
        .transpose()
        .map_err(from_sqlite)?
        .map(decode)
        .transpose()
}

/// Every record of a kind (or of both), by kind and name.
pub(crate) fn list(conn: &Connection, kind: Option<VaultKind>) -> StoreResult<Vec<VaultRecord>> {
    let sql =
        format!("SELECT {COLUMNS} FROM vault WHERE ?1 IS NULL OR kind = ?1 ORDER BY kind, name");
    let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
    let rows = stmt
        .query_map(params![kind.map(VaultKind::as_str)], record)
        .map_err(from_sqlite)?;
    rows.map(|r| r.map_err(from_sqlite).and_then(decode))
        .collect::<Result<Vec<_>, StoreError>>()
}
