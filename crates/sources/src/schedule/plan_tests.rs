//! Tests of the misfire decision: on-time ticks, downtime, late ticks, where a schedule
//! resumes, and (property tests) that any sequence of wake-ups with gaps and clock jumps
//! never fires more than one run per wake-up nor a tick twice.

use chrono::{Duration as TimeDelta, TimeZone as _};
use chrono_tz::Tz;
use estafeta_core::schedule::{interval, parse_cron};
use proptest::prelude::*;

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn every(secs: u64) -> Timing {
    Timing::new(
        interval(Duration::from_secs(secs)).unwrap(),
        Tz::UTC,
        None,
        None,
    )
    .unwrap()
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

#[test]
fn on_time_nothing_yet_and_late() {
    let t = every(60);
    assert_eq!(due(&t, t0(), t0() + secs(30), LATE_AFTER), Due::Nothing);
    assert_eq!(
        due(&t, t0(), t0() + secs(60), LATE_AFTER),
        Due::OnTime(t0() + secs(60))
    );
    assert_eq!(
        due(&t, t0(), t0() + secs(64), LATE_AFTER),
        Due::OnTime(t0() + secs(60))
    );
    // Six seconds late: missed, even though it is the only tick.
    assert_eq!(
        due(&t, t0(), t0() + secs(66), LATE_AFTER),
        Due::Missed {
            latest: t0() + secs(60),
            missed: 1
        }
    );
}

#[test]
fn downtime_gives_one_catch_up_run_for_the_latest_tick() {
    let t = every(60);
    let d = due(&t, t0(), t0() + secs(600) + secs(2), LATE_AFTER);
    assert_eq!(
        d,
        Due::Missed {
            latest: t0() + secs(600),
            missed: 10
        }
    );
    assert_eq!(
        decide(d, Misfire::RunOnce),
        Some(Fire {
            tick: t0() + secs(600),
            trigger: RunTrigger::CatchUp,
            run: true,
            missed: 10
        })
    );
    let skipped = decide(d, Misfire::Skip).unwrap();
    assert!(!skipped.run);
    assert_eq!(skipped.tick, t0() + secs(600));
    // After it, nothing else is due at that instant.
    assert_eq!(
        due(&t, skipped.tick, t0() + secs(602), LATE_AFTER),
        Due::Nothing
    );
}

#[test]
fn cron_ticks_are_counted_and_capped() {
    let t = Timing::new(parse_cron("0 * * * * *").unwrap(), Tz::UTC, None, None).unwrap();
    assert_eq!(
        due(&t, t0(), t0() + secs(3 * 60 + 1), LATE_AFTER),
        Due::Missed {
            latest: t0() + secs(180),
            missed: 3
        }
    );
    let t = every(1);
    assert_eq!(
        due(&t, t0(), t0() + secs(86_400), LATE_AFTER),
        Due::Missed {
            latest: t0() + secs(86_400),
            missed: COUNT_CAP
        }
    );
}

#[test]
fn where_a_schedule_resumes() {
    let t = every(60);
    assert_eq!(resume_after(&t, Some(t0()), t0() + secs(999)), t0());
    assert_eq!(resume_after(&t, None, t0()), t0());
    // A new schedule never catches up on ticks from before it existed.
    assert_eq!(
        due(&t, resume_after(&t, None, t0()), t0(), LATE_AFTER),
        Due::Nothing
    );
    // A one-off time that passed while down is missed once, then never again.
    let once = Timing::new(Spec::Once(t0()), Tz::UTC, None, None).unwrap();
    let after = resume_after(&once, None, t0() + secs(3600));
    let d = due(&once, after, t0() + secs(3600), LATE_AFTER);
    assert_eq!(
        d,
        Due::Missed {
            latest: t0(),
            missed: 1
        }
    );
    assert_eq!(
        due(&once, t0(), t0() + secs(7200), LATE_AFTER),
        Due::Nothing
    );
}

/// One wake-up of a simulated scheduler: `step` seconds after the previous one (negative:
/// the wall clock jumped back).
fn steps() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(
        prop_oneof![
            8 => 0i64..3,          // on time
            2 => 3i64..400,        // a pause or downtime
            1 => -300i64..0,       // the clock jumps back
            1 => 400i64..100_000,  // a long outage
        ],
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn never_a_burst_never_twice(
        steps in steps(),
        period in prop::sample::select(vec![1u64, 7, 60, 3600]),
        run_once in any::<bool>(),
    ) {
        let timing = every(period);
        let misfire = if run_once { Misfire::RunOnce } else { Misfire::Skip };
        let mut now = t0();
        let mut cursor = resume_after(&timing, None, now);
        let mut fired: Vec<DateTime<Utc>> = Vec::new();
        for step in steps {
            now += secs(step);
            let window = due(&timing, cursor, now, LATE_AFTER);
            let in_window = match window {
                Due::Nothing => 0,
                Due::OnTime(_) => 1,
                Due::Missed { missed, .. } => missed,
            };
            match decide(window, misfire) {
                None => prop_assert_eq!(in_window, 0),
                Some(f) => {
                    // One record per wake-up, for a tick never handled before.
                    prop_assert!(f.tick > cursor && f.tick <= now);
                    prop_assert!(fired.last().is_none_or(|last| f.tick > *last));
                    if in_window > 1 {
                        prop_assert_eq!(f.trigger, RunTrigger::CatchUp);
                        prop_assert_eq!(f.run, run_once);
                    }
                    fired.push(f.tick);
                    cursor = f.tick;
                    // Nothing else is due at this instant: the catch-up stood for all.
                    prop_assert_eq!(due(&timing, cursor, now, LATE_AFTER), Due::Nothing);
                }
            }
        }
    }
}
