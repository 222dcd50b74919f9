//! The SQL of each dialect: identifier quoting, the table's resolved columns, the claim
//! query and the write-back statements (one statement per batch, ids as an array or an
//! `IN` list).

use estafeta_config::outbox_source::{MarkOn, OnProcessed, OutboxSourceSettings};

use super::row::RowId;

/// Which SQL to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Mysql,
    Sqlite,
}

impl Dialect {
    /// Quotes an identifier (any text: quote characters inside are doubled).
    pub(crate) fn quote(self, name: &str) -> String {
        match self {
            Self::Postgres | Self::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
            Self::Mysql => format!("`{}`", name.replace('`', "``")),
        }
    }

    fn now(self) -> &'static str {
        match self {
            Self::Postgres => "now()",
            Self::Mysql => "NOW(6)",
            Self::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        }
    }
}

/// A column as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnInfo {
    /// The exact name.
    pub(crate) name: String,
    /// The type as SQL text (PostgreSQL's `format_type`, MySQL's `COLUMN_TYPE`, SQLite's
    /// declared type).
    pub(crate) sql_type: String,
    /// Longest text the column takes, in characters, when it has a limit.
    pub(crate) max_len: Option<usize>,
}

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    /// Row ids: one array parameter in PostgreSQL, one placeholder each elsewhere.
    Ids(Vec<RowId>),
}

/// A statement and its arguments, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    pub(crate) sql: String,
    pub(crate) args: Vec<Arg>,
}

/// One write-back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mark {
    /// Claimed while its deliveries run (`mark_on: delivered`).
    Processing(Vec<RowId>),
    /// Processed: status and `processed_at`, or deleted (`on_processed: delete`).
    Processed {
        ids: Vec<RowId>,
        attempts: Option<i64>,
    },
    /// Failed with a reason.
    Failed {
        ids: Vec<RowId>,
        error: String,
        attempts: Option<i64>,
    },
}

/// The queue table as found in the database: quoted names and column types.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    dialect: Dialect,
    table: String,
    id: ColumnInfo,
    status: ColumnInfo,
    payload: Option<ColumnInfo>,
    ty: Option<ColumnInfo>,
    subject: Option<ColumnInfo>,
    key: Option<ColumnInfo>,
    processed_at: Option<ColumnInfo>,
    error: Option<ColumnInfo>,
    attempts: Option<ColumnInfo>,
    /// Every column, for the whole-row payload.
    columns: Vec<ColumnInfo>,
    on_processed: OnProcessed,
    status_values: [String; 4],
}

fn find<'a>(columns: &'a [ColumnInfo], want: &str) -> Option<&'a ColumnInfo> {
    columns.iter().find(|c| c.name == want).or_else(|| {
        let mut m = columns.iter().filter(|c| c.name.eq_ignore_ascii_case(want));
        match (m.next(), m.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    })
}

