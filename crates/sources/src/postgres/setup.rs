//! Checks and set-up on a plain (non-replication) connection: server settings, privileges,
//! the captured tables and their keys, the publication, the slot's state and statistics,
//! and heartbeats. Every refusal says what to run to fix it.

use std::sync::Arc;

use estafeta_config::postgres_source::PostgresSourceSettings;
use pg_walstream::{PgReplicationConnection, PgResult, quote_ident, quote_literal};

use super::CaptureError;
use super::envelope::{Column, Table};

/// A plain connection for catalog queries.
pub(crate) struct Admin {
    conn: PgReplicationConnection,
}

impl Admin {
    pub(crate) async fn connect(url: &str) -> Result<Self, CaptureError> {
        let conn =
            PgReplicationConnection::connect_async(&with_param(url, "connect_timeout", "10"))
                .await
                .map_err(|e| CaptureError::connect(&e.to_string()))?;
        Ok(Self { conn })
    }

    async fn query(&mut self, sql: &str) -> Result<PgResult, CaptureError> {
        self.conn
            .exec_async(sql)
            .await
            .map_err(|e| CaptureError::Transient(format!("query failed: {e}")))
    }

    async fn value(&mut self, sql: &str) -> Result<Option<String>, CaptureError> {
        let r = self.query(sql).await?;
        Ok(if r.ntuples() > 0 {
            r.get_value(0, 0)
        } else {
            None
        })
    }

    /// `wal_level`, server version and the user's replication privilege.
    pub(crate) async fn check_server(&mut self) -> Result<(), CaptureError> {
        let wal_level = self.value("SHOW wal_level").await?.unwrap_or_default();
        if wal_level != "logical" {
            return Err(CaptureError::Setup(format!(
                "PostgreSQL's wal_level is `{wal_level}`; change data capture needs `logical`. \
                 Run `ALTER SYSTEM SET wal_level = logical;` as a superuser and restart PostgreSQL"
            )));
        }
        let version: u32 = self
            .value("SHOW server_version_num")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if version < 100_000 {
            return Err(CaptureError::Setup(
                "PostgreSQL 10 or newer is needed for logical replication with pgoutput".into(),
            ));
        }
        let r = self
            .query(
                "SELECT current_user, r.rolreplication OR r.rolsuper OR \
                 EXISTS (SELECT 1 FROM pg_roles g JOIN pg_auth_members m ON m.roleid = g.oid \
                         WHERE m.member = r.oid AND g.rolname = 'rds_replication') \
                 FROM pg_roles r WHERE r.rolname = current_user",
            )
            .await?;
        let user = r.get_value(0, 0).unwrap_or_default();
        if r.get_value(0, 1).as_deref() != Some("t") {
            let q = quote_ident(&user).unwrap_or_else(|_| user.clone());
            return Err(CaptureError::Setup(format!(
                "the user `{user}` may not start replication. Run `ALTER ROLE {q} WITH REPLICATION;` \
                 (on Amazon RDS: `GRANT rds_replication TO {q};`)"
            )));
        }
        Ok(())
    }

