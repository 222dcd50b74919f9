//! Suite: deliveries stored with events or for replay, listing and paging, attempts,
//! requeue, the dispatcher's recovery scan and the per-destination counts.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};
use estafeta_core::{
    Attempt, AttemptId, AttemptOutcome, Delivery, DeliveryId, DeliveryStatus, TenantId,
};
use estafeta_store::{AttemptRecord, DeliveryCount, DeliveryQuery, Store};

use super::{at, delivery, event, is_invalid, new_event, simple};

/// Appends `n` events of `tenant`, each with a delivery via r1→d1 and one via r2→d2, with
/// statuses cycling through `statuses`; returns the deliveries.
async fn seed(
    store: &dyn Store,
    tenant: &str,
    n: usize,
    statuses: &[DeliveryStatus],
) -> Vec<Delivery> {
    let mut all = Vec::new();
    let mut batch = Vec::new();
    for i in 0..n {
        let e = event(tenant, "t");
        let mut d1 = delivery(&e, "r1", "d1", statuses[(2 * i) % statuses.len()]);
        let mut d2 = delivery(&e, "r2", "d2", statuses[(2 * i + 1) % statuses.len()]);
        d2.target_index = 1;
        d1.key = Some(format!("key-{i}"));
        all.push(d1.clone());
        all.push(d2.clone());
        let key = format!("seed-{}", e.id);
        batch.push(new_event(e, &key, vec![d1, d2]));
    }
    store.append(batch).await.expect("seed");
    all
}

async fn list_all(store: &dyn Store, mut q: DeliveryQuery) -> Vec<DeliveryId> {
    let mut ids = Vec::new();
    for _ in 0..1000 {
        let page = store.list_deliveries(&q).await.expect("page");
        assert!(page.items.len() <= q.limit.max(1));
        ids.extend(page.items.iter().map(|d| d.id));
        match page.next {
            Some(next) => q.cursor = Some(next),
            None => break,
        }
    }
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a page repeated an item");
    ids
}

fn newest_first(all: &[Delivery], keep: impl Fn(&Delivery) -> bool) -> Vec<DeliveryId> {
    let mut ids: Vec<DeliveryId> = all.iter().filter(|d| keep(d)).map(|d| d.id).collect();
    ids.sort_by_key(|id| std::cmp::Reverse(id.to_string()));
    ids
}

/// Deliveries stored with their events round-trip and list with every filter, in pages
/// without gaps or repeats.
pub(crate) async fn deliveries_list_filter_and_page(store: Arc<dyn Store>) {
    let statuses = [
        DeliveryStatus::Pending,
        DeliveryStatus::Dead,
        DeliveryStatus::Delivered,
    ];
    let all = seed(store.as_ref(), "acme", 20, &statuses).await;
    seed(store.as_ref(), "globex", 3, &statuses).await;
    let tenant = TenantId::new("acme");
    for d in &all {
        assert_eq!(
            store
                .get_delivery(&tenant, d.id)
                .await
                .expect("get")
                .as_ref(),
            Some(d)
        );
    }
    let q = DeliveryQuery {
        tenant: tenant.clone(),
        limit: 7,
        ..DeliveryQuery::default()
    };
    assert_eq!(
        list_all(store.as_ref(), q.clone()).await,
        newest_first(&all, |_| true)
    );

    let dead = DeliveryQuery {
        status: Some(DeliveryStatus::Dead),
        limit: 3,
        ..q.clone()
    };
    let want = newest_first(&all, |d| d.status == DeliveryStatus::Dead);
    assert!(!want.is_empty());
    assert_eq!(list_all(store.as_ref(), dead).await, want);

    let route = DeliveryQuery {
        route_id: Some("r2".to_owned()),
        ..q.clone()
    };
    assert_eq!(
        list_all(store.as_ref(), route).await,
        newest_first(&all, |d| d.route_id == "r2")
    );

    let dest = DeliveryQuery {
        destination_id: Some("d1".to_owned()),
        limit: 50,
        ..q.clone()
    };
    let want = newest_first(&all, |d| d.destination_id == "d1");
    assert_eq!(list_all(store.as_ref(), dest).await, want);

    let event_id = all[6].event_id;
    let by_event = DeliveryQuery {
        event_id: Some(event_id),
        limit: 1,
        ..q.clone()
    };
    assert_eq!(
        list_all(store.as_ref(), by_event).await,
        newest_first(&all, |d| d.event_id == event_id)
    );
    let for_event = store
        .deliveries_for_event(event_id)
        .await
        .expect("for event");
    let mut want: Vec<Delivery> = all
        .iter()
        .filter(|d| d.event_id == event_id)
        .cloned()
        .collect();
    want.sort_by_key(|d| d.id.to_string());
    assert_eq!(for_event, want);

    let combined = DeliveryQuery {
        status: Some(DeliveryStatus::Pending),
        destination_id: Some("d2".to_owned()),
        route_id: Some("r2".to_owned()),
        limit: 2,
        ..q.clone()
    };
    let want = newest_first(&all, |d| {
        d.status == DeliveryStatus::Pending && d.destination_id == "d2"
    });
    assert_eq!(list_all(store.as_ref(), combined).await, want);

    for bad in ["evt_01ARZ3NDEKTSV4RRFFQ69G5FAV", "zzz"] {
        let r = store
            .list_deliveries(&DeliveryQuery {
                cursor: Some(bad.to_owned()),
                ..q.clone()
            })
            .await;
        assert!(is_invalid(&r), "cursor {bad:?} gave {r:?}");
    }

    let other = DeliveryQuery {
        tenant: TenantId::new("nobody"),
        ..q.clone()
    };
    assert!(list_all(store.as_ref(), other).await.is_empty());
    assert!(
        store
            .get_delivery(&TenantId::new("globex"), all[0].id)
            .await
            .expect("get")
            .is_none()
    );
}

