//! `impl Destination` for object storage: a batch of deliveries becomes one object (or a few,
//! when it is larger than `max_records` or `max_bytes`), written whole, and the batch is
//! delivered only once every object of it has been written.

use std::sync::Arc;
use std::time::Duration;

use estafeta_config::object_destination::{FileSettings, ObjectLayout, S3Settings};
use estafeta_core::{Destination, OutboundMessage, SendError, SendOk};

use super::encode::{self, Part};
use super::file::FileTarget;
use super::key::{Batch, KeyTemplate};
use super::records;
use super::s3::S3Target;
use crate::build_error::BuildError;

/// Where objects go.
#[derive(Debug)]
enum Target {
    S3(S3Target),
    File(FileTarget),
}

/// Batches of records written as objects to S3 (`kind: s3`) or a directory (`kind: file`).
pub struct ObjectStorage {
    id: String,
    target: Target,
    layout: Arc<ObjectLayout>,
    key: KeyTemplate,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("id", &self.id)
            .field("target", &self.target)
            .field("format", &self.layout.format)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    /// An S3 (or S3-compatible) bucket. Nothing is sent until the first batch.
    ///
    /// # Errors
    /// A key template that does not compile, or settings the S3 client does not take.
    pub fn s3(settings: &S3Settings) -> Result<Self, BuildError> {
        let key = key_template(&settings.id, &settings.layout)?;
        let target = S3Target::new(settings).map_err(|source| BuildError::ObjectStore {
            id: settings.id.clone(),
            source,
        })?;
        Ok(Self {
            id: settings.id.clone(),
            target: Target::S3(target),
            layout: Arc::new(settings.layout.clone()),
            key,
        })
    }

    /// A local directory (created when the first file is written).
    ///
    /// # Errors
    /// A key template that does not compile.
    pub fn file(settings: &FileSettings) -> Result<Self, BuildError> {
        let key = key_template(&settings.id, &settings.layout)?;
        Ok(Self {
            id: settings.id.clone(),
            target: Target::File(FileTarget::new(&settings.path)),
            layout: Arc::new(settings.layout.clone()),
            key,
        })
    }

    /// Encodes the batch, names its objects and writes them in order; the first failure
    /// ends the attempt (a retry rewrites the objects already written under the same keys).
    async fn write(&self, msgs: &[OutboundMessage]) -> Result<SendOk, SendError> {
        // Lowest delivery id first: the batch's name and time do not depend on the order the
        // lane happened to gather it in.
        let mut sorted: Vec<&OutboundMessage> = msgs.iter().collect();
        sorted.sort_by_key(|m| m.delivery_id);
        let Some(first) = sorted.first() else {
            return Ok(SendOk::default());
        };
        let records = records::collect(&sorted, self.layout.split_arrays)
            .map_err(|e| SendError::final_error(e.to_string()).with_source(e))?;
        if records.is_empty() {
            return Ok(SendOk {
                status_code: None,
                response_excerpt: Some("no records: nothing written".to_owned()),
            });
        }
        let count = records.len();
        let layout = Arc::clone(&self.layout);
        let parts = tokio::task::spawn_blocking(move || encode::encode(&layout, &records))
            .await
            .map_err(|e| SendError::retryable("encoding the batch was interrupted").with_source(e))?
            .map_err(|e| {
                SendError::final_error(format!("cannot encode the batch: {e}")).with_source(e)
            })?;
        let extension = self.layout.extension();
        let batch = Batch {
            first_delivery: first.delivery_id,
            first_event: &first.event,
            parts: parts.len(),
            extension: &extension,
        };
        let keys = self.keys(&batch, &parts)?;
        let content_type = if self.layout.gzip {
            "application/gzip"
        } else {
            self.layout.format.content_type()
        };
        let mut written = Vec::with_capacity(parts.len());
        let mut bytes = 0;
        for (key, part) in keys.iter().zip(parts) {
            bytes += part.body.len();
            match &self.target {
                Target::S3(s3) => s3
                    .put(key, part.body, content_type)
                    .await
                    .map_err(super::s3::S3Error::into_send_error)?,
                Target::File(f) => f
                    .put(key, part.body)
                    .await
                    .map_err(super::file::FileError::into_send_error)?,
            }
            written.push(match &self.target {
                Target::S3(s3) => s3.location(key),
                Target::File(f) => f.location(key),
            });
        }
        tracing::debug!(dest_id = %self.id, objects = written.len(), records = count, bytes, "objects written");
        Ok(SendOk {
            status_code: None,
            response_excerpt: Some(excerpt(&written, count)),
        })
    }