    /// The captured tables with their columns and keys. A table without a primary key
    /// (and without `REPLICA IDENTITY FULL`) is refused: PostgreSQL would reject updates and
    /// deletes on it once it is published.
    pub(crate) async fn tables(
        &mut self,
        s: &PostgresSourceSettings,
    ) -> Result<Vec<(Table, char)>, CaptureError> {
        let filter = match &s.schema {
            Some(schema) => format!("n.nspname = {}", lit(schema)?),
            None => {
                let pairs: Result<Vec<String>, CaptureError> = s
                    .tables
                    .iter()
                    .map(|(sc, t)| Ok(format!("({}, {})", lit(sc)?, lit(t)?)))
                    .collect();
                format!("(n.nspname, c.relname) IN ({})", pairs?.join(", "))
            }
        };
        let sql = format!(
            "SELECT n.nspname, c.relname, c.relreplident::text, a.attname, a.atttypid::int8, \
                    COALESCE(a.attnum = ANY(i.indkey), false) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE c.relkind IN ('r', 'p') AND {filter} \
             ORDER BY n.nspname, c.relname, a.attnum"
        );
        let r = self.query(&sql).await?;
        let mut out: Vec<(Table, char)> = Vec::new();
        for row in 0..r.ntuples() {
            let get = |c| r.get_value(row, c).unwrap_or_default();
            let (schema, name) = (get(0), get(1));
            let ident = get(2).chars().next().unwrap_or('d');
            let col = Column {
                name: Arc::from(get(3).as_str()),
                type_oid: get(4).parse().unwrap_or(25),
                is_key: get(5) == "t",
            };
            match out.last_mut() {
                Some((t, _)) if *t.schema == *schema && *t.name == *name => t.columns.push(col),
                _ => out.push((
                    Table {
                        schema: Arc::from(schema.as_str()),
                        name: Arc::from(name.as_str()),
                        columns: vec![col],
                    },
                    ident,
                )),
            }
        }
        if s.schema.is_none() {
            for (schema, table) in &s.tables {
                if !out
                    .iter()
                    .any(|(t, _)| *t.schema == **schema && *t.name == **table)
                {
                    return Err(CaptureError::Setup(format!(
                        "table `{schema}.{table}` does not exist (or the user cannot see it)"
                    )));
                }
            }
        } else if out.is_empty() {
            return Err(CaptureError::Setup(format!(
                "schema `{}` has no tables to capture",
                s.schema.as_deref().unwrap_or_default()
            )));
        }
        for (t, ident) in &out {
            let has_key = t.columns.iter().any(|c| c.is_key);
            if !has_key && *ident != 'f' {
                let q = qualified(&t.schema, &t.name);
                return Err(CaptureError::Setup(format!(
                    "table `{}.{}` has no primary key, so its updates and deletes cannot be told apart. \
                     Add one (`ALTER TABLE {q} ADD PRIMARY KEY (…);`) or send whole rows \
                     (`ALTER TABLE {q} REPLICA IDENTITY FULL;`)",
                    t.schema, t.name
                )));
            }
        }
        Ok(out)
    }

    /// Creates the publication, or adds missing tables to it; with `manage_publication:
    /// false` only checks that it covers the tables.
    pub(crate) async fn ensure_publication(
        &mut self,
        s: &PostgresSourceSettings,
        tables: &[(Table, char)],
    ) -> Result<(), CaptureError> {
        let name = lit(&s.publication)?;
        let exists = self
            .value(&format!(
                "SELECT puballtables::text FROM pg_publication WHERE pubname = {name}"
            ))
            .await?;
        let list = || {
            tables
                .iter()
                .map(|(t, _)| qualified(&t.schema, &t.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ident = ident_of(&s.publication)?;
        let target = match &s.schema {
            Some(schema) => format!("TABLES IN SCHEMA {}", ident_of(schema)?),
            None => format!("TABLE {}", list()),
        };
        let Some(all_tables) = exists else {
            if !s.manage_publication {
                return Err(CaptureError::Setup(format!(
                    "publication `{}` does not exist. Create it: `CREATE PUBLICATION {ident} FOR {target};` \
                     (or set `manage_publication: true`)",
                    s.publication
                )));
            }
            return self
                .run_ddl(
                    &format!("CREATE PUBLICATION {ident} FOR {target}"),
                    &s.publication,
                )
                .await;
        };
        if all_tables == "t" {
            return Ok(());
        }
        let r = self
            .query(&format!(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = {name}"
            ))
            .await?;
        let published: Vec<(String, String)> = (0..r.ntuples())
            .map(|i| {
                (
                    r.get_value(i, 0).unwrap_or_default(),
                    r.get_value(i, 1).unwrap_or_default(),
                )
            })
            .collect();
        let missing: Vec<String> = tables
            .iter()
            .filter(|(t, _)| {
                !published
                    .iter()
                    .any(|(sc, tn)| **sc == *t.schema && **tn == *t.name)
            })
            .map(|(t, _)| qualified(&t.schema, &t.name))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let add = match &s.schema {
            Some(schema) => format!(
                "ALTER PUBLICATION {ident} ADD TABLES IN SCHEMA {}",
                ident_of(schema)?
            ),
            None => format!("ALTER PUBLICATION {ident} ADD TABLE {}", missing.join(", ")),
        };
        if !s.manage_publication {
            return Err(CaptureError::Setup(format!(
                "publication `{}` does not cover {}. Run `{add};` (or set `manage_publication: true`)",
                s.publication,
                missing.join(", ")
            )));
        }
        self.run_ddl(&add, &s.publication).await
    }

    async fn run_ddl(&mut self, sql: &str, publication: &str) -> Result<(), CaptureError> {
        match self.conn.exec_async(sql).await {
            Ok(_) => {
                tracing::info!(publication, "publication set up");
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                if msg.contains("permission denied") || msg.contains("must be owner") {
                    Err(CaptureError::Setup(format!(
                        "the user may not set up publication `{publication}` ({}). Run as the tables' owner: `{sql};` \
                         and set `manage_publication: false`",
                        first_line(&msg)
                    )))
                } else {
                    Err(CaptureError::Setup(format!(
                        "could not set up publication `{publication}`: {}",
                        first_line(&msg)
                    )))
                }
            }
        }
    }

    /// The slot's state: `None` when it does not exist.
    pub(crate) async fn slot(&mut self, slot: &str) -> Result<Option<SlotRow>, CaptureError> {
        let r = self
            .query(&format!(
                "SELECT active::text, confirmed_flush_lsn::text, \
                        COALESCE(pg_current_wal_lsn() - restart_lsn, 0)::int8, \
                        COALESCE(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::int8, \
                        wal_status, plugin, database \
                 FROM pg_replication_slots WHERE slot_name = {}",
                lit(slot)?
            ))
            .await?;
        if r.ntuples() == 0 {
            return Ok(None);
        }
        let get = |c| r.get_value(0, c);
        Ok(Some(SlotRow {
            active: get(0).as_deref() == Some("true"),
            confirmed_flush_lsn: get(1),
            retained_bytes: get(2).and_then(|v| v.parse().ok()).unwrap_or(0),
            lag_bytes: get(3).and_then(|v| v.parse().ok()).unwrap_or(0),
            wal_status: get(4),
            plugin: get(5),
            database: get(6),
        }))
    }

    /// Drops the slot, ending the session that holds it if needed.
    pub(crate) async fn drop_slot(&mut self, slot: &str) -> Result<(), CaptureError> {
        let name = lit(slot)?;
        self.query(&format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = {name} AND active_pid IS NOT NULL"
        ))
        .await?;
        // The terminated walsender lets go of the slot shortly after.
        for _ in 0..50 {
            match self
                .conn
                .exec_async(&format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {name}"
                ))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.to_string().contains("is active") => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(CaptureError::Transient(format!("dropping slot `{slot}`: {e}"))),
            }
        }
        Err(CaptureError::Transient(format!(
            "slot `{slot}` stayed active; could not drop it"
        )))
    }

