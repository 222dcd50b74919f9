//! `kind: postgres` — PostgreSQL change data capture: the file's shape, the validated
//! settings, and the validation between them.

use std::time::Duration;

use serde::Deserialize;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// `kind: postgres` — capture row changes from PostgreSQL by logical replication (`pgoutput`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// Connection URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…]`. The user
    /// needs the `REPLICATION` attribute (or `rds_replication`) and `SELECT` on the tables.
    pub url: Text,
    /// Tables to capture, `schema.table` or `table` (schema `public`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Capture every table of this schema instead of a list (PostgreSQL 15+).
    #[serde(default)]
    pub schema: Option<String>,
    /// Publication name (default `estafeta_<source id>`).
    #[serde(default)]
    pub publication: Option<String>,
    /// Replication slot name (default `estafeta_<source id>`).
    #[serde(default)]
    pub slot: Option<String>,
    /// Create the publication when it is missing and add missing tables to it (default
    /// `true`). With `false` the publication must exist.
    #[serde(default = "yes")]
    pub manage_publication: bool,
    /// `initial` (default): copy the tables' current rows, then stream changes;
    /// `never`: stream changes only; `initial_only`: copy the rows and stop.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Shape of `data`: `estafeta` (default) or `debezium`.
    #[serde(default)]
    pub envelope: Envelope,
    /// `numeric`/`decimal` columns as `string` (default, exact) or `number` (a JSON number
    /// with every digit kept; consumers that parse into floats may round).
    #[serde(default)]
    pub numeric: NumericMode,
    /// Most events stored per write (default 1000).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a change waits for its batch to fill (default `20ms`).
    #[serde(default = "default_batch_wait")]
    pub batch_wait: DurationText,
    /// Write a heartbeat into the WAL this often so the slot advances on an idle database
    /// (default `1m`; `0` turns it off).
    #[serde(default = "default_heartbeat")]
    pub heartbeat: DurationText,
    /// Replication slot safety.
    #[serde(default)]
    pub slot_safety: SlotSafetyConfig,
}

/// `slot_safety:` — what to do when the slot holds back too much WAL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlotSafetyConfig {
    /// Log a warning and report the source as degraded above this much retained WAL
    /// (default `1GiB`).
    pub warn_retained_wal: ByteSize,
    /// Above this much retained WAL, take `on_limit` (default: no limit).
    pub max_retained_wal: Option<ByteSize>,
    /// `warn` (default): keep the slot and keep alerting; `drop_slot`: drop the slot so the
    /// database can recycle its WAL, and stop the source with an error (a new snapshot is
    /// needed to resume).
    pub on_limit: SlotLimitAction,
    /// How often retained WAL and lag are measured (default `10s`).
    pub check_interval: DurationText,
}

impl Default for SlotSafetyConfig {
    fn default() -> Self {
        Self {
            warn_retained_wal: ByteSize(1 << 30),
            max_retained_wal: None,
            on_limit: SlotLimitAction::Warn,
            check_interval: DurationText::from_secs(10),
        }
    }
}

/// Initial snapshot mode.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy existing rows, then stream.
    #[default]
    Initial,
    /// Stream only.
    Never,
    /// Copy existing rows and stop.
    InitialOnly,
}

/// Shape of a change event's `data`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// `{before, after, op, source}` with `op` one of `insert|update|delete|truncate|read`.
    #[default]
    Estafeta,
    /// Debezium's JSON value: `{before, after, source, op: c|u|d|r|t, ts_ms}`.
    Debezium,
}

/// How `numeric` values are written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumericMode {
    /// `"12.50"`.
    #[default]
    String,
    /// `12.50` (every digit kept).
    Number,
}

/// What happens at `max_retained_wal`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotLimitAction {
    /// Keep warning.
    #[default]
    Warn,
    /// Drop the slot and stop the source.
    DropSlot,
}

/// A size in bytes written as `1GiB`, `500MB`, `64KiB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self(n)),
            Raw::S(s) => parse_bytes(&s).map(Self).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `1GiB`, `1.5GB`, `500 MB`, `64KiB`, `1024`.
///
/// # Errors
/// A message naming the text when it is not a size.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" | "t" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}` is not a size; write e.g. `512MiB`, `1GiB` or `2GB`"
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. `512MiB`, `1GiB` or `2GB`"))?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    Ok((n * mult as f64).round() as u64)
}

fn yes() -> bool {
    true
}
fn default_batch_size() -> usize {
    1000
}
fn default_batch_wait() -> DurationText {
    DurationText::from_millis(20)
}
fn default_heartbeat() -> DurationText {
    DurationText::from_secs(60)
}