impl Shape {
    /// Matches the configured columns against the table's (exactly, else ignoring case).
    /// `table` is the table's name as the database spells it, with its schema if any.
    ///
    /// # Errors
    /// A message naming the missing column or the status value that does not fit.
    pub(crate) fn resolve(
        dialect: Dialect,
        s: &OutboxSourceSettings,
        schema: Option<&str>,
        table: &str,
        columns: Vec<ColumnInfo>,
    ) -> Result<Self, String> {
        let label = &s.table_label;
        let get = |field: &str, want: &str| -> Result<ColumnInfo, String> {
            find(&columns, want).cloned().ok_or_else(|| {
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "table `{label}` has no column `{want}` (set by `{field}`); its columns are: {}",
                    names.join(", ")
                )
            })
        };
        let opt = |field: &str, want: &Option<String>| -> Result<Option<ColumnInfo>, String> {
            want.as_deref().map(|w| get(field, w)).transpose()
        };
        let status = get("status_column", &s.status_column)?;
        let values = [
            s.pending.clone(),
            s.processing.clone(),
            s.processed.clone(),
            s.failed.clone(),
        ];
        let used = values
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1 || s.mark_on == MarkOn::Delivered)
            .map(|(_, v)| v);
        if let Some(max) = status.max_len
            && let Some(v) = used.clone().find(|v| v.chars().count() > max)
        {
            return Err(format!(
                "the status value `{v}` is longer than the column `{}` allows ({max} characters)",
                status.name
            ));
        }
        let shape = Self {
            dialect,
            table: match schema {
                Some(sc) => format!("{}.{}", dialect.quote(sc), dialect.quote(table)),
                None => dialect.quote(table),
            },
            id: get("id_column", &s.id_column)?,
            status,
            payload: opt("payload_column", &s.payload_column)?,
            ty: opt("type_column", &s.type_column)?,
            subject: opt("subject_column", &s.subject_column)?,
            key: opt("key_column", &s.key_column)?,
            processed_at: opt("processed_at_column", &s.processed_at_column)?,
            error: opt("error_column", &s.error_column)?,
            attempts: opt("attempts_column", &s.attempts_column)?,
            columns,
            on_processed: s.on_processed,
            status_values: values,
        };
        Ok(shape)
    }

    fn q(&self, c: &ColumnInfo) -> String {
        self.dialect.quote(&c.name)
    }

    /// Columns of the whole row (for SQLite, which reads them one by one).
    pub(crate) fn row_columns(&self) -> Option<&[ColumnInfo]> {
        self.payload.is_none().then_some(self.columns.as_slice())
    }

    /// The claim query: the first `limit` pending rows in id order, locked for this
    /// transaction and skipped by other claimers where the database can (`skip_locked`).
    /// Columns: id, payload, type, subject, key (then, in SQLite's whole-row mode, every
    /// column). Arguments: the pending value and the limit in MySQL; the limit only in
    /// PostgreSQL and SQLite, where the pending value is a literal so that a partial index
    /// can serve the query.
    pub(crate) fn claim_sql(&self, skip_locked: bool) -> String {
        let d = self.dialect;
        let id = self.q(&self.id);
        let status = self.q(&self.status);
        match d {
            Dialect::Postgres => {
                let text = |c: &Option<ColumnInfo>| {
                    c.as_ref().map_or_else(
                        || "NULL::text".to_owned(),
                        |c| format!("{}::text", self.q(c)),
                    )
                };
                let payload = match &self.payload {
                    Some(c) => format!("{}::text", self.q(c)),
                    None => "row_to_json(estafeta_row)::text".to_owned(),
                };
                // The pending value is written as a literal, not a parameter, so that a
                // partial index `… WHERE status = 'PENDING'` can serve the query.
                format!(
                    // ORDER BY names the table's column: the output column `id` is text.
                    "SELECT {id}::text, {payload}, {}, {}, {} FROM {} AS estafeta_row \
                     WHERE {status} = {} AND {id} IS NOT NULL \
                     ORDER BY estafeta_row.{id} LIMIT $1 FOR UPDATE SKIP LOCKED",
                    text(&self.ty),
                    text(&self.subject),
                    text(&self.key),
                    self.table,
                    sql_literal(&self.status_values[0]),
                )
            }
            Dialect::Mysql => {
                let plain = |c: &Option<ColumnInfo>| {
                    c.as_ref().map_or_else(|| "NULL".to_owned(), |c| self.q(c))
                };
                let payload = match &self.payload {
                    Some(c) => self.q(c),
                    None => {
                        let pairs: Vec<String> = self
                            .columns
                            .iter()
                            .map(|c| {
                                format!(
                                    "'{}', {}",
                                    c.name.replace('\\', "\\\\").replace('\'', "''"),
                                    self.q(c)
                                )
                            })
                            .collect();
                        format!("JSON_OBJECT({})", pairs.join(", "))
                    }
                };
                format!(
                    "SELECT {id}, {payload}, {}, {}, {} FROM {} \
                     WHERE {status} = ? AND {id} IS NOT NULL \
                     ORDER BY {id} LIMIT ? FOR UPDATE{}",
                    plain(&self.ty),
                    plain(&self.subject),
                    plain(&self.key),
                    self.table,
                    if skip_locked { " SKIP LOCKED" } else { "" },
                )
            }
            Dialect::Sqlite => {
                let plain = |c: &Option<ColumnInfo>| {
                    c.as_ref().map_or_else(|| "NULL".to_owned(), |c| self.q(c))
                };
                let mut cols = format!(
                    "{id}, {}, {}, {}, {}",
                    plain(&self.payload),
                    plain(&self.ty),
                    plain(&self.subject),
                    plain(&self.key)
                );
                if self.payload.is_none() {
                    for c in &self.columns {
                        cols.push_str(", ");
                        cols.push_str(&self.q(c));
                    }
                }
                // A literal, like PostgreSQL's, so a partial index can serve the query.
                format!(
                    "SELECT {cols} FROM {} WHERE {status} = {} AND {id} IS NOT NULL \
                     ORDER BY {id} LIMIT ?1",
                    self.table,
                    sql_literal(&self.status_values[0]),
                )
            }
        }
    }

    /// The statement for one write-back, applied only to rows whose status is `expect`
    /// (`pending` inside a claim, `processing` for `mark_on: delivered`).
    pub(crate) fn mark(&self, mark: &Mark, expect: &str) -> Statement {
        let mut b = Builder {
            dialect: self.dialect,
            sql: String::new(),
            args: Vec::new(),
        };
        let status = self.q(&self.status);
        let [_, processing, processed, failed] = &self.status_values;
        let (ids, new_status, done, error, attempts) = match mark {
            Mark::Processing(ids) => (ids, processing, false, None, None),
            Mark::Processed { ids, attempts } => (ids, processed, true, None, *attempts),
            Mark::Failed {
                ids,
                error,
                attempts,
            } => (ids, failed, false, Some(error.as_str()), *attempts),
        };
        if done && self.on_processed == OnProcessed::Delete {
            b.sql = format!("DELETE FROM {} WHERE ", self.table);
        } else {
            b.sql = format!("UPDATE {} SET {status} = ", self.table);
            b.param(Arg::Text(Some(new_status.clone())), "text", &self.status);
            if done && let Some(c) = &self.processed_at {
                b.sql
                    .push_str(&format!(", {} = {}", self.q(c), self.dialect.now()));
            }
            if let Some(c) = &self.error {
                match error {
                    Some(e) => {
                        let e = match c.max_len {
                            Some(max) => e.chars().take(max).collect(),
                            None => e.to_owned(),
                        };
                        b.sql.push_str(&format!(", {} = ", self.q(c)));
                        b.param(Arg::Text(Some(e)), "text", c);
                    }
                    // A processed row's old error (from before an operator's retry) goes.
                    None if done => b.sql.push_str(&format!(", {} = NULL", self.q(c))),
                    None => {}
                }
            }
            if let (Some(c), Some(n)) = (&self.attempts, attempts) {
                b.sql.push_str(&format!(", {} = ", self.q(c)));
                b.param(Arg::Int(Some(n)), "int8", c);
            }
            b.sql.push_str(" WHERE ");
        }
        b.ids(&self.q(&self.id), ids, &self.id);
        b.sql.push_str(&format!(" AND {status} = "));
        b.param(Arg::Text(Some(expect.to_owned())), "text", &self.status);
        Statement {
            sql: b.sql,
            args: b.args,
        }
    }
}

