//! Time-bounded reads at millisecond boundaries. SQLite turns "received at or after T" into an
//! id range (an id is never older than its `received_at`, give or take a clock step of up to
//! a second), keeping the exact `received_at` condition; these pin down the edges.

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use estafeta_core::{Event, EventId, TenantId};
use estafeta_store::{EventQuery, Store};
use ulid::Ulid;

use crate::suite::{event, new_event};

/// A millisecond well after the epoch.
const M: i64 = 1_767_225_600_123;

fn ms(offset_ms: i64, extra_ns: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(M + offset_ms)
        .single()
        .unwrap_or_default()
        + ChronoDuration::nanoseconds(extra_ns)
}

/// An event whose id carries millisecond `M + id_ms` (random part `seq`), received at `received`.
fn at_ms(id_ms: i64, seq: u128, received: DateTime<Utc>) -> Event {
    let mut e = event("acme", "t");
    let id_ms = u64::try_from(M + id_ms).unwrap_or(0);
    e.id = EventId::from_ulid(Ulid::from_parts(id_ms, seq));
    e.received_at = received;
    e
}

async fn listed(store: &dyn Store, since: DateTime<Utc>) -> Vec<EventId> {
    let mut q = EventQuery {
        tenant: TenantId::new("acme"),
        since: Some(since),
        limit: 2,
        ..EventQuery::default()
    };
    let mut ids = Vec::new();
    loop {
        let page = store.list_events(&q).await.expect("list");
        ids.extend(page.items.iter().map(|e| e.id));
        match page.next {
            Some(next) => q.cursor = Some(next),
            None => return ids,
        }
    }
}

async fn scanned(store: &dyn Store, since: DateTime<Utc>) -> Vec<EventId> {
    let tenant = TenantId::new("acme");
    let events = store
        .scan_events(&tenant, None, Some(since), 100)
        .await
        .expect("scan");
    events.iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_is_exact_at_millisecond_boundaries() {
    let (_dir, store) = crate::sqlite_store(None).await;
    let events = [
        // Far older than anything asked for: never walked, never returned.
        at_ms(-60_000, 0, ms(-60_000, 0)),
        // The clock stepped back 900 ms between taking the time and making the id.
        at_ms(-900, 0, ms(2, 0)),
        // The last nanosecond before M, in the id's millisecond M - 1 (largest random part).
        at_ms(-1, u128::MAX >> 48, ms(-1, 999_999)),
        // Exactly M, in millisecond M (smallest random part), then later within M.
        at_ms(0, 0, ms(0, 0)),
        at_ms(0, 1, ms(0, 500_000)),
        at_ms(1, 0, ms(1, 0)),
    ];
    let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    let batch = events
        .iter()
        .map(|e| new_event(e.clone(), &format!("b-{}", e.id), vec![]))
        .collect();
    store.append(batch).await.expect("append");

    // Newest first; only what was received at or after `since`.
    assert_eq!(
        listed(store.as_ref(), ms(0, 0)).await,
        vec![ids[5], ids[4], ids[3], ids[1]]
    );
    assert_eq!(
        listed(store.as_ref(), ms(0, 1)).await,
        vec![ids[5], ids[4], ids[1]]
    );
    assert_eq!(
        listed(store.as_ref(), ms(-1, 999_999)).await,
        vec![ids[5], ids[4], ids[3], ids[2], ids[1]]
    );
    assert_eq!(
        listed(store.as_ref(), ms(2, 1)).await,
        Vec::<EventId>::new()
    );
    assert_eq!(listed(store.as_ref(), ms(-60_000, 0)).await.len(), 6);

    // Log order from the first event (in log order) received at or after `since`.
    assert_eq!(scanned(store.as_ref(), ms(0, 0)).await, ids[1..].to_vec());
    assert_eq!(scanned(store.as_ref(), ms(1, 0)).await, ids[1..].to_vec());
    assert_eq!(scanned(store.as_ref(), ms(2, 0)).await, ids[1..].to_vec());
    assert_eq!(
        scanned(store.as_ref(), ms(2, 1)).await,
        Vec::<EventId>::new()
    );
    assert_eq!(scanned(store.as_ref(), ms(-60_000, 0)).await, ids.to_vec());
    assert_eq!(
        scanned(store.as_ref(), ms(-59_999, 0)).await,
        ids[1..].to_vec()
    );

    // `until` is a plain filter: an id newer than its receipt time is still found.
    let q = EventQuery {
        tenant: TenantId::new("acme"),
        until: Some(ms(0, 0)),
        limit: 10,
        ..EventQuery::default()
    };
    let page = store.list_events(&q).await.expect("until");
    let got: Vec<EventId> = page.items.iter().map(|e| e.id).collect();
    assert_eq!(got, vec![ids[2], ids[0]]);
    store.close().await;
}
