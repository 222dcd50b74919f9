//! Suite: schedule runs — a tick is claimed once, runs move through their states, history
//! reads newest first, the latest tick per schedule, clean-up after a restart.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use estafeta_core::ScheduleRunId;
use estafeta_store::{LastTick, RunClaim, RunFinish, RunStatus, RunTrigger, Store};

use super::{at, is_invalid};

/// A claim of `schedule`'s tick at `tick`.
pub(crate) fn claim(schedule: &str, tick: DateTime<Utc>, trigger: RunTrigger) -> RunClaim {
    RunClaim {
        id: ScheduleRunId::new(),
        schedule_id: schedule.to_owned(),
        scheduled_at: tick,
        trigger,
        status: RunStatus::Queued,
        error: None,
        next_fire_at: Some(tick + chrono::Duration::seconds(60)),
    }
}

fn finish(id: ScheduleRunId, status: RunStatus, records: u64, error: Option<&str>) -> RunFinish {
    RunFinish {
        id,
        status,
        started_at: at(1),
        finished_at: at(2),
        records,
        error: error.map(str::to_owned),
    }
}

/// A tick is claimed once (also inside one call); other schedules and manual runs are not
/// held back by it.
pub(crate) async fn a_tick_is_claimed_once(store: Arc<dyn Store>) {
    let first = store
        .claim_runs(vec![claim("nightly", at(0), RunTrigger::Tick)])
        .await
        .expect("claim");
    assert_eq!(first, [true]);
    let again = store
        .claim_runs(vec![
            claim("nightly", at(0), RunTrigger::CatchUp),
            claim("hourly", at(0), RunTrigger::Tick),
            claim("nightly", at(60), RunTrigger::Tick),
            claim("nightly", at(60), RunTrigger::Tick),
            claim("nightly", at(0), RunTrigger::Manual),
            claim("nightly", at(0), RunTrigger::Manual),
        ])
        .await
        .expect("claim");
    assert_eq!(again, [false, true, true, false, true, true]);
    let page = store.list_runs("nightly", 100, None).await.expect("list");
    assert_eq!(page.items.len(), 4);
    assert!(
        store
            .claim_runs(Vec::new())
            .await
            .expect("empty")
            .is_empty()
    );
}

/// Many tasks racing for the same ticks: each tick has exactly one winner.
pub(crate) async fn concurrent_claims_have_one_winner_per_tick(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for tick in 0..25 {
                let claims = vec![claim("race", at(tick), RunTrigger::Tick)];
                if store.claim_runs(claims).await.expect("claim")[0] {
                    won += 1;
                }
            }
            won
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    assert_eq!(total, 25);
}

/// Queued → running → succeeded keeps every field; finishing an unknown run is refused;
/// a late start does not undo a finish.
pub(crate) async fn a_run_moves_through_its_states(store: Arc<dyn Store>) {
    let c = claim("nightly", at(0), RunTrigger::Tick);
    let id = c.id;
    store.claim_runs(vec![c]).await.expect("claim");
    let run = &store
        .list_runs("nightly", 1, None)
        .await
        .expect("list")
        .items[0];
    assert_eq!(
        (run.id, run.status, run.trigger, run.started_at),
        (id, RunStatus::Queued, RunTrigger::Tick, None)
    );
    assert_eq!(run.scheduled_at, at(0));
    assert_eq!(run.next_fire_at, Some(at(60)));

    store.start_run(id, at(1)).await.expect("start");
    let run = &store
        .list_runs("nightly", 1, None)
        .await
        .expect("list")
        .items[0];
    assert_eq!(
        (run.status, run.started_at),
        (RunStatus::Running, Some(at(1)))
    );

    store
        .finish_run(finish(id, RunStatus::Succeeded, 1, None))
        .await
        .expect("finish");
    store.start_run(id, at(5)).await.expect("late start");
    let run = &store
        .list_runs("nightly", 1, None)
        .await
        .expect("list")
        .items[0];
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(
        (run.started_at, run.finished_at),
        (Some(at(1)), Some(at(2)))
    );
    assert_eq!((run.records, run.error.as_deref()), (1, None));
    assert!(run.claimed_at <= Utc::now());

    let failed = claim("nightly", at(60), RunTrigger::CatchUp);
    let failed_id = failed.id;
    store.claim_runs(vec![failed]).await.expect("claim");
    store
        .finish_run(finish(
            failed_id,
            RunStatus::Failed,
            0,
            Some("the log is full"),
        ))
        .await
        .expect("finish");
    let run = &store
        .list_runs("nightly", 1, None)
        .await
        .expect("list")
        .items[0];
    assert_eq!(
        (run.status, run.trigger, run.error.as_deref()),
        (
            RunStatus::Failed,
            RunTrigger::CatchUp,
            Some("the log is full")
        )
    );
    // Finished without a recorded start: the start comes with the finish.
    assert_eq!(run.started_at, Some(at(1)));

    let unknown = store
        .finish_run(finish(ScheduleRunId::new(), RunStatus::Succeeded, 0, None))
        .await;
    assert!(is_invalid(&unknown));
}

