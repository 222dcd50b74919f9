//! Retention for object destinations: find the objects under a key prefix that were last
//! modified before a cutoff, and delete them (or, in a dry run, only report them).
//!
//! * `kind: s3` lists the bucket with `object_store` (each listed object carries its
//!   `last_modified`) and deletes with one `DELETE` per object;
//! * `kind: file` walks the directory and reads each file's modification time; empty
//!   folders are left in place.
//!
//! A prefix is matched on whole keys, like S3 does: `sales/` is everything in the `sales`
//! folder, `sales/2026-` the keys of that folder starting with `2026-`.

use std::path::{Path as FsPath, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use estafeta_config::{DestinationKindSettings, DestinationSettings};
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _};

use super::s3::S3Target;

/// What a sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Objects older than the cutoff under the prefix.
    pub matched: u64,
    /// Objects deleted (0 in a dry run).
    pub deleted: u64,
    /// Total size of the matched objects, in bytes.
    pub bytes: u64,
    /// Some of the matched keys, oldest listing order, at most the sample size asked for.
    pub sample: Vec<String>,
}

/// Why a sweep could not be done (objects deleted before the failure stay deleted).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The destination does not store objects.
    #[error("destination `{id}` is not an `s3` or `file` destination")]
    NotObjectStorage {
        /// Destination id.
        id: String,
    },
    /// The S3 client could not be made from the settings.
    #[error("destination `{id}`: cannot build the S3 client")]
    Client {
        /// Destination id.
        id: String,
        /// object_store's reason.
        #[source]
        source: object_store::Error,
    },
    /// The prefix is not a valid key prefix.
    #[error("`{prefix}` is not a valid key prefix")]
    Prefix {
        /// The prefix.
        prefix: String,
        /// The parser's reason.
        #[source]
        source: object_store::path::Error,
    },
    /// Listing or deleting in the bucket failed.
    #[error("cannot {step} `{location}`")]
    S3 {
        /// `list` or `delete`.
        step: &'static str,
        /// `s3://bucket/key`.
        location: String,
        /// object_store's reason.
        #[source]
        source: object_store::Error,
    },
    /// Reading the directory or deleting a file failed.
    #[error("cannot {step} `{}`", path.display())]
    Io {
        /// `read`, `stat` or `delete`.
        step: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The blocking walk did not finish (the runtime is shutting down).
    #[error("the sweep was interrupted")]
    Interrupted {
        /// The task's error.
        #[source]
        source: tokio::task::JoinError,
    },
}

enum Target {
    S3(S3Target),
    File(PathBuf),
}

/// Lists and deletes old objects of one `s3` or `file` destination.
pub struct ObjectSweeper {
    id: String,
    target: Target,
}

impl std::fmt::Debug for ObjectSweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSweeper")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ObjectSweeper {
    /// A sweeper for the destination `settings` (its own client; nothing is sent yet).
    ///
    /// # Errors
    /// [`SweepError::NotObjectStorage`] for other kinds, [`SweepError::Client`] when the
    /// S3 client does not accept the settings.
    pub fn new(settings: &DestinationSettings) -> Result<Self, SweepError> {
        let target = match &settings.kind {
            DestinationKindSettings::S3(s) => {
                Target::S3(S3Target::new(s).map_err(|source| SweepError::Client {
                    id: settings.id.clone(),
                    source,
                })?)
            }
            DestinationKindSettings::File(f) => Target::File(f.path.clone()),
            _ => {
                return Err(SweepError::NotObjectStorage {
                    id: settings.id.clone(),
                });
            }
        };
        Ok(Self {
            id: settings.id.clone(),
            target,
        })
    }

    /// The destination's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Finds the objects under `prefix` last modified before `before` and, unless
    /// `dry_run`, deletes them. At most `sample` keys are reported.
    ///
    /// # Errors
    /// A listing or deletion that failed; objects deleted before it stay deleted.
    pub async fn sweep(
        &self,
        prefix: &str,
        before: DateTime<Utc>,
        dry_run: bool,
        sample: usize,
    ) -> Result<SweepReport, SweepError> {
        let found = match &self.target {
            Target::S3(s3) => list_s3(s3, prefix, before).await?,
            Target::File(root) => {
                let (root, prefix) = (root.clone(), prefix.to_owned());
                tokio::task::spawn_blocking(move || list_files(&root, &prefix, before))
                    .await
                    .map_err(|source| SweepError::Interrupted { source })??
            }
        };
        let mut report = SweepReport {
            matched: u64::try_from(found.len()).unwrap_or(u64::MAX),
            bytes: found.iter().map(|(_, size)| size).sum(),
            sample: found.iter().take(sample).map(|(k, _)| k.clone()).collect(),
            deleted: 0,
        };
        if dry_run {
            return Ok(report);
        }
        for (key, _) in &found {
            match &self.target {
                Target::S3(s3) => delete_s3(s3, key).await?,
                Target::File(root) => {
                    let path = root.join(key);
                    match tokio::fs::remove_file(&path).await {
                        Ok(()) => {}
                        // Gone already (another pass, or a person): nothing to do.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(source) => {
                            return Err(SweepError::Io {
                                step: "delete",
                                path,
                                source,
                            });
                        }
                    }
                }
            }
            report.deleted += 1;
        }
        Ok(report)
    }
}

