//! Estafeta's vocabulary: events, typed ids, deliveries, the `Destination` trait, the retry
//! policy, CEL filters, message templates and schedule timing. Nothing here does I/O.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod delivery;
pub mod destination;
pub mod event;
pub mod expr;
pub mod ids;
pub mod matcher;
pub mod metric_names;
pub mod retry;
pub mod schedule;
pub mod template;

pub use delivery::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, StepOutcome, StepTrace};
pub use destination::{Destination, OutboundMessage, SendError, SendErrorKind, SendOk};
pub use event::{Event, TenantId};
pub use ids::{AttemptId, DeliveryId, EventId, ScheduleRunId};
pub use retry::RetryPolicy;