/// History is newest first and pages by cursor; a skipped claim keeps its reason.
pub(crate) async fn runs_list_newest_first_in_pages(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for tick in 0..7 {
        let mut c = claim("every-minute", at(tick * 60), RunTrigger::Tick);
        if tick == 6 {
            c.status = RunStatus::Skipped;
            c.error = Some("the previous run was still going".to_owned());
        }
        ids.push(c.id);
        store.claim_runs(vec![c]).await.expect("claim");
    }
    store
        .claim_runs(vec![claim("other", at(0), RunTrigger::Tick)])
        .await
        .expect("claim");
    let first = store
        .list_runs("every-minute", 3, None)
        .await
        .expect("list");
    let got: Vec<_> = first.items.iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[6], ids[5], ids[4]]);
    assert_eq!(first.items[0].status, RunStatus::Skipped);
    assert_eq!(
        first.items[0].error.as_deref(),
        Some("the previous run was still going")
    );
    let mut seen = got;
    let mut cursor = first.next;
    while let Some(c) = cursor {
        let page = store
            .list_runs("every-minute", 3, Some(c))
            .await
            .expect("page");
        seen.extend(page.items.iter().map(|r| r.id));
        cursor = page.next;
    }
    ids.reverse();
    assert_eq!(seen, ids);
    assert!(
        store
            .list_runs("nobody", 10, None)
            .await
            .expect("empty")
            .items
            .is_empty()
    );
    assert!(is_invalid(
        &store
            .list_runs("every-minute", 3, Some("bogus".to_owned()))
            .await
    ));
}

/// The latest tick per schedule, manual runs left out.
pub(crate) async fn last_ticks_per_schedule(store: Arc<dyn Store>) {
    assert!(store.last_ticks().await.expect("none").is_empty());
    store
        .claim_runs(vec![
            claim("a", at(60), RunTrigger::Tick),
            claim("a", at(180), RunTrigger::CatchUp),
            claim("a", at(120), RunTrigger::Tick),
            claim("a", at(999), RunTrigger::Manual),
            claim("b", at(30), RunTrigger::Tick),
            claim("manual-only", at(5), RunTrigger::Manual),
        ])
        .await
        .expect("claim");
    let mut ticks = store.last_ticks().await.expect("ticks");
    ticks.sort_by(|x, y| x.schedule_id.cmp(&y.schedule_id));
    assert_eq!(
        ticks,
        [
            LastTick {
                schedule_id: "a".to_owned(),
                scheduled_at: at(180)
            },
            LastTick {
                schedule_id: "b".to_owned(),
                scheduled_at: at(30)
            },
        ]
    );
}

/// After a restart, runs left queued or running are failed with the reason; finished runs
/// and other schedules' runs are left alone.
pub(crate) async fn unfinished_runs_are_failed_after_a_restart(store: Arc<dyn Store>) {
    let queued = claim("a", at(0), RunTrigger::Tick);
    let running = claim("a", at(60), RunTrigger::Tick);
    let done = claim("a", at(120), RunTrigger::Tick);
    let other = claim("b", at(0), RunTrigger::Tick);
    let ids = [queued.id, running.id, done.id, other.id];
    store
        .claim_runs(vec![queued, running, done, other])
        .await
        .expect("claim");
    store.start_run(ids[1], at(61)).await.expect("start");
    store
        .finish_run(finish(ids[2], RunStatus::Succeeded, 1, None))
        .await
        .expect("finish");
    let n = store
        .fail_unfinished_runs(&["a".to_owned()], "interrupted")
        .await
        .expect("fail");
    assert_eq!(n, 2);
    let runs = store.list_runs("a", 10, None).await.expect("list").items;
    let status = |id| runs.iter().find(|r| r.id == id).map(|r| r.status);
    assert_eq!(status(ids[0]), Some(RunStatus::Failed));
    assert_eq!(status(ids[1]), Some(RunStatus::Failed));
    assert_eq!(status(ids[2]), Some(RunStatus::Succeeded));
    assert!(runs.iter().all(|r| r.finished_at.is_some()));
    let b = store.list_runs("b", 10, None).await.expect("list").items;
    assert_eq!(b[0].status, RunStatus::Queued);
    assert_eq!(store.fail_unfinished_runs(&[], "x").await.expect("none"), 0);
}