struct Builder {
    dialect: Dialect,
    sql: String,
    args: Vec<Arg>,
}

impl Builder {
    /// A placeholder; PostgreSQL casts it from `via` to the column's type, so text columns,
    /// enums and domains all work with plain text parameters.
    fn param(&mut self, arg: Arg, via: &str, col: &ColumnInfo) {
        self.args.push(arg);
        match self.dialect {
            Dialect::Postgres => {
                self.sql
                    .push_str(&format!("${}::{via}::{}", self.args.len(), col.sql_type))
            }
            Dialect::Mysql | Dialect::Sqlite => self.sql.push('?'),
        }
    }

    fn ids(&mut self, quoted: &str, ids: &[RowId], col: &ColumnInfo) {
        match self.dialect {
            Dialect::Postgres => {
                self.args.push(Arg::Ids(ids.to_vec()));
                self.sql.push_str(&format!(
                    "{quoted} = ANY(${}::text[]::{}[])",
                    self.args.len(),
                    col.sql_type
                ));
            }
            Dialect::Mysql | Dialect::Sqlite => {
                let marks = vec!["?"; ids.len()].join(", ");
                self.sql.push_str(&format!("{quoted} IN ({marks})"));
                self.args.push(Arg::Ids(ids.to_vec()));
            }
        }
    }
}