/// Deliveries inserted later (replay) are stored; one for a missing event is refused.
pub(crate) async fn insert_deliveries_for_replay(store: Arc<dyn Store>) {
    let seeded = simple("acme");
    let e = seeded.event.clone();
    store.append(vec![seeded]).await.expect("append");
    let replay = vec![
        delivery(&e, "r9", "late", DeliveryStatus::Pending),
        delivery(&e, "r9", "later", DeliveryStatus::Pending),
    ];
    store
        .insert_deliveries(replay.clone())
        .await
        .expect("insert");
    let got = store.deliveries_for_event(e.id).await.expect("for event");
    assert_eq!(got.len(), 3);
    for d in &replay {
        assert_eq!(
            store
                .get_delivery(&e.tenant, d.id)
                .await
                .expect("get")
                .as_ref(),
            Some(d)
        );
    }
    store.insert_deliveries(vec![]).await.expect("empty insert");
    let orphan = delivery(&event("acme", "t"), "r1", "d", DeliveryStatus::Pending);
    let r = store.insert_deliveries(vec![orphan.clone()]).await;
    assert!(is_invalid(&r), "orphan delivery gave {r:?}");
    assert!(
        store
            .get_delivery(&e.tenant, orphan.id)
            .await
            .expect("get")
            .is_none()
    );
    let dup = store.insert_deliveries(vec![replay[0].clone()]).await;
    assert!(is_invalid(&dup), "duplicate delivery id gave {dup:?}");
}

fn attempt(d: &Delivery, started_secs: i64, outcome: AttemptOutcome, code: Option<u16>) -> Attempt {
    Attempt {
        id: AttemptId::new(),
        delivery_id: d.id,
        started_at: at(started_secs),
        duration_ms: 1234,
        outcome,
        status_code: code,
        error: (outcome != AttemptOutcome::Delivered).then(|| "HTTP 503".to_owned()),
        response_excerpt: Some("{\"ok\":false}".to_owned()),
        steps: Vec::new(),
    }
}

