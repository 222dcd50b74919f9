//! Suite: purging old events with their deliveries and attempts in batches, keeping events
//! whose deliveries are unfinished, previews that delete nothing, and the audit log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use estafeta_core::{Attempt, AttemptId, AttemptOutcome, DeliveryStatus, Event, EventId, TenantId};
use estafeta_store::retention::{AuditEntry, EventPurge, PurgeCounts, purge_events};
use estafeta_store::{AttemptRecord, NewEvent, Store};
use serde_json::json;
use ulid::Ulid;

use super::{delivery, event, new_event};

/// An event of `tenant` and `source` received `age` ago (its id made at that time too).
fn old_event(tenant: &str, source: &str, ty: &str, age: ChronoDuration) -> Event {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let received: DateTime<Utc> = Utc::now() - age;
    let ms = u64::try_from(received.timestamp_millis()).unwrap_or(0);
    let mut e = event(tenant, ty);
    e.id = EventId::from_ulid(Ulid::from_parts(
        ms,
        u128::from(SEQ.fetch_add(1, Ordering::Relaxed)),
    ));
    e.source_id = source.to_owned();
    e.received_at = received;
    e
}

/// Appends an event with one delivery in `status`.
fn with_delivery(e: Event, status: DeliveryStatus) -> NewEvent {
    let d = delivery(&e, "r", "d", status);
    let key = format!("k-{}", e.id);
    new_event(e, &key, vec![d])
}

fn days(n: i64) -> ChronoDuration {
    ChronoDuration::days(n)
}

async fn exists(store: &dyn Store, e: &Event) -> bool {
    store
        .get_event(&e.tenant, e.id)
        .await
        .expect("get")
        .is_some()
}

/// Old events go with their deliveries and attempts, across several batches; newer events
/// and events with an unfinished delivery stay.
pub(crate) async fn purge_deletes_old_events_in_batches(store: Arc<dyn Store>) {
    let mut old = Vec::new();
    let mut batch = Vec::new();
    for _ in 0..23 {
        let e = old_event("acme", "http", "t", days(40));
        old.push(e.clone());
        batch.push(with_delivery(e, DeliveryStatus::Delivered));
    }
    let pending = old_event("acme", "http", "t", days(40));
    let retrying = old_event("acme", "http", "t", days(40));
    let fresh = old_event("acme", "http", "t", days(1));
    batch.push(with_delivery(pending.clone(), DeliveryStatus::Pending));
    batch.push(with_delivery(retrying.clone(), DeliveryStatus::Retrying));
    batch.push(with_delivery(fresh.clone(), DeliveryStatus::Delivered));
    store.append(batch).await.expect("append");

    // One attempt on the first old event's delivery.
    let first = store
        .deliveries_for_event(old[0].id)
        .await
        .expect("deliveries");
    store
        .record_attempts(vec![AttemptRecord {
            attempt: Attempt {
                id: AttemptId::new(),
                delivery_id: first[0].id,
                started_at: Utc::now(),
                duration_ms: 5,
                outcome: AttemptOutcome::Delivered,
                status_code: Some(200),
                error: None,
                response_excerpt: None,
                steps: Vec::new(),
            },
            status: DeliveryStatus::Delivered,
            attempts: 1,
            next_at: None,
            last_error: None,
        }])
        .await
        .expect("attempt");

    let filter = EventPurge::before(Utc::now() - days(30));
    let preview = store
        .preview_event_purge(&filter, 5)
        .await
        .expect("preview");
    assert_eq!(
        preview.counts,
        PurgeCounts {
            events: 23,
            deliveries: 23,
            attempts: 1
        }
    );
    assert_eq!(preview.kept_unfinished, 2);
    assert_eq!(
        preview.sample,
        old.iter().take(5).map(|e| e.id).collect::<Vec<_>>()
    );
    assert!(
        exists(store.as_ref(), &old[0]).await,
        "a preview deletes nothing"
    );

    // Batches of 5: five batches, the last one short.
    let counts = purge_events(store.as_ref(), &filter, 5)
        .await
        .expect("purge");
    assert_eq!(counts, preview.counts);
    for e in &old {
        assert!(!exists(store.as_ref(), e).await, "{} should be gone", e.id);
        assert!(
            store
                .deliveries_for_event(e.id)
                .await
                .expect("d")
                .is_empty()
        );
    }
    assert!(
        store
            .attempts(first[0].id)
            .await
            .expect("attempts")
            .is_empty()
    );
    for kept in [&pending, &retrying, &fresh] {
        assert!(
            exists(store.as_ref(), kept).await,
            "{} should be kept",
            kept.id
        );
    }
    // Nothing left to do: a second purge deletes nothing.
    let again = purge_events(store.as_ref(), &filter, 5)
        .await
        .expect("purge again");
    assert_eq!(again, PurgeCounts::default());
}

/// The filter's tenant, source, type and exclusions narrow what goes.
pub(crate) async fn purge_filters_by_scope(store: Arc<dyn Store>) {
    let a = old_event("acme", "visitors", "visit.created", days(10));
    let b = old_event("acme", "visitors", "visit.updated", days(10));
    let c = old_event("acme", "orders", "order.created", days(10));
    let d = old_event("globex", "visitors", "visit.created", days(10));
    store
        .append(
            [&a, &b, &c, &d]
                .into_iter()
                .map(|e| with_delivery(e.clone(), DeliveryStatus::Dead))
                .collect(),
        )
        .await
        .expect("append");
    let before = Utc::now() - days(5);

    let mut by_type = EventPurge::before(before);
    by_type.tenant = Some(TenantId::new("acme"));
    by_type.source_id = Some("visitors".to_owned());
    by_type.ty = Some("visit.created".to_owned());
    let n = purge_events(store.as_ref(), &by_type, 100)
        .await
        .expect("purge");
    assert_eq!(n.events, 1);
    assert!(!exists(store.as_ref(), &a).await);
    assert!(exists(store.as_ref(), &b).await && exists(store.as_ref(), &d).await);

    let mut rest = EventPurge::before(before);
    rest.exclude_tenants = vec!["globex".to_owned()];
    rest.exclude_sources = vec!["orders".to_owned()];
    let n = purge_events(store.as_ref(), &rest, 100)
        .await
        .expect("purge");
    assert_eq!(n.events, 1);
    assert!(!exists(store.as_ref(), &b).await);
    assert!(exists(store.as_ref(), &c).await, "excluded source kept");
    assert!(exists(store.as_ref(), &d).await, "excluded tenant kept");
}

/// Audit entries round-trip and list newest first, in pages.
pub(crate) async fn audit_entries_list_newest_first(store: Arc<dyn Store>) {
    let mut written = Vec::new();
    for i in 0..5_u64 {
        let mut e = AuditEntry::new(
            "admin",
            if i % 2 == 0 { "events" } else { "objects" },
            json!({"before": "2026-01-01T00:00:00Z", "n": i}),
            json!({"events": i}),
            i == 3,
        );
        if i == 4 {
            e.error = Some("stopped early".to_owned());
        }
        store.record_audit(e.clone()).await.expect("record");
        written.push(e);
    }
    let first = store.list_audit(3, None).await.expect("page 1");
    assert_eq!(first.items.len(), 3);
    let second = store
        .list_audit(3, first.next.clone())
        .await
        .expect("page 2");
    assert!(second.next.is_none());
    let mut all: Vec<AuditEntry> = first.items.into_iter().chain(second.items).collect();
    all.reverse();
    assert_eq!(all, written);
    assert!(store.list_audit(3, Some("nope".to_owned())).await.is_err());
}
