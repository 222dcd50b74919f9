//! Suite: appending, reading back, de-duplicating, listing and scanning events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estafeta_core::{DeliveryStatus, Event, EventId, TenantId};
use estafeta_store::{AppendOutcome, EventQuery, Store};
use serde_json::{Map, Value, json};

use super::{at, base_time, delivery, event, is_invalid, new_event, simple};

/// Every field survives a round trip: optionals present and absent, extensions, nested JSON
/// with floats and unicode, base64 data, JSON `null` data, nanosecond timestamps.
pub(crate) async fn append_round_trips_every_field(store: Arc<dyn Store>) {
    let mut full = event("acme", "order.created");
    full.subject = Some("orders/42".to_owned());
    full.time = base_time();
    full.received_at = at(5);
    full.datacontenttype = Some("application/json".to_owned());
    full.dataschema = Some("https://example.com/schema.json".to_owned());
    full.key = Some("customer-9".to_owned());
    let mut ext = Map::new();
    ext.insert("traceid".to_owned(), json!("abc-123"));
    ext.insert("priority".to_owned(), json!(5));
    ext.insert("urgent".to_owned(), json!(true));
    ext.insert("ratio".to_owned(), json!(0.1));
    full.extensions = ext;
    full.data = Some(json!({
        "total": 42.5, "tiny": 1e-300, "big": 1.7976931348623157e308, "third": 0.333_333_333_333_333_3,
        "count": 18_446_744_073_709_551_615_u64, "neg": -9_223_372_036_854_775_808_i64,
        "name": "Zoë – 東京 🚚", "items": [1, {"a": null}, [true, false]], "empty": {}
    }));
    let mut b64 = event("acme", "file.uploaded");
    b64.data = Some(Value::String("aGVsbG8gd29ybGQ=".to_owned()));
    b64.data_is_base64 = true;
    b64.datacontenttype = Some("application/octet-stream".to_owned());
    let mut bare = event("acme", "ping");
    bare.data = None;
    let mut null_data = event("acme", "nothing");
    null_data.data = Some(Value::Null);

    let all = [full, b64, bare, null_data];
    let batch = all
        .iter()
        .enumerate()
        .map(|(i, e)| new_event(e.clone(), &format!("rt-{i}"), vec![]))
        .collect();
    let outcomes = store.append(batch).await.expect("append");
    assert_eq!(
        outcomes,
        all.iter()
            .map(|e| AppendOutcome::Inserted(e.id))
            .collect::<Vec<_>>()
    );
    for original in &all {
        let got = store
            .get_event(&original.tenant, original.id)
            .await
            .expect("get_event");
        assert_eq!(
            got.as_ref(),
            Some(original),
            "round trip of {}",
            original.ty
        );
    }
    let ids: Vec<EventId> = all.iter().map(|e| e.id).collect();
    let got = store.get_events(&ids).await.expect("get_events");
    assert_eq!(got, all.to_vec());
    assert!(store.append(vec![]).await.expect("empty append").is_empty());
}

/// The same key twice across calls: the second is a duplicate pointing at the first, and
/// neither it nor its deliveries are stored. Other tenants have their own keys.
pub(crate) async fn dedupe_across_calls(store: Arc<dyn Store>) {
    let first = event("acme", "order.created");
    let d1 = delivery(&first, "r1", "hook", DeliveryStatus::Pending);
    let out = store
        .append(vec![new_event(first.clone(), "key-1", vec![d1])])
        .await
        .expect("1st");
    assert_eq!(out, vec![AppendOutcome::Inserted(first.id)]);

    let second = event("acme", "order.created");
    let d2 = delivery(&second, "r1", "hook", DeliveryStatus::Pending);
    let out = store
        .append(vec![new_event(second.clone(), "key-1", vec![d2])])
        .await
        .expect("2nd");
    assert_eq!(out, vec![AppendOutcome::Duplicate(first.id)]);
    assert_eq!(out[0].id(), first.id);
    assert!(
        store
            .get_event(&second.tenant, second.id)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .deliveries_for_event(second.id)
            .await
            .expect("deliveries")
            .is_empty()
    );
    assert_eq!(
        store
            .deliveries_for_event(first.id)
            .await
            .expect("deliveries")
            .len(),
        1
    );

    let other = event("globex", "order.created");
    let out = store
        .append(vec![new_event(other.clone(), "key-1", vec![])])
        .await
        .expect("other");
    assert_eq!(out, vec![AppendOutcome::Inserted(other.id)]);
}

