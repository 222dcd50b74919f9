//! `kind: s3` and `kind: file` — batches of records written as whole objects (CSV, JSON
//! Lines or a JSON array, optionally gzip-compressed) to an S3-compatible bucket or a local
//! directory: the file's shape, the validated settings, and the validation between them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::DurationText;
use crate::postgres_source::ByteSize;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// The object key used when `key` is not set.
pub const DEFAULT_KEY: &str = "{{ date }}/{{ batch_id }}.{{ extension }}";

/// The region used when `region` is not set.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The names an object key template can use (see `docs/destinations/s3.md`).
pub const KEY_NAMES: &[&str] = &[
    "date",
    "time",
    "year",
    "month",
    "day",
    "hour",
    "timestamp",
    "batch_id",
    "part",
    "parts",
    "records",
    "extension",
    "first",
];

/// minijinja's global functions, which a template names like variables.
const BUILTIN_FUNCTIONS: &[&str] = &["range", "dict", "namespace", "debug"];

/// Largest `batch.max_bytes`: an object is built in memory before it is written.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// `kind: s3` — write batches of records as objects to an S3 or S3-compatible bucket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket's name (it must exist; Estafeta does not create buckets).
    pub bucket: Text,
    /// The service's base URL for S3-compatible stores (MinIO, Garage, Ceph, R2, moto…),
    /// e.g. `http://127.0.0.1:9000`; default: AWS S3 in `region`.
    #[serde(default)]
    pub endpoint: Option<Text>,
    /// The region requests are signed for (default `us-east-1`).
    #[serde(default)]
    pub region: Option<Text>,
    /// Address the bucket in the path (`endpoint/bucket/key`) rather than in the host name
    /// (`bucket.endpoint/key`). Default: true with an `endpoint`, false for AWS itself.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// The access key id; use `${secret:…}` or `${env:…}`.
    pub access_key_id: Text,
    /// The secret access key; use `${secret:…}`.
    pub secret_access_key: Text,
    /// Time allowed for one object's upload (default `60s`).
    #[serde(default = "sixty_seconds")]
    pub timeout: DurationText,
    /// A folder-like prefix put before every key, e.g. `exports/partner-a`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The object key, a template (default `{{ date }}/{{ batch_id }}.{{ extension }}`).
    #[serde(default)]
    pub key: Option<String>,
    /// `jsonl` (default), `csv` or `json`.
    #[serde(default)]
    pub format: ObjectFormat,
    /// CSV only: the columns, in order (default: the first record's keys sorted by name,
    /// then any keys later records of the batch add).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Compress each object with gzip (`.gz` is added to `extension`).
    #[serde(default)]
    pub gzip: bool,
    /// A record that is a JSON array becomes one record per element (default true).
    #[serde(default = "yes")]
    pub split_arrays: bool,
    /// How records are grouped into objects.
    #[serde(default)]
    pub batch: ObjectBatchConfig,
}

/// `kind: file` — write batches of records as files under a local directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The directory files are written under (created if missing).
    pub path: Text,
    /// A folder-like prefix put before every key, e.g. `exports/partner-a`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The file's path under `path`, a template (default
    /// `{{ date }}/{{ batch_id }}.{{ extension }}`).
    #[serde(default)]
    pub key: Option<String>,
    /// `jsonl` (default), `csv` or `json`.
    #[serde(default)]
    pub format: ObjectFormat,
    /// CSV only: the columns, in order (default: the first record's keys sorted by name,
    /// then any keys later records of the batch add).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Compress each file with gzip (`.gz` is added to `extension`).
    #[serde(default)]
    pub gzip: bool,
    /// A record that is a JSON array becomes one record per element (default true).
    #[serde(default = "yes")]
    pub split_arrays: bool,
    /// How records are grouped into files.
    #[serde(default)]
    pub batch: ObjectBatchConfig,
}

/// How records are written into an object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectFormat {
    /// JSON Lines: one JSON value per line.
    #[default]
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON array of the records.
    Json,
}

