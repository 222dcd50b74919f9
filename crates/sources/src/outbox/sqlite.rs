//! SQLite through `rusqlite`, on the blocking thread pool. SQLite has no row locks and no
//! `SKIP LOCKED`: a claim is a `BEGIN IMMEDIATE` transaction, which takes the database's
//! one write lock until the write-back commits. Claimers (and the application's writers)
//! therefore take turns — each waits up to the busy timeout — and never see the same
//! pending row. Between two full batches the driver leaves the lock free for as long as it
//! held it, so a backlog does not starve the application's own writers or other instances.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use estafeta_config::outbox_source::{OutboxDatabase, OutboxSourceSettings};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use serde_json::{Map, Number, Value};

use super::OutboxError;
use super::poll::Driver;
use super::row::{Payload, RawRow, RowId};
use super::sql::{Arg, ColumnInfo, Dialect, Shape, Statement};

/// How long a claim waits for the write lock before giving up for this round.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection polling one table.
pub(crate) struct LiteDriver {
    /// `None` only while a blocking call has it.
    conn: Option<Connection>,
    shape: Shape,
    claim: Arc<str>,
    /// Column names of the whole row, when there is no payload column.
    row_columns: Option<Arc<[String]>>,
    /// When the open claim took the write lock.
    locked_at: Option<Instant>,
    /// How long the last claim held it.
    held: Duration,
}

fn classify(what: &str, e: rusqlite::Error) -> OutboxError {
    let permanent = match &e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::ReadOnly
                | ErrorCode::ConstraintViolation
                | ErrorCode::TypeMismatch
                | ErrorCode::NotADatabase
        ),
        rusqlite::Error::SqlInputError { .. } => true,
        _ => false,
    };
    if permanent {
        OutboxError::Refused {
            what: format!("SQLite refused to {what}"),
            source: Box::new(e),
        }
    } else {
        OutboxError::Database {
            what: format!("could not {what} in SQLite"),
            source: Box::new(e),
        }
    }
}

fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

fn json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

fn read_row(r: &rusqlite::Row<'_>, row_columns: Option<&[String]>) -> rusqlite::Result<RawRow> {
    let id = match r.get_ref(0)? {
        ValueRef::Integer(i) => RowId::Int(i),
        other => RowId::Text(text(other).unwrap_or_default()),
    };
    let payload = match row_columns {
        Some(names) => {
            let mut m = Map::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                m.insert(name.clone(), json(r.get_ref(5 + i)?));
            }
            Payload::Json(Value::Object(m))
        }
        None => match r.get_ref(1)? {
            ValueRef::Null => Payload::Null,
            ValueRef::Text(t) | ValueRef::Blob(t) => Payload::Text(t.to_vec()),
            other => Payload::Text(text(other).unwrap_or_default().into_bytes()),
        },
    };
    Ok(RawRow {
        id,
        payload,
        ty: text(r.get_ref(2)?),
        subject: text(r.get_ref(3)?),
        key: text(r.get_ref(4)?),
    })
}

fn values(args: &[Arg]) -> Vec<SqlValue> {
    let mut out = Vec::new();
    for a in args {
        match a {
            Arg::Text(t) => out.push(t.clone().map_or(SqlValue::Null, SqlValue::Text)),
            Arg::Int(i) => out.push(i.map_or(SqlValue::Null, SqlValue::Integer)),
            Arg::Ids(ids) => out.extend(ids.iter().map(|id| match id {
                RowId::Int(i) => SqlValue::Integer(*i),
                RowId::Text(t) => SqlValue::Text(t.clone()),
            })),
        }
    }
    out
}

/// Runs the statements and commits; rolls back on an error.
fn write_back(c: &mut Connection, statements: &[(String, Vec<SqlValue>)]) -> rusqlite::Result<()> {
    let run = |c: &mut Connection| -> rusqlite::Result<()> {
        for (sql, args) in statements {
            c.prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args.iter()))?;
        }
        c.execute_batch("COMMIT")
    };
    let r = run(c);
    if r.is_err() && !c.is_autocommit() {
        let _ = c.execute_batch("ROLLBACK");
    }
    r
}

impl LiteDriver {
    fn unlocked(&mut self) {
        if let Some(t) = self.locked_at.take() {
            self.held = t.elapsed();
        }
    }