/// A string as an SQL literal (`'it''s'`), for values from the configuration.
fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> OutboxSourceSettings {
        let yaml = format!(
            "sources:\n  - id: ob\n    kind: outbox\n    url: sqlite://x.db\n    table: outbox\n{extra}"
        );
        let c =
            estafeta_config::load_str(&yaml, "t.yaml", &estafeta_config::ProcessLookup::default())
                .unwrap();
        match &c.sources[0].kind {
            estafeta_config::SourceKindSettings::Outbox(o) => (**o).clone(),
            _ => unreachable!(),
        }
    }

    fn col(name: &str, ty: &str, max: Option<usize>) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            sql_type: ty.into(),
            max_len: max,
        }
    }

    fn columns() -> Vec<ColumnInfo> {
        vec![
            col("id", "bigint", None),
            col("Payload", "jsonb", None),
            col("status", "character varying(12)", Some(12)),
            col("done_at", "timestamp with time zone", None),
            col("err", "character varying(10)", Some(10)),
            col("tries", "integer", None),
        ]
    }

    const FULL: &str = "    payload_column: payload\n    processed_at_column: done_at\n    error_column: err\n    attempts_column: tries\n";

    #[test]
    fn postgres_statements_cast_text_parameters_to_the_column_types() {
        let s = settings(FULL);
        let sh =
            Shape::resolve(Dialect::Postgres, &s, Some("public"), "outbox", columns()).unwrap();
        assert_eq!(
            sh.claim_sql(true),
            "SELECT \"id\"::text, \"Payload\"::text, NULL::text, NULL::text, NULL::text FROM \"public\".\"outbox\" AS estafeta_row \
             WHERE \"status\" = 'PENDING' AND \"id\" IS NOT NULL ORDER BY estafeta_row.\"id\" LIMIT $1 FOR UPDATE SKIP LOCKED"
        );
        let st = sh.mark(
            &Mark::Processed {
                ids: vec![RowId::Text("1".into())],
                attempts: None,
            },
            "PENDING",
        );
        assert_eq!(
            st.sql,
            "UPDATE \"public\".\"outbox\" SET \"status\" = $1::text::character varying(12), \"done_at\" = now(), \"err\" = NULL \
             WHERE \"id\" = ANY($2::text[]::bigint[]) AND \"status\" = $3::text::character varying(12)"
        );
        let st = sh.mark(
            &Mark::Failed {
                ids: vec![RowId::Text("1".into())],
                error: "a long reason".into(),
                attempts: Some(3),
            },
            "PROCESSING",
        );
        assert!(
            st.sql.contains(
                "\"err\" = $2::text::character varying(10), \"tries\" = $3::int8::integer"
            ),
            "{}",
            st.sql
        );
        assert_eq!(
            st.args[1],
            Arg::Text(Some("a long rea".into())),
            "cut to the column's size"
        );
        assert_eq!(st.args[2], Arg::Int(Some(3)));
    }

    #[test]
    fn mysql_and_sqlite_list_ids() {
        let s = settings(&format!("{FULL}    on_processed: delete\n"));
        let sh = Shape::resolve(Dialect::Mysql, &s, None, "outbox", columns()).unwrap();
        let st = sh.mark(
            &Mark::Processed {
                ids: vec![RowId::Int(1), RowId::Int(2)],
                attempts: None,
            },
            "PENDING",
        );
        assert_eq!(
            st.sql,
            "DELETE FROM `outbox` WHERE `id` IN (?, ?) AND `status` = ?"
        );
        assert!(sh.claim_sql(false).ends_with("LIMIT ? FOR UPDATE"));
        assert!(sh.claim_sql(true).ends_with("FOR UPDATE SKIP LOCKED"));
        let sh = Shape::resolve(Dialect::Sqlite, &s, None, "outbox", columns()).unwrap();
        let st = sh.mark(&Mark::Processing(vec![RowId::Int(1)]), "PENDING");
        assert_eq!(
            st.sql,
            "UPDATE \"outbox\" SET \"status\" = ? WHERE \"id\" IN (?) AND \"status\" = ?"
        );
    }

    #[test]
    fn whole_rows_name_every_column() {
        let s = settings("");
        let sh = Shape::resolve(
            Dialect::Mysql,
            &s,
            None,
            "outbox",
            vec![
                col("id", "bigint", None),
                col("status", "varchar(12)", Some(12)),
                col("it's", "text", None),
            ],
        )
        .unwrap();
        assert!(
            sh.claim_sql(true)
                .contains("JSON_OBJECT('id', `id`, 'status', `status`, 'it''s', `it's`)")
        );
        let sh = Shape::resolve(
            Dialect::Sqlite,
            &s,
            None,
            "outbox",
            vec![col("id", "INTEGER", None), col("status", "TEXT", None)],
        )
        .unwrap();
        assert_eq!(
            sh.claim_sql(true),
            "SELECT \"id\", NULL, NULL, NULL, NULL, \"id\", \"status\" FROM \"outbox\" WHERE \"status\" = 'PENDING' AND \"id\" IS NOT NULL ORDER BY \"id\" LIMIT ?1"
        );
    }

    #[test]
    fn missing_columns_and_long_status_values_are_named() {
        let s = settings("    error_column: reason\n");
        let e = Shape::resolve(Dialect::Sqlite, &s, None, "outbox", columns()).unwrap_err();
        assert!(
            e.contains("no column `reason` (set by `error_column`)"),
            "{e}"
        );
        let s = settings("    status_values: { processed: VERY_LONG_VALUE }\n");
        let e = Shape::resolve(Dialect::Postgres, &s, None, "outbox", columns()).unwrap_err();
        assert!(e.contains("`VERY_LONG_VALUE` is longer"), "{e}");
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(Dialect::Postgres.quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(Dialect::Mysql.quote("a`b"), "`a``b`");
    }
}
