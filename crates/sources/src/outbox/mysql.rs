//! MySQL and MariaDB through `mysql_async`: the table's columns from `information_schema`,
//! `READ COMMITTED` sessions (record locks only, so the application's inserts never wait on
//! a claim's gap locks), and `FOR UPDATE SKIP LOCKED` where the server has it (MySQL 8.0.1+,
//! MariaDB 10.6+; older servers claim with plain `FOR UPDATE`, so instances wait for each
//! other instead of skipping).

use std::time::Duration;

use estafeta_config::outbox_source::{MarkOn, OutboxSourceSettings};
use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Opts, Params, Value};

use super::OutboxError;
use super::poll::Driver;
use super::row::{Payload, RawRow, RowId};
use super::sql::{Arg, ColumnInfo, Dialect, Shape, Statement};

/// A connection polling one table.
pub(crate) struct MyDriver {
    conn: Conn,
    shape: Shape,
    claim: String,
    pending: String,
}

/// Server errors a person must fix: access, unknown database/table/column, syntax, values
/// that do not fit the columns, constraints.
const PERMANENT: &[u16] = &[
    1044, 1045, 1048, 1049, 1054, 1064, 1142, 1143, 1146, 1264, 1265, 1366, 1406, 1665, 3819, 4025,
];

fn classify(what: &str, e: mysql_async::Error) -> OutboxError {
    let permanent = match &e {
        mysql_async::Error::Server(se) => PERMANENT.contains(&se.code),
        mysql_async::Error::Url(_) => true,
        _ => false,
    };
    if permanent {
        OutboxError::Refused {
            what: format!("MySQL refused to {what}"),
            source: Box::new(e),
        }
    } else {
        OutboxError::Database {
            what: format!("could not {what} in MySQL"),
            source: Box::new(e),
        }
    }
}

/// Whether the server's `VERSION()` has `SKIP LOCKED`.
fn has_skip_locked(version: &str) -> bool {
    let nums: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    let v = (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
        nums.get(2).copied().unwrap_or(0),
    );
    if version.contains("MariaDB") {
        v >= (10, 6, 0)
    } else {
        v >= (8, 0, 1)
    }
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(f) => Some(f.to_string()),
        Value::Date(y, mo, d, h, mi, s, us) => Some(format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
        )),
        Value::Time(neg, d, h, mi, s, us) => Some(format!(
            "{}{:02}:{mi:02}:{s:02}.{us:06}",
            if neg { "-" } else { "" },
            u32::from(h) + d * 24
        )),
    }
}

fn row_id(v: Value) -> RowId {
    match v {
        Value::Int(i) => RowId::Int(i),
        Value::UInt(u) => i64::try_from(u).map_or_else(|_| RowId::Text(u.to_string()), RowId::Int),
        other => RowId::Text(text(other).unwrap_or_default()),
    }
}

fn values(args: &[Arg]) -> Vec<Value> {
    let mut out = Vec::new();
    for a in args {
        match a {
            Arg::Text(t) => out.push(t.as_ref().map_or(Value::NULL, |t| Value::from(t.as_str()))),
            Arg::Int(i) => out.push(i.map_or(Value::NULL, Value::Int)),
            Arg::Ids(ids) => out.extend(ids.iter().map(|id| match id {
                RowId::Int(i) => Value::Int(*i),
                RowId::Text(t) => Value::from(t.as_str()),
            })),
        }
    }
    out
}

impl MyDriver {
    async fn columns(
        conn: &mut Conn,
        s: &OutboxSourceSettings,
    ) -> Result<(String, String, Vec<ColumnInfo>), OutboxError> {
        type ColumnRow = (String, String, Option<u64>, String, String);
        let rows: Vec<ColumnRow> = conn
            .exec(
                "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH, TABLE_SCHEMA, TABLE_NAME \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND LOWER(TABLE_NAME) = LOWER(?) \
                 ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (s.schema.clone(), s.table.clone()),
            )
            .await
            .map_err(|e| classify("read the outbox table's columns", e))?;
        // The exact spelling wins; otherwise the one table whose name matches ignoring case.
        let mut names: Vec<&str> = rows.iter().map(|r| r.4.as_str()).collect();
        names.dedup();
        let table = match names.iter().find(|n| **n == s.table) {
            Some(n) => (*n).to_owned(),
            None if names.len() == 1 => names[0].to_owned(),
            None => {
                return Err(OutboxError::Setup(format!(
                    "table `{}` does not exist (or the user may not see it); create it (see docs/sources/outbox.md) or fix `table`",
                    s.table_label
                )));
            }
        };
        let mut schema = String::new();
        let mut columns = Vec::new();
        for (name, ty, max, sc, t) in rows {
            if t == table {
                schema = sc;
                columns.push(ColumnInfo {
                    name,
                    sql_type: ty,
                    max_len: max.and_then(|m| usize::try_from(m).ok()),
                });
            }
        }
        Ok((schema, table, columns))
    }

    async fn run(&mut self, statements: &[Statement]) -> Result<(), mysql_async::Error> {
        for st in statements {
            self.conn
                .exec_drop(st.sql.as_str(), Params::Positional(values(&st.args)))
                .await?;
        }
        self.conn.query_drop("COMMIT").await
    }
}

/// ENUM status columns must list every status value.
fn check_enum(column_type: &str, values: &[&str], column: &str) -> Result<(), OutboxError> {
    if !column_type.to_ascii_lowercase().starts_with("enum(") {
        return Ok(());
    }
    for v in values {
        let quoted = format!("'{}'", v.replace('\'', "''"));
        if !column_type.contains(&quoted) {
            return Err(OutboxError::Setup(format!(
                "the status column `{column}` is {column_type}, which has no value `{v}`; add it to the ENUM or change `status_values`"
            )));
        }
    }
    Ok(())
}

