//! Two stores opened on one SQLite file — each with its own writer thread and connections,
//! as two Estafeta processes would have — race to claim the same schedule ticks: every tick
//! is claimed exactly once, and a store opened later (a restart) finds the ticks taken.

use std::sync::Arc;

use estafeta_store::{RunTrigger, SqliteOptions, SqliteStore, Store};

use crate::suite::at;
use crate::suite::schedules::claim;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_claim_each_tick_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shared.db");
    let a: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::new(&path))
            .await
            .expect("open a"),
    );
    let b: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::new(&path))
            .await
            .expect("open b"),
    );
    let race = |store: Arc<dyn Store>| {
        tokio::spawn(async move {
            let mut won = Vec::new();
            for tick in 0..100 {
                let claims = vec![
                    claim("nightly", at(tick), RunTrigger::Tick),
                    claim("hourly", at(tick), RunTrigger::Tick),
                ];
                let got = store.claim_runs(claims).await.expect("claim");
                won.extend(got.into_iter().filter(|w| *w).map(|_| tick));
            }
            won
        })
    };
    let (wa, wb) = (race(Arc::clone(&a)), race(Arc::clone(&b)));
    let (wa, wb) = (wa.await.expect("a"), wb.await.expect("b"));
    assert_eq!(
        wa.len() + wb.len(),
        200,
        "a won {}, b won {}",
        wa.len(),
        wb.len()
    );
    for store in [&a, &b] {
        let runs = store.list_runs("nightly", 1000, None).await.expect("list");
        assert_eq!(runs.items.len(), 100);
    }
    a.close().await;
    b.close().await;

    let again = SqliteStore::open(SqliteOptions::new(&path))
        .await
        .expect("reopen");
    let retry = again
        .claim_runs(vec![claim("nightly", at(42), RunTrigger::CatchUp)])
        .await
        .expect("claim after reopen");
    assert_eq!(retry, [false]);
    again.close().await;
}
