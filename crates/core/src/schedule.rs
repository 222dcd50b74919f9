//! When a schedule ticks: cron expressions (5 to 7 fields, through `croner`), the forms cloud
//! schedulers use (`cron(0 12 ? * MON-FRI *)` and `rate(5 minutes)`, through a thin adapter),
//! fixed intervals and one-off instants — in an IANA time zone, between optional start and
//! end instants. Pure: the runtime asks for the next tick after an instant and for the last
//! tick at or before one; every process computes the same ticks, which is what lets the
//! store de-duplicate them.

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

/// Why a schedule's timing cannot be used; the message says how to write it.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A cron expression `croner` refused.
    #[error("`{expression}` is not a cron expression ({source}){hint}")]
    Cron {
        /// The expression as written.
        expression: String,
        /// A suggestion, starting with `; ` (or empty).
        hint: String,
        /// What the parser said.
        #[source]
        source: CronError,
    },
    /// A cron expression of the wrong shape (field count, the `cron(…)` form's rules).
    #[error("{0}")]
    Shape(String),
    /// A `rate(…)` expression or an interval that cannot be used.
    #[error("{0}")]
    Rate(String),
    /// An instant (`at`, `start`, `end`) that cannot be read.
    #[error("`{text}` is not a time: {reason}")]
    Instant {
        /// The text as written.
        text: String,
        /// What is wrong, and the forms that work.
        reason: String,
    },
    /// A time zone name that is not in the IANA database.
    #[error(
        "`{0}` is not an IANA time zone; write e.g. `UTC`, `America/Sao_Paulo` or `Europe/Lisbon`"
    )]
    TimeZone(String),
    /// A schedule that can never tick.
    #[error("{0}")]
    NeverFires(String),
}

/// What a schedule follows.
#[derive(Debug, Clone)]
pub enum Spec {
    /// A cron pattern, evaluated in the schedule's time zone.
    Cron(Box<Cron>),
    /// Every `interval`, counted from the schedule's start (or the Unix epoch), so the ticks
    /// are the same whenever and wherever they are computed.
    Interval(Duration),
    /// Once, at this instant.
    Once(DateTime<Utc>),
}

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Reads the `cron` setting: a 5-field (`minute hour day-of-month month day-of-week`),
/// 6-field (seconds first) or 7-field (seconds first, year last) expression or an `@daily`
/// style nickname; `cron(minutes hours day-of-month month day-of-week year)` as cloud
/// schedulers write it (`?` in one of the day fields, days of the week 1-7 from Sunday); or
/// `rate(5 minutes)`.
///
/// # Errors
/// A [`SpecError`] that says what is wrong and how to write it.
pub fn parse_cron(text: &str) -> Result<Spec, SpecError> {
    let t = text.trim();
    if let Some(inner) = strip_call(t, "rate") {
        return parse_rate(inner).map(Spec::Interval);
    }
    if let Some(inner) = strip_call(t, "cron") {
        return parse_cloud_cron(t, inner);
    }
    let fields: Vec<&str> = t.split_whitespace().collect();
    if !t.starts_with('@') && !(5..=7).contains(&fields.len()) {
        return Err(SpecError::Shape(format!(
            "`{t}` has {} field(s); write 5 (`minute hour day-of-month month day-of-week`, e.g. `0 0 * * *`), 6 (seconds first) or 7 (seconds first, year last)",
            fields.len()
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Optional)
        .build()
        .parse(t)
        .map(|c| Spec::Cron(Box::new(c)))
        .map_err(|source| {
            let looks_cloud = fields.len() == 6 && (fields[2] == "?" || fields[4] == "?");
            let hint = if looks_cloud {
                format!("; this looks like a cloud scheduler expression: write it as `cron({t})`")
            } else {
                String::new()
            };
            SpecError::Cron {
                expression: t.to_owned(),
                hint,
                source,
            }
        })
}

/// `name(inner)` → `inner`, case-insensitively.
fn strip_call<'a>(t: &'a str, name: &str) -> Option<&'a str> {
    let open = t.get(..name.len() + 1)?;
    if !open.eq_ignore_ascii_case(&format!("{name}(")) {
        return None;
    }
    t[name.len() + 1..].strip_suffix(')').map(str::trim)
}

/// `cron(minutes hours day-of-month month day-of-week year)`: six fields, `?` in exactly one
/// of the day fields, days of the week counted 1 (Sunday) to 7 (Saturday).
fn parse_cloud_cron(whole: &str, inner: &str) -> Result<Spec, SpecError> {
    let f: Vec<&str> = inner.split_whitespace().collect();
    if f.len() != 6 {
        return Err(SpecError::Shape(format!(
            "`{whole}` has {} field(s) inside `cron(…)`; that form takes 6: `minutes hours day-of-month month day-of-week year`, e.g. `cron(0 12 ? * MON-FRI *)`",
            f.len()
        )));
    }
    if (f[2] == "?") == (f[4] == "?") {
        return Err(SpecError::Shape(format!(
            "`{whole}`: in the `cron(…)` form exactly one of day-of-month and day-of-week is `?`, e.g. `cron(0 0 * * ? *)` or `cron(0 9 ? * MON *)`"
        )));
    }
    let pattern = format!("0 {inner}");
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .alternative_weekdays(true)
        .build()
        .parse(&pattern)
        .map(|c| Spec::Cron(Box::new(c)))
        .map_err(|source| SpecError::Cron {
            expression: whole.to_owned(),
            hint: String::new(),
            source,
        })
}

/// `5 minutes`, `1 hour`, `2 days` (the inside of `rate(…)`).
fn parse_rate(inner: &str) -> Result<Duration, SpecError> {
    let bad = |why: &str| {
        SpecError::Rate(format!(
            "`rate({inner})` {why}; write e.g. `rate(5 minutes)`, `rate(1 hour)` or `rate(7 days)`"
        ))
    };
    let mut parts = inner.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("needs a number and a unit"));
    };
    let n: u64 = n
        .parse()
        .map_err(|_| bad("needs a whole number greater than 0"))?;
    if n == 0 {
        return Err(bad("needs a whole number greater than 0"));
    }
    let unit_secs = match unit.to_ascii_lowercase().as_str() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return Err(bad("has an unknown unit (use minutes, hours or days)")),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| bad("is too long"))
}

