//! Tests of the running schedules against a real SQLite store and a sink that records (and
//! can slow down) appends: ticks fire and are recorded, a restart catches up once, two
//! runtimes on one store fire each tick once, overlapping ticks are skipped or wait, manual
//! runs. Waits are on conditions with timeouts, never fixed sleeps.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use estafeta_core::{Event, EventId};
use estafeta_store::{RunClaim, SqliteOptions, SqliteStore, Store};

use super::*;
use crate::sink::SinkError;

const T: Duration = Duration::from_secs(20);

/// Records every appended event; each append takes `delay`.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    delay: Mutex<Duration>,
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventSink for Recorder {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let ids = events.iter().map(|e| e.id).collect();
        self.events.lock().unwrap().extend(events);
        Ok(ids)
    }

    async fn append_new(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        self.append(events).await
    }
}

fn settings(yaml: &str) -> ScheduleSourceSettings {
    let text = format!("sources:\n  - id: s\n    kind: schedule\n{yaml}");
    let c = estafeta_config::load_str(&text, "t.yaml", &estafeta_config::ProcessLookup::default())
        .unwrap();
    match &c.sources[0].kind {
        estafeta_config::SourceKindSettings::Schedule(s) => (**s).clone(),
        _ => unreachable!(),
    }
}

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(SqliteOptions::new(dir.path().join("s.db")))
            .await
            .unwrap(),
    )
}

struct Running {
    schedules: Schedules,
    cancel: CancellationToken,
    tracker: TaskTracker,
    board: StatusBoard,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(T, self.tracker.wait()).await.unwrap();
    }
}

fn start(
    list: Vec<(&str, ScheduleSourceSettings)>,
    sink: Arc<dyn EventSink>,
    store: Arc<dyn Store>,
) -> Running {
    let (board, cancel, tracker) = (
        StatusBoard::default(),
        CancellationToken::new(),
        TaskTracker::new(),
    );
    let list = list.into_iter().map(|(id, s)| (id.to_owned(), s)).collect();
    let credentials = estafeta_store::vault::Vault::new(
        Arc::clone(&store),
        estafeta_store::vault::MasterKey::generate(),
    )
    .credentials();
    let schedules = Schedules::start(list, sink, store, &board, &cancel, &tracker, &credentials);
    Running {
        schedules,
        cancel,
        tracker,
        board,
    }
}

async fn runs(store: &Arc<dyn Store>, id: &str) -> Vec<ScheduleRun> {
    store.list_runs(id, 1000, None).await.unwrap().items
}

/// Polls `f` until it is true; panics after `T`.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < T, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_fire_emit_one_event_each_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let sink = Arc::new(Recorder::default());
    let r = start(
        vec![(
            "every-second",
            settings("    every: 1s\n    type: tick.test\n    data: {count: 1}\n"),
        )],
        sink.clone(),
        Arc::clone(&store),
    );
    until("three succeeded runs", async || {
        runs(&store, "every-second")
            .await
            .iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .count()
            >= 3
    })
    .await;
    let info = r.schedules.get("every-second").unwrap();
    assert_eq!(
        (info.spec_kind, info.spec.as_str(), info.timezone.as_str()),
        ("every", "1s", "UTC")
    );
    assert!(
        info.next_fire_at
            .is_some_and(|n| n > Utc::now() - chrono::TimeDelta::seconds(1))
    );
    assert_eq!(r.board.get("every-second").unwrap().kind, "schedule");
    r.stop().await;

    let done: Vec<ScheduleRun> = runs(&store, "every-second")
        .await
        .into_iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .collect();
    for run in &done {
        assert_eq!((run.trigger, run.records), (RunTrigger::Tick, 1));
        assert_eq!(
            run.scheduled_at.timestamp_subsec_nanos(),
            0,
            "ticks fall on whole seconds"
        );
        assert!(run.started_at.unwrap() >= run.scheduled_at);
        assert_eq!(
            run.next_fire_at,
            Some(run.scheduled_at + chrono::TimeDelta::seconds(1))
        );
    }
    let events = sink.events();
    assert!(events.len() >= done.len());
    let e = events
        .iter()
        .find(|e| e.extensions["runid"] == done[0].id.to_string())
        .unwrap();
    assert_eq!(
        (e.ty.as_str(), e.source_id.as_str()),
        ("tick.test", "every-second")
    );
    assert_eq!(e.data, Some(serde_json::json!({"count": 1})));
    let tick = done[0]
        .scheduled_at
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(e.ce_id, format!("every-second:{tick}"));
    assert_eq!(e.extensions["scheduledtime"], tick);
    assert_eq!(e.extensions["runtrigger"], "tick");
    assert!(e.extensions["firedtime"].is_string());
}

