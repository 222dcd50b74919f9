//! The local-directory side of object destinations: each object becomes a file under the
//! configured directory, written whole or not at all — the bytes go to a hidden temporary
//! file in the same directory (`.<name>.<unique>.estafeta-tmp`), are flushed to disk
//! (`fsync`), and the file is renamed into place (atomic on one file system), after which
//! the directory is synced so the new name survives a crash. Readers see the old file or
//! the whole new one, never a part. A crash may leave a temporary file behind; nothing
//! reads those and they can be deleted.
//!
//! Permission problems and a key that names an existing directory are final; other I/O
//! failures (a full disk, say) are retryable.

use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use estafeta_core::SendError;

/// Suffix of the temporary files.
pub(crate) const TEMP_SUFFIX: &str = ".estafeta-tmp";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    /// An I/O step failed.
    #[error("cannot {step} `{}`", path.display())]
    Io {
        /// What was being done: `create the directory`, `write`, `sync`, `rename to`.
        step: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The blocking task did not finish (the runtime is shutting down).
    #[error("the write of `{}` was interrupted", path.display())]
    Interrupted {
        /// The file's path.
        path: PathBuf,
        /// The task's error.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// A directory files are written under.
#[derive(Debug)]
pub(crate) struct FileTarget {
    root: PathBuf,
}

impl FileTarget {
    /// Files go under `root` (created when the first file is written).
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// The file's path, for the delivery log.
    pub(crate) fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    /// Writes `body` as `root/key`, whole or not at all.
    pub(crate) async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), FileError> {
        let path = self.root.join(key);
        let p = path.clone();
        tokio::task::spawn_blocking(move || write_whole(&p, &body))
            .await
            .map_err(|source| FileError::Interrupted { path, source })?
    }
}

fn write_whole(path: &Path, body: &[u8]) -> Result<(), FileError> {
    let io = |step: &'static str, at: &Path| {
        let at = at.to_path_buf();
        move |source| FileError::Io {
            step,
            path: at,
            source,
        }
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create the directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}-{}{TEMP_SUFFIX}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(body).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io("rename to", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // The rename is durable once the directory is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory", dir))
}

impl FileError {
    /// The failure, classified.
    pub(crate) fn into_send_error(self) -> SendError {
        let message = self.to_string();
        let final_kind = match &self {
            FileError::Io { source, .. } => matches!(
                source.kind(),
                ErrorKind::PermissionDenied
                    | ErrorKind::ReadOnlyFilesystem
                    | ErrorKind::IsADirectory
                    | ErrorKind::NotADirectory
                    | ErrorKind::InvalidFilename
            ),
            FileError::Interrupted { .. } => false,
        };
        let reason = match &self {
            FileError::Io { source, .. } => format!("{message}: {source}"),
            FileError::Interrupted { .. } => message,
        };
        if final_kind {
            SendError::final_error(reason).with_source(self)
        } else {
            SendError::retryable(reason).with_source(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_whole_files_and_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTarget::new(dir.path());
        t.put("a/b/c.csv", b"one".to_vec()).await.unwrap();
        t.put("a/b/c.csv", b"two".to_vec()).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b/c.csv")).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.csv"]);
    }

    #[tokio::test]
    async fn a_failed_rename_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("x/taken")).unwrap();
        std::fs::write(dir.path().join("x/taken/keep"), b"k").unwrap();
        let t = FileTarget::new(dir.path());
        let err = t.put("x/taken", b"data".to_vec()).await.unwrap_err();
        let send = err.into_send_error();
        assert!(!send.is_retryable(), "{send}");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("x"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["taken"]);
    }
}
