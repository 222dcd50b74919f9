//! Plain data passed in and out of the [`Store`](crate::Store).

use chrono::{DateTime, Utc};
use estafeta_core::{Attempt, Delivery, DeliveryStatus, Event, EventId, TenantId};
use serde::Serialize;

/// An event to append, with the deliveries routing decided for it.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The event. Its id must not be older than its `received_at` (make the id after taking
    /// the time, as the ingest does; up to a second of clock step back is tolerated): reads
    /// bounded by receipt time start from the id that time implies.
    pub event: std::sync::Arc<Event>,
    /// De-duplication key: the producer's `Idempotency-Key`, or `source` + `id`. `None` for
    /// an event whose producer guarantees it is not in the log yet (a change-data-capture
    /// source that de-duplicates its own re-reads): it is stored without a dedupe claim,
    /// which makes the append cheaper.
    pub dedupe_key: Option<String>,
    /// Its initial deliveries (status `pending` or, for a filter error, `dead`).
    pub deliveries: Vec<Delivery>,
}

/// What happened to one appended event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored under this id.
    Inserted(EventId),
    /// Already stored within the dedupe window under this id; nothing new was written.
    Duplicate(EventId),
}

impl AppendOutcome {
    /// The id of the stored event, new or old.
    #[must_use]
    pub fn id(&self) -> EventId {
        match self {
            Self::Inserted(id) | Self::Duplicate(id) => *id,
        }
    }
}

/// A finished attempt and the state its delivery moves to.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    /// The attempt.
    pub attempt: Attempt,
    /// New status of the delivery (`delivered`, `filtered`, `retrying` or `dead`).
    pub status: DeliveryStatus,
    /// Attempts made so far, this one included.
    pub attempts: u32,
    /// When the next attempt is due (for `retrying`).
    pub next_at: Option<DateTime<Utc>>,
    /// The failure reason, if it failed.
    pub last_error: Option<String>,
}

/// Filters for listing events. `cursor` is the `next` value of the previous page.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Owner (required: tenants never see each other's data).
    pub tenant: TenantId,
    /// Exact event type.
    pub ty: Option<String>,
    /// Estafeta source id.
    pub source_id: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    /// Page size (1..=1000).
    pub limit: usize,
    /// Continue after this cursor.
    pub cursor: Option<String>,
}

/// Filters for listing deliveries.
#[derive(Clone, Debug, Default)]
pub struct DeliveryQuery {
    /// Owner.
    pub tenant: TenantId,
    /// Status.
    pub status: Option<DeliveryStatus>,
    /// Route id.
    pub route_id: Option<String>,
    /// Destination id.
    pub destination_id: Option<String>,
    /// Event id.
    pub event_id: Option<EventId>,
    /// Page size (1..=1000).
    pub limit: usize,
    /// Continue after this cursor.
    pub cursor: Option<String>,
}

/// One page of a listing, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor for the next page, absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// How many deliveries one destination has in one status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeliveryCount {
    /// Destination id.
    pub destination_id: String,
    /// Status.
    pub status: DeliveryStatus,
    /// Count.
    pub count: u64,
}