/// Duplicates inside one call are detected; the rest of the call is stored.
pub(crate) async fn dedupe_within_call(store: Arc<dyn Store>) {
    let a = event("acme", "t");
    let b = event("acme", "t");
    let c = event("acme", "t");
    let db = delivery(&b, "r1", "hook", DeliveryStatus::Pending);
    let out = store
        .append(vec![
            new_event(a.clone(), "same", vec![]),
            new_event(b.clone(), "same", vec![db]),
            new_event(c.clone(), "other", vec![]),
        ])
        .await
        .expect("append");
    assert_eq!(
        out,
        vec![
            AppendOutcome::Inserted(a.id),
            AppendOutcome::Duplicate(a.id),
            AppendOutcome::Inserted(c.id)
        ]
    );
    assert!(
        store
            .get_event(&b.tenant, b.id)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .deliveries_for_event(b.id)
            .await
            .expect("deliveries")
            .is_empty()
    );
}

/// Events without a dedupe key are always stored, and claim nothing: a keyed event with the
/// same CloudEvents id is still stored once on its own.
pub(crate) async fn keyless_events_are_always_stored(store: Arc<dyn Store>) {
    let a = event("acme", "t");
    let b = event("acme", "t");
    let c = event("acme", "t");
    let d = delivery(&b, "r1", "hook", DeliveryStatus::Pending);
    let keyless = |e: Event, deliveries| {
        let mut n = new_event(e, "unused", deliveries);
        n.dedupe_key = None;
        n
    };
    let out = store
        .append(vec![
            keyless(a.clone(), vec![]),
            keyless(b.clone(), vec![d]),
        ])
        .await
        .expect("append");
    assert_eq!(
        out,
        vec![AppendOutcome::Inserted(a.id), AppendOutcome::Inserted(b.id)]
    );
    assert_eq!(
        store
            .deliveries_for_event(b.id)
            .await
            .expect("deliveries")
            .len(),
        1
    );
    let out = store
        .append(vec![
            new_event(c.clone(), "unused", vec![]),
            new_event(event("acme", "t"), "unused", vec![]),
        ])
        .await
        .expect("keyed");
    assert_eq!(out[0], AppendOutcome::Inserted(c.id));
    assert_eq!(out[1], AppendOutcome::Duplicate(c.id));
}

/// Many concurrent appends of the same key (merged into shared commits or not): exactly one
/// is inserted and every other answer names it.
pub(crate) async fn dedupe_concurrent(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let e = event("acme", "t");
            store.append(vec![new_event(e, "contended", vec![])]).await
        });
    }
    let mut inserted = Vec::new();
    let mut duplicates = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task").expect("append").as_slice() {
            [AppendOutcome::Inserted(id)] => inserted.push(*id),
            [AppendOutcome::Duplicate(id)] => duplicates.push(*id),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(inserted.len(), 1, "exactly one insert");
    assert_eq!(duplicates.len(), 63);
    assert!(duplicates.iter().all(|id| *id == inserted[0]));
}

