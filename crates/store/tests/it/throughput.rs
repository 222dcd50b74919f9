//! A throughput check run by hand, not a timed test:
//!
//! ```text
//! cargo test -p estafeta-store --release --test it -- --ignored --nocapture throughput
//! ```
//!
//! 64 concurrent tasks append 200,000 events (~300 bytes of data, one delivery each), first
//! one event per call, then 100 events per call, and print events per second.

use std::sync::Arc;
use std::time::Instant;

use estafeta_core::DeliveryStatus;
use estafeta_store::{NewEvent, SqliteOptions, SqliteStore, Store};
use serde_json::json;

use crate::suite::{delivery, event, new_event};

const TOTAL: usize = 200_000;
const TASKS: usize = 64;

fn sample(i: usize) -> NewEvent {
    let mut e = event("acme", "order.created");
    e.data = Some(json!({
        "order_id": format!("ord-{i:010}"),
        "customer": {"id": "cus-0042", "email": "someone@example.com", "tier": "gold"},
        "items": [{"sku": "SKU-1234", "qty": 2, "price": 19.99}, {"sku": "SKU-5678", "qty": 1, "price": 5.5}],
        "total": 45.48, "currency": "EUR", "note": "leave at the door, ring twice please",
        "created_at": "2026-01-01T12:00:00Z"
    }));
    let d = delivery(&e, "orders", "webhook", DeliveryStatus::Pending);
    let key = format!("tp-{}", e.id);
    new_event(e, &key, vec![d])
}

async fn run(per_call: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("tp.db"))).await.expect("open"));
    let calls_per_task = TOTAL / TASKS / per_call;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for c in 0..calls_per_task {
                let batch = (0..per_call).map(|i| sample((t * calls_per_task + c) * per_call + i)).collect();
                store.append(batch).await.expect("append");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = (calls_per_task * per_call * TASKS) as f64;
    store.close().await;
    let size = std::fs::metadata(dir.path().join("tp.db")).map(|m| m.len()).unwrap_or(0);
    println!(
        "{per_call:>3} event(s) per call: {events} events in {elapsed:.2} s = {:.0} events/s (db {} MiB)",
        events / elapsed,
        size / (1024 * 1024)
    );
    events / elapsed
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "throughput check, run by hand in release mode"]
async fn throughput() {
    run(1).await;
    run(100).await;
}
