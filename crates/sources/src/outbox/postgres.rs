//! PostgreSQL through `tokio-postgres`: the table's columns from the catalog, a prepared
//! claim with `FOR UPDATE SKIP LOCKED`, write-backs pipelined with their `COMMIT`, and
//! `LISTEN` notifications as wake-ups.

use std::collections::HashMap;
use std::time::Duration;

use estafeta_config::outbox_source::OutboxSourceSettings;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::OutboxError;
use super::poll::Driver;
use super::row::{Payload, RawRow, RowId};
use super::sql::{Arg, ColumnInfo, Dialect, Shape, Statement};

/// A connection polling one table.
pub(crate) struct PgDriver {
    client: Client,
    shape: Shape,
    claim: tokio_postgres::Statement,
    prepared: HashMap<String, tokio_postgres::Statement>,
    /// A message per `NOTIFY` (coalesced); closed when the connection ends.
    wake: mpsc::Receiver<()>,
    connection: JoinHandle<()>,
}

impl Drop for PgDriver {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Errors a person must fix: authentication (28), unknown database (3D), syntax, unknown
/// objects and privileges (42), data that does not fit (22), constraints (23).
fn classify(what: &str, e: tokio_postgres::Error) -> OutboxError {
    let permanent = e.code().is_some_and(|c| {
        let c = c.code();
        ["28", "3D", "42", "22", "23"]
            .iter()
            .any(|class| c.starts_with(class))
    });
    if permanent {
        OutboxError::Refused {
            what: format!("PostgreSQL refused to {what}"),
            source: Box::new(e),
        }
    } else {
        OutboxError::Database {
            what: format!("could not {what} in PostgreSQL"),
            source: Box::new(e),
        }
    }
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn params(args: &[Arg]) -> Params {
    args.iter()
        .map(|a| -> Box<dyn ToSql + Sync + Send> {
            match a {
                Arg::Text(t) => Box::new(t.clone()),
                Arg::Int(i) => Box::new(*i),
                Arg::Ids(ids) => Box::new(ids.iter().map(ToString::to_string).collect::<Vec<_>>()),
            }
        })
        .collect()
}

fn refs(p: &Params) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl PgDriver {
    async fn columns(
        client: &Client,
        s: &OutboxSourceSettings,
    ) -> Result<(String, String, Vec<ColumnInfo>), OutboxError> {
        let d = Dialect::Postgres;
        // The exact (quoted) spelling first, then PostgreSQL's usual lower-case folding.
        let (exact, folded) = match &s.schema {
            Some(sc) => (
                format!("{}.{}", d.quote(sc), d.quote(&s.table)),
                format!("{sc}.{}", s.table),
            ),
            None => (d.quote(&s.table), s.table.clone()),
        };
        let found = client
            .query_opt(
                "SELECT n.nspname::text, c.relname::text, c.oid FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = coalesce(to_regclass($1::text), to_regclass($2::text))",
                &[&exact, &folded],
            )
            .await
            .map_err(|e| classify("look the outbox table up", e))?;
        let Some(found) = found else {
            return Err(OutboxError::Setup(format!(
                "table `{}` does not exist (or the user may not see it); create it (see docs/sources/outbox.md) or fix `table`",
                s.table_label
            )));
        };
        let (schema, table, oid): (String, String, u32) =
            (found.get(0), found.get(1), found.get(2));
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                        CASE WHEN a.atttypid IN (1042, 1043) AND a.atttypmod > 4 THEN a.atttypmod - 4 END \
                 FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .map_err(|e| classify("read the outbox table's columns", e))?;
        let columns = rows
            .iter()
            .map(|r| ColumnInfo {
                name: r.get(0),
                sql_type: r.get(1),
                max_len: r
                    .get::<_, Option<i32>>(2)
                    .and_then(|n| usize::try_from(n).ok()),
            })
            .collect();
        Ok((schema, table, columns))
    }

    async fn prepare(&mut self, sql: &str) -> Result<tokio_postgres::Statement, OutboxError> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self
            .client
            .prepare(sql)
            .await
            .map_err(|e| classify("prepare a write-back", e))?;
        self.prepared.insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    /// Prepares every statement, then sends `before`, the statements and `COMMIT` in one
    /// pipeline (one round trip).
    async fn run(
        &mut self,
        before: Option<&str>,
        statements: &[Statement],
    ) -> Result<(), OutboxError> {
        let mut prepared = Vec::with_capacity(statements.len());
        for st in statements {
            match self.prepare(&st.sql).await {
                Ok(p) => prepared.push((p, params(&st.args))),
                Err(e) => {
                    self.rollback().await;
                    return Err(e);
                }
            }
        }
        let client = &self.client;
        let begin = async {
            match before {
                Some(b) => client.batch_execute(b).await,
                None => Ok(()),
            }
        };
        let writes = futures::future::try_join_all(
            prepared
                .iter()
                .map(|(st, p)| async move { client.execute(st, &refs(p)).await }),
        );
        let (b, w, c) = tokio::join!(begin, writes, client.batch_execute("COMMIT"));
        let result = b.and(w.map(|_| ())).and(c);
        if let Err(e) = result {
            // A failed statement turned the COMMIT into a rollback; make sure.
            self.rollback().await;
            return Err(classify("write the outbox rows back", e));
        }
        Ok(())
    }
}

impl Driver for PgDriver {
    async fn connect(s: &OutboxSourceSettings) -> Result<Self, OutboxError> {
        let mut config: tokio_postgres::Config = s.url.expose().parse().map_err(|e| {
            OutboxError::Setup(format!("the PostgreSQL URL in `url` is not valid: {e}"))
        })?;
        if !matches!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable | tokio_postgres::config::SslMode::Prefer
        ) {
            return Err(OutboxError::Setup(
                "the outbox source connects to PostgreSQL without TLS; remove `sslmode=require` from `url` (or reach the database over a trusted network or tunnel)".to_owned(),
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("estafeta-outbox");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| classify("accept the connection", e))?;
        let (tx, wake) = mpsc::channel(1);
        let connection = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => {
                        let _ = tx.try_send(());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "outbox postgres connection ended");
                        break;
                    }
                }
            }
        });
        let (schema, table, columns) = Self::columns(&client, s).await?;
        let shape = Shape::resolve(Dialect::Postgres, s, Some(&schema), &table, columns)
            .map_err(OutboxError::Setup)?;
        let claim = client
            .prepare(&shape.claim_sql(true))
            .await
            .map_err(|e| classify("prepare the claim query", e))?;
        if let Some(ch) = &s.listen_channel {
            client
                .batch_execute(&format!("LISTEN {}", Dialect::Postgres.quote(ch)))
                .await
                .map_err(|e| classify("LISTEN", e))?;
        }
        Ok(Self {
            client,
            shape,
            claim,
            prepared: HashMap::new(),
            wake,
            connection,
        })
    }

    fn shape(&self) -> &Shape {
        &self.shape
    }

    async fn claim(&mut self, limit: usize) -> Result<Vec<RawRow>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // BEGIN and the query in one pipeline.
        let args: [&(dyn ToSql + Sync); 1] = [&limit];
        let (begin, rows) = tokio::join!(
            self.client.batch_execute("BEGIN"),
            self.client.query(&self.claim, &args)
        );
        let rows = match begin.and(rows) {
            Ok(r) => r,
            Err(e) => {
                self.rollback().await;
                return Err(classify("claim outbox rows", e));
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let read = || -> Result<RawRow, tokio_postgres::Error> {
                Ok(RawRow {
                    id: RowId::Text(r.try_get::<_, Option<String>>(0)?.unwrap_or_default()),
                    payload: match r.try_get::<_, Option<String>>(1)? {
                        Some(t) => Payload::Text(t.into_bytes()),
                        None => Payload::Null,
                    },
                    ty: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    key: r.try_get(4)?,
                })
            };
            match read() {
                Ok(row) => out.push(row),
                Err(e) => {
                    self.rollback().await;
                    return Err(classify("read claimed rows", e));
                }
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, statements: &[Statement]) -> Result<(), OutboxError> {
        self.run(None, statements).await
    }

    async fn rollback(&mut self) {
        if let Err(e) = self.client.batch_execute("ROLLBACK").await {
            tracing::debug!(error = %e, "outbox rollback failed");
        }
    }

    async fn apply(&mut self, statements: &[Statement]) -> Result<(), OutboxError> {
        self.run(Some("BEGIN"), statements).await
    }

    async fn woken(&mut self) -> Result<(), OutboxError> {
        match self.wake.recv().await {
            Some(()) => Ok(()),
            None => Err(OutboxError::Lost(
                "the connection to PostgreSQL was closed".to_owned(),
            )),
        }
    }
}
