//! `kind: schedule` — a source that fires on a cron expression, an interval or once: the
//! file's shape, the validated settings, and the validation between them. The timing itself
//! (cron forms, `rate(…)`, time zones) is `estafeta_core::schedule`.

use std::time::Duration;

use chrono_tz::Tz;
use estafeta_core::schedule::{self, Spec, Timing};
use serde::Deserialize;

use crate::duration::DurationText;
use crate::validate::Ctx;

/// The event type a run emits when `type` is not set.
pub const DEFAULT_EVENT_TYPE: &str = "schedule.fired";

/// `kind: schedule` — give exactly one of `cron`, `every` or `at`. Each tick is claimed in the
/// store before it runs, so it runs once even when Estafeta restarts; each run emits one event
/// (`type`, `data`) that routes treat like any other.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSourceConfig {
    /// A cron expression, quoted: 5 fields (`"0 0 * * *"`: minute hour day-of-month month
    /// day-of-week), 6 (seconds first), 7 (seconds first, year last), `@daily` and friends,
    /// `L`, `W` and `#`; also the cloud schedulers' `"cron(0 12 ? * MON-FRI *)"` and
    /// `"rate(5 minutes)"`. Read in `timezone`.
    #[serde(default)]
    pub cron: Option<String>,
    /// A fixed interval (`30s`, `5m`, `1h`; at least `1s`). Ticks are counted from `start`, or
    /// from the Unix epoch when there is none: `every: 5m` ticks at :00, :05, :10 …
    #[serde(default)]
    pub every: Option<DurationText>,
    /// Fire once at this time: RFC 3339 (`2026-12-01T09:00:00-03:00`), or a local date and
    /// time read in `timezone` (`2026-12-01T09:00:00`).
    #[serde(default)]
    pub at: Option<String>,
    /// The IANA time zone cron expressions and times without an offset are read in (default
    /// `UTC`), e.g. `America/Sao_Paulo`. Daylight-saving changes follow the zone's rules.
    #[serde(default)]
    pub timezone: Option<String>,
    /// No tick before this time (same forms as `at`).
    #[serde(default)]
    pub start: Option<String>,
    /// No tick after this time (same forms as `at`).
    #[serde(default)]
    pub end: Option<String>,
    /// Start each run up to this much later than its tick, at random (spreads schedules that
    /// share a tick). Default none.
    #[serde(default)]
    pub jitter: Option<DurationText>,
    /// Ticks missed while Estafeta was down or the clock jumped: `run_once` (default) runs
    /// one catch-up run now, never a burst; `skip` records them as skipped and waits for the
    /// next tick.
    #[serde(default)]
    pub misfire: Misfire,
    /// The queue runs wait in for a worker: `high`, `normal` (default) or `low`. Workers
    /// serve the queues weighted 6:3:1, so low-priority runs are slower but never starve.
    #[serde(default)]
    pub priority: Priority,
    /// A tick while the previous run is still going: `skip` (default) records it as
    /// skipped; `queue` runs it after the previous one (at most one waits). A schedule never
    /// runs twice at once.
    #[serde(default)]
    pub overlap: Overlap,
    /// The type of the event each run emits (default `schedule.fired`).
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    /// The `data` of the event each run emits: any YAML/JSON value (default none).
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// Pull through a provider instead of emitting one event: `{ kind: http, … }` (see
    /// `docs/sources/providers.md`). Not with `type` or `data`.
    #[serde(default)]
    pub provider: Option<crate::provider::ProviderConfig>,
}

/// What to do about missed ticks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// One catch-up run for all the missed ticks, at once.
    #[default]
    RunOnce,
    /// No catch-up run; the missed ticks are recorded as skipped.
    Skip,
}

impl Misfire {
    /// The name as written in the config.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunOnce => "run_once",
            Self::Skip => "skip",
        }
    }
}

/// The queue a schedule's runs wait in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served six times in ten.
    High,
    /// Served three times in ten.
    #[default]
    Normal,
    /// Served once in ten (more when the others are empty).
    Low,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Self; 3] = [Self::High, Self::Normal, Self::Low];

    /// The name as written in the config.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// What a tick does while the schedule's previous run is still going.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Record the tick as skipped.
    #[default]
    Skip,
    /// Run it after the previous run (at most one run waits; later ticks are skipped).
    Queue,
}

impl Overlap {
    /// The name as written in the config.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Queue => "queue",
        }
    }
}

/// What one run does: emit one event, or pull records through a provider.
#[derive(Debug, Clone)]
pub enum JobSettings {
    /// Emit one event of this type with this data.
    Emit {
        /// The event type.
        event_type: String,
        /// The event's data.
        data: Option<serde_json::Value>,
    },
    /// Pull records through a provider and emit them.
    Provider(crate::provider::ProviderSettings),
}

