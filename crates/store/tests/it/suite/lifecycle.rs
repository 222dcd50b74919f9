//! Suite: source cursors, settings, readiness and closing.

use std::sync::Arc;

use estafeta_core::{DeliveryId, TenantId};
use estafeta_store::Store;

use super::{is_unavailable, simple};

/// Cursors and settings are absent until written, then read back the last value.
pub(crate) async fn cursors_and_settings_round_trip(store: Arc<dyn Store>) {
    assert_eq!(store.get_cursor("pg-orders").await.expect("get"), None);
    store
        .put_cursor("pg-orders", "0/16B3748")
        .await
        .expect("put");
    store
        .put_cursor("mysql", "binlog.000003:154")
        .await
        .expect("put");
    assert_eq!(
        store.get_cursor("pg-orders").await.expect("get").as_deref(),
        Some("0/16B3748")
    );
    store
        .put_cursor("pg-orders", "0/16B9999")
        .await
        .expect("overwrite");
    assert_eq!(
        store.get_cursor("pg-orders").await.expect("get").as_deref(),
        Some("0/16B9999")
    );
    assert_eq!(
        store.get_cursor("mysql").await.expect("get").as_deref(),
        Some("binlog.000003:154")
    );

    assert_eq!(
        store.get_setting("admin_token_hash").await.expect("get"),
        None
    );
    store
        .put_setting("admin_token_hash", "sha256:abc")
        .await
        .expect("put");
    store
        .put_setting("admin_token_hash", "sha256:def")
        .await
        .expect("overwrite");
    assert_eq!(
        store
            .get_setting("admin_token_hash")
            .await
            .expect("get")
            .as_deref(),
        Some("sha256:def")
    );
    store.put_setting("empty", "").await.expect("empty value");
    assert_eq!(
        store.get_setting("empty").await.expect("get").as_deref(),
        Some("")
    );
    store.ping().await.expect("ping");
}

/// After `close`, every write fails with `Unavailable`; closing twice is harmless.
pub(crate) async fn close_then_write_is_unavailable(store: Arc<dyn Store>) {
    let before = simple("acme");
    let id = before.event.id;
    store
        .append(vec![before])
        .await
        .expect("append before close");
    store.close().await;
    store.close().await;
    let tenant = TenantId::new("acme");
    assert!(is_unavailable(&store.append(vec![simple("acme")]).await));
    assert!(is_unavailable(&store.append(vec![]).await));
    assert!(is_unavailable(&store.put_setting("a", "b").await));
    assert!(is_unavailable(&store.put_cursor("a", "b").await));
    assert!(is_unavailable(&store.record_attempts(vec![]).await));
    assert!(is_unavailable(&store.insert_deliveries(vec![]).await));
    assert!(is_unavailable(
        &store.requeue_delivery(&tenant, DeliveryId::new()).await
    ));
    let err = store.put_setting("a", "b").await.expect_err("closed");
    assert!(err.to_string().contains("closed"), "{err}");
    // What was acknowledged before closing is there.
    if let Ok(found) = store.get_event(&tenant, id).await {
        assert!(found.is_some());
    }
}

/// Writes queued when `close` starts are finished, not lost: each either succeeded (and is
/// readable) or failed with `Unavailable`.
pub(crate) async fn close_finishes_queued_writes(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let e = simple("acme");
            let id = e.event.id;
            (id, store.append(vec![e]).await)
        });
    }
    tokio::task::yield_now().await;
    store.close().await;
    let tenant = TenantId::new("acme");
    while let Some(joined) = tasks.join_next().await {
        let (id, result) = joined.expect("task");
        match result {
            Ok(_) => {
                if let Ok(found) = store.get_event(&tenant, id).await {
                    assert!(found.is_some(), "an acknowledged append was lost");
                }
            }
            Err(e) => assert!(
                matches!(e, estafeta_store::StoreError::Unavailable { .. }),
                "unexpected error {e:?}"
            ),
        }
    }
}
