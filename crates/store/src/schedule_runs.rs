//! The record of schedule runs: what is passed in and out of the [`Store`](crate::Store)'s
//! schedule methods. A run is claimed (keyed by schedule and tick) before it runs, then
//! started and finished.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use estafeta_core::ScheduleRunId;
use serde::Serialize;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Claimed, waiting for a worker.
    Queued,
    /// Its job is running.
    Running,
    /// Its job finished and what it produced is durable.
    Succeeded,
    /// Its job failed, or the process stopped before it finished.
    Failed,
    /// Not run: the previous run was still going, or its tick was missed with `misfire:
    /// skip`.
    Skipped,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Skipped,
    ];

    /// The status as stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    /// Whether the run is over.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped)
    }
}

/// What made a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// Its tick came.
    Tick,
    /// Ticks were missed (downtime, a clock jump); this one run stands for them.
    CatchUp,
    /// Someone asked for it (`POST /v1/schedules/{id}/run`).
    Manual,
}

impl RunTrigger {
    /// The trigger as stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tick => "tick",
            Self::CatchUp => "catch_up",
            Self::Manual => "manual",
        }
    }
}

macro_rules! from_str_by_name {
    ($t:ty, $what:literal, [$($v:expr),*]) => {
        impl FromStr for $t {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                [$($v),*]
                    .into_iter()
                    .find(|v: &$t| v.as_str() == s)
                    .ok_or_else(|| format!("`{s}` is not a {}", $what))
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

from_str_by_name!(
    RunStatus,
    "run status",
    [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Skipped
    ]
);
from_str_by_name!(
    RunTrigger,
    "run trigger",
    [RunTrigger::Tick, RunTrigger::CatchUp, RunTrigger::Manual]
);

/// One run of a schedule, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleRun {
    /// The run's id (`run_…`).
    pub id: ScheduleRunId,
    /// The schedule (source) id.
    pub schedule_id: String,
    /// The tick it stands for (for a manual run: when it was asked for).
    pub scheduled_at: DateTime<Utc>,
    /// What made it.
    pub trigger: RunTrigger,
    /// Where it is.
    pub status: RunStatus,
    /// When it was claimed.
    pub claimed_at: DateTime<Utc>,
    /// When its job started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Records (events) it produced.
    pub records: u64,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// The schedule's next tick after this one, as computed when it was claimed.
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// A run to claim: recorded unless a run of the same schedule for the same tick already is
/// (manual runs are never refused).
#[derive(Debug, Clone)]
pub struct RunClaim {
    /// A fresh run id.
    pub id: ScheduleRunId,
    /// The schedule.
    pub schedule_id: String,
    /// The tick (for a manual run: now).
    pub scheduled_at: DateTime<Utc>,
    /// What made it.
    pub trigger: RunTrigger,
    /// `queued` for a run that will run, `skipped` for one that will not.
    pub status: RunStatus,
    /// For a skipped run: why.
    pub error: Option<String>,
    /// The schedule's next tick.
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunFinish {
    /// The run.
    pub id: ScheduleRunId,
    /// `succeeded` or `failed`.
    pub status: RunStatus,
    /// When its job started (kept if the start was recorded already).
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Records (events) it produced.
    pub records: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// The latest tick recorded for a schedule (manual runs do not count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastTick {
    /// The schedule.
    pub schedule_id: String,
    /// Its latest claimed tick.
    pub scheduled_at: DateTime<Utc>,
}
