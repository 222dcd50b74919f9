//! `kind: outbox` — polling a queue (outbox) table in PostgreSQL, MySQL/MariaDB or SQLite:
//! the file's shape, the validated settings, and the validation between them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// `kind: outbox` — rows that a trigger or the application writes into a queue table
/// (`status = 'PENDING'`) become events; each row is then marked processed (or deleted),
/// or failed with the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSourceConfig {
    /// The database: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`,
    /// `mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (also `mariadb://`) or
    /// `sqlite://PATH` (the file must exist).
    pub url: Text,
    /// The queue table, `table` or `schema.table` (for MySQL the schema is the database;
    /// for SQLite an attached database name such as `main`).
    pub table: String,
    /// The column that identifies a row (default `id`). Rows are read in its order and the
    /// event's CloudEvents id is `<table>:<id>`, so ids must not be reused.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// The column holding the event's JSON payload (`json`, `jsonb` or text). Without it the
    /// whole row, as a JSON object, is the event's `data`.
    #[serde(default)]
    pub payload_column: Option<String>,
    /// The event type. With `type_column` it is the fallback for rows whose type column is
    /// empty. Default: the table's name (when `type_column` is not set either).
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    /// A column holding each row's event type.
    #[serde(default)]
    pub type_column: Option<String>,
    /// A column holding the event's `subject` (e.g. the entity id).
    #[serde(default)]
    pub subject_column: Option<String>,
    /// A column holding the event's ordering key (used by routes with `ordering: key`).
    #[serde(default)]
    pub key_column: Option<String>,
    /// The status column (default `status`).
    #[serde(default = "default_status_column")]
    pub status_column: String,
    /// The values of the status column.
    #[serde(default)]
    pub status_values: StatusValues,
    /// A column set to the current time when a row is marked processed.
    #[serde(default)]
    pub processed_at_column: Option<String>,
    /// A column set to the reason when a row is marked failed (and cleared when it is
    /// marked processed).
    #[serde(default)]
    pub error_column: Option<String>,
    /// A column set to the number of delivery attempts when a row is marked processed or
    /// failed (`mark_on: delivered` only).
    #[serde(default)]
    pub attempts_column: Option<String>,
    /// How often the table is polled when it has no more pending rows (default `1s`).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: DurationText,
    /// Most rows claimed, stored and marked together (default 500).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// PostgreSQL only: `LISTEN` on this channel and poll at once when notified (a trigger
    /// runs `pg_notify('<channel>', '')`), instead of waiting for `poll_interval`.
    #[serde(default)]
    pub listen_channel: Option<String>,
    /// When a row is marked processed: `stored` (default) as soon as its event is durably in
    /// the log; `delivered` only after all its deliveries succeeded (until then it is
    /// `processing`; failed when any delivery dies).
    #[serde(default)]
    pub mark_on: MarkOn,
    /// What happens to a processed row: `mark` (default) sets the status; `delete` deletes
    /// it. Failed rows are always kept and marked.
    #[serde(default)]
    pub on_processed: OnProcessed,
}

/// `status_values:` — what the status column holds in each state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusValues {
    /// Rows waiting to be sent (default `PENDING`).
    pub pending: String,
    /// Rows claimed while their deliveries run, with `mark_on: delivered` (default
    /// `PROCESSING`).
    pub processing: String,
    /// Rows sent (default `PROCESSED`).
    pub processed: String,
    /// Rows that could not be sent: a payload that is not JSON, or a delivery that died
    /// (default `FAILED`).
    pub failed: String,
}

impl Default for StatusValues {
    fn default() -> Self {
        Self {
            pending: "PENDING".to_owned(),
            processing: "PROCESSING".to_owned(),
            processed: "PROCESSED".to_owned(),
            failed: "FAILED".to_owned(),
        }
    }
}

/// When a row counts as processed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkOn {
    /// Once its event is durably in the log.
    #[default]
    Stored,
    /// Once every delivery of its event succeeded.
    Delivered,
}

/// What happens to a processed row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnProcessed {
    /// Set the status (and `processed_at_column`).
    #[default]
    Mark,
    /// Delete the row.
    Delete,
}

fn default_id_column() -> String {
    "id".to_owned()
}
fn default_status_column() -> String {
    "status".to_owned()
}
fn default_poll_interval() -> DurationText {
    DurationText::from_secs(1)
}
fn default_batch_size() -> usize {
    500
}

