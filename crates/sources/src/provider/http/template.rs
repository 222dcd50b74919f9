//! The HTTP provider's templates (method, URL, query and header values) and the date helpers
//! they see: `now`, `today`, `yesterday`, `run.scheduled_at`, `run.date`, `cursor`, the
//! `date(format)` filter and the `days_ago(n)` function. Dates are UTC and count from the
//! run's tick, so a catch-up run for last night's tick asks for last night's "yesterday".

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use minijinja::{Environment, Error, ErrorKind, Value};

use crate::schedule::RunContext;

/// The compiled templates of one provider.
pub(crate) struct Templates {
    env: Environment<'static>,
}

/// Reads a date or time from a template value: RFC 3339, `YYYY-MM-DD`, or Unix seconds.
fn instant(v: &Value) -> Result<DateTime<Utc>, Error> {
    if let Some(n) = v.as_i64() {
        return DateTime::from_timestamp(n, 0)
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "timestamp out of range"));
    }
    let text = v.as_str().unwrap_or_default();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("`date` needs an RFC 3339 time, a YYYY-MM-DD date or Unix seconds, not `{text}`"),
    ))
}

/// `value | date("%Y-%m-%d")` (strftime; default RFC 3339).
fn date(v: &Value, format: Option<&str>) -> Result<String, Error> {
    let t = instant(v)?;
    Ok(match format {
        None => t.to_rfc3339_opts(SecondsFormat::Secs, true),
        Some(f) => {
            use std::fmt::Write as _;
            let mut out = String::new();
            write!(out, "{}", t.format(f)).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("bad date format `{f}`"),
                )
            })?;
            out
        }
    })
}

impl Templates {
    /// Compiles `(name, source)` pairs.
    pub(crate) fn new<'a>(
        sources: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        env.add_filter("date", date);
        for (name, source) in sources {
            env.add_template_owned(name, source.to_owned())?;
        }
        Ok(Self { env })
    }

    /// Renders one template with the run's context.
    pub(crate) fn render(&self, name: &str, ctx: &Value) -> Result<String, Error> {
        self.env.get_template(name)?.render(ctx)
    }
}

/// The context templates see for a run, with the last stored cursor.
pub(crate) fn context(run: &RunContext, cursor: Option<&str>) -> Value {
    context_at(
        run.scheduled_at,
        run.started_at,
        &run.run_id.to_string(),
        cursor,
    )
}

pub(crate) fn context_at(
    scheduled_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    run_id: &str,
    cursor: Option<&str>,
) -> Value {
    let day = scheduled_at.date_naive();
    let text = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    let yesterday = day.checked_sub_signed(TimeDelta::days(1)).unwrap_or(day);
    let days_ago =
        move |n: i64| -> String { text(day.checked_sub_signed(TimeDelta::days(n)).unwrap_or(day)) };
    minijinja::context! {
        now => Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        today => text(day),
        yesterday => text(yesterday),
        days_ago => Value::from_function(days_ago),
        cursor => cursor.map_or(Value::UNDEFINED, Value::from),
        run => minijinja::context! {
            scheduled_at => scheduled_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            started_at => started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            date => text(day),
            id => run_id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, cursor: Option<&str>) -> String {
        let t = Templates::new([("t".to_owned(), src)]).unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-22T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        t.render("t", &context_at(at, at, "run_1", cursor)).unwrap()
    }

    #[test]
    fn date_helpers() {
        assert_eq!(
            render("{{ today }}/{{ yesterday }}", None),
            "2026-11-22/2026-11-21"
        );
        assert_eq!(render("{{ days_ago(7) }}", None), "2026-11-15");
        assert_eq!(
            render("{{ run.scheduled_at }}", None),
            "2026-11-22T03:00:00Z"
        );
        assert_eq!(
            render("{{ yesterday | date('%d/%m/%Y') }}", None),
            "21/11/2026"
        );
        assert_eq!(
            render("{{ run.scheduled_at | date('%s') }}", None),
            "1795316400"
        );
        assert_eq!(render("{{ 0 | date }}", None), "1970-01-01T00:00:00Z");
        assert!(render("{{ now }}", None).ends_with('Z'));
    }

    #[test]
    fn cursor_is_empty_before_the_first_run() {
        assert_eq!(render("since={{ cursor }}", None), "since=");
        assert_eq!(render("{{ cursor or '2020-01-01' }}", None), "2020-01-01");
        assert_eq!(
            render("{{ cursor }}", Some("2026-01-01T00:00:00Z")),
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn a_bad_date_is_an_error() {
        let t = Templates::new([("t".to_owned(), "{{ 'x' | date }}")]).unwrap();
        let at = Utc::now();
        assert!(t.render("t", &context_at(at, at, "r", None)).is_err());
    }
}
