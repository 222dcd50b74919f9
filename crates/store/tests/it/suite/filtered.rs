//! Suite: a delivery that a route's `filter` step stopped. Its attempt keeps the step traces,
//! and `filtered` is a finished state: out of the dispatcher's queue, listed and counted by
//! status.

use std::sync::Arc;

use estafeta_core::{Attempt, AttemptId, AttemptOutcome, DeliveryStatus, StepOutcome, StepTrace};
use estafeta_store::{AttemptRecord, DeliveryCount, DeliveryQuery, Store};

use super::{at, delivery, simple};

/// What an `enrich` step answered from its cache, then a `filter` step that said no.
fn enrich_then_filter() -> Vec<StepTrace> {
    vec![
        StepTrace {
            step: "enrich".to_owned(),
            name: Some("customer".to_owned()),
            outcome: StepOutcome::Cached,
            duration_ms: 0,
            answered_by: Some("crm.internal:8443 200".to_owned()),
            output: Some(r#"{"tier":"bronze","name":"Zoë"}"#.to_owned()),
            detail: None,
        },
        StepTrace {
            step: "filter".to_owned(),
            name: Some(r#"customer.tier == "gold""#.to_owned()),
            outcome: StepOutcome::Filtered,
            duration_ms: 1,
            answered_by: None,
            output: None,
            detail: Some("the expression was false".to_owned()),
        },
    ]
}

/// An attempt with two step traces that ends the delivery as `filtered`: the traces
/// round-trip in order, the delivery is finished (not in the unfinished queue, whole or per
/// destination), and the status filter and the counts know it.
pub(crate) async fn filtered_delivery_keeps_its_step_traces(store: Arc<dyn Store>) {
    let mut seeded = simple("acme");
    let stopped = seeded.deliveries[0].clone();
    let mut waiting = delivery(&seeded.event, "r2", "dest", DeliveryStatus::Pending);
    waiting.target_index = 1;
    seeded.deliveries.push(waiting.clone());
    let tenant = stopped.tenant.clone();
    store.append(vec![seeded]).await.expect("append");

    let attempt = Attempt {
        id: AttemptId::new(),
        delivery_id: stopped.id,
        started_at: at(3),
        duration_ms: 2,
        outcome: AttemptOutcome::Filtered,
        status_code: None,
        error: None,
        response_excerpt: None,
        steps: enrich_then_filter(),
    };
    store
        .record_attempts(vec![AttemptRecord {
            attempt: attempt.clone(),
            status: DeliveryStatus::Filtered,
            attempts: 1,
            next_at: None,
            last_error: None,
        }])
        .await
        .expect("record the filtered attempt");

    let got = store
        .get_delivery(&tenant, stopped.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (
            got.status,
            got.attempts,
            got.next_at,
            got.last_error.as_deref()
        ),
        (DeliveryStatus::Filtered, 1, None, None)
    );
    assert!(got.status.is_terminal());
    let attempts = store.attempts(stopped.id).await.expect("attempts");
    assert_eq!(attempts, vec![attempt]);
    assert_eq!(attempts[0].steps, enrich_then_filter());

    let unfinished = store.unfinished_deliveries(None, 10).await.expect("queue");
    assert_eq!(
        unfinished.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![waiting.id]
    );
    let for_dest = store
        .unfinished_deliveries_for("dest", None, 10)
        .await
        .expect("destination queue");
    assert_eq!(
        for_dest.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![waiting.id]
    );

    let by_status = |status| DeliveryQuery {
        tenant: tenant.clone(),
        status: Some(status),
        limit: 10,
        ..DeliveryQuery::default()
    };
    let filtered = store
        .list_deliveries(&by_status(DeliveryStatus::Filtered))
        .await
        .expect("list filtered");
    assert_eq!(filtered.items, vec![got]);
    assert!(filtered.next.is_none());
    let pending = store
        .list_deliveries(&by_status(DeliveryStatus::Pending))
        .await
        .expect("list pending");
    assert_eq!(
        pending.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![waiting.id]
    );

    let counts = store.delivery_counts().await.expect("counts");
    for (status, count) in [(DeliveryStatus::Filtered, 1), (DeliveryStatus::Pending, 1)] {
        let want = DeliveryCount {
            destination_id: "dest".to_owned(),
            status,
            count,
        };
        assert!(counts.contains(&want), "{want:?} missing from {counts:?}");
    }
}
