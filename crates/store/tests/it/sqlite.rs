//! SQLite-only checks: durability across reopen, schema versions and upgrades, unusable
//! paths and files, pruning of expired dedupe entries.

use std::error::Error as _;
use std::time::{Duration, Instant};

use estafeta_core::{
    Attempt, AttemptId, AttemptOutcome, DeliveryStatus, StepOutcome, StepTrace, TenantId,
};
use estafeta_store::{AppendOutcome, AttemptRecord, SqliteOptions, SqliteStore, Store, StoreError};
use rusqlite::Connection;

use crate::suite::{new_event, simple};

fn db_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("nested").join("deeper").join("estafeta.db")
}

fn full_message(err: &StoreError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(" <- ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(SqliteOptions::new(db_path(&dir)))
        .await
        .expect("open");
    assert_eq!(
        store.schema_version(),
        SqliteStore::supported_schema_version()
    );
    let events: Vec<_> = (0..50).map(|_| simple("acme")).collect();
    let originals: Vec<_> = events
        .iter()
        .map(|e| (e.event.clone(), e.deliveries.clone()))
        .collect();
    store.append(events).await.expect("append");
    store
        .put_setting("admin_token_hash", "h")
        .await
        .expect("setting");
    store.put_cursor("pg", "0/1").await.expect("cursor");
    store.close().await;
    drop(store);

    let store = SqliteStore::open(SqliteOptions::new(db_path(&dir)))
        .await
        .expect("reopen");
    assert_eq!(
        store.schema_version(),
        SqliteStore::supported_schema_version()
    );
    for (event, deliveries) in &originals {
        assert_eq!(
            store
                .get_event(&event.tenant, event.id)
                .await
                .expect("get")
                .as_ref(),
            Some(&**event)
        );
        assert_eq!(
            &store
                .deliveries_for_event(event.id)
                .await
                .expect("deliveries"),
            deliveries
        );
    }
    assert_eq!(
        store
            .get_setting("admin_token_hash")
            .await
            .expect("get")
            .as_deref(),
        Some("h")
    );
    assert_eq!(
        store.get_cursor("pg").await.expect("get").as_deref(),
        Some("0/1")
    );
    // Dedupe state survives too.
    let again = new_event(
        originals[0].0.clone(),
        &format!("k-{}", originals[0].0.id),
        vec![],
    );
    let mut again = again;
    std::sync::Arc::make_mut(&mut again.event).id = estafeta_core::EventId::new();
    let out = store
        .append(vec![again])
        .await
        .expect("append after reopen");
    assert_eq!(out, vec![AppendOutcome::Duplicate(originals[0].0.id)]);
    store.close().await;
}

#[tokio::test]
async fn acknowledged_appends_survive_a_drop_without_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(SqliteOptions::new(db_path(&dir)))
        .await
        .expect("open");
    let e = simple("acme");
    let id = e.event.id;
    store.append(vec![e]).await.expect("append");
    drop(store);
    let store = SqliteStore::open(SqliteOptions::new(db_path(&dir)))
        .await
        .expect("reopen");
    assert!(
        store
            .get_event(&TenantId::new("acme"), id)
            .await
            .expect("get")
            .is_some()
    );
    store.close().await;
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(SqliteOptions::new(db_path(&dir)))
        .await
        .expect("open");
    store.close().await;
    drop(store);
    let supported = SqliteStore::supported_schema_version();
    let conn = Connection::open(db_path(&dir)).expect("raw open");
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, '2099-01-01T00:00:00Z')",
        [supported + 1],
    )
    .expect("future version");
    drop(conn);
    match SqliteStore::open(SqliteOptions::new(db_path(&dir))).await {
        Err(StoreError::TooNew {
            found,
            supported: s,
        }) => {
            assert_eq!((found, s), (supported + 1, supported));
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}

/// A database left by a version-1 build (attempts without a `steps` column) is migrated when
/// it opens: its attempts read back with no steps, and new attempts keep theirs.
#[tokio::test]
async fn a_version_1_database_is_migrated_and_old_attempts_have_no_steps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seeded = simple("acme");
    let d = seeded.deliveries[0].clone();
    let store = SqliteStore::open(SqliteOptions::new(db_path(&dir)))
        .await
        .expect("open");
    store.append(vec![seeded]).await.expect("append");
    store.close().await;
    drop(store);

    // Undo migrations 5, 4, 3 and 2, then record an attempt in the version-1 columns.
    assert_eq!(
        SqliteStore::supported_schema_version(),
        5,
        "a newer migration exists: undo it here too to rebuild a version-1 file"
    );
    let conn = Connection::open(db_path(&dir)).expect("raw open");
    conn.execute_batch(
        "DROP TABLE audit_log;
         DROP TABLE vault;
         DROP TABLE schedule_runs;
         ALTER TABLE attempts DROP COLUMN steps;
         DELETE FROM schema_migrations WHERE version IN (2, 3, 4, 5);",
    )
    .expect("back to version 1");
    let old_id = AttemptId::new();
    conn.execute(
        "INSERT INTO attempts (delivery_id, id, started_at, duration_ms, outcome, status_code,
             error)
         VALUES (?1, ?2, '2026-01-01T00:00:00.000000000Z', 30, 'retryable', 503, 'HTTP 503')",
        [d.id.to_string(), old_id.to_string()],
    )
    .expect("old attempt");
    drop(conn);

    let store = SqliteStore::open(SqliteOptions::new(db_path(&dir)))
        .await
        .expect("open and migrate");
    assert_eq!(store.schema_version(), 5);
    let claim = crate::suite::schedules::claim(
        "nightly",
        chrono::Utc::now(),
        estafeta_store::RunTrigger::Tick,
    );
    assert_eq!(
        store.claim_runs(vec![claim]).await.expect("runs table"),
        [true]
    );
    let old = store.attempts(d.id).await.expect("old attempts");
    assert_eq!(old.len(), 1);
    assert_eq!(
        (old[0].id, old[0].outcome, old[0].status_code),
        (old_id, AttemptOutcome::Retryable, Some(503))
    );
    assert!(old[0].steps.is_empty());

    let new = Attempt {
        id: AttemptId::new(),
        delivery_id: d.id,
        started_at: chrono::Utc::now(),
        duration_ms: 4,
        outcome: AttemptOutcome::Filtered,
        status_code: None,
        error: None,
        response_excerpt: None,
        steps: vec![StepTrace {
            step: "filter".to_owned(),
            name: Some("data.total > 100".to_owned()),
            outcome: StepOutcome::Filtered,
            duration_ms: 0,
            answered_by: None,
            output: None,
            detail: None,
        }],
    };
    store
        .record_attempts(vec![AttemptRecord {
            attempt: new.clone(),
            status: DeliveryStatus::Filtered,
            attempts: 2,
            next_at: None,
            last_error: None,
        }])
        .await
        .expect("record");
    let all = store.attempts(d.id).await.expect("attempts");
    assert_eq!(all.len(), 2);
    assert_eq!(all[1], new);
    store.close().await;
}