impl ObjectFormat {
    /// The file name extension, without gzip's `.gz`.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            ObjectFormat::Jsonl => "jsonl",
            ObjectFormat::Csv => "csv",
            ObjectFormat::Json => "json",
        }
    }

    /// The media type of an uncompressed object.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            ObjectFormat::Jsonl => "application/x-ndjson",
            ObjectFormat::Csv => "text/csv; charset=utf-8",
            ObjectFormat::Json => "application/json",
        }
    }
}

/// `batch:` of an object destination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectBatchConfig {
    /// Most records in one object (default 1000).
    pub max_records: usize,
    /// Most bytes of encoded records (before gzip) in one object, e.g. `16MiB` (default); a
    /// larger batch is written as several objects.
    pub max_bytes: ByteSize,
    /// Longest wait for a batch to fill before it is written (default `10s`).
    pub max_wait: DurationText,
}

impl Default for ObjectBatchConfig {
    fn default() -> Self {
        Self {
            max_records: 1000,
            max_bytes: ByteSize(16 << 20),
            max_wait: DurationText::from_secs(10),
        }
    }
}

/// What S3 and file destinations share: how records become objects and keys.
#[derive(Debug, Clone)]
pub struct ObjectLayout {
    /// Prefix put before every rendered key: empty, or ending in `/`.
    pub prefix: String,
    /// The key template's source.
    pub key: String,
    /// The format.
    pub format: ObjectFormat,
    /// Declared CSV columns.
    pub columns: Option<Vec<String>>,
    /// Whether objects are gzip-compressed.
    pub gzip: bool,
    /// Whether array records are split into their elements.
    pub split_arrays: bool,
    /// Most records in one object.
    pub max_records: usize,
    /// Most encoded bytes in one object.
    pub max_bytes: u64,
    /// Longest wait for a batch to fill.
    pub max_wait: Duration,
}

impl ObjectLayout {
    /// The extension the key template sees: `csv`, `jsonl.gz`, …
    #[must_use]
    pub fn extension(&self) -> String {
        if self.gzip {
            format!("{}.gz", self.format.extension())
        } else {
            self.format.extension().to_owned()
        }
    }
}

/// A validated S3 destination.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Destination id.
    pub id: String,
    /// Bucket name.
    pub bucket: String,
    /// Base URL of an S3-compatible service, without a trailing `/`.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// Access key id.
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Time allowed for one upload.
    pub timeout: Duration,
    /// Records, objects and keys.
    pub layout: ObjectLayout,
}

impl S3Settings {
    /// Where the bucket is, for messages: the endpoint, or `s3.<region>.amazonaws.com`.
    #[must_use]
    pub fn endpoint_name(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.region))
    }
}

/// A validated file destination.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// Destination id.
    pub id: String,
    /// The directory files are written under.
    pub path: PathBuf,
    /// Records, objects and keys.
    pub layout: ObjectLayout,
}

fn yes() -> bool {
    true
}

fn sixty_seconds() -> DurationText {
    DurationText::from_secs(60)
}