/// A key is accepted again once the window has passed. `store` must have been opened with
/// a dedupe window of `window` (short, such as 50 ms).
pub(crate) async fn dedupe_window_expires(store: Arc<dyn Store>, window: Duration) {
    let started = Instant::now();
    let first = event("acme", "t");
    let out = store
        .append(vec![new_event(first.clone(), "k", vec![])])
        .await
        .expect("first");
    assert_eq!(out, vec![AppendOutcome::Inserted(first.id)]);
    let again = store
        .append(vec![new_event(event("acme", "t"), "k", vec![])])
        .await;
    let again = again.expect("again");
    if started.elapsed() < window {
        assert_eq!(again, vec![AppendOutcome::Duplicate(first.id)]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (accepted, accepted_at) = loop {
        let e = event("acme", "t");
        let sent = Instant::now();
        let out = store
            .append(vec![new_event(e.clone(), "k", vec![])])
            .await
            .expect("retry");
        if out == vec![AppendOutcome::Inserted(e.id)] {
            break (e, sent);
        }
        assert_eq!(out, vec![AppendOutcome::Duplicate(first.id)]);
        assert!(
            Instant::now() < deadline,
            "the key was never accepted again"
        );
        tokio::time::sleep(window / 5).await;
    };
    assert!(
        started.elapsed() >= window,
        "accepted before the window passed"
    );
    // The new event now holds the key for a fresh window.
    let out = store
        .append(vec![new_event(event("acme", "t"), "k", vec![])])
        .await
        .expect("dup");
    if accepted_at.elapsed() < window {
        assert_eq!(out, vec![AppendOutcome::Duplicate(accepted.id)]);
    }
}

/// A failing event (an id that already exists) fails its whole call and nothing of that call
/// is kept, while concurrent calls are unaffected.
pub(crate) async fn failed_call_is_atomic_and_isolated(store: Arc<dyn Store>) {
    let existing = simple("acme");
    let existing_event = existing.event.clone();
    store.append(vec![existing]).await.expect("seed");

    let good = simple("acme");
    let good_id = good.event.id;
    let good_key = good.dedupe_key.clone();
    let mut clash = simple("acme");
    clash.event = existing_event.clone();
    clash.deliveries.clear();
    let result = store.append(vec![good, clash]).await;
    assert!(is_invalid(&result), "expected Invalid, got {result:?}");
    assert!(
        store
            .get_event(&TenantId::new("acme"), good_id)
            .await
            .expect("get")
            .is_none()
    );
    // The dedupe claim was rolled back with the rest of the call.
    let retry = simple("acme");
    let retry_id = retry.event.id;
    let out = store
        .append(vec![new_event(
            retry.event,
            good_key.as_deref().expect("a key"),
            vec![],
        )])
        .await
        .expect("retry");
    assert_eq!(out, vec![AppendOutcome::Inserted(retry_id)]);

    // Concurrent calls around a failing one all succeed.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = Arc::clone(&store);
        let existing_event = existing_event.clone();
        tasks.spawn(async move {
            if i == 20 {
                let mut bad = simple("acme");
                bad.event = existing_event;
                bad.deliveries.clear();
                (true, store.append(vec![bad]).await)
            } else {
                (false, store.append(vec![simple("acme")]).await)
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (bad, result) = joined.expect("task");
        if bad {
            assert!(is_invalid(&result), "expected Invalid, got {result:?}");
        } else {
            let id = result.expect("good append")[0].id();
            assert!(
                store
                    .get_event(&TenantId::new("acme"), id)
                    .await
                    .expect("get")
                    .is_some()
            );
        }
    }
}

/// Listing: newest first, filters, pages without gaps or repeats, cursor and limit checks.
pub(crate) async fn list_events_filters_and_pages(store: Arc<dyn Store>) {
    let mut all = Vec::new();
    for i in 0..25 {
        let mut e = event(
            "acme",
            if i % 3 == 0 {
                "order.created"
            } else {
                "order.paid"
            },
        );
        e.source_id = if i % 2 == 0 { "http" } else { "pg" }.to_owned();
        e.received_at = at(i);
        all.push(e);
    }
    let batch = all
        .iter()
        .map(|e| new_event(e.clone(), &format!("l-{}", e.id), vec![]))
        .collect();
    store.append(batch).await.expect("append");
    store
        .append(vec![simple("globex")])
        .await
        .expect("other tenant");

    let pages = |q: EventQuery| {
        let store = Arc::clone(&store);
        async move { collect_pages(store.as_ref(), q).await }
    };
    let q = EventQuery {
        tenant: TenantId::new("acme"),
        limit: 4,
        ..EventQuery::default()
    };
    let mut expected: Vec<EventId> = all.iter().map(|e| e.id).collect();
    expected.reverse();
    assert_eq!(pages(q.clone()).await, expected);

    let by_type = EventQuery {
        ty: Some("order.created".to_owned()),
        ..q.clone()
    };
    let want: Vec<EventId> = all
        .iter()
        .rev()
        .filter(|e| e.ty == "order.created")
        .map(|e| e.id)
        .collect();
    assert_eq!(pages(by_type).await, want);

    let by_source = EventQuery {
        source_id: Some("pg".to_owned()),
        limit: 5,
        ..q.clone()
    };
    let want: Vec<EventId> = all
        .iter()
        .rev()
        .filter(|e| e.source_id == "pg")
        .map(|e| e.id)
        .collect();
    assert_eq!(pages(by_source).await, want);

    let window = EventQuery {
        since: Some(at(5)),
        until: Some(at(15)),
        ..q.clone()
    };
    let want: Vec<EventId> = all[5..15].iter().rev().map(|e| e.id).collect();
    assert_eq!(pages(window).await, want);

    let both = EventQuery {
        ty: Some("order.paid".to_owned()),
        source_id: Some("http".to_owned()),
        limit: 1,
        ..q.clone()
    };
    let want: Vec<EventId> = all
        .iter()
        .rev()
        .filter(|e| e.ty == "order.paid" && e.source_id == "http")
        .map(|e| e.id)
        .collect();
    assert_eq!(pages(both).await, want);

    let zero = store
        .list_events(&EventQuery {
            limit: 0,
            ..q.clone()
        })
        .await
        .expect("limit 0");
    assert_eq!(zero.items.len(), 1);
    assert!(zero.next.is_some());
    let big = store
        .list_events(&EventQuery {
            limit: 1_000_000,
            ..q.clone()
        })
        .await
        .expect("big");
    assert_eq!(big.items.len(), 25);
    assert!(big.next.is_none());

    for bad in ["nonsense", "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV", ""] {
        let r = store
            .list_events(&EventQuery {
                cursor: Some(bad.to_owned()),
                ..q.clone()
            })
            .await;
        assert!(is_invalid(&r), "cursor {bad:?} gave {r:?}");
    }
}

async fn collect_pages(store: &dyn Store, mut q: EventQuery) -> Vec<EventId> {
    let mut ids = Vec::new();
    for _ in 0..1000 {
        let page = store.list_events(&q).await.expect("page");
        assert!(page.items.len() <= q.limit.max(1));
        assert!(page.items.iter().all(|e| e.tenant == q.tenant));
        ids.extend(page.items.iter().map(|e| e.id));
        match page.next {
            Some(next) => q.cursor = Some(next),
            None => break,
        }
    }
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a page repeated an item");
    ids
}

/// Scanning in log order after an id, or from the first event received at/after a time.
pub(crate) async fn scan_events_in_log_order(store: Arc<dyn Store>) {
    let mut all = Vec::new();
    for i in 0..12 {
        let mut e = event("acme", "t");
        e.received_at = at(i * 10);
        all.push(e);
    }
    let batch = all
        .iter()
        .map(|e| new_event(e.clone(), &format!("s-{}", e.id), vec![]))
        .collect();
    store.append(batch).await.expect("append");
    store
        .append(vec![simple("globex")])
        .await
        .expect("other tenant");
    let tenant = TenantId::new("acme");

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let chunk = store
            .scan_events(&tenant, after, None, 5)
            .await
            .expect("scan");
        if chunk.is_empty() {
            break;
        }
        after = chunk.last().map(|e| e.id);
        seen.extend(chunk.into_iter().map(|e| e.id));
    }
    assert_eq!(seen, all.iter().map(|e| e.id).collect::<Vec<_>>());

    let from = store
        .scan_events(&tenant, None, Some(at(35)), 100)
        .await
        .expect("since");
    assert_eq!(
        from.iter().map(|e| e.id).collect::<Vec<_>>(),
        all[4..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let exact = store
        .scan_events(&tenant, None, Some(at(40)), 2)
        .await
        .expect("since exact");
    assert_eq!(
        exact.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![all[4].id, all[5].id]
    );
    let none = store
        .scan_events(&tenant, None, Some(at(1000)), 10)
        .await
        .expect("future");
    assert!(none.is_empty());
}

/// Tenants never see each other's events; `get_events` (the dispatcher's) sees all.
pub(crate) async fn tenant_isolation_for_events(store: Arc<dyn Store>) {
    let mine = simple("acme");
    let id = mine.event.id;
    store.append(vec![mine]).await.expect("append");
    let other = TenantId::new("globex");
    assert!(store.get_event(&other, id).await.expect("get").is_none());
    let query = EventQuery {
        tenant: other.clone(),
        limit: 10,
        ..EventQuery::default()
    };
    assert!(
        store
            .list_events(&query)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        store
            .scan_events(&other, None, None, 10)
            .await
            .expect("scan")
            .is_empty()
    );
    assert!(
        store
            .get_event(&TenantId::new("acme"), id)
            .await
            .expect("get")
            .is_some()
    );
    let missing = EventId::new();
    let got = store.get_events(&[missing, id]).await.expect("get_events");
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);
}

/// Twenty tasks append 500 events each, one per call, at once: all succeed with distinct
/// ids that read back.
pub(crate) async fn concurrent_appends(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut ids = Vec::with_capacity(500);
            for _ in 0..500 {
                let out = store.append(vec![simple("acme")]).await.expect("append");
                match out.as_slice() {
                    [AppendOutcome::Inserted(id)] => ids.push(*id),
                    other => panic!("unexpected {other:?}"),
                }
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        ids.extend(joined.expect("task"));
    }
    let distinct: HashSet<_> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 10_000);
    for chunk in ids.chunks(500) {
        let got = store.get_events(chunk).await.expect("read back");
        assert_eq!(got.len(), chunk.len());
    }
}
