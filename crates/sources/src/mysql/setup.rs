//! Checks and catalog queries on a plain connection: the server's binlog settings, the
//! user's privileges, the replica id, the captured tables with their columns and keys, the
//! binlog files and positions. Every refusal says what to run to fix it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use estafeta_config::mysql_source::MysqlSourceSettings;
use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value};

use super::CaptureError;
use super::schema::{Col, TableDef, json_check_column, kind_from_catalog};

/// What the user must be granted, for error messages.
pub(crate) const GRANT: &str =
    "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'USER'@'HOST';";

/// Connection options from the URL: TCP as written (no switch to a local socket unless the
/// URL asks for it), keepalive on.
pub(crate) fn opts(url: &str) -> Result<Opts, CaptureError> {
    let opts = Opts::from_url(url)
        .map_err(|e| CaptureError::Setup(format!("the MySQL URL is not usable: {e}")))?;
    let mut b = OptsBuilder::from_opts(opts)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .stmt_cache_size(32);
    if !url.contains("prefer_socket=") {
        b = b.prefer_socket(false);
    }
    Ok(b.into())
}

/// Opens a connection, within 15 seconds.
pub(crate) async fn connect(opts: &Opts) -> Result<Conn, CaptureError> {
    match tokio::time::timeout(Duration::from_secs(15), Conn::new(opts.clone())).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(CaptureError::db("cannot connect to MySQL", e)),
        Err(_) => Err(CaptureError::Transient(
            "cannot connect to MySQL: no answer within 15s".into(),
        )),
    }
}

