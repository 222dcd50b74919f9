//! Deliveries (one event to one destination through one route) and their attempts.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::TenantId;
use crate::ids::{AttemptId, DeliveryId, EventId};

/// Where a delivery is in its life: `pending → in_flight → delivered | filtered | retrying →
/// … → dead`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt.
    Pending,
    /// An attempt is running now.
    InFlight,
    /// The destination accepted it.
    Delivered,
    /// The last attempt failed; another is due at `next_at`.
    Retrying,
    /// Attempts are exhausted or the failure was final; parked until an operator retries it.
    Dead,
    /// A `filter` step of the route said no: nothing was sent, and that is not an error.
    Filtered,
}

impl DeliveryStatus {
    /// All states, in life order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::InFlight,
        Self::Delivered,
        Self::Retrying,
        Self::Dead,
        Self::Filtered,
    ];

    /// The name used in the API and the store.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "in_flight",
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
            Self::Filtered => "filtered",
        }
    }

    /// True when no more attempts will be made without an operator.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Delivered | Self::Dead | Self::Filtered)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown delivery status name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown delivery status `{0}` (expected pending, in_flight, delivered, retrying, dead or filtered)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for DeliveryStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// One event going to one destination through one route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The delivery's id, sent to receivers for de-duplication.
    pub id: DeliveryId,
    /// The event being delivered.
    pub event_id: EventId,
    /// Owner.
    pub tenant: TenantId,
    /// The route that selected the event.
    pub route_id: String,
    /// The destination it goes to.
    pub destination_id: String,
    /// Index of the destination in the route's `to` list (selects the template).
    pub target_index: u32,
    /// Current state.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending and retrying deliveries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    /// The reason of the last failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Ordering key, copied from the event for routes with `ordering: key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// When the delivery was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The destination accepted the message.
    Delivered,
    /// Failed in a way worth retrying (timeout, connection error, 5xx, 429).
    Retryable,
    /// Failed in a way that retrying cannot fix (4xx, a template error).
    Final,
    /// A `filter` step of the route ended the delivery; nothing was sent.
    Filtered,
}

impl AttemptOutcome {
    /// The name used in the API and the store.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retryable => "retryable",
            Self::Final => "final",
            Self::Filtered => "filtered",
        }
    }

    /// Parses a stored name; unknown names read as `final`.
    #[must_use]
    pub fn from_name(s: &str) -> Self {
        match s {
            "delivered" => Self::Delivered,
            "retryable" => Self::Retryable,
            "filtered" => Self::Filtered,
            _ => Self::Final,
        }
    }
}

/// The record of one attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The attempt's id.
    pub id: AttemptId,
    /// The delivery it belongs to.
    pub delivery_id: DeliveryId,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The HTTP status (or the destination's equivalent), when there was an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first bytes of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
    /// What each of the route's steps did before the send, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepTrace>,
}

/// What one route step did during an attempt: shown in the delivery record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTrace {
    /// `enrich`, `filter` or `transform`.
    pub step: String,
    /// The name an `enrich` step binds (`as`); the expression of a `filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How it ended.
    pub outcome: StepOutcome,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Who answered an `enrich` step (`host[:port]`; a fallback when the primary failed),
    /// with the HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// The start of what the step produced (an `enrich` step's answer as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why it failed or stopped the event; what was tried before an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// How one route step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// It ran and the event goes on.
    Ok,
    /// An `enrich` step answered from its cache.
    Cached,
    /// A `filter` step said no: the event stops here for this route.
    Filtered,
    /// It failed; the attempt fails with it.
    Failed,
    /// An `enrich` step failed and `on_error: continue` bound its name to null.
    Continued,
}