/// A validated schedule source.
#[derive(Debug, Clone)]
pub struct ScheduleSourceSettings {
    /// When it ticks.
    pub timing: Timing,
    /// Which setting gave the timing: `cron`, `every` or `at`.
    pub spec_key: &'static str,
    /// That setting as written.
    pub spec_text: String,
    /// Largest random delay added to each run's start.
    pub jitter: Duration,
    /// Missed ticks.
    pub misfire: Misfire,
    /// Queue.
    pub priority: Priority,
    /// Overlapping ticks.
    pub overlap: Overlap,
    /// What a run does.
    pub job: JobSettings,
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    c: &ScheduleSourceConfig,
) -> Option<ScheduleSourceSettings> {
    let tz = match c.timezone.as_deref() {
        None => Tz::UTC,
        Some(name) => match schedule::parse_time_zone(name) {
            Ok(tz) => tz,
            Err(e) => {
                cx.err_here(format!("{p}.timezone"), e.to_string());
                Tz::UTC
            }
        },
    };
    let instant = |cx: &mut Ctx<'_>, field: &str, text: &Option<String>| {
        let text = text.as_deref()?;
        schedule::parse_instant(text, tz)
            .map_err(|e| cx.err_here(format!("{p}.{field}"), e.to_string()))
            .ok()
    };
    let start = instant(cx, "start", &c.start);
    let end = instant(cx, "end", &c.end);
    let at = instant(cx, "at", &c.at);

    let given = [c.cron.is_some(), c.every.is_some(), c.at.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        cx.err_here(
            p,
            "give exactly one of `cron` (e.g. \"0 0 * * *\"), `every` (e.g. `5m`) or `at` (e.g. `2026-12-01T09:00:00Z`)",
        );
        return None;
    }
    let (spec_key, spec_text, spec) = if let Some(text) = &c.cron {
        let spec = schedule::parse_cron(text)
            .map_err(|e| cx.err_here(format!("{p}.cron"), e.to_string()))
            .ok();
        ("cron", text.trim().to_owned(), spec)
    } else if let Some(every) = &c.every {
        let spec = schedule::interval(every.0)
            .map_err(|e| cx.err_here(format!("{p}.every"), e.to_string()))
            .ok();
        ("every", format!("{every:?}"), spec)
    } else {
        let text = c.at.as_deref().unwrap_or_default().trim().to_owned();
        ("at", text, at.map(Spec::Once))
    };
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        cx.err_here(format!("{p}.end"), "must be later than `start`");
        return None;
    }
    let timing = match Timing::new(spec?, tz, start, end) {
        Ok(t) => t,
        Err(e) => {
            cx.err_here(format!("{p}.{spec_key}"), e.to_string());
            return None;
        }
    };

    let jitter = c.jitter.map_or(Duration::ZERO, |j| j.0);
    if let Spec::Interval(every) = timing.spec()
        && jitter >= *every
    {
        cx.err_here(
            format!("{p}.jitter"),
            format!(
                "must be shorter than the interval ({})",
                humantime::format_duration(*every)
            ),
        );
    }
    if jitter > Duration::from_secs(24 * 3600) {
        cx.err_here(format!("{p}.jitter"), "must be at most 24h");
    }
    let event_type = match c.event_type.as_deref().map(str::trim) {
        None => DEFAULT_EVENT_TYPE.to_owned(),
        Some("") => {
            cx.err_here(
                format!("{p}.type"),
                "must not be empty; leave it out for `schedule.fired`",
            );
            DEFAULT_EVENT_TYPE.to_owned()
        }
        Some(t) => t.to_owned(),
    };
    let job = match &c.provider {
        None => JobSettings::Emit {
            event_type,
            data: c.data.clone(),
        },
        Some(provider) => {
            if c.event_type.is_some() || c.data.is_some() {
                cx.err_here(
                    format!("{p}.provider"),
                    "a schedule with a `provider` emits what the provider pulls: set the event type under `provider.emit.type` and remove `type` and `data`",
                );
            }
            JobSettings::Provider(crate::provider::validate(
                cx,
                &format!("{p}.provider"),
                provider,
            )?)
        }
    };
    Some(ScheduleSourceSettings {
        timing,
        spec_key,
        spec_text,
        jitter,
        misfire: c.misfire,
        priority: c.priority,
        overlap: c.overlap,
        job,
    })
}

#[cfg(test)]
#[path = "schedule_source_tests.rs"]
mod tests;
