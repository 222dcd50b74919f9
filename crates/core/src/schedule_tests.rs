//! Tests of schedule timing: the cron forms, `rate(…)`, intervals, instants, windows,
//! daylight-saving changes and clear errors for bad specs.

use proptest::prelude::*;

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn timing(spec: &str, tz: &str) -> Timing {
    Timing::new(
        parse_cron(spec).unwrap(),
        parse_time_zone(tz).unwrap(),
        None,
        None,
    )
    .unwrap()
}

fn err(spec: &str) -> String {
    parse_cron(spec).map(|_| ()).unwrap_err().to_string()
}

/// The next `n` ticks after `from`, as local wall-clock text.
fn ticks(t: &Timing, from: &str, n: usize) -> Vec<String> {
    let mut at = utc(from);
    (0..n)
        .map(|_| {
            at = t.next_after(at).unwrap();
            at.with_timezone(&t.time_zone())
                .format("%a %F %T %Z")
                .to_string()
        })
        .collect()
}

#[test]
fn five_six_and_seven_field_cron() {
    let t = timing("0 0 * * *", "UTC");
    assert_eq!(
        t.next_after(utc("2026-11-22T10:00:00Z")),
        Some(utc("2026-11-23T00:00:00Z"))
    );
    let t = timing("*/10 * * * * *", "UTC");
    assert_eq!(
        t.next_after(utc("2026-11-22T10:00:03.5Z")),
        Some(utc("2026-11-22T10:00:10Z"))
    );
    assert_eq!(
        t.latest_at_or_before(utc("2026-11-22T10:00:10.5Z")),
        Some(utc("2026-11-22T10:00:10Z"))
    );
    let t = timing("0 30 9 * * * 2027", "UTC");
    assert_eq!(
        t.next_after(utc("2026-11-22T10:00:00Z")),
        Some(utc("2027-01-01T09:30:00Z"))
    );
    for special in ["@daily", "0 0 L * *", "0 0 * * 5#3", "0 0 15W * *"] {
        assert!(parse_cron(special).is_ok(), "{special}");
    }
}

#[test]
fn midnight_in_sao_paulo_is_three_in_the_morning_utc() {
    let t = timing("0 0 * * *", "America/Sao_Paulo");
    assert_eq!(
        t.next_after(utc("2026-11-22T12:00:00Z")),
        Some(utc("2026-11-23T03:00:00Z"))
    );
}

