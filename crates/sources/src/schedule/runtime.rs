//! The running schedules: one scheduler task sleeps until the next tick of any schedule,
//! decides what is due ([`plan`](super::plan)), claims it in the store and queues it; a
//! small pool of workers takes runs from the priority queues, runs their jobs and records
//! how each ended. A schedule has at most one run queued or running at a time (with
//! `overlap: queue`, one more waits beside it).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use estafeta_config::schedule_source::{Overlap, ScheduleSourceSettings};
use estafeta_core::ScheduleRunId;
use estafeta_core::metric_names::{
    SCHEDULE_FIRE_DELAY, SCHEDULE_MISFIRES, SCHEDULE_RUN_DURATION, SCHEDULE_RUNS, SOURCE_EVENTS,
};
use estafeta_store::vault::Credentials;
use estafeta_store::{RunClaim, RunFinish, RunStatus, RunTrigger, ScheduleRun, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::job::{RunContext, ScheduledJob};
use super::plan::{self, Fire};
use super::queue::RunQueue;
use crate::sink::EventSink;
use crate::status::{SourceState, StatusBoard};
use crate::supervisor::error_chain;

/// Workers running jobs at once (across all schedules).
pub(crate) const WORKERS: usize = 32;
/// The scheduler reads the wall clock at least this often, so a clock that jumps is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Wait before trying again when the store cannot take a claim.
const RETRY: Duration = Duration::from_secs(1);
/// The reason given to runs a stopped process left unfinished.
const INTERRUPTED: &str = "interrupted: Estafeta stopped before the run finished";

/// One schedule.
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) settings: ScheduleSourceSettings,
    job: Arc<dyn ScheduledJob>,
    state: tokio::sync::Mutex<Slots>,
    /// The next tick, for the API.
    pub(crate) next_fire: Mutex<Option<DateTime<Utc>>>,
}

/// A schedule's place in the queue: whether a run is queued or running, and the one that
/// waits behind it (`overlap: queue`).
#[derive(Default)]
struct Slots {
    busy: bool,
    waiting: Option<QueuedRun>,
}

/// A claimed run waiting for a worker.
#[derive(Debug, Clone)]
pub(crate) struct QueuedRun {
    entry: usize,
    id: ScheduleRunId,
    scheduled_at: DateTime<Utc>,
    trigger: RunTrigger,
    /// When it should have started (its tick plus jitter; for a catch-up or manual run,
    /// when it was decided): the firing accuracy is measured from here.
    due_at: DateTime<Utc>,
}

/// How a run's job ended.
struct Ended {
    started_at: DateTime<Utc>,
    status: RunStatus,
    records: u64,
    error: Option<String>,
}

/// A run to claim.
pub(crate) struct Request {
    pub(crate) tick: DateTime<Utc>,
    pub(crate) trigger: RunTrigger,
    /// False: record it as skipped with `skip_reason`.
    pub(crate) run: bool,
    pub(crate) skip_reason: Option<String>,
    pub(crate) due_at: DateTime<Utc>,
    pub(crate) next_fire: Option<DateTime<Utc>>,
}

