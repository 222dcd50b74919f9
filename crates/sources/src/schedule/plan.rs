//! Which tick to fire, if any: the pure decision the scheduler takes each time it wakes (and
//! once at start, from the last tick recorded in the store). Whatever happened in between —
//! a pause, a crash and restart, the wall clock jumping — it fires at most one run, never a
//! burst: with `misfire: run_once` one catch-up run for the latest missed tick, with `skip`
//! none (the latest missed tick is recorded as skipped).

use std::time::Duration;

use chrono::{DateTime, Utc};
use estafeta_config::schedule_source::Misfire;
use estafeta_core::schedule::{Spec, Timing};
use estafeta_store::RunTrigger;

/// A tick this much after its time (plus the schedule's jitter) counts as missed.
pub(crate) const LATE_AFTER: Duration = Duration::from_secs(5);

/// Most missed ticks counted one by one (for the log and metrics).
const COUNT_CAP: u64 = 1_000;

/// What is due since the last tick handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing yet.
    Nothing,
    /// One tick, on time.
    OnTime(DateTime<Utc>),
    /// Ticks were missed; `latest` is the most recent of them, `missed` how many there were
    /// (counted up to 1,000).
    Missed { latest: DateTime<Utc>, missed: u64 },
}

/// The ticks after `after` (exclusive) up to `now`, with `grace` allowed for lateness.
pub(crate) fn due(
    timing: &Timing,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Due {
    let Some(first) = timing.next_after(after).filter(|t| *t <= now) else {
        return Due::Nothing;
    };
    let latest = timing
        .latest_at_or_before(now)
        .filter(|l| *l >= first)
        .unwrap_or(first);
    let late = (now - first).to_std().unwrap_or_default() > grace;
    if latest == first && !late {
        return Due::OnTime(first);
    }
    Due::Missed {
        latest,
        missed: count(timing, first, latest),
    }
}

/// Ticks from `first` to `latest`, both included, up to [`COUNT_CAP`].
fn count(timing: &Timing, first: DateTime<Utc>, latest: DateTime<Utc>) -> u64 {
    if let Spec::Interval(every) = timing.spec() {
        let span = (latest - first).num_nanoseconds().unwrap_or(i64::MAX);
        let step = i64::try_from(every.as_nanos()).unwrap_or(i64::MAX).max(1);
        return u64::try_from(span / step)
            .unwrap_or(0)
            .saturating_add(1)
            .min(COUNT_CAP);
    }
    let mut n = 1;
    let mut at = first;
    while at < latest && n < COUNT_CAP {
        match timing.next_after(at) {
            Some(next) if next <= latest => {
                n += 1;
                at = next;
            }
            _ => break,
        }
    }
    n
}

/// What the scheduler does about a due tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fire {
    /// The tick the run stands for (its claim key).
    pub(crate) tick: DateTime<Utc>,
    /// `tick` or `catch_up`.
    pub(crate) trigger: RunTrigger,
    /// False: record the tick as skipped (`misfire: skip`).
    pub(crate) run: bool,
    /// Ticks missed (0 when on time).
    pub(crate) missed: u64,
}

/// The one run (or skipped record) for what is due; `None` when nothing is.
pub(crate) fn decide(due: Due, misfire: Misfire) -> Option<Fire> {
    match due {
        Due::Nothing => None,
        Due::OnTime(tick) => Some(Fire {
            tick,
            trigger: RunTrigger::Tick,
            run: true,
            missed: 0,
        }),
        Due::Missed { latest, missed } => Some(Fire {
            tick: latest,
            trigger: RunTrigger::CatchUp,
            run: misfire == Misfire::RunOnce,
            missed,
        }),
    }
}

/// Where a schedule resumes at start: after its last recorded tick; a schedule never run
/// before starts now (no catch-up for ticks before it existed), except a one-off `at`,
/// which counts as missed if its time has passed.
pub(crate) fn resume_after(
    timing: &Timing,
    last_tick: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match (last_tick, timing.spec()) {
        (Some(t), _) => t,
        (None, Spec::Once(_)) => DateTime::<Utc>::MIN_UTC,
        (None, _) => now,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