#[test]
fn cloud_scheduler_forms() {
    let t = timing("cron(0 0 * * ? *)", "UTC");
    assert_eq!(
        t.next_after(utc("2026-11-22T10:00:00Z")),
        Some(utc("2026-11-23T00:00:00Z"))
    );
    // Saturday the 21st → Monday the 23rd; numeric days count from Sunday = 1.
    for spec in ["cron(0 12 ? * MON-FRI *)", "cron(0 12 ? * 2-6 *)"] {
        assert_eq!(
            ticks(&timing(spec, "UTC"), "2026-11-21T00:00:00Z", 2),
            ["Mon 2026-11-23 12:00:00 UTC", "Tue 2026-11-24 12:00:00 UTC"],
            "{spec}"
        );
    }
    assert_eq!(
        ticks(
            &timing("cron(0 10 ? * 6#3 *)", "UTC"),
            "2026-11-01T00:00:00Z",
            1
        ),
        ["Fri 2026-11-20 10:00:00 UTC"]
    );
    assert_eq!(
        ticks(
            &timing("CRON(15 8 L * ? 2026)", "UTC"),
            "2026-11-01T00:00:00Z",
            1
        ),
        ["Mon 2026-11-30 08:15:00 UTC"]
    );
    match parse_cron("rate(5 minutes)").unwrap() {
        Spec::Interval(d) => assert_eq!(d, Duration::from_secs(300)),
        other => panic!("{other:?}"),
    }
    match parse_cron(" rate(1 day) ").unwrap() {
        Spec::Interval(d) => assert_eq!(d, Duration::from_secs(86_400)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_specs_say_what_to_write() {
    assert!(err("* * *").contains("has 3 field(s); write 5"));
    assert!(err("0 0 * * * * * *").contains("has 8 field(s)"));
    let e = err("0 0 * * ? *");
    assert!(e.contains("write it as `cron(0 0 * * ? *)`"), "{e}");
    assert!(err("61 * * * *").contains("is not a cron expression"));
    assert!(err("0 0 * * MOONDAY").contains("is not a cron expression"));
    assert!(
        err("cron(0 0 * * * *)").contains("exactly one of day-of-month and day-of-week is `?`")
    );
    assert!(err("cron(0 0 ? * ? *)").contains("exactly one"));
    assert!(err("cron(0 0 * *)").contains("has 4 field(s) inside `cron(…)`"));
    assert!(err("rate(0 minutes)").contains("greater than 0"));
    assert!(err("rate(5 weeks)").contains("unknown unit"));
    assert!(err("rate(5)").contains("a number and a unit"));
    assert!(err("rate(five minutes)").contains("whole number"));
    assert!(interval(Duration::from_millis(500)).is_err());
    assert!(interval(Duration::from_secs(1)).is_ok());
    let never = Timing::new(parse_cron("0 0 30 2 *").unwrap(), Tz::UTC, None, None);
    assert!(never.unwrap_err().to_string().contains("matches no date"));
    assert!(
        parse_time_zone("Mars/Olympus")
            .unwrap_err()
            .to_string()
            .contains("IANA")
    );
}

#[test]
fn spring_forward_runs_once_at_the_first_minute_after_the_gap() {
    // 2026-03-08: New York skips from 02:00 to 03:00; a 02:30 job runs at 03:00 that day.
    let t = timing("30 2 * * *", "America/New_York");
    assert_eq!(
        ticks(&t, "2026-03-06T12:00:00Z", 3),
        [
            "Sat 2026-03-07 02:30:00 EST",
            "Sun 2026-03-08 03:00:00 EDT",
            "Mon 2026-03-09 02:30:00 EDT"
        ]
    );
}

#[test]
fn fall_back_runs_a_fixed_time_job_once_and_an_interval_job_in_both_hours() {
    // 2026-11-01: New York repeats 01:00-02:00.
    let t = timing("30 1 * * *", "America/New_York");
    assert_eq!(
        ticks(&t, "2026-10-31T12:00:00Z", 2),
        ["Sun 2026-11-01 01:30:00 EDT", "Mon 2026-11-02 01:30:00 EST"]
    );
    let t = timing("*/30 * * * *", "America/New_York");
    assert_eq!(
        ticks(&t, "2026-11-01T04:50:00Z", 5),
        [
            "Sun 2026-11-01 01:00:00 EDT",
            "Sun 2026-11-01 01:30:00 EDT",
            "Sun 2026-11-01 01:00:00 EST",
            "Sun 2026-11-01 01:30:00 EST",
            "Sun 2026-11-01 02:00:00 EST"
        ]
    );
}

#[test]
fn intervals_count_from_the_start_or_the_epoch() {
    let every = |secs, start| {
        Timing::new(
            interval(Duration::from_secs(secs)).unwrap(),
            Tz::UTC,
            start,
            None,
        )
        .unwrap()
    };
    let t = every(300, None);
    assert_eq!(
        t.next_after(utc("2026-11-22T12:03:10Z")),
        Some(utc("2026-11-22T12:05:00Z"))
    );
    assert_eq!(
        t.next_after(utc("2026-11-22T12:05:00Z")),
        Some(utc("2026-11-22T12:10:00Z"))
    );
    assert_eq!(
        t.latest_at_or_before(utc("2026-11-22T12:05:00Z")),
        Some(utc("2026-11-22T12:05:00Z"))
    );
    let t = every(300, Some(utc("2026-11-22T12:01:30Z")));
    assert_eq!(
        t.next_after(utc("2026-11-01T00:00:00Z")),
        Some(utc("2026-11-22T12:01:30Z"))
    );
    assert_eq!(
        t.next_after(utc("2026-11-22T12:01:30Z")),
        Some(utc("2026-11-22T12:06:30Z"))
    );
    assert_eq!(t.latest_at_or_before(utc("2026-11-22T12:01:29Z")), None);
}

#[test]
fn windows_and_once() {
    let t = Timing::new(
        parse_cron("0 * * * *").unwrap(),
        Tz::UTC,
        Some(utc("2026-11-22T10:30:00Z")),
        Some(utc("2026-11-22T12:00:00Z")),
    )
    .unwrap();
    assert_eq!(
        t.next_after(utc("2026-11-22T00:00:00Z")),
        Some(utc("2026-11-22T11:00:00Z"))
    );
    assert_eq!(
        t.next_after(utc("2026-11-22T11:00:00Z")),
        Some(utc("2026-11-22T12:00:00Z"))
    );
    assert_eq!(t.next_after(utc("2026-11-22T12:00:00Z")), None);
    assert_eq!(
        t.latest_at_or_before(utc("2026-11-30T00:00:00Z")),
        Some(utc("2026-11-22T12:00:00Z"))
    );
    assert_eq!(t.latest_at_or_before(utc("2026-11-22T10:59:00Z")), None);

    let at = utc("2026-12-01T12:00:00Z");
    let once = Timing::new(Spec::Once(at), Tz::UTC, None, None).unwrap();
    assert_eq!(once.next_after(utc("2026-11-01T00:00:00Z")), Some(at));
    assert_eq!(once.next_after(at), None);
    assert_eq!(once.latest_at_or_before(at), Some(at));
    assert_eq!(once.latest_at_or_before(utc("2026-11-01T00:00:00Z")), None);
    let outside = Timing::new(
        Spec::Once(at),
        Tz::UTC,
        None,
        Some(utc("2026-11-30T00:00:00Z")),
    );
    assert!(outside.unwrap_err().to_string().contains("outside"));
    let backwards = Timing::new(Spec::Once(at), Tz::UTC, Some(at), Some(at));
    assert!(backwards.unwrap_err().to_string().contains("later than"));
}

#[test]
fn instants_with_and_without_offsets() {
    let sp = parse_time_zone("America/Sao_Paulo").unwrap();
    assert_eq!(
        parse_instant("2026-12-01T09:00:00-03:00", Tz::UTC).unwrap(),
        utc("2026-12-01T12:00:00Z")
    );
    assert_eq!(
        parse_instant("2026-12-01T09:00:00", sp).unwrap(),
        utc("2026-12-01T12:00:00Z")
    );
    assert_eq!(
        parse_instant("2026-12-01 09:00", sp).unwrap(),
        utc("2026-12-01T12:00:00Z")
    );
    assert_eq!(
        parse_instant("2026-12-01", sp).unwrap(),
        utc("2026-12-01T03:00:00Z")
    );
    let e = parse_instant("tomorrow", sp).unwrap_err().to_string();
    assert!(e.contains("write RFC 3339"), "{e}");
    let ny = parse_time_zone("America/New_York").unwrap();
    let e = parse_instant("2026-03-08T02:30:00", ny)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    (1_700_000_000i64..1_900_000_000, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::<Utc>::from_timestamp(s, n).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The next tick is after `t`, it is its own latest tick, and nothing lies between the
    /// latest tick at or before `t` and the next one after it.
    #[test]
    fn next_and_latest_agree(
        t in any_instant(),
        spec in prop::sample::select(vec![
            "*/7 * * * * *", "0 0 * * *", "rate(5 minutes)", "30 2 * * *", "cron(0 12 ? * MON-FRI *)",
        ]),
        tz in prop::sample::select(vec!["UTC", "America/New_York", "America/Sao_Paulo", "Asia/Kolkata"]),
    ) {
        let timing = timing(spec, tz);
        let next = timing.next_after(t).unwrap();
        prop_assert!(next > t);
        prop_assert_eq!(timing.latest_at_or_before(next), Some(next));
        let latest = timing.latest_at_or_before(t).unwrap();
        prop_assert!(latest <= t);
        prop_assert_eq!(timing.next_after(latest), Some(next));
    }
}
