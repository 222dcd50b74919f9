//! The behaviour suite every `Store` implementation must pass: functions over
//! `Arc<dyn Store>`, each given a fresh, empty store. Builders for test data live here too.

pub(crate) mod deliveries;
pub(crate) mod events;
pub(crate) mod filtered;
pub(crate) mod lifecycle;
pub(crate) mod retention;
pub(crate) mod schedules;
pub(crate) mod vault;

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use estafeta_core::{Delivery, DeliveryId, DeliveryStatus, Event, EventId, TenantId};
use estafeta_store::{NewEvent, StoreError};
use serde_json::{Map, json};
use ulid::Ulid;

/// A fixed instant with a non-zero nanosecond part, so lost precision shows.
pub(crate) fn base_time() -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600, 123_456_789)
        .single()
        .unwrap_or_default()
}

/// Ids made in strictly increasing order (plain `new()` is random within a millisecond).
pub(crate) fn event_id() -> EventId {
    EventId::from_ulid(next_ulid())
}

/// A delivery id made in strictly increasing order.
pub(crate) fn delivery_id() -> DeliveryId {
    DeliveryId::from_ulid(next_ulid())
}

fn next_ulid() -> Ulid {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    // Time first, then a process-wide sequence: later calls always sort later.
    Ulid::from_parts(ms, u128::from(n))
}

/// A plain event of `tenant` with small JSON data.
pub(crate) fn event(tenant: &str, ty: &str) -> Event {
    let now = Utc::now();
    Event {
        id: event_id(),
        tenant: TenantId::new(tenant),
        source_id: "http".to_owned(),
        ce_id: format!("ce-{}", Ulid::new()),
        ce_source: "shop".to_owned(),
        ty: ty.to_owned(),
        subject: None,
        time: now,
        datacontenttype: None,
        dataschema: None,
        key: None,
        extensions: Map::new(),
        data: Some(json!({"n": 1})),
        data_is_base64: false,
        received_at: now,
    }
}

/// A delivery of `event` through `route` to `destination`.
pub(crate) fn delivery(
    event: &Event,
    route: &str,
    destination: &str,
    status: DeliveryStatus,
) -> Delivery {
    let now = Utc::now();
    Delivery {
        id: delivery_id(),
        event_id: event.id,
        tenant: event.tenant.clone(),
        route_id: route.to_owned(),
        destination_id: destination.to_owned(),
        target_index: 0,
        status,
        attempts: 0,
        next_at: (status == DeliveryStatus::Pending).then_some(now),
        last_error: None,
        key: event.key.clone(),
        created_at: now,
        updated_at: now,
    }
}

/// An event to append with its dedupe key and deliveries.
pub(crate) fn new_event(
    event: impl Into<std::sync::Arc<Event>>,
    dedupe_key: &str,
    deliveries: Vec<Delivery>,
) -> NewEvent {
    NewEvent {
        event: event.into(),
        dedupe_key: Some(dedupe_key.to_owned()),
        deliveries,
    }
}

/// An event with one pending delivery to `dest` and a unique dedupe key.
pub(crate) fn simple(tenant: &str) -> NewEvent {
    let e = event(tenant, "order.created");
    let d = delivery(&e, "r1", "dest", DeliveryStatus::Pending);
    let key = format!("k-{}", e.id);
    new_event(e, &key, vec![d])
}

/// Seconds after [`base_time`].
pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
    base_time() + ChronoDuration::seconds(seconds)
}

/// True when the error is a bad-argument error.
pub(crate) fn is_invalid<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Invalid(_)))
}

/// True when the error says the store is unavailable.
pub(crate) fn is_unavailable<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Unavailable { .. }))
}