pub(crate) fn validate_s3(cx: &mut Ctx<'_>, p: &str, id: &str, c: &S3Config) -> Option<S3Settings> {
    let bucket = cx.resolve(&c.bucket, &format!("{p}.bucket"))?.value;
    let bucket = bucket.expose().trim().to_owned();
    if !valid_bucket(&bucket) {
        cx.err_text(
            &c.bucket,
            format!("{p}.bucket"),
            format!("`{bucket}` is not a bucket name: 3 to 63 lowercase letters, digits, `.` or `-`, starting and ending with a letter or digit"),
        );
    }
    let endpoint = match &c.endpoint {
        None => None,
        Some(t) => {
            let r = cx.resolve(t, &format!("{p}.endpoint"))?;
            let text = r.value.expose().trim().trim_end_matches('/').to_owned();
            match url::Url::parse(&text) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.query().is_none()
                        && u.username().is_empty()
                        && u.password().is_none() => {}
                _ => cx.err_text(
                    t,
                    format!("{p}.endpoint"),
                    "the endpoint is the service's base URL, http:// or https:// with a host and no query or credentials, e.g. `http://127.0.0.1:9000`",
                ),
            }
            Some(text)
        }
    };
    let region = match &c.region {
        None => DEFAULT_REGION.to_owned(),
        Some(t) => {
            let r = cx.resolve(t, &format!("{p}.region"))?.value;
            let region = r.expose().trim().to_owned();
            if region.is_empty()
                || !region
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                cx.err_text(
                    t,
                    format!("{p}.region"),
                    format!("`{region}` is not a region; write e.g. `us-east-1` or `eu-central-1`"),
                );
            }
            region
        }
    };
    let access_key_id = cx
        .resolve(&c.access_key_id, &format!("{p}.access_key_id"))?
        .value;
    if access_key_id.expose().trim().is_empty() {
        cx.err_text(
            &c.access_key_id,
            format!("{p}.access_key_id"),
            "must not be empty",
        );
    }
    let secret_access_key = cx
        .resolve(&c.secret_access_key, &format!("{p}.secret_access_key"))?
        .value;
    if secret_access_key.expose().is_empty() {
        cx.err_text(
            &c.secret_access_key,
            format!("{p}.secret_access_key"),
            "must not be empty",
        );
    }
    if c.timeout.0.is_zero() {
        cx.err_here(format!("{p}.timeout"), "must be more than 0s");
    }
    let layout = layout(
        cx,
        p,
        &Shape {
            prefix: c.prefix.as_deref(),
            key: c.key.as_deref(),
            format: c.format,
            columns: c.columns.as_deref(),
            gzip: c.gzip,
            split_arrays: c.split_arrays,
            batch: &c.batch,
        },
    );
    Some(S3Settings {
        id: id.to_owned(),
        bucket,
        path_style: c.path_style.unwrap_or(endpoint.is_some()),
        endpoint,
        region,
        access_key_id,
        secret_access_key,
        timeout: c.timeout.0,
        layout,
    })
}

pub(crate) fn validate_file(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &FileConfig,
) -> Option<FileSettings> {
    let path = cx.resolve(&c.path, &format!("{p}.path"))?.value;
    let path = path.expose().trim().to_owned();
    if path.is_empty() {
        cx.err_text(
            &c.path,
            format!("{p}.path"),
            "the directory to write files under must not be empty",
        );
    }
    let layout = layout(
        cx,
        p,
        &Shape {
            prefix: c.prefix.as_deref(),
            key: c.key.as_deref(),
            format: c.format,
            columns: c.columns.as_deref(),
            gzip: c.gzip,
            split_arrays: c.split_arrays,
            batch: &c.batch,
        },
    );
    Some(FileSettings {
        id: id.to_owned(),
        path: PathBuf::from(path),
        layout,
    })
}

/// The settings both kinds share, as written.
struct Shape<'a> {
    prefix: Option<&'a str>,
    key: Option<&'a str>,
    format: ObjectFormat,
    columns: Option<&'a [String]>,
    gzip: bool,
    split_arrays: bool,
    batch: &'a ObjectBatchConfig,
}

