//! Turning SQLite and I/O failures into [`StoreError`]s whose messages carry no SQL text and
//! no file paths, and telling errors that doom a whole transaction from per-command ones.

use std::error::Error;
use std::sync::Arc;

use rusqlite::ErrorCode;

use crate::StoreError;

/// An error that can be handed to several waiters at once (a failed group commit answers
/// every command in the batch with the same cause).
pub(crate) type SharedError = Arc<dyn Error + Send + Sync>;

/// `Unavailable` with a fixed reason and the underlying cause.
pub(crate) fn unavailable(
    reason: impl Into<String>,
    source: impl Into<Box<dyn Error + Send + Sync>>,
) -> StoreError {
    StoreError::Unavailable {
        reason: reason.into(),
        source: Some(source.into()),
    }
}

/// `Unavailable` without an underlying cause (closed store, stopped writer).
pub(crate) fn unavailable_bare(reason: impl Into<String>) -> StoreError {
    StoreError::Unavailable {
        reason: reason.into(),
        source: None,
    }
}

/// The answer for writes once the store is closed or its writer has stopped.
pub(crate) fn closed() -> StoreError {
    unavailable_bare("the store is closed")
}

/// `Corrupt` for a stored value that cannot be decoded.
pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// Maps a SQLite error to a [`StoreError`].
pub(crate) fn from_sqlite(err: rusqlite::Error) -> StoreError {
    match &err {
        rusqlite::Error::SqliteFailure(e, _) => {
            let reason = match e.code {
                ErrorCode::DiskFull => "the disk is full",
                ErrorCode::SystemIoFailure => "an I/O error occurred in the database file",
                ErrorCode::CannotOpen => "the database file cannot be opened",
                ErrorCode::PermissionDenied => "access to the database file was denied",
                ErrorCode::ReadOnly => "the database is read-only",
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    "the database stayed locked by another connection"
                }
                ErrorCode::OutOfMemory => "the database ran out of memory",
                ErrorCode::NoLargeFileSupport => "the file system cannot hold a file this large",
                ErrorCode::FileLockingProtocolFailed => "the database file could not be locked",
                ErrorCode::DatabaseCorrupt => return corrupt("the database file is damaged"),
                ErrorCode::NotADatabase => {
                    return corrupt("the file is not an Estafeta SQLite database");
                }
                ErrorCode::ConstraintViolation => return constraint(e.extended_code),
                ErrorCode::TooBig => {
                    return StoreError::Invalid("a value is too large to store".to_owned());
                }
                _ => "the database failed",
            };
            unavailable(reason, err)
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnType(..) => {
            corrupt(format!("a stored value cannot be read: {err}"))
        }
        _ => unavailable("the database failed", err),
    }
}

fn constraint(extended_code: i32) -> StoreError {
    let message = match extended_code {
        rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
            "an item with the same id already exists"
        }
        rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => "it refers to an item that does not exist",
        _ => "it breaks a rule of the stored data",
    };
    StoreError::Invalid(format!("rejected: {message}"))
}

/// True when the error means the whole transaction is lost (I/O, disk full, locks, closed)
/// rather than one command being wrong.
pub(crate) fn dooms_transaction(err: &StoreError) -> bool {
    matches!(err, StoreError::Unavailable { .. })
}

/// Splits an error into a reason and a cause that several waiters can share.
pub(crate) fn share(err: StoreError) -> (String, Option<SharedError>) {
    match err {
        StoreError::Unavailable { reason, source } => (reason, source.map(Arc::from)),
        other => {
            let reason = other.to_string();
            (reason, Some(Arc::new(other)))
        }
    }
}

/// One waiter's copy of a shared failure.
pub(crate) fn replicate(reason: &str, source: Option<&SharedError>) -> StoreError {
    StoreError::Unavailable {
        reason: reason.to_owned(),
        source: source.map(|s| Box::new(Arc::clone(s)) as Box<dyn Error + Send + Sync>),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("x".to_owned()))
    }

    #[test]
    fn io_class_errors_are_unavailable_and_doom_the_transaction() {
        for code in [
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_IOERR_FSYNC,
            rusqlite::ffi::SQLITE_CANTOPEN,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
        ] {
            let err = from_sqlite(failure(code));
            assert!(
                matches!(err, StoreError::Unavailable { .. }),
                "{code}: {err:?}"
            );
            assert!(dooms_transaction(&err));
            assert!(std::error::Error::source(&err).is_some());
        }
    }

    #[test]
    fn constraint_errors_are_per_command() {
        let err = from_sqlite(failure(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY));
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("same id")));
        assert!(!dooms_transaction(&err));
    }

    #[test]
    fn shared_errors_keep_their_cause() {
        let (reason, source) = share(from_sqlite(failure(rusqlite::ffi::SQLITE_FULL)));
        let a = replicate(&reason, source.as_ref());
        let b = replicate(&reason, source.as_ref());
        assert_eq!(a.to_string(), "store unavailable: the disk is full");
        assert_eq!(a.to_string(), b.to_string());
        assert!(std::error::Error::source(&b).is_some());
    }
}