/// Checks an `every` interval: at least [`MIN_INTERVAL`].
///
/// # Errors
/// [`SpecError::Rate`] for a shorter interval.
pub fn interval(every: Duration) -> Result<Spec, SpecError> {
    if every < MIN_INTERVAL {
        return Err(SpecError::Rate(format!(
            "an interval must be at least 1s (got {}ms)",
            every.as_millis()
        )));
    }
    Ok(Spec::Interval(every))
}

/// Reads an IANA time zone name (`UTC`, `America/Sao_Paulo`).
///
/// # Errors
/// [`SpecError::TimeZone`] for an unknown name.
pub fn parse_time_zone(name: &str) -> Result<Tz, SpecError> {
    Tz::from_str(name.trim()).map_err(|_| SpecError::TimeZone(name.to_owned()))
}

/// Reads an instant: RFC 3339 (`2026-12-01T09:00:00-03:00`, `…Z`), or a date and time
/// without an offset (`2026-12-01T09:00:00`, `2026-12-01 09:00`) or a date alone (midnight),
/// read in `tz`.
///
/// # Errors
/// [`SpecError::Instant`] when it is none of those, or names a local time that does not
/// exist (skipped by a daylight-saving change).
pub fn parse_instant(text: &str, tz: Tz) -> Result<DateTime<Utc>, SpecError> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .ok_or_else(|| SpecError::Instant {
            text: t.to_owned(),
            reason: "write RFC 3339 (`2026-12-01T09:00:00-03:00` or `…Z`), or a local date and time in the schedule's time zone (`2026-12-01T09:00:00`)".to_owned(),
        })?;
    // An ambiguous local time (clocks going back) is its first occurrence.
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| SpecError::Instant {
            text: t.to_owned(),
            reason: format!("this local time does not exist in {tz} (the clocks skip it)"),
        })
}

/// A schedule's ticks: the spec, its time zone and the window it is active in.
#[derive(Debug, Clone)]
pub struct Timing {
    spec: Spec,
    tz: Tz,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

/// A date far enough back that every cron pattern that can match has matched after it.
fn cron_epoch() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or_default() // 2000-01-01
}