/// The database an outbox source polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxDatabase {
    /// PostgreSQL; the URL is [`OutboxSourceSettings::url`].
    Postgres,
    /// MySQL or MariaDB; the URL (scheme `mysql://`) is [`OutboxSourceSettings::url`].
    Mysql,
    /// A SQLite file.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
}

impl OutboxDatabase {
    /// `postgres`, `mysql` or `sqlite`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Sqlite { .. } => "sqlite",
        }
    }
}

/// A validated outbox source. Identifiers are checked to be plain
/// (`[A-Za-z_][A-Za-z0-9_]*`), so they can be quoted safely for any of the databases.
#[derive(Debug, Clone)]
pub struct OutboxSourceSettings {
    /// Connection URL (may hold a password); `mariadb://` is rewritten to `mysql://`.
    pub url: Secret,
    /// Which database.
    pub database: OutboxDatabase,
    /// The table's schema, when given.
    pub schema: Option<String>,
    /// The table.
    pub table: String,
    /// The table as written in the config (`schema.table` or `table`): the prefix of every
    /// event's CloudEvents id.
    pub table_label: String,
    /// Id column.
    pub id_column: String,
    /// Payload column (`None`: the whole row).
    pub payload_column: Option<String>,
    /// Fixed event type, or the fallback for an empty type column.
    pub event_type: Option<String>,
    /// Type column.
    pub type_column: Option<String>,
    /// Subject column.
    pub subject_column: Option<String>,
    /// Key column.
    pub key_column: Option<String>,
    /// Status column.
    pub status_column: String,
    /// Status value of rows to read.
    pub pending: String,
    /// Status value of rows whose deliveries run (`mark_on: delivered`).
    pub processing: String,
    /// Status value of processed rows.
    pub processed: String,
    /// Status value of failed rows.
    pub failed: String,
    /// Processed-at column.
    pub processed_at_column: Option<String>,
    /// Error column.
    pub error_column: Option<String>,
    /// Attempts column.
    pub attempts_column: Option<String>,
    /// Poll period when idle.
    pub poll_interval: Duration,
    /// Most rows per batch.
    pub batch_size: usize,
    /// PostgreSQL `LISTEN` channel.
    pub listen_channel: Option<String>,
    /// When rows are marked processed.
    pub mark_on: MarkOn,
    /// Mark or delete processed rows.
    pub on_processed: OnProcessed,
}

