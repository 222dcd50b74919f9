//! Deleting old data and remembering that it was deleted: the event purge filter, the counts
//! a purge answers, and the audit log of deletions (retention passes and on-demand purges).
//!
//! Events are deleted with their deliveries and attempts, in bounded batches (one short
//! write each, never one giant transaction), oldest first. An event that still has an
//! unfinished delivery (`pending`, `in_flight` or `retrying`) is kept: it is deleted by a
//! later pass, once its deliveries have finished.

use chrono::{DateTime, Utc};
use estafeta_core::{EventId, TenantId};
use serde::{Deserialize, Serialize};

use crate::{Store, StoreResult};

/// How many events one purge batch deletes (one write command of the store).
pub const PURGE_BATCH: usize = 500;

/// Which events a purge deletes: received before `before`, narrowed by the optional
/// fields; events of the excluded tenants and sources are left alone (they have a
/// retention period of their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPurge {
    /// Only events received strictly before this time.
    pub before: DateTime<Utc>,
    /// Only this tenant's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Only events of this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Only events of this type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// Never events of these tenants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tenants: Vec<String>,
    /// Never events of these sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_sources: Vec<String>,
}

impl EventPurge {
    /// Every event received before `before`.
    #[must_use]
    pub fn before(before: DateTime<Utc>) -> Self {
        Self {
            before,
            tenant: None,
            source_id: None,
            ty: None,
            exclude_tenants: Vec::new(),
            exclude_sources: Vec::new(),
        }
    }
}

/// How many rows a purge deleted (or, in a preview, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeCounts {
    /// Events.
    pub events: u64,
    /// Their deliveries.
    pub deliveries: u64,
    /// The deliveries' attempts.
    pub attempts: u64,
}

impl PurgeCounts {
    /// Adds another batch's counts.
    pub fn add(&mut self, other: Self) {
        self.events += other.events;
        self.deliveries += other.deliveries;
        self.attempts += other.attempts;
    }
}

/// One purge batch's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeBatch {
    /// What the batch deleted.
    pub counts: PurgeCounts,
    /// The newest event id deleted: the next batch starts after it.
    pub last: Option<EventId>,
}

/// What a purge would delete, without deleting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgePreview {
    /// The counts.
    pub counts: PurgeCounts,
    /// The oldest matching event ids, up to the sample size asked for.
    pub sample: Vec<EventId>,
    /// Events that match but are kept because a delivery of theirs is unfinished.
    pub kept_unfinished: u64,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// `aud_` + ULID (time ordered).
    pub id: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// Who: a token's name, or `retention` for the background job.
    pub actor: String,
    /// What was deleted: `events` or `objects`.
    pub kind: String,
    /// The filter or policy applied, as JSON.
    pub scope: serde_json::Value,
    /// What was (or, in a dry run, would be) deleted, as JSON.
    pub counts: serde_json::Value,
    /// Whether nothing was deleted because it was a dry run.
    pub dry_run: bool,
    /// Why the deletion stopped early, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AuditEntry {
    /// A new entry recorded now.
    #[must_use]
    pub fn new(
        actor: impl Into<String>,
        kind: impl Into<String>,
        scope: serde_json::Value,
        counts: serde_json::Value,
        dry_run: bool,
    ) -> Self {
        Self {
            id: format!("aud_{}", next_ulid()),
            at: Utc::now(),
            actor: actor.into(),
            kind: kind.into(),
            scope,
            counts,
            dry_run,
            error: None,
        }
    }
}

/// A ULID after every one made earlier in this process, so entries recorded in one
/// millisecond still list in the order they were made.
fn next_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let mut g = GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    g.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

/// Deletes every event `filter` selects, `batch` at a time (each batch is one short write),
/// and answers the totals. Events with unfinished deliveries are kept.
///
/// # Errors
/// The store's error; batches committed before it stay deleted.
pub async fn purge_events(
    store: &dyn Store,
    filter: &EventPurge,
    batch: usize,
) -> StoreResult<PurgeCounts> {
    let batch = batch.max(1);
    let mut total = PurgeCounts::default();
    let mut after = None;
    loop {
        let done = store.purge_events_batch(filter, after, batch).await?;
        total.add(done.counts);
        match done.last {
            Some(last) if usize::try_from(done.counts.events).unwrap_or(usize::MAX) >= batch => {
                after = Some(last);
                tokio::task::yield_now().await;
            }
            _ => return Ok(total),
        }
    }
}