/// Everything the scheduler, the workers and the API share.
pub(crate) struct Shared {
    pub(crate) entries: Vec<Entry>,
    pub(crate) index: HashMap<String, usize>,
    queue: RunQueue<QueuedRun>,
    sink: Arc<dyn EventSink>,
    pub(crate) store: Arc<dyn Store>,
    board: StatusBoard,
    cancel: CancellationToken,
    /// Where the records of finished runs are written from.
    tracker: TaskTracker,
    /// True once the runs a stopped process left unfinished are marked failed: a manual run
    /// claimed before that would be taken for one of them.
    pub(crate) recovered: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new(
        schedules: Vec<(String, ScheduleSourceSettings)>,
        sink: Arc<dyn EventSink>,
        store: Arc<dyn Store>,
        board: StatusBoard,
        cancel: CancellationToken,
        tracker: TaskTracker,
        credentials: &Credentials,
    ) -> Self {
        let entries: Vec<Entry> = schedules
            .into_iter()
            .map(|(id, settings)| Entry {
                job: super::job::build(&id, &settings.job, credentials),
                id,
                settings,
                state: tokio::sync::Mutex::new(Slots::default()),
                next_fire: Mutex::new(None),
            })
            .collect();
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i))
            .collect();
        Self {
            queue: RunQueue::new(entries.len()),
            entries,
            index,
            sink,
            store,
            board,
            cancel,
            tracker,
            recovered: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Claims runs (at most one per schedule; `i` indexes the schedules) in one store call
    /// and, for each claim won, queues the run, lets it wait behind the running one, or
    /// records it as skipped. Answers each run as recorded, or `None` when its tick was
    /// already claimed (by another process, or before a restart).
    pub(crate) async fn dispatch(
        &self,
        requests: Vec<(usize, Request)>,
    ) -> Result<Vec<Option<ScheduleRun>>, StoreError> {
        let mut held = Vec::with_capacity(requests.len());
        let mut claims = Vec::with_capacity(requests.len());
        for (i, req) in requests {
            let entry = &self.entries[i];
            let slots = entry.state.lock().await;
            let (place, skip) = place(entry, &slots, &req);
            let claim = RunClaim {
                id: ScheduleRunId::new(),
                schedule_id: entry.id.clone(),
                scheduled_at: req.tick,
                trigger: req.trigger,
                status: if skip.is_some() {
                    RunStatus::Skipped
                } else {
                    RunStatus::Queued
                },
                error: skip,
                next_fire_at: req.next_fire,
            };
            let run = QueuedRun {
                entry: i,
                id: claim.id,
                scheduled_at: req.tick,
                trigger: req.trigger,
                due_at: req.due_at,
            };
            let record = ScheduleRun {
                id: claim.id,
                schedule_id: claim.schedule_id.clone(),
                scheduled_at: claim.scheduled_at,
                trigger: claim.trigger,
                status: claim.status,
                claimed_at: Utc::now(),
                started_at: None,
                finished_at: None,
                records: 0,
                error: claim.error.clone(),
                next_fire_at: claim.next_fire_at,
            };
            claims.push(claim);
            held.push((slots, place, run, record));
        }
        let won = self.store.claim_runs(claims).await?;
        let mut out = Vec::with_capacity(held.len());
        let mut refused = Vec::new();
        for ((mut slots, place, run, record), won) in held.into_iter().zip(won) {
            let entry = &self.entries[run.entry];
            if !won {
                tracing::debug!(schedule_id = %entry.id, tick = %record.scheduled_at, "tick already claimed");
                out.push(None);
                continue;
            }
            match place {
                Place::Queue => {
                    slots.busy = true;
                    if let Err(run) = self.queue.push(entry.settings.priority, run) {
                        slots.busy = false;
                        refused.push(run);
                    }
                }
                Place::Wait => slots.waiting = Some(run),
                Place::Nowhere => {
                    tracing::info!(schedule_id = %entry.id, run_id = %record.id, reason = record.error.as_deref().unwrap_or_default(), "schedule run skipped");
                    metrics::counter!(SCHEDULE_RUNS, "schedule" => entry.id.clone(), "status" => "skipped")
                        .increment(1);
                }
            }
            out.push(Some(record));
        }
        for run in refused {
            let reason = "the run queue is closed or full".to_owned();
            self.finish(&run, Utc::now(), RunStatus::Failed, 0, Some(reason))
                .await;
        }
        Ok(out)
    }

    /// Records how a run ended (the store keeps trying a moment if it is unavailable).
    async fn finish(
        &self,
        run: &QueuedRun,
        started_at: DateTime<Utc>,
        status: RunStatus,
        records: u64,
        error: Option<String>,
    ) {
        let entry = &self.entries[run.entry];
        let finish = RunFinish {
            id: run.id,
            status,
            started_at,
            finished_at: Utc::now(),
            records,
            error,
        };
        let mut tries = 0;
        while let Err(e) = self.store.finish_run(finish.clone()).await {
            tries += 1;
            if tries >= 3 || self.cancel.is_cancelled() {
                tracing::error!(schedule_id = %entry.id, run_id = %run.id, error = %error_chain(&e), "cannot record the end of a schedule run");
                break;
            }
            tokio::time::sleep(RETRY).await;
        }
        metrics::counter!(SCHEDULE_RUNS, "schedule" => entry.id.clone(), "status" => status.as_str())
            .increment(1);
    }

    /// One worker: runs queued runs until the queue closes. The end of each run is recorded
    /// (after its events are durable) while the worker takes the next one; the schedule's
    /// place frees once it is recorded.
    pub(crate) async fn work(self: Arc<Self>) {
        while let Some((_, run)) = self.queue.pop().await {
            let ended = self.execute(&run).await;
            let shared = Arc::clone(&self);
            self.tracker.spawn(async move {
                shared
                    .finish(
                        &run,
                        ended.started_at,
                        ended.status,
                        ended.records,
                        ended.error,
                    )
                    .await;
                shared.release(run.entry).await;
            });
        }
    }

    /// Frees schedule `i`'s place, or hands it to the run waiting beside it.
    async fn release(&self, i: usize) {
        let entry = &self.entries[i];
        let mut slots = entry.state.lock().await;
        match slots.waiting.take() {
            Some(next) => {
                if let Err(next) = self.queue.push(entry.settings.priority, next) {
                    slots.busy = false;
                    drop(slots);
                    let reason = "the run queue is closed or full".to_owned();
                    self.finish(&next, Utc::now(), RunStatus::Failed, 0, Some(reason))
                        .await;
                }
            }
            None => slots.busy = false,
        }
    }

    /// Runs one job, recording its start alongside; answers how it ended (the caller records
    /// that, after the job's events are durable).
    async fn execute(&self, run: &QueuedRun) -> Ended {
        let entry = &self.entries[run.entry];
        let started_at = Utc::now();
        let delay = (started_at - run.due_at).to_std().unwrap_or_default();
        metrics::histogram!(SCHEDULE_FIRE_DELAY, "priority" => entry.settings.priority.as_str())
            .record(delay.as_secs_f64());
        let ctx = RunContext {
            schedule_id: entry.id.clone(),
            run_id: run.id,
            scheduled_at: run.scheduled_at,
            started_at,
            trigger: run.trigger,
            sink: Arc::clone(&self.sink),
            store: Arc::clone(&self.store),
            cancel: self.cancel.child_token(),
        };
        let clock = Instant::now();
        let (started, outcome) = tokio::join!(
            self.store.start_run(run.id, started_at),
            entry.job.run(&ctx)
        );
        if let Err(e) = started {
            tracing::warn!(schedule_id = %entry.id, run_id = %run.id, error = %error_chain(&e), "cannot record the start of a schedule run");
        }
        metrics::histogram!(SCHEDULE_RUN_DURATION, "schedule" => entry.id.clone())
            .record(clock.elapsed().as_secs_f64());
        match outcome {
            Ok(out) => {
                tracing::debug!(schedule_id = %entry.id, run_id = %run.id, job = entry.job.kind(), records = out.records, "schedule run succeeded");
                metrics::counter!(SOURCE_EVENTS, "source" => entry.id.clone())
                    .increment(out.records);
                let tick = run.scheduled_at.to_rfc3339();
                self.board.update(&entry.id, |s| {
                    s.events += out.records;
                    s.last_event_at = Some(Utc::now());
                    s.position = Some(tick);
                });
                Ended {
                    started_at,
                    status: RunStatus::Succeeded,
                    records: out.records,
                    error: None,
                }
            }
            Err(e) => {
                let reason = error_chain(&e);
                tracing::warn!(schedule_id = %entry.id, run_id = %run.id, job = entry.job.kind(), error = %reason, "schedule run failed");
                self.board
                    .update(&entry.id, |s| s.error = Some(reason.clone()));
                Ended {
                    started_at,
                    status: RunStatus::Failed,
                    records: 0,
                    error: Some(reason),
                }
            }
        }
    }

    /// The scheduler: recovers from the store, then fires ticks until cancelled, and closes
    /// the queue when it stops.
    pub(crate) async fn schedule(self: Arc<Self>) {
        let Some(last) = self.recover().await else {
            self.queue.close();
            return;
        };
        let now = Utc::now();
        let mut cursors: Vec<DateTime<Utc>> = self
            .entries
            .iter()
            .map(|e| plan::resume_after(&e.settings.timing, last.get(&e.id).copied(), now))
            .collect();
        // (wake at, schedule): every schedule is looked at once right away.
        let mut heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>> =
            (0..self.entries.len()).map(|i| Reverse((now, i))).collect();
        loop {
            let now = Utc::now();
            let mut woken = Vec::new();
            while let Some(Reverse((at, i))) = heap.peek().copied()
                && at <= now
            {
                heap.pop();
                woken.push((i, at));
            }
            // What is due, claimed together in one store call.
            let mut fires = Vec::new();
            for &(i, wake) in &woken {
                let s = &self.entries[i].settings;
                let grace = plan::LATE_AFTER + s.jitter;
                if let Some(fire) =
                    plan::decide(plan::due(&s.timing, cursors[i], now, grace), s.misfire)
                {
                    fires.push((i, self.request(i, fire, wake, now), fire.tick));
                }
            }
            let failed = if fires.is_empty() {
                false
            } else {
                let ticks: Vec<(usize, DateTime<Utc>)> =
                    fires.iter().map(|(i, _, tick)| (*i, *tick)).collect();
                let requests = fires.into_iter().map(|(i, req, _)| (i, req)).collect();
                match self.dispatch(requests).await {
                    Ok(_) => {
                        for (i, tick) in ticks {
                            cursors[i] = tick;
                        }
                        false
                    }
                    Err(e) => {
                        tracing::warn!(schedules = ticks.len(), error = %error_chain(&e), "cannot claim schedule ticks; trying again");
                        true
                    }
                }
            };
            for (i, _) in woken {
                let entry = &self.entries[i];
                let next = entry.settings.timing.next_after(cursors[i]);
                *entry
                    .next_fire
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = next;
                if failed {
                    heap.push(Reverse((now + RETRY, i)));
                } else if let Some(next) = next {
                    heap.push(Reverse((next + jitter(entry.settings.jitter), i)));
                }
            }
            let wake = heap.peek().map(|Reverse((at, _))| *at);
            let sleep = wake.map_or(MAX_SLEEP, |at| {
                (at - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(MAX_SLEEP)
            });
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(sleep) => {}
            }
        }
        self.queue.close();
    }

    /// The claim request for a fire (and its log line and metric when ticks were missed).
    /// If the claim fails, the tick is looked at again shortly, and then counts as missed.
    fn request(&self, i: usize, fire: Fire, wake: DateTime<Utc>, now: DateTime<Utc>) -> Request {
        let entry = &self.entries[i];
        let s = &entry.settings;
        if fire.missed > 0 {
            tracing::info!(schedule_id = %entry.id, missed = fire.missed, misfire = s.misfire.as_str(), "schedule missed ticks; at most one catch-up run");
            metrics::counter!(SCHEDULE_MISFIRES, "schedule" => entry.id.clone(), "misfire" => s.misfire.as_str())
                .increment(1);
        }
        Request {
            tick: fire.tick,
            trigger: fire.trigger,
            run: fire.run,
            skip_reason: (!fire.run).then(|| {
                format!(
                    "{} tick(s) missed while Estafeta was down or the clock jumped (misfire: skip)",
                    fire.missed
                )
            }),
            due_at: if fire.trigger == RunTrigger::Tick {
                wake.max(fire.tick)
            } else {
                now
            },
            next_fire: s.timing.next_after(fire.tick),
        }
    }

    /// Fails the runs a stopped process left unfinished and reads where each schedule
    /// stopped; retries while the store is unavailable. `None` when cancelled first.
    async fn recover(&self) -> Option<HashMap<String, DateTime<Utc>>> {
        let ids: Vec<String> = self.entries.iter().map(|e| e.id.clone()).collect();
        loop {
            let result = async {
                let failed = self.store.fail_unfinished_runs(&ids, INTERRUPTED).await?;
                if failed > 0 {
                    tracing::warn!(
                        runs = failed,
                        "schedule runs left unfinished by a stop were marked failed"
                    );
                }
                self.store.last_ticks().await
            }
            .await;
            match result {
                Ok(ticks) => {
                    self.recovered.send_replace(true);
                    for id in &ids {
                        self.board.update(id, |s| {
                            s.state = SourceState::Running;
                            s.error = None;
                        });
                    }
                    return Some(
                        ticks
                            .into_iter()
                            .map(|t| (t.schedule_id, t.scheduled_at))
                            .collect(),
                    );
                }
                Err(e) => {
                    let reason = error_chain(&e);
                    tracing::warn!(error = %reason, "schedules cannot read their history; retrying");
                    for id in &ids {
                        self.board.update(id, |s| {
                            s.state = SourceState::Reconnecting;
                            s.error = Some(reason.clone());
                        });
                    }
                    tokio::select! {
                        () = self.cancel.cancelled() => return None,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
    }
}

/// Where a claimed run goes.
enum Place {
    /// Into the priority queue.
    Queue,
    /// Beside the schedule's running run, until it ends (`overlap: queue`).
    Wait,
    /// Nowhere: recorded as skipped.
    Nowhere,
}

/// Where a requested run of `entry` goes, and why it is skipped if it is.
fn place(entry: &Entry, slots: &Slots, req: &Request) -> (Place, Option<String>) {
    if !req.run {
        return (Place::Nowhere, req.skip_reason.clone());
    }
    if !slots.busy {
        return (Place::Queue, None);
    }
    match entry.settings.overlap {
        Overlap::Skip => (
            Place::Nowhere,
            Some("the previous run was still going (overlap: skip)".to_owned()),
        ),
        Overlap::Queue if slots.waiting.is_none() => (Place::Wait, None),
        Overlap::Queue => (
            Place::Nowhere,
            Some("a run of this schedule was already waiting (overlap: queue)".to_owned()),
        ),
    }
}

/// A random delay up to `max`.
fn jitter(max: Duration) -> chrono::TimeDelta {
    if max.is_zero() {
        return chrono::TimeDelta::zero();
    }
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    chrono::TimeDelta::milliseconds(i64::try_from(rand::random_range(0..=ms)).unwrap_or(0))
}