fn layout(cx: &mut Ctx<'_>, p: &str, s: &Shape<'_>) -> ObjectLayout {
    let prefix = match s.prefix.map(str::trim) {
        None | Some("") => String::new(),
        Some(raw) => {
            let trimmed = raw.trim_end_matches('/');
            if raw.starts_with('/') || !valid_key_path(trimmed) {
                cx.err_here(
                    format!("{p}.prefix"),
                    format!("`{raw}` is not a key prefix: folder names separated by `/`, without a leading `/`, empty parts, `.` or `..`"),
                );
            }
            format!("{trimmed}/")
        }
    };
    let key = s.key.unwrap_or(DEFAULT_KEY).to_owned();
    check_key_template(cx, p, &key);
    let columns = s.columns.map(<[String]>::to_vec);
    if let Some(cols) = &columns {
        if s.format != ObjectFormat::Csv {
            cx.err_here(
                format!("{p}.columns"),
                "`columns` applies to `format: csv` only",
            );
        }
        if cols.is_empty() {
            cx.err_here(
                format!("{p}.columns"),
                "list at least one column, or leave `columns` out to use the records' keys",
            );
        }
        let mut seen = HashSet::new();
        for (i, c) in cols.iter().enumerate() {
            if c.trim().is_empty() {
                cx.err_here(
                    format!("{p}.columns[{i}]"),
                    "a column name must not be empty",
                );
            } else if !seen.insert(c.as_str()) {
                cx.err_here(
                    format!("{p}.columns[{i}]"),
                    format!("column `{c}` is listed twice"),
                );
            }
        }
    }
    let b = s.batch;
    if b.max_records == 0 || b.max_records > 100_000 {
        cx.err_here(
            format!("{p}.batch.max_records"),
            "must be between 1 and 100000",
        );
    }
    if b.max_bytes.0 < 1024 || b.max_bytes.0 > MAX_OBJECT_BYTES {
        cx.err_here(
            format!("{p}.batch.max_bytes"),
            "must be between 1KiB and 1GiB (objects are built in memory)",
        );
    }
    if b.max_wait.0 > Duration::from_secs(24 * 3600) {
        cx.err_here(format!("{p}.batch.max_wait"), "must be at most 24h");
    }
    ObjectLayout {
        prefix,
        key,
        format: s.format,
        columns,
        gzip: s.gzip,
        split_arrays: s.split_arrays,
        max_records: b.max_records.max(1),
        max_bytes: b.max_bytes.0,
        max_wait: b.max_wait.0,
    }
}

/// Compiles the key template and checks that it uses only the documented names.
fn check_key_template(cx: &mut Ctx<'_>, p: &str, key: &str) {
    if key.trim().is_empty() {
        cx.err_here(format!("{p}.key"), "the key template must not be empty");
        return;
    }
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let names = match env.template_from_str(key) {
        Ok(t) => t.undeclared_variables(false),
        Err(e) => {
            cx.err_here(
                format!("{p}.key"),
                format!(
                    "template does not compile: {} (line {} of the template)",
                    e.detail().unwrap_or("syntax error"),
                    e.line().unwrap_or(1)
                ),
            );
            return;
        }
    };
    let mut unknown: Vec<_> = names
        .iter()
        .filter(|n| !KEY_NAMES.contains(&n.as_str()) && !BUILTIN_FUNCTIONS.contains(&n.as_str()))
        .map(String::as_str)
        .collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        cx.err_here(
            format!("{p}.key"),
            format!(
                "the key template uses {}; it can use {} (the first record's event is `first`, e.g. `first.data.region`)",
                unknown
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                KEY_NAMES.join(", ")
            ),
        );
    }
}

/// True for `a/b/c`: non-empty parts other than `.` and `..`, no backslashes or control
/// characters.
#[must_use]
pub fn valid_key_path(key: &str) -> bool {
    !key.is_empty()
        && !key.contains(['\\', '\0'])
        && !key.chars().any(char::is_control)
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// S3's bucket naming rules (the ones that can be checked without asking S3).
fn valid_bucket(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["sales", "partner-data.eu", "a1b"] {
            assert!(valid_bucket(ok), "{ok}");
        }
        for bad in ["ab", "Sales", "-sales", "sales-", "sa_les", "a..b", ""] {
            assert!(!valid_bucket(bad), "{bad}");
        }
    }

    #[test]
    fn key_paths() {
        assert!(valid_key_path("sales/2026-11-21.csv"));
        for bad in ["", "/a", "a//b", "a/../b", "./a", "a\\b", "a/"] {
            assert!(!valid_key_path(bad), "{bad}");
        }
    }
}