    /// The keys of the batch's objects. Keys that collide (a template without `part` for a
    /// batch split in several objects) get `-<part>` before the extension from part 2 on.
    fn keys(&self, batch: &Batch<'_>, parts: &[Part]) -> Result<Vec<String>, SendError> {
        let mut keys = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let key = self
                .key
                .render(&self.layout.prefix, batch, i + 1, p.records)
                .map_err(|e| {
                    let reason = match std::error::Error::source(&e) {
                        Some(s) => format!("{e}: {s}"),
                        None => e.to_string(),
                    };
                    SendError::final_error(format!("destination `{}`: {reason}", self.id))
                        .with_source(e)
                })?;
            keys.push(key);
        }
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        if unique.len() < keys.len() {
            for (i, key) in keys.iter_mut().enumerate().skip(1) {
                *key = numbered(key, i + 1);
            }
        }
        Ok(keys)
    }
}

fn key_template(id: &str, layout: &ObjectLayout) -> Result<KeyTemplate, BuildError> {
    KeyTemplate::new(&layout.key).map_err(|e| BuildError::Template {
        id: id.to_owned(),
        message: match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    })
}

/// `sales/2026-11-21.csv.gz` → `sales/2026-11-21-2.csv.gz`.
fn numbered(key: &str, part: usize) -> String {
    let (dir, name) = key.rsplit_once('/').map_or(("", key), |(d, n)| (d, n));
    let (stem, ext) = match name.find('.') {
        Some(0) | None => (name, ""),
        Some(i) => name.split_at(i),
    };
    let name = format!("{stem}-{part}{ext}");
    if dir.is_empty() {
        name
    } else {
        format!("{dir}/{name}")
    }
}

/// What the delivery log shows: where the records went.
fn excerpt(written: &[String], records: usize) -> String {
    let mut text = format!(
        "{records} record{} in {}",
        if records == 1 { "" } else { "s" },
        written.join(", ")
    );
    if text.len() > 480 {
        let cut = (0..=480)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[async_trait::async_trait]
impl Destination for ObjectStorage {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        match self.target {
            Target::S3(_) => "s3",
            Target::File(_) => "file",
        }
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        self.write(std::slice::from_ref(msg)).await
    }

    fn max_batch(&self) -> usize {
        self.layout.max_records
    }

    fn batch_wait(&self) -> Duration {
        self.layout.max_wait
    }

    async fn send_batch(&self, msgs: &[OutboundMessage]) -> Result<SendOk, SendError> {
        self.write(msgs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_colliding_keys_before_the_extension() {
        assert_eq!(
            numbered("sales/2026-11-21.csv.gz", 2),
            "sales/2026-11-21-2.csv.gz"
        );
        assert_eq!(numbered("report", 3), "report-3");
        assert_eq!(numbered("a/.hidden", 2), "a/.hidden-2");
    }

    #[test]
    fn excerpts_stay_short() {
        let many: Vec<String> = (0..100)
            .map(|i| format!("s3://bucket/key-{i}.csv"))
            .collect();
        let text = excerpt(&many, 5000);
        assert!(text.starts_with("5000 records in s3://bucket/key-0.csv"));
        assert!(text.len() <= 484);
        assert_eq!(excerpt(&many[..1], 1), "1 record in s3://bucket/key-0.csv");
    }
}