    /// Writes a non-transactional logical message; the slot sees it and advances on an
    /// otherwise idle database.
    pub(crate) async fn heartbeat(&mut self) -> Result<(), CaptureError> {
        self.query("SELECT pg_logical_emit_message(false, 'estafeta.heartbeat', '')")
            .await
            .map(|_| ())
    }

    /// The planner's row estimates, for snapshot progress.
    pub(crate) async fn estimate_rows(
        &mut self,
        schema: &str,
        table: &str,
    ) -> Result<u64, CaptureError> {
        let v = self
            .value(&format!(
                "SELECT GREATEST(c.reltuples, 0)::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = {} AND c.relname = {}",
                lit(schema)?,
                lit(table)?
            ))
            .await?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }
}

/// A row of `pg_replication_slots`.
#[derive(Debug, Clone)]
pub(crate) struct SlotRow {
    pub(crate) active: bool,
    pub(crate) confirmed_flush_lsn: Option<String>,
    pub(crate) retained_bytes: u64,
    pub(crate) lag_bytes: u64,
    pub(crate) wal_status: Option<String>,
    pub(crate) plugin: Option<String>,
    #[allow(dead_code)]
    pub(crate) database: Option<String>,
}

fn lit(s: &str) -> Result<String, CaptureError> {
    quote_literal(s).map_err(|e| CaptureError::Setup(format!("`{s}` cannot be quoted: {e}")))
}

fn ident_of(s: &str) -> Result<String, CaptureError> {
    quote_ident(s).map_err(|e| CaptureError::Setup(format!("`{s}` cannot be quoted: {e}")))
}

fn qualified(schema: &str, table: &str) -> String {
    format!(
        "{}.{}",
        quote_ident(schema).unwrap_or_else(|_| schema.to_owned()),
        quote_ident(table).unwrap_or_else(|_| table.to_owned())
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

/// Adds `key=value` to a connection URL's query.
pub(crate) fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}