impl OutboxSourceSettings {
    /// The event type of rows without a type of their own: `type`, else the table's name
    /// when no `type_column` is set.
    #[must_use]
    pub fn default_type(&self) -> Option<&str> {
        match (&self.event_type, &self.type_column) {
            (Some(t), _) => Some(t),
            (None, None) => Some(&self.table),
            (None, Some(_)) => None,
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 64 characters: safe to quote in every dialect.
#[must_use]
pub fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const IDENT_RULE: &str = "letters, digits and `_`, not starting with a digit, at most 64";

#[allow(clippy::too_many_lines)]
pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    c: &OutboxSourceConfig,
) -> Option<OutboxSourceSettings> {
    let resolved = cx.resolve(&c.url, &format!("{p}.url"))?;
    let raw = resolved.value.expose().to_owned();
    let (database, url) = if let Some(path) = raw.strip_prefix("sqlite://") {
        if path.is_empty() {
            cx.err_text(
                &c.url,
                format!("{p}.url"),
                "the URL names no file; write `sqlite://PATH` (e.g. `sqlite://./app.db`)",
            );
        }
        (
            OutboxDatabase::Sqlite {
                path: PathBuf::from(path),
            },
            resolved.value,
        )
    } else {
        match url::Url::parse(&raw) {
            Ok(u) if u.host().is_none() || u.path().trim_start_matches('/').is_empty() => {
                cx.err_text(
                    &c.url,
                    format!("{p}.url"),
                    "the URL names no host or no database; write e.g. `postgres://USER@HOST:5432/DATABASE` or `mysql://USER@HOST:3306/DATABASE`",
                );
                (OutboxDatabase::Postgres, resolved.value)
            }
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {
                (OutboxDatabase::Postgres, resolved.value)
            }
            Ok(u) if u.scheme() == "mysql" => (OutboxDatabase::Mysql, resolved.value),
            Ok(u) if u.scheme() == "mariadb" => {
                let rewritten = format!("mysql{}", &raw["mariadb".len()..]);
                (OutboxDatabase::Mysql, Secret::new(rewritten))
            }
            Ok(u) => {
                cx.err_text(
                    &c.url,
                    format!("{p}.url"),
                    format!(
                        "scheme `{}` is not supported; use `postgres://`, `mysql://`, `mariadb://` or `sqlite://`",
                        u.scheme()
                    ),
                );
                (OutboxDatabase::Postgres, resolved.value)
            }
            Err(e) => {
                cx.err_text(&c.url, format!("{p}.url"), format!("not a valid URL ({e})"));
                (OutboxDatabase::Postgres, resolved.value)
            }
        }
    };

    let (schema, table) = match c.table.trim().split_once('.') {
        Some((s, t)) => (Some(s.to_owned()), t.to_owned()),
        None => (None, c.table.trim().to_owned()),
    };
    if !is_plain_identifier(&table) || schema.as_deref().is_some_and(|s| !is_plain_identifier(s)) {
        cx.err_text(
            &c.url,
            format!("{p}.table"),
            format!(
                "`{}` is not a table name; write `table` or `schema.table` ({IDENT_RULE} characters each)",
                c.table
            ),
        );
    }

    let mut columns: Vec<(&str, &str)> = vec![
        ("id_column", &c.id_column),
        ("status_column", &c.status_column),
    ];
    for (field, v) in [
        ("payload_column", &c.payload_column),
        ("type_column", &c.type_column),
        ("subject_column", &c.subject_column),
        ("key_column", &c.key_column),
        ("processed_at_column", &c.processed_at_column),
        ("error_column", &c.error_column),
        ("attempts_column", &c.attempts_column),
    ] {
        if let Some(v) = v {
            columns.push((field, v));
        }
    }
    for (field, name) in &columns {
        if !is_plain_identifier(name) {
            cx.err_text(
                &c.url,
                format!("{p}.{field}"),
                format!("`{name}` is not a column name ({IDENT_RULE} characters)"),
            );
        }
    }
    // Columns Estafeta writes must be distinct from each other and from the id.
    let written: Vec<(&str, &str)> = columns
        .iter()
        .filter(|(f, _)| {
            matches!(
                *f,
                "status_column" | "processed_at_column" | "error_column" | "attempts_column"
            )
        })
        .copied()
        .collect();
    for (i, (field, name)) in written.iter().enumerate() {
        let clash = name.eq_ignore_ascii_case(&c.id_column)
            || written[..i]
                .iter()
                .any(|(_, other)| other.eq_ignore_ascii_case(name));
        if clash {
            cx.err_text(
                &c.url,
                format!("{p}.{field}"),
                format!("`{name}` is already used by another column setting; Estafeta writes this column, so it must be a column of its own"),
            );
        }
    }

    let v = &c.status_values;
    let mut used = vec![
        ("pending", &v.pending),
        ("processed", &v.processed),
        ("failed", &v.failed),
    ];
    if c.mark_on == MarkOn::Delivered {
        used.push(("processing", &v.processing));
    }
    for (i, (field, value)) in used.iter().enumerate() {
        if value.is_empty() {
            cx.err_text(
                &c.url,
                format!("{p}.status_values.{field}"),
                "must not be empty",
            );
        } else if let Some((other, _)) = used[..i].iter().find(|(_, o)| o == value) {
            cx.err_text(
                &c.url,
                format!("{p}.status_values.{field}"),
                format!("`{value}` is also the `{other}` value; each state needs its own value"),
            );
        }
    }

    if c.event_type.as_deref().is_some_and(|t| t.trim().is_empty()) {
        cx.err_text(
            &c.url,
            format!("{p}.type"),
            "must not be empty; leave it out to use the table's name",
        );
    }
    if c.poll_interval.0 < Duration::from_millis(10) {
        cx.err_text(
            &c.url,
            format!("{p}.poll_interval"),
            "must be at least 10ms",
        );
    }
    if c.batch_size == 0 || c.batch_size > 10_000 {
        cx.err_text(
            &c.url,
            format!("{p}.batch_size"),
            "must be between 1 and 10000",
        );
    }
    if let Some(ch) = &c.listen_channel {
        if database != OutboxDatabase::Postgres {
            cx.err_text(
                &c.url,
                format!("{p}.listen_channel"),
                "LISTEN/NOTIFY exists only in PostgreSQL; remove `listen_channel` (the table is polled every `poll_interval`)",
            );
        } else if !is_plain_identifier(ch) {
            cx.err_text(
                &c.url,
                format!("{p}.listen_channel"),
                format!("`{ch}` is not a channel name ({IDENT_RULE} characters)"),
            );
        }
    }

    Some(OutboxSourceSettings {
        url,
        database,
        schema,
        table,
        table_label: c.table.trim().to_owned(),
        id_column: c.id_column.clone(),
        payload_column: c.payload_column.clone(),
        event_type: c.event_type.clone(),
        type_column: c.type_column.clone(),
        subject_column: c.subject_column.clone(),
        key_column: c.key_column.clone(),
        status_column: c.status_column.clone(),
        pending: v.pending.clone(),
        processing: v.processing.clone(),
        processed: v.processed.clone(),
        failed: v.failed.clone(),
        processed_at_column: c.processed_at_column.clone(),
        error_column: c.error_column.clone(),
        attempts_column: c.attempts_column.clone(),
        poll_interval: c.poll_interval.0,
        batch_size: c.batch_size,
        listen_channel: c.listen_channel.clone(),
        mark_on: c.mark_on,
        on_processed: c.on_processed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::SourceKindSettings;

    fn load(extra: &str) -> Result<OutboxSourceSettings, String> {
        let yaml = format!("sources:\n  - id: ob\n    kind: outbox\n{extra}");
        let c = crate::load_str(&yaml, "t.yaml", &crate::ProcessLookup::default())
            .map_err(|e| e.to_string())?;
        match &c.sources[0].kind {
            SourceKindSettings::Outbox(o) => Ok((**o).clone()),
            other => Err(format!("unexpected kind {}", other.name())),
        }
    }

    #[test]
    fn defaults() {
        let s = load("    url: postgres://app@db:5432/shop\n    table: public.outbox\n").unwrap();
        assert_eq!(s.database, OutboxDatabase::Postgres);
        assert_eq!(
            (s.schema.as_deref(), s.table.as_str()),
            (Some("public"), "outbox")
        );
        assert_eq!(s.table_label, "public.outbox");
        assert_eq!(
            (s.id_column.as_str(), s.status_column.as_str()),
            ("id", "status")
        );
        assert_eq!(
            [&s.pending, &s.processing, &s.processed, &s.failed],
            ["PENDING", "PROCESSING", "PROCESSED", "FAILED"]
        );
        assert_eq!(s.poll_interval, Duration::from_secs(1));
        assert_eq!(s.batch_size, 500);
        assert_eq!(
            (s.mark_on, s.on_processed),
            (MarkOn::Stored, OnProcessed::Mark)
        );
        assert_eq!(s.default_type(), Some("outbox"));
    }

    #[test]
    fn mariadb_and_sqlite_urls() {
        let s = load("    url: mariadb://root:pw@127.0.0.1:3306/app\n    table: outbox\n").unwrap();
        assert_eq!(s.database, OutboxDatabase::Mysql);
        assert_eq!(s.url.expose(), "mysql://root:pw@127.0.0.1:3306/app");
        let s = load("    url: sqlite://./data/app.db\n    table: main.outbox\n").unwrap();
        assert_eq!(
            s.database,
            OutboxDatabase::Sqlite {
                path: PathBuf::from("./data/app.db")
            }
        );
    }

    #[test]
    fn problems_name_their_field() {
        let e = load(
            "    url: mysql://root@db/app\n    table: \"outbox; DROP TABLE x\"\n    id_column: 1id\n    \
             payload_column: \"pay load\"\n    status_values: { pending: DONE, processed: DONE }\n    \
             batch_size: 0\n    poll_interval: 0s\n    listen_channel: wake\n    error_column: status\n",
        )
        .unwrap_err();
        for field in [
            "sources[0].table:",
            "sources[0].id_column:",
            "sources[0].payload_column:",
            "sources[0].status_values.processed:",
            "sources[0].batch_size:",
            "sources[0].poll_interval:",
            "sources[0].listen_channel: LISTEN/NOTIFY exists only in PostgreSQL",
            "sources[0].error_column:",
        ] {
            assert!(e.contains(field), "{field} missing in {e}");
        }
        let e = load("    url: redis://x/0\n    table: t\n").unwrap_err();
        assert!(
            e.contains("sources[0].url: scheme `redis` is not supported"),
            "{e}"
        );
        let e = load("    url: sqlite://x.db\n    table: t\n    color: red\n").unwrap_err();
        assert!(e.contains("color"), "{e}");
    }

    #[test]
    fn identifiers() {
        assert!(is_plain_identifier("outbox_2"));
        assert!(is_plain_identifier("_x"));
        assert!(!is_plain_identifier("2x"));
        assert!(!is_plain_identifier("a-b"));
        assert!(!is_plain_identifier("a\"; DROP TABLE x; --"));
        assert!(!is_plain_identifier(""));
        assert!(!is_plain_identifier(&"a".repeat(65)));
    }
}