impl Driver for MyDriver {
    async fn connect(s: &OutboxSourceSettings) -> Result<Self, OutboxError> {
        let opts = Opts::from_url(s.url.expose())
            .map_err(|e| OutboxError::Setup(format!("the MySQL URL in `url` is not valid: {e}")))?;
        let mut conn = match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts)).await {
            Ok(c) => c.map_err(|e| classify("accept the connection", e))?,
            Err(_) => {
                return Err(OutboxError::Lost(
                    "connecting to MySQL timed out after 10s".to_owned(),
                ));
            }
        };
        // READ COMMITTED takes no gap locks, so claims never block the application's
        // inserts; but with statement-based binary logging InnoDB refuses writes under it.
        let binlog_format: Option<String> = conn
            .query_first("SELECT @@SESSION.binlog_format")
            .await
            .map_err(|e| classify("report its binlog format", e))?;
        if binlog_format.as_deref() == Some("STATEMENT") {
            tracing::warn!(
                "binlog_format is STATEMENT: outbox claims run under REPEATABLE READ, whose gap locks can make the application's inserts wait for a claim to commit"
            );
        } else {
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await
                .map_err(|e| classify("set the isolation level", e))?;
        }
        let version: String = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| classify("report its version", e))?
            .unwrap_or_default();
        let skip_locked = has_skip_locked(&version);
        if !skip_locked {
            tracing::warn!(server_version = %version, "this MySQL/MariaDB has no SKIP LOCKED; outbox instances will wait for each other's claims instead of skipping them");
        }
        let (schema, table, columns) = Self::columns(&mut conn, s).await?;
        if let Some(c) = columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&s.status_column))
        {
            let mut used = vec![s.pending.as_str(), s.processed.as_str(), s.failed.as_str()];
            if s.mark_on == MarkOn::Delivered {
                used.push(s.processing.as_str());
            }
            check_enum(&c.sql_type, &used, &c.name)?;
        }
        let shape = Shape::resolve(Dialect::Mysql, s, Some(&schema), &table, columns)
            .map_err(OutboxError::Setup)?;
        Ok(Self {
            claim: shape.claim_sql(skip_locked),
            conn,
            shape,
            pending: s.pending.clone(),
        })
    }

    fn shape(&self) -> &Shape {
        &self.shape
    }

    async fn claim(&mut self, limit: usize) -> Result<Vec<RawRow>, OutboxError> {
        self.conn
            .query_drop("BEGIN")
            .await
            .map_err(|e| classify("begin a claim", e))?;
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        let rows: Vec<mysql_async::Row> = match self
            .conn
            .exec(
                self.claim.as_str(),
                (Value::from(self.pending.as_str()), Value::UInt(limit)),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.rollback().await;
                return Err(classify("claim outbox rows", e));
            }
        };
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut v = r.unwrap_raw().into_iter().map(|v| v.unwrap_or(Value::NULL));
                let mut next = || v.next().unwrap_or(Value::NULL);
                let id = row_id(next());
                let payload = match next() {
                    Value::NULL => Payload::Null,
                    Value::Bytes(b) => Payload::Text(b),
                    other => Payload::Text(text(other).unwrap_or_default().into_bytes()),
                };
                RawRow {
                    id,
                    payload,
                    ty: text(next()),
                    subject: text(next()),
                    key: text(next()),
                }
            })
            .collect())
    }

    async fn commit(&mut self, statements: &[Statement]) -> Result<(), OutboxError> {
        if let Err(e) = self.run(statements).await {
            self.rollback().await;
            return Err(classify("write the outbox rows back", e));
        }
        Ok(())
    }

    async fn rollback(&mut self) {
        if let Err(e) = self.conn.query_drop("ROLLBACK").await {
            tracing::debug!(error = %e, "outbox rollback failed");
        }
    }

    async fn apply(&mut self, statements: &[Statement]) -> Result<(), OutboxError> {
        self.conn
            .query_drop("BEGIN")
            .await
            .map_err(|e| classify("begin a write-back", e))?;
        self.commit(statements).await
    }

    async fn woken(&mut self) -> Result<(), OutboxError> {
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_locked_by_version() {
        assert!(has_skip_locked("10.11.19-MariaDB-0+deb12u1-log"));
        assert!(!has_skip_locked("10.5.2-MariaDB"));
        assert!(has_skip_locked("8.0.36"));
        assert!(!has_skip_locked("5.7.44-log"));
    }

    #[test]
    fn enum_status_columns_need_every_value() {
        assert!(check_enum("enum('PENDING','DONE')", &["PENDING", "DONE"], "s").is_ok());
        let e = check_enum("enum('PENDING','DONE')", &["PENDING", "FAILED"], "s").unwrap_err();
        assert!(e.to_string().contains("`FAILED`"));
        assert!(check_enum("varchar(10)", &["X"], "s").is_ok());
    }

    #[test]
    fn values_expand_ids() {
        let v = values(&[
            Arg::Text(Some("A".into())),
            Arg::Ids(vec![RowId::Int(1), RowId::Text("b".into())]),
            Arg::Int(None),
        ]);
        assert_eq!(
            v,
            vec![
                Value::from("A"),
                Value::Int(1),
                Value::from("b"),
                Value::NULL
            ]
        );
    }
}