/// A cell as text (`NULL` as `None`).
pub(crate) fn cell(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i)? {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(n) => Some(n.to_string()),
        Value::UInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn text(row: &Row, i: usize) -> String {
    cell(row, i).unwrap_or_default()
}

/// A plain connection for checks and catalog queries.
pub(crate) struct Admin {
    conn: Conn,
    /// MariaDB rather than MySQL.
    pub(crate) mariadb: bool,
}

impl Admin {
    pub(crate) async fn connect(opts: &Opts) -> Result<Self, CaptureError> {
        let mut conn = connect(opts).await?;
        let version: Option<String> = conn
            .query_first::<Row, _>("SELECT VERSION()")
            .await
            .map_err(|e| CaptureError::db("query failed", e))?
            .and_then(|r| cell(&r, 0));
        let mariadb = version.is_some_and(|v| v.contains("MariaDB"));
        Ok(Self { conn, mariadb })
    }

    pub(crate) async fn rows(&mut self, sql: &str) -> Result<Vec<Row>, CaptureError> {
        self.conn
            .query::<Row, _>(sql)
            .await
            .map_err(|e| CaptureError::db("query failed", e))
    }

    async fn exec(&mut self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, CaptureError> {
        self.conn
            .exec::<Row, _, _>(sql, params)
            .await
            .map_err(|e| CaptureError::db("query failed", e))
    }

    /// A global variable, `None` when the server has no such variable.
    async fn var(&mut self, name: &str) -> Result<Option<String>, CaptureError> {
        // `name` is one of ours: plain identifiers, safe to inline (SHOW takes no parameters).
        let rows = self
            .rows(&format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
            .await?;
        Ok(rows.first().and_then(|r| cell(r, 1)))
    }

    /// Binlog settings, the replica id, and `REPLICATION CLIENT`.
    pub(crate) async fn check_server(&mut self, server_id: u32) -> Result<(), CaptureError> {
        let section = if self.mariadb {
            "[mariadbd]"
        } else {
            "[mysqld]"
        };
        let settings = "`log_bin = mysql-bin`, `server_id = 1`, `binlog_format = ROW`, \
                        `binlog_row_image = FULL`, `binlog_row_metadata = FULL`";
        let log_bin = self.var("log_bin").await?.unwrap_or_default();
        if !log_bin.eq_ignore_ascii_case("ON") {
            return Err(CaptureError::Setup(format!(
                "the server does not write a binary log (log_bin is {}). Add to its configuration \
                 under {section}: {settings}, then restart it",
                if log_bin.is_empty() {
                    "unset"
                } else {
                    &log_bin
                }
            )));
        }
        let want = [
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
        ];
        for (name, value) in want {
            match self.var(name).await? {
                Some(v) if v.eq_ignore_ascii_case(value) => {}
                Some(v) => {
                    return Err(CaptureError::Setup(format!(
                        "the server's {name} is {v}; change data capture needs {value}. Run \
                         `SET GLOBAL {name} = '{value}';` and add `{name} = {value}` under \
                         {section} in its configuration (sessions opened before keep the old value)"
                    )));
                }
                None => {
                    return Err(CaptureError::Setup(format!(
                        "the server has no {name} setting; change data capture needs MySQL 8.0.1+ \
                         or MariaDB 10.5+ with {settings}"
                    )));
                }
            }
        }
        if self
            .var("log_bin_compress")
            .await?
            .is_some_and(|v| v.eq_ignore_ascii_case("ON"))
        {
            return Err(CaptureError::Setup(
                "the server compresses its binary log (log_bin_compress=ON), which Estafeta \
                 cannot read. Run `SET GLOBAL log_bin_compress = OFF;` and set it in the configuration"
                    .into(),
            ));
        }
        if self
            .var("binlog_row_value_options")
            .await?
            .is_some_and(|v| v.to_ascii_uppercase().contains("PARTIAL_JSON"))
        {
            return Err(CaptureError::Setup(
                "the server writes partial JSON updates (binlog_row_value_options=PARTIAL_JSON); \
                 run `SET GLOBAL binlog_row_value_options = '';`"
                    .into(),
            ));
        }
        let own: Option<u32> = self.var("server_id").await?.and_then(|v| v.parse().ok());
        if own == Some(server_id) {
            return Err(CaptureError::Setup(format!(
                "this source's server_id {server_id} is the server's own; set `server_id:` to \
                 another number (unique among the server's replicas)"
            )));
        }
        // `SHOW BINARY LOGS` needs REPLICATION CLIENT (MariaDB: BINLOG MONITOR).
        self.binary_logs().await?;
        Ok(())
    }

    /// The binlog files with their sizes, oldest first.
    pub(crate) async fn binary_logs(&mut self) -> Result<Vec<(String, u64)>, CaptureError> {
        match self.conn.query::<Row, _>("SHOW BINARY LOGS").await {
            Ok(rows) => Ok(rows
                .iter()
                .map(|r| (text(r, 0), text(r, 1).parse().unwrap_or(0)))
                .collect()),
            Err(mysql_async::Error::Server(e)) if e.code == 1227 => {
                Err(CaptureError::Setup(format!(
                    "the user may not read the binary log's state ({}). Run `{GRANT}`",
                    e.message
                )))
            }
            Err(e) => Err(CaptureError::db("query failed", e)),
        }
    }

    /// The server's current binlog file and position.
    pub(crate) async fn current_position(&mut self) -> Result<(String, u64), CaptureError> {
        let rows = match self.conn.query::<Row, _>("SHOW MASTER STATUS").await {
            Ok(rows) => rows,
            // MySQL 8.4 renamed it.
            Err(mysql_async::Error::Server(e)) if e.code == 1064 => {
                self.rows("SHOW BINARY LOG STATUS").await?
            }
            Err(e) => return Err(CaptureError::db("query failed", e)),
        };
        let row = rows.first().ok_or_else(|| {
            CaptureError::Setup("the server reports no binary log position; is log_bin on?".into())
        })?;
        Ok((text(row, 0), text(row, 1).parse().unwrap_or(4)))
    }

    /// The captured tables that exist now, with their columns and keys. A listed table that
    /// does not exist, or a listed database that does not, is refused.
    pub(crate) async fn tables(
        &mut self,
        s: &MysqlSourceSettings,
    ) -> Result<Vec<TableDef>, CaptureError> {
        let mut dbs: Vec<String> = s.databases.clone();
        for (d, _) in &s.tables {
            if !dbs.contains(d) {
                dbs.push(d.clone());
            }
        }
        let found = self.load(&dbs, |d, t| s.captures(d, t)).await?;
        for (db, table) in &s.tables {
            if !found.iter().any(|t| *t.db == **db && *t.name == **table) {
                return Err(CaptureError::Setup(format!(
                    "table `{db}.{table}` does not exist (or the user cannot see it: `GRANT SELECT ON {db}.* TO 'USER'@'HOST';`)"
                )));
            }
        }
        if !s.databases.is_empty() {
            let rows = self
                .exec(
                    &format!(
                        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({})",
                        marks(s.databases.len())
                    ),
                    s.databases.iter().map(|d| Value::from(d.as_str())).collect(),
                )
                .await?;
            let present: HashSet<String> = rows.iter().map(|r| text(r, 0)).collect();
            if let Some(missing) = s.databases.iter().find(|d| !present.contains(*d)) {
                return Err(CaptureError::Setup(format!(
                    "database `{missing}` does not exist (or the user cannot see it)"
                )));
            }
        }
        Ok(found)
    }

    /// One table's current shape, `None` if it does not exist.
    pub(crate) async fn table(
        &mut self,
        db: &str,
        name: &str,
    ) -> Result<Option<TableDef>, CaptureError> {
        Ok(self
            .load(&[db.to_owned()], |d, t| d == db && t == name)
            .await?
            .into_iter()
            .next())
    }

    async fn load(
        &mut self,
        dbs: &[String],
        keep: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<TableDef>, CaptureError> {
        if dbs.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<Value> = dbs.iter().map(|d| Value::from(d.as_str())).collect();
        let m = marks(dbs.len());
        let json = if self.mariadb {
            let rows = self
                .exec(
                    &format!(
                        "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                         WHERE CONSTRAINT_SCHEMA IN ({m})"
                    ),
                    params.clone(),
                )
                .await?;
            let mut json: HashMap<(String, String), HashSet<String>> = HashMap::new();
            for r in &rows {
                if let Some(col) = json_check_column(&text(r, 2)) {
                    json.entry((text(r, 0), text(r, 1)))
                        .or_default()
                        .insert(col);
                }
            }
            json
        } else {
            HashMap::new()
        };
        let keys = self
            .exec(
                &format!(
                    "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                     WHERE CONSTRAINT_NAME = 'PRIMARY' AND TABLE_SCHEMA IN ({m}) \
                     ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
                ),
                params.clone(),
            )
            .await?;
        let mut key_cols: HashMap<(String, String), Vec<String>> = HashMap::new();
        for r in &keys {
            key_cols
                .entry((text(r, 0), text(r, 1)))
                .or_default()
                .push(text(r, 2));
        }
        let cols = self
            .exec(
                &format!(
                    "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, \
                            c.CHARACTER_SET_NAME, c.CHARACTER_OCTET_LENGTH \
                     FROM information_schema.COLUMNS c JOIN information_schema.TABLES t \
                       ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
                     WHERE t.TABLE_TYPE = 'BASE TABLE' AND c.TABLE_SCHEMA IN ({m}) \
                     ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"
                ),
                params,
            )
            .await?;
        let mut out: Vec<TableDef> = Vec::new();
        let none = HashSet::new();
        for r in &cols {
            let (db, name) = (text(r, 0), text(r, 1));
            if !keep(&db, &name) {
                continue;
            }
            let column = text(r, 2);
            let is_json = json
                .get(&(db.clone(), name.clone()))
                .unwrap_or(&none)
                .contains(&column);
            let kind = kind_from_catalog(
                &text(r, 3),
                &text(r, 4),
                cell(r, 5).as_deref(),
                cell(r, 6).and_then(|n| n.parse().ok()),
                is_json,
            );
            let col = Col {
                name: Arc::from(column.as_str()),
                kind,
            };
            match out.last_mut() {
                Some(t) if *t.db == *db && *t.name == *name => t.columns.push(col),
                _ => out.push(TableDef {
                    db: Arc::from(db.as_str()),
                    name: Arc::from(name.as_str()),
                    columns: vec![col],
                    keys: Vec::new(),
                }),
            }
        }
        for t in &mut out {
            if let Some(k) = key_cols.get(&(t.db.to_string(), t.name.to_string())) {
                t.keys = k
                    .iter()
                    .filter_map(|k| t.columns.iter().position(|c| *c.name == **k))
                    .collect();
            }
        }
        Ok(out)
    }

    /// The catalog's estimate of a table's rows.
    pub(crate) async fn estimate_rows(&mut self, db: &str, table: &str) -> u64 {
        self.exec(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            vec![Value::from(db), Value::from(table)],
        )
        .await
        .ok()
        .and_then(|rows| rows.first().and_then(|r| cell(r, 0)))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
    }

    pub(crate) async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// `?, ?, ?`.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `` `name` `` with backticks doubled.
pub(crate) fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}