/// Claims the tick `secs_ago` seconds back, as a process that then stopped would have.
async fn seed_last_tick(store: &Arc<dyn Store>, id: &str, secs_ago: i64) {
    let tick = Utc::now() - chrono::TimeDelta::seconds(secs_ago);
    let tick = tick - chrono::TimeDelta::nanoseconds(i64::from(tick.timestamp_subsec_nanos()));
    let claim = RunClaim {
        id: estafeta_core::ScheduleRunId::new(),
        schedule_id: id.to_owned(),
        scheduled_at: tick,
        trigger: RunTrigger::Tick,
        status: RunStatus::Running,
        error: None,
        next_fire_at: None,
    };
    assert_eq!(store.claim_runs(vec![claim]).await.unwrap(), [true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_downtime_catches_up_once_or_skips() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    seed_last_tick(&store, "once", 30).await;
    seed_last_tick(&store, "skip", 30).await;
    let sink = Arc::new(Recorder::default());
    let r = start(
        vec![
            ("once", settings("    every: 1s\n")),
            ("skip", settings("    every: 1s\n    misfire: skip\n")),
        ],
        sink,
        Arc::clone(&store),
    );
    until("regular ticks after the catch-up", async || {
        runs(&store, "once")
            .await
            .iter()
            .filter(|r| r.trigger == RunTrigger::Tick && r.status == RunStatus::Succeeded)
            .count()
            >= 2
            && runs(&store, "skip")
                .await
                .iter()
                .filter(|r| r.status == RunStatus::Succeeded)
                .count()
                >= 2
    })
    .await;
    r.stop().await;
    for (id, status) in [("once", RunStatus::Succeeded), ("skip", RunStatus::Skipped)] {
        let all = runs(&store, id).await;
        let catch_up: Vec<_> = all
            .iter()
            .filter(|r| r.trigger == RunTrigger::CatchUp)
            .collect();
        assert_eq!(catch_up.len(), 1, "{id}: {all:?}");
        assert_eq!(catch_up[0].status, status, "{id}");
        // The seeded run was left running by the "crash": it is failed as interrupted.
        let seeded = all.last().unwrap();
        assert_eq!(seeded.status, RunStatus::Failed);
        assert!(seeded.error.as_deref().unwrap().contains("interrupted"));
        if status == RunStatus::Skipped {
            assert!(
                catch_up[0]
                    .error
                    .as_deref()
                    .unwrap()
                    .contains("misfire: skip")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_on_one_store_fire_each_tick_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(&dir).await;
    let b = store(&dir).await;
    let sink = Arc::new(Recorder::default());
    let ra = start(
        vec![("shared", settings("    every: 1s\n"))],
        sink.clone(),
        Arc::clone(&a),
    );
    let rb = start(
        vec![("shared", settings("    every: 1s\n"))],
        sink.clone(),
        Arc::clone(&b),
    );
    until("four ticks", async || runs(&a, "shared").await.len() >= 4).await;
    ra.stop().await;
    rb.stop().await;
    let all = runs(&a, "shared").await;
    let mut ticks: Vec<_> = all.iter().map(|r| r.scheduled_at).collect();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), all.len(), "a tick was claimed twice: {all:?}");
    let mut ids: Vec<String> = sink.events().iter().map(|e| e.ce_id.clone()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a tick's event was emitted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_ticks_are_skipped_or_wait_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let sink = Arc::new(Recorder::default());
    *sink.delay.lock().unwrap() = Duration::from_millis(2_500);
    let r = start(
        vec![
            ("skips", settings("    every: 1s\n")),
            ("queues", settings("    every: 1s\n    overlap: queue\n")),
        ],
        sink,
        Arc::clone(&store),
    );
    until("skipped ticks in both", async || {
        let skipped =
            |v: Vec<ScheduleRun>| v.iter().filter(|r| r.status == RunStatus::Skipped).count();
        skipped(runs(&store, "skips").await) >= 2 && skipped(runs(&store, "queues").await) >= 1
    })
    .await;
    // A manual run of a busy schedule with `overlap: skip` is refused, and recorded.
    match r.schedules.trigger("skips").await {
        Err(TriggerError::Busy(run)) => assert_eq!(
            (run.trigger, run.status),
            (RunTrigger::Manual, RunStatus::Skipped)
        ),
        other => panic!("expected Busy, got {other:?}"),
    }
    for id in ["skips", "queues"] {
        let all = runs(&store, id).await;
        let active = all
            .iter()
            .filter(|r| matches!(r.status, RunStatus::Running))
            .count();
        assert!(active <= 1, "{id}: {all:?}");
        assert!(
            all.iter().filter(|r| r.status == RunStatus::Queued).count() <= 1,
            "{id}: {all:?}"
        );
    }
    let skips = runs(&store, "skips").await;
    assert!(skips.iter().any(|r| {
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("overlap: skip"))
    }));
    let queues = runs(&store, "queues").await;
    assert!(queues.iter().any(|r| {
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("already waiting"))
    }));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_runs_are_recorded_and_emit_their_own_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let sink = Arc::new(Recorder::default());
    let r = start(
        vec![(
            "yearly",
            settings("    cron: \"0 0 1 1 *\"\n    priority: low\n"),
        )],
        sink.clone(),
        Arc::clone(&store),
    );
    assert!(matches!(
        r.schedules.trigger("nope").await,
        Err(TriggerError::NotFound(_))
    ));
    let run = r.schedules.trigger("yearly").await.unwrap();
    assert_eq!(
        (run.trigger, run.status),
        (RunTrigger::Manual, RunStatus::Queued)
    );
    until("the manual run to succeed", async || {
        runs(&store, "yearly")
            .await
            .first()
            .is_some_and(|r| r.status == RunStatus::Succeeded)
    })
    .await;
    let e = sink.events().pop().unwrap();
    assert_eq!(e.ce_id, format!("yearly:manual:{}", run.id));
    assert_eq!(e.ty, "schedule.fired");
    assert_eq!(e.data, None);
    assert_eq!(e.extensions["runtrigger"], "manual");
    r.stop().await;
    assert!(Schedules::default().list().is_empty());
}
