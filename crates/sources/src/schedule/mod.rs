//! `kind: schedule` — sources that fire on a cron expression, an interval or once.
//!
//! **Ticks.** Each schedule's ticks come from its timing (`estafeta_core::schedule`), which
//! every process computes the same way: intervals count from `start` or the Unix epoch, cron
//! expressions are read in the schedule's time zone. One scheduler task sleeps until the
//! next tick of any schedule (and reads the wall clock at least once a second, so a clock
//! that jumps is noticed).
//!
//! **Exactly once per tick.** Before a tick runs, its run is claimed in the store under the
//! unique key `(schedule id, tick)`. A tick claimed already — by this process before a
//! restart, or by another process on the same store — is not run again. A run's event has
//! the CloudEvents id `<schedule>:<tick>`, so even a repeated emit is stored once.
//!
//! **Misfires.** At start a schedule resumes after its last claimed tick; a schedule never
//! run before starts now. Ticks missed while Estafeta was down (or while the clock jumped
//! forward, or a tick more than 5 s late) give at most one run: with `misfire: run_once` one
//! catch-up run for the latest missed tick, with `skip` a `skipped` record for it. Never a
//! burst ([`plan`]).
//!
//! **Queues.** Claimed runs wait in three priority queues (`high`, `normal`, `low`) served
//! 6:3:1 by a small pool of workers ([`queue`]); a schedule has at most one run queued or
//! running (`overlap: skip` records further ticks as skipped; `queue` lets one wait).
//!
//! **Runs.** Each run is recorded: claimed (`queued` or `skipped`), `running`, then
//! `succeeded` — only after what its job produced is durable in the log — or `failed` with
//! the reason; runs a crash left unfinished are marked `failed` at the next start. What a
//! run does is a [`ScheduledJob`]: today [`EmitEvent`] (one event of the configured `type`
//! and `data`); a provider that pulls from a partner API is another `ScheduledJob`, wired in
//! `job::build` from the schedule's settings, and gets the same run context (the log, the
//! store for its cursor, the run's times).

mod job;
mod plan;
mod queue;
mod runtime;

use std::sync::{Arc, PoisonError};

use chrono::{DateTime, Utc};
use estafeta_config::schedule_source::{JobSettings, ScheduleSourceSettings};
use estafeta_store::vault::Credentials;
use estafeta_store::{RunStatus, RunTrigger, ScheduleRun, StoreError};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use job::{EmitEvent, JobError, JobOutput, RunContext, ScheduledJob};

use self::runtime::{Request, Shared};
use crate::sink::EventSink;
use crate::status::{SourceState, StatusBoard};

/// Metric names of schedules (documented in `docs/operations.md`).
pub mod metrics {
    pub use estafeta_core::metric_names::{
        SCHEDULE_FIRE_DELAY as FIRE_DELAY, SCHEDULE_MISFIRES as MISFIRES,
        SCHEDULE_QUEUE_DEPTH as QUEUE_DEPTH, SCHEDULE_RUN_DURATION as RUN_DURATION,
        SCHEDULE_RUNS as RUNS,
    };
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    /// The schedule (source) id.
    pub id: String,
    /// `cron`, `every` or `at`: which setting gives the timing.
    pub spec_kind: &'static str,
    /// That setting as written.
    pub spec: String,
    /// The IANA time zone.
    pub timezone: String,
    /// No tick before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    /// No tick after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    /// Largest random delay of a run's start, in milliseconds.
    pub jitter_ms: u64,
    /// `run_once` or `skip`.
    pub misfire: &'static str,
    /// `high`, `normal` or `low`.
    pub priority: &'static str,
    /// `skip` or `queue`.
    pub overlap: &'static str,
    /// The next tick (none once a one-off or bounded schedule is over).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// What a run does.
    pub job: ScheduleJobInfo,
}

/// What a schedule's runs do, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleJobInfo {
    /// Emits one event of this type.
    Emit {
        /// The event type.
        event_type: String,
    },
    /// Pulls through a provider.
    Provider {
        /// The provider's kind (`http`).
        provider: &'static str,
    },
}

impl ScheduleJobInfo {
    fn of(job: &JobSettings) -> Self {
        match job {
            JobSettings::Emit { event_type, .. } => Self::Emit {
                event_type: event_type.clone(),
            },
            JobSettings::Provider(p) => Self::Provider { provider: p.kind() },
        }
    }
}