/// A validated PostgreSQL source.
#[derive(Debug, Clone)]
pub struct PostgresSourceSettings {
    /// Connection URL (may hold a password).
    pub url: Secret,
    /// Database name, from the URL.
    pub database: String,
    /// Tables as (schema, table); empty when `schema` is set.
    pub tables: Vec<(String, String)>,
    /// Whole-schema capture.
    pub schema: Option<String>,
    /// Publication name.
    pub publication: String,
    /// Slot name.
    pub slot: String,
    /// Whether Estafeta creates/extends the publication.
    pub manage_publication: bool,
    /// Snapshot mode.
    pub snapshot: SnapshotMode,
    /// Envelope.
    pub envelope: Envelope,
    /// Numeric rendering.
    pub numeric: NumericMode,
    /// Most events per durable write.
    pub batch_size: usize,
    /// Longest batching wait.
    pub batch_wait: Duration,
    /// Heartbeat period (`None` = off).
    pub heartbeat: Option<Duration>,
    /// Warn threshold in bytes.
    pub warn_retained_wal: u64,
    /// Hard limit in bytes.
    pub max_retained_wal: Option<u64>,
    /// Action at the hard limit.
    pub on_limit: SlotLimitAction,
    /// Slot check period.
    pub slot_check_interval: Duration,
}

/// A PostgreSQL identifier that needs no quoting tricks in names we generate.
fn plain_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Default publication/slot name for a source id: `estafeta_<id>` with other characters
/// than `[a-z0-9_]` as `_`.
#[must_use]
pub fn default_object_name(source_id: &str) -> String {
    let mut n: String = format!("estafeta_{source_id}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    n.truncate(63);
    n
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &PostgresSourceConfig,
) -> Option<PostgresSourceSettings> {
    let url = cx.resolve(&c.url, &format!("{p}.url"))?;
    let database = match url::Url::parse(url.value.expose()) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") && u.host().is_some() => {
            let db = u.path().trim_start_matches('/').to_owned();
            if db.is_empty() {
                cx.err_text(
                    &c.url,
                    format!("{p}.url"),
                    "the URL names no database; write `postgres://USER@HOST:5432/DATABASE`",
                );
            }
            db
        }
        Ok(u) => {
            cx.err_text(
                &c.url,
                format!("{p}.url"),
                format!(
                    "scheme `{}` is not supported; write `postgres://USER@HOST:5432/DATABASE`",
                    u.scheme()
                ),
            );
            String::new()
        }
        Err(e) => {
            cx.err_text(&c.url, format!("{p}.url"), format!("not a valid URL ({e})"));
            String::new()
        }
    };
    let mut tables = Vec::new();
    for (i, t) in c.tables.iter().enumerate() {
        let (schema, table) = match t.split_once('.') {
            Some((s, t)) => (s.trim(), t.trim()),
            None => ("public", t.trim()),
        };
        if schema.is_empty() || table.is_empty() || table.contains('.') {
            cx.err_text(
                &c.url,
                format!("{p}.tables[{i}]"),
                format!("`{t}` is not a table name; write `schema.table` or `table`"),
            );
            continue;
        }
        tables.push((schema.to_owned(), table.to_owned()));
    }
    match (&c.schema, tables.is_empty()) {
        (None, true) => cx.err_text(
            &c.url,
            format!("{p}.tables"),
            "name the tables to capture (`tables: [public.orders]`) or a whole `schema`",
        ),
        (Some(_), false) => cx.err_text(
            &c.url,
            format!("{p}.schema"),
            "set either `tables` or `schema`, not both",
        ),
        _ => {}
    }
    let publication = c
        .publication
        .clone()
        .unwrap_or_else(|| default_object_name(id));
    let slot = c.slot.clone().unwrap_or_else(|| default_object_name(id));
    for (field, name) in [("publication", &publication), ("slot", &slot)] {
        if !plain_ident(name) {
            cx.err_text(
                &c.url,
                format!("{p}.{field}"),
                format!("`{name}` must be 1–63 characters of lowercase letters, digits and `_`, not starting with a digit"),
            );
        }
    }
    if c.batch_size == 0 || c.batch_size > 100_000 {
        cx.err_text(
            &c.url,
            format!("{p}.batch_size"),
            "must be between 1 and 100000",
        );
    }
    if let Some(max) = c.slot_safety.max_retained_wal
        && max.0 < c.slot_safety.warn_retained_wal.0
    {
        cx.err_text(
            &c.url,
            format!("{p}.slot_safety.max_retained_wal"),
            "must not be below `warn_retained_wal`",
        );
    }
    if c.slot_safety.check_interval.0.is_zero() {
        cx.err_text(
            &c.url,
            format!("{p}.slot_safety.check_interval"),
            "must be greater than 0",
        );
    }
    Some(PostgresSourceSettings {
        url: url.value,
        database,
        tables,
        schema: c.schema.clone(),
        publication,
        slot,
        manage_publication: c.manage_publication,
        snapshot: c.snapshot,
        envelope: c.envelope,
        numeric: c.numeric,
        batch_size: c.batch_size,
        batch_wait: c.batch_wait.0,
        heartbeat: (!c.heartbeat.0.is_zero()).then_some(c.heartbeat.0),
        warn_retained_wal: c.slot_safety.warn_retained_wal.0,
        max_retained_wal: c.slot_safety.max_retained_wal.map(|b| b.0),
        on_limit: c.slot_safety.on_limit,
        slot_check_interval: c.slot_safety.check_interval.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5 GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("lots").unwrap_err().contains("`lots`"));
    }

    #[test]
    fn default_names_are_identifiers() {
        assert_eq!(default_object_name("Visitors-DB"), "estafeta_visitors_db");
        assert!(plain_ident(&default_object_name("x.y")));
    }
}