/// Recording attempts moves the delivery and keeps the attempts, oldest first.
pub(crate) async fn record_attempts_updates_state(store: Arc<dyn Store>) {
    let seeded = simple("acme");
    let d = seeded.deliveries[0].clone();
    let tenant = d.tenant.clone();
    store.append(vec![seeded]).await.expect("append");

    let first = attempt(&d, 10, AttemptOutcome::Retryable, Some(503));
    let retry_at = at(70);
    store
        .record_attempts(vec![AttemptRecord {
            attempt: first.clone(),
            status: DeliveryStatus::Retrying,
            attempts: 1,
            next_at: Some(retry_at),
            last_error: Some("HTTP 503".to_owned()),
        }])
        .await
        .expect("first attempt");
    let now = store
        .get_delivery(&tenant, d.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(now.status, DeliveryStatus::Retrying);
    assert_eq!(now.attempts, 1);
    assert_eq!(now.next_at, Some(retry_at));
    assert_eq!(now.last_error.as_deref(), Some("HTTP 503"));
    assert!(now.updated_at >= d.updated_at);

    let mut second = attempt(&d, 70, AttemptOutcome::Delivered, Some(200));
    second.response_excerpt = None;
    let mut third_failed = attempt(&d, 5, AttemptOutcome::Final, None);
    third_failed.delivery_id = DeliveryId::new();
    store
        .record_attempts(vec![AttemptRecord {
            attempt: second.clone(),
            status: DeliveryStatus::Delivered,
            attempts: 2,
            next_at: None,
            last_error: None,
        }])
        .await
        .expect("second attempt");
    let done = store
        .get_delivery(&tenant, d.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (done.status, done.attempts, done.next_at, done.last_error),
        (DeliveryStatus::Delivered, 2, None, None)
    );
    assert_eq!(
        (done.created_at, done.event_id, done.route_id.as_str()),
        (d.created_at, d.event_id, "r1")
    );
    assert_eq!(
        store.attempts(d.id).await.expect("attempts"),
        vec![first, second]
    );

    let unknown = AttemptRecord {
        attempt: third_failed,
        status: DeliveryStatus::Dead,
        attempts: 1,
        next_at: None,
        last_error: None,
    };
    let r = store.record_attempts(vec![unknown]).await;
    assert!(is_invalid(&r), "attempt for a missing delivery gave {r:?}");
    assert_eq!(store.attempts(d.id).await.expect("attempts").len(), 2);
    store.record_attempts(vec![]).await.expect("empty");
}

/// An operator's retry puts a dead delivery back to pending, due now, keeping its count;
/// another tenant's or a missing delivery gives `None` and changes nothing.
pub(crate) async fn requeue_dead_delivery(store: Arc<dyn Store>) {
    let seeded = simple("acme");
    let d = seeded.deliveries[0].clone();
    store.append(vec![seeded]).await.expect("append");
    store
        .record_attempts(vec![AttemptRecord {
            attempt: attempt(&d, 1, AttemptOutcome::Final, Some(400)),
            status: DeliveryStatus::Dead,
            attempts: 5,
            next_at: None,
            last_error: Some("HTTP 400".to_owned()),
        }])
        .await
        .expect("dead");
    let tenant = d.tenant.clone();
    let before = Utc::now() - ChronoDuration::seconds(1);
    assert!(
        store
            .requeue_delivery(&TenantId::new("globex"), d.id)
            .await
            .expect("other")
            .is_none()
    );
    let untouched = store
        .get_delivery(&tenant, d.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(untouched.status, DeliveryStatus::Dead);
    assert!(
        store
            .requeue_delivery(&tenant, DeliveryId::new())
            .await
            .expect("missing")
            .is_none()
    );

    let back = store
        .requeue_delivery(&tenant, d.id)
        .await
        .expect("requeue")
        .expect("exists");
    assert_eq!(back.status, DeliveryStatus::Pending);
    assert_eq!(back.attempts, 5);
    let due = back.next_at.expect("due");
    assert!(due >= before && due <= Utc::now() + ChronoDuration::seconds(1));
    assert_eq!(
        store
            .get_delivery(&tenant, d.id)
            .await
            .expect("get")
            .as_ref(),
        Some(&back)
    );
    let unfinished = store
        .unfinished_deliveries(None, 10)
        .await
        .expect("unfinished");
    assert_eq!(
        unfinished.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![d.id]
    );
}

/// The recovery scan returns pending and retrying deliveries in id order, page by page.
pub(crate) async fn unfinished_deliveries_in_pages(store: Arc<dyn Store>) {
    let statuses = DeliveryStatus::ALL;
    let mut all = seed(store.as_ref(), "acme", 15, &statuses).await;
    all.extend(seed(store.as_ref(), "globex", 5, &statuses).await);
    let mut want: Vec<DeliveryId> = all
        .iter()
        .filter(|d| matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Retrying))
        .map(|d| d.id)
        .collect();
    want.sort_by_key(ToString::to_string);
    assert!(want.len() > 8);
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = store.unfinished_deliveries(after, 4).await.expect("page");
        assert!(page.len() <= 4);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|d| d.id);
        got.extend(page.into_iter().map(|d| d.id));
    }
    assert_eq!(got, want);
}

/// Counts per destination and status.
pub(crate) async fn delivery_counts_per_destination(store: Arc<dyn Store>) {
    assert!(
        store
            .delivery_counts()
            .await
            .expect("empty counts")
            .is_empty()
    );
    let statuses = [
        DeliveryStatus::Pending,
        DeliveryStatus::Dead,
        DeliveryStatus::Delivered,
        DeliveryStatus::Filtered,
    ];
    let mut all = seed(store.as_ref(), "acme", 10, &statuses).await;
    all.extend(seed(store.as_ref(), "globex", 4, &statuses).await);
    let mut want: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for d in &all {
        *want
            .entry((d.destination_id.clone(), d.status.as_str()))
            .or_default() += 1;
    }
    let got = store.delivery_counts().await.expect("counts");
    let got: BTreeMap<(String, &str), u64> = got
        .into_iter()
        .map(
            |DeliveryCount {
                 destination_id,
                 status,
                 count,
             }| ((destination_id, status.as_str()), count),
        )
        .collect();
    assert_eq!(got, want);
}