/// Why a manual run was not started.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No schedule has this id.
    #[error("no schedule `{0}`")]
    NotFound(String),
    /// The schedule's run is still going (`overlap: skip`, or one already waits with
    /// `queue`); the request was recorded as a skipped run.
    #[error("{}", .0.error.as_deref().unwrap_or("the previous run is still going"))]
    Busy(Box<ScheduleRun>),
    /// The store could not record the run.
    #[error("the run could not be recorded")]
    Store(#[source] StoreError),
}

/// The running schedules, shared with the API. The default value has none.
#[derive(Clone, Default)]
pub struct Schedules {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for Schedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.shared.as_ref().map_or(0, |s| s.entries.len());
        f.debug_struct("Schedules").field("schedules", &n).finish()
    }
}

impl Schedules {
    /// Starts the scheduler and the workers for these schedules on `tracker`, registering
    /// each on the status board. Nothing starts when there are none.
    pub(crate) fn start(
        schedules: Vec<(String, ScheduleSourceSettings)>,
        sink: Arc<dyn EventSink>,
        store: Arc<dyn estafeta_store::Store>,
        board: &StatusBoard,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
        credentials: &Credentials,
    ) -> Self {
        if schedules.is_empty() {
            return Self::default();
        }
        for (id, _) in &schedules {
            board.register(id, "schedule", SourceState::Starting);
        }
        let shared = Arc::new(Shared::new(
            schedules,
            sink,
            store,
            board.clone(),
            cancel.child_token(),
            tracker.clone(),
            credentials,
        ));
        tracker.spawn(Arc::clone(&shared).schedule());
        for _ in 0..runtime::WORKERS {
            tracker.spawn(Arc::clone(&shared).work());
        }
        Self {
            shared: Some(shared),
        }
    }

    /// Every schedule, in configuration order.
    #[must_use]
    pub fn list(&self) -> Vec<ScheduleInfo> {
        let Some(shared) = &self.shared else {
            return Vec::new();
        };
        shared
            .entries
            .iter()
            .map(|e| {
                let s = &e.settings;
                ScheduleInfo {
                    id: e.id.clone(),
                    spec_kind: s.spec_key,
                    spec: s.spec_text.clone(),
                    timezone: s.timing.time_zone().name().to_owned(),
                    start: s.timing.start(),
                    end: s.timing.end(),
                    jitter_ms: u64::try_from(s.jitter.as_millis()).unwrap_or(u64::MAX),
                    misfire: s.misfire.as_str(),
                    priority: s.priority.as_str(),
                    overlap: s.overlap.as_str(),
                    next_fire_at: *e.next_fire.lock().unwrap_or_else(PoisonError::into_inner),
                    job: ScheduleJobInfo::of(&s.job),
                }
            })
            .collect()
    }

    /// One schedule.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<ScheduleInfo> {
        self.list().into_iter().find(|s| s.id == id)
    }

    /// Runs a schedule now (recorded as a `manual` run, in the schedule's queue, subject to
    /// its `overlap` setting). Answers the run as recorded (`queued`).
    ///
    /// # Errors
    /// [`TriggerError::NotFound`], [`TriggerError::Busy`] (recorded as skipped) or
    /// [`TriggerError::Store`].
    pub async fn trigger(&self, id: &str) -> Result<ScheduleRun, TriggerError> {
        let not_found = || TriggerError::NotFound(id.to_owned());
        let shared = self.shared.as_ref().ok_or_else(not_found)?;
        let i = *shared.index.get(id).ok_or_else(not_found)?;
        // Right after start, let the scheduler mark the previous process's unfinished runs
        // first, or this run would be among them.
        let mut recovered = shared.recovered.subscribe();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            recovered.wait_for(|done| *done),
        )
        .await;
        let now = Utc::now();
        let next_fire = *shared.entries[i]
            .next_fire
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let req = Request {
            tick: now,
            trigger: RunTrigger::Manual,
            run: true,
            skip_reason: None,
            due_at: now,
            next_fire,
        };
        match shared
            .dispatch(vec![(i, req)])
            .await
            .map(|mut v| v.pop().flatten())
        {
            Ok(Some(run)) if run.status == RunStatus::Skipped => {
                Err(TriggerError::Busy(Box::new(run)))
            }
            Ok(Some(run)) => Ok(run),
            // Manual runs claim no tick, so the store never refuses them.
            Ok(None) => Err(TriggerError::Store(StoreError::Invalid(
                "the store refused a manual run".to_owned(),
            ))),
            Err(e) => Err(TriggerError::Store(e)),
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