impl Timing {
    /// A timing. Ticks before `start` and after `end` do not count.
    ///
    /// # Errors
    /// [`SpecError::NeverFires`] when `end` is not after `start`, when a once-only instant
    /// lies outside the window, or when a cron pattern matches no date at all (such as
    /// `0 0 30 2 *`).
    pub fn new(
        spec: Spec,
        tz: Tz,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Self, SpecError> {
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            return Err(SpecError::NeverFires(
                "`end` must be later than `start`".to_owned(),
            ));
        }
        let timing = Self {
            spec,
            tz,
            start,
            end,
        };
        match &timing.spec {
            Spec::Once(at) if start.is_some_and(|s| *at < s) || end.is_some_and(|e| *at > e) => {
                Err(SpecError::NeverFires(
                    "`at` lies outside the `start`..`end` window".to_owned(),
                ))
            }
            Spec::Cron(_)
                if timing
                    .next_after(start.unwrap_or_else(cron_epoch))
                    .is_none() =>
            {
                Err(SpecError::NeverFires(
                    "the cron expression matches no date (inside the `start`..`end` window)"
                        .to_owned(),
                ))
            }
            _ => Ok(timing),
        }
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The time zone cron patterns are read in.
    #[must_use]
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first instant ticks count from.
    #[must_use]
    pub fn start(&self) -> Option<DateTime<Utc>> {
        self.start
    }

    /// The last instant ticks count to.
    #[must_use]
    pub fn end(&self) -> Option<DateTime<Utc>> {
        self.end
    }

    /// The first tick strictly after `t`, or `None` when there is no more.
    #[must_use]
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = match &self.spec {
            Spec::Once(at) => (*at > t).then_some(*at),
            Spec::Interval(every) => {
                let anchor = self.start.unwrap_or(DateTime::UNIX_EPOCH);
                if t < anchor {
                    Some(anchor)
                } else {
                    let k = steps(anchor, t, *every)?.checked_add(1)?;
                    at_step(anchor, k, *every)
                }
            }
            Spec::Cron(cron) => match self.start {
                Some(s) if t < s => cron.find_next_occurrence(&s.with_timezone(&self.tz), true),
                _ => cron.find_next_occurrence(&t.with_timezone(&self.tz), false),
            }
            .ok()
            .map(|n| n.with_timezone(&Utc)),
        }?;
        let before_start = self.start.is_some_and(|s| next < s);
        (!before_start && self.end.is_none_or(|e| next <= e)).then_some(next)
    }

    /// The last tick at or before `t`, or `None` when there was none.
    #[must_use]
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = self.end.map_or(t, |e| t.min(e));
        let latest = match &self.spec {
            Spec::Once(at) => (*at <= t).then_some(*at),
            Spec::Interval(every) => {
                let anchor = self.start.unwrap_or(DateTime::UNIX_EPOCH);
                if t < anchor {
                    None
                } else {
                    at_step(anchor, steps(anchor, t, *every)?, *every)
                }
            }
            Spec::Cron(cron) => cron
                .find_previous_occurrence(&t.with_timezone(&self.tz), true)
                .ok()
                .map(|p| p.with_timezone(&Utc)),
        }?;
        (latest <= t && self.start.is_none_or(|s| latest >= s)).then_some(latest)
    }
}

/// Whole intervals from `anchor` to `t` (`t >= anchor`).
fn steps(anchor: DateTime<Utc>, t: DateTime<Utc>, every: Duration) -> Option<i64> {
    let span = i128::from((t - anchor).num_nanoseconds()?);
    let step = i128::try_from(every.as_nanos()).ok()?.max(1);
    i64::try_from(span / step).ok()
}

/// `anchor + k * every`.
fn at_step(anchor: DateTime<Utc>, k: i64, every: Duration) -> Option<DateTime<Utc>> {
    let nanos = i128::from(k).checked_mul(i128::try_from(every.as_nanos()).ok()?)?;
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = i64::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    anchor
        .checked_add_signed(chrono::TimeDelta::try_seconds(secs)?)?
        .checked_add_signed(chrono::TimeDelta::nanoseconds(sub))
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
