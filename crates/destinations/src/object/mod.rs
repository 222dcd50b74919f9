//! Object storage destinations: `kind: s3` (S3 and S3-compatible stores through
//! `object_store`) and `kind: file` (a local directory), with the same behaviour.
//!
//! The engine's lane gathers due deliveries into batches of up to `batch.max_records`,
//! waiting up to `batch.max_wait`; [`ObjectStorage`] turns each batch into records
//! ([`records`]: the event's `data`, or the route template's output parsed as JSON),
//! encodes them ([`encode`]: CSV, JSON Lines or a JSON array, split by `max_records` and
//! `max_bytes`, optionally gzip), names each object from the `key` template ([`key`]) and
//! writes it whole ([`s3`]: one PUT; [`file`]: temporary file, fsync, rename). The batch is
//! delivered only after every object is written; all deliveries of a batch share the
//! outcome. Keys derive from the batch's first delivery id, so a retried batch rewrites its
//! objects rather than adding copies.
//!
//! [`retention`] lists and deletes the objects older than a cutoff under a prefix (for
//! retention policies and the purge API).

mod destination;
mod encode;
mod file;
mod key;
mod records;
pub mod retention;
mod s3;

pub use destination::ObjectStorage;
pub use retention::{ObjectSweeper, SweepError, SweepReport};