    /// Runs `f` on the connection in the blocking pool.
    async fn with<T: Send + 'static>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let Some(mut conn) = self.conn.take() else {
            return Err(OutboxError::Lost(
                "the SQLite connection was lost".to_owned(),
            ));
        };
        let (conn, r) = tokio::task::spawn_blocking(move || {
            let r = f(&mut conn);
            (conn, r)
        })
        .await
        .map_err(|e| OutboxError::Lost(format!("the SQLite worker stopped: {e}")))?;
        self.conn = Some(conn);
        r.map_err(|e| classify(what, e))
    }

    fn open(
        path: &PathBuf,
        s: &OutboxSourceSettings,
    ) -> Result<(Connection, Vec<ColumnInfo>), OutboxError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| {
            OutboxError::Setup(format!(
                "cannot open the SQLite database `{}` ({e}); the file must exist and be writable",
                path.display()
            ))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| classify("set a busy timeout", e))?;
        conn.set_prepared_statement_cache_capacity(64);
        let columns = {
            let mut st = conn
                .prepare("SELECT name, type FROM pragma_table_info(?1, ?2)")
                .map_err(|e| classify("read the outbox table's columns", e))?;
            st.query_map(
                (s.table.as_str(), s.schema.as_deref().unwrap_or("main")),
                |r| {
                    Ok(ColumnInfo {
                        name: r.get(0)?,
                        sql_type: r.get(1)?,
                        max_len: None,
                    })
                },
            )
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(|e| classify("read the outbox table's columns", e))?
        };
        if columns.is_empty() {
            return Err(OutboxError::Setup(format!(
                "table `{}` does not exist in `{}`; create it (see docs/sources/outbox.md) or fix `table`",
                s.table_label,
                path.display()
            )));
        }
        Ok((conn, columns))
    }
}

impl Driver for LiteDriver {
    async fn connect(s: &OutboxSourceSettings) -> Result<Self, OutboxError> {
        let OutboxDatabase::Sqlite { path } = &s.database else {
            return Err(OutboxError::Setup(
                "the SQLite driver was given a database that is not SQLite".to_owned(),
            ));
        };
        let (path, settings) = (path.clone(), s.clone());
        let (conn, columns) = tokio::task::spawn_blocking(move || Self::open(&path, &settings))
            .await
            .map_err(|e| OutboxError::Lost(format!("the SQLite worker stopped: {e}")))??;
        let shape = Shape::resolve(Dialect::Sqlite, s, s.schema.as_deref(), &s.table, columns)
            .map_err(OutboxError::Setup)?;
        let row_columns = shape.row_columns().map(|cols| {
            cols.iter()
                .map(|c| c.name.clone())
                .collect::<Arc<[String]>>()
        });
        Ok(Self {
            conn: Some(conn),
            claim: shape.claim_sql(false).into(),
            shape,
            row_columns,
            locked_at: None,
            held: Duration::ZERO,
        })
    }

    fn shape(&self) -> &Shape {
        &self.shape
    }

    async fn claim(&mut self, limit: usize) -> Result<Vec<RawRow>, OutboxError> {
        let claim = Arc::clone(&self.claim);
        let row_columns = self.row_columns.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.locked_at = Some(Instant::now());
        self.with("claim outbox rows", move |c| {
            c.execute_batch("BEGIN IMMEDIATE")?;
            let rows = c.prepare_cached(&claim).and_then(|mut st| {
                st.query_map([limit], |r| read_row(r, row_columns.as_deref()))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            });
            if rows.is_err() {
                let _ = c.execute_batch("ROLLBACK");
            }
            rows
        })
        .await
    }

    async fn commit(&mut self, statements: &[Statement]) -> Result<(), OutboxError> {
        let st: Vec<(String, Vec<SqlValue>)> = statements
            .iter()
            .map(|s| (s.sql.clone(), values(&s.args)))
            .collect();
        let r = self
            .with("write the outbox rows back", move |c| write_back(c, &st))
            .await;
        self.unlocked();
        r
    }

    async fn rollback(&mut self) {
        let r = self
            .with("roll back a claim", |c| {
                if c.is_autocommit() {
                    Ok(())
                } else {
                    c.execute_batch("ROLLBACK")
                }
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e.report(), "outbox rollback failed");
        }
        self.unlocked();
    }

    async fn apply(&mut self, statements: &[Statement]) -> Result<(), OutboxError> {
        let st: Vec<(String, Vec<SqlValue>)> = statements
            .iter()
            .map(|s| (s.sql.clone(), values(&s.args)))
            .collect();
        self.with("write the outbox rows back", move |c| {
            c.execute_batch("BEGIN IMMEDIATE")?;
            write_back(c, &st)
        })
        .await
    }

    async fn woken(&mut self) -> Result<(), OutboxError> {
        std::future::pending().await
    }

    fn breather(&self) -> Duration {
        self.held
            .clamp(Duration::from_millis(1), Duration::from_millis(100))
    }
}