/// The folder part of a prefix (up to its last `/`), which listing starts from.
fn folder(prefix: &str) -> &str {
    prefix.rfind('/').map_or("", |i| &prefix[..i])
}

async fn list_s3(
    s3: &S3Target,
    prefix: &str,
    before: DateTime<Utc>,
) -> Result<Vec<(String, u64)>, SweepError> {
    let dir = folder(prefix);
    let start = if dir.is_empty() {
        None
    } else {
        Some(Path::parse(dir).map_err(|source| SweepError::Prefix {
            prefix: prefix.to_owned(),
            source,
        })?)
    };
    let mut stream = s3.client().list(start.as_ref());
    let mut found = Vec::new();
    while let Some(meta) = stream.try_next().await.map_err(|source| SweepError::S3 {
        step: "list",
        location: format!("s3://{}/{prefix}", s3.bucket()),
        source,
    })? {
        let key = meta.location.as_ref();
        if key.starts_with(prefix) && meta.last_modified < before {
            found.push((key.to_owned(), meta.size));
        }
    }
    Ok(found)
}

async fn delete_s3(s3: &S3Target, key: &str) -> Result<(), SweepError> {
    let location = || format!("s3://{}/{key}", s3.bucket());
    let path = Path::parse(key).map_err(|source| SweepError::Prefix {
        prefix: key.to_owned(),
        source,
    })?;
    match s3.client().delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(SweepError::S3 {
            step: "delete",
            location: location(),
            source,
        }),
    }
}

/// Files under `root/folder(prefix)` whose key (path relative to `root`, `/`-separated)
/// starts with `prefix` and whose modification time is before `before`.
fn list_files(
    root: &FsPath,
    prefix: &str,
    before: DateTime<Utc>,
) -> Result<Vec<(String, u64)>, SweepError> {
    let cutoff = SystemTime::from(before);
    let dir = folder(prefix);
    let mut found = Vec::new();
    let mut pending = vec![(root.join(dir), dir.to_owned())];
    while let Some((path, key_dir)) = pending.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            // Nothing written under this prefix yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(SweepError::Io {
                    step: "read",
                    path,
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| SweepError::Io {
                step: "read",
                path: path.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = if key_dir.is_empty() {
                name
            } else {
                format!("{key_dir}/{name}")
            };
            let meta = entry.metadata().map_err(|source| SweepError::Io {
                step: "stat",
                path: entry.path(),
                source,
            })?;
            if meta.is_dir() {
                // Only folders that can hold matching keys.
                if format!("{key}/").starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                    pending.push((entry.path(), key));
                }
            } else if meta.is_file()
                && key.starts_with(prefix)
                && meta.modified().is_ok_and(|m| m < cutoff)
            {
                found.push((key, meta.len()));
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::folder;

    #[test]
    fn the_folder_of_a_prefix_is_up_to_its_last_slash() {
        assert_eq!(folder(""), "");
        assert_eq!(folder("sales"), "");
        assert_eq!(folder("sales/"), "sales");
        assert_eq!(folder("sales/2026-"), "sales");
        assert_eq!(folder("a/b/c"), "a/b");
    }
}