#[tokio::test]
async fn uncreatable_location_is_unavailable_without_paths() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"plain file").expect("write blocker");
    let dir_text = dir.path().to_string_lossy().into_owned();

    // A parent that is a file cannot become a folder, whoever we run as.
    let path = blocker.join("sub").join("estafeta.db");
    let err = SqliteStore::open(SqliteOptions::new(&path))
        .await
        .expect_err("must fail");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let text = full_message(&err);
    assert!(!text.contains(&dir_text), "message leaks the path: {text}");
    assert!(text.contains("data directory"), "{text}");

    // A folder where the database file should be cannot be opened as one.
    let err = SqliteStore::open(SqliteOptions::new(dir.path()))
        .await
        .expect_err("must fail");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(
        !err.to_string().contains(&dir_text),
        "message leaks the path: {err}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("estafeta.db");
    std::fs::write(&path, vec![b'x'; 8192]).expect("write junk");
    let err = SqliteStore::open(SqliteOptions::new(&path))
        .await
        .expect_err("must fail");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_dedupe_entries_are_pruned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions::new(db_path(&dir)).with_dedupe_window(Duration::from_millis(50));
    let store = SqliteStore::open(options).await.expect("open");
    let batch: Vec<_> = (0..20).map(|_| simple("acme")).collect();
    store.append(batch).await.expect("append");
    let raw = Connection::open(db_path(&dir)).expect("raw open");
    let count = || -> i64 {
        raw.query_row("SELECT COUNT(*) FROM dedupe", [], |r| r.get(0))
            .expect("count")
    };
    assert!(count() >= 20);
    // The writer prunes about once a second, during a later write.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        store.put_setting("tick", "x").await.expect("write");
        if count() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired dedupe entries were never pruned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await;
}

#[tokio::test]
async fn options_have_sensible_defaults() {
    let options = SqliteOptions::new("/tmp/x.db");
    assert_eq!(options.readers, 4);
    assert_eq!(options.dedupe_window, Duration::from_secs(24 * 3600));
    let options = options.with_readers(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(SqliteOptions {
        path: db_path(&dir),
        ..options
    })
    .await
    .expect("open with zero readers still gets one");
    store.ping().await.expect("ping");
    store.close().await;
}
