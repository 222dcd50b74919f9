//! The retry schedule: how long to wait before each attempt, with jitter, and when a delivery
//! is dead.

use std::time::Duration;

use rand::Rng;

/// Delays before each attempt. `schedule[0]` is the delay before the first attempt (normally
/// zero), `schedule[n]` the delay after the `n`-th failed attempt. After the last entry's
/// attempt fails, the delivery is dead.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    jitter: f64,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with ±10 % jitter.
    fn default() -> Self {
        let secs = [
            0,
            5,
            5 * 60,
            30 * 60,
            2 * 3600,
            5 * 3600,
            10 * 3600,
            10 * 3600,
        ];
        Self {
            schedule: secs.into_iter().map(Duration::from_secs).collect(),
            jitter: 0.1,
            max_retry_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// A policy with the given delays; an empty list means one attempt only.
    #[must_use]
    pub fn new(schedule: Vec<Duration>, jitter: f64) -> Self {
        let schedule = if schedule.is_empty() {
            vec![Duration::ZERO]
        } else {
            schedule
        };
        Self {
            schedule,
            jitter: jitter.clamp(0.0, 1.0),
            ..Self::default()
        }
    }

    /// Total attempts a delivery gets.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len()).unwrap_or(u32::MAX)
    }

    /// The configured delays.
    #[must_use]
    pub fn schedule(&self) -> &[Duration] {
        &self.schedule
    }

    /// Delay before the next attempt after `attempts_made` attempts failed, or `None` when the
    /// delivery is dead. `retry_after` is the destination's own request (`Retry-After`): it is
    /// honoured (capped at one day) when longer than the schedule's delay.
    #[must_use]
    pub fn next_delay(
        &self,
        attempts_made: u32,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let base = *self.schedule.get(usize::try_from(attempts_made).ok()?)?;
        let jittered = self.jittered(base);
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_retry_after)),
            None => jittered,
        })
    }

    fn jittered(&self, base: Duration) -> Duration {
        if base.is_zero() || self.jitter == 0.0 {
            return base;
        }
        let factor = rand::rng().random_range((1.0 - self.jitter)..=(1.0 + self.jitter));
        base.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn default_schedule_has_eight_attempts() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 8);
        assert_eq!(p.next_delay(0, None), Some(Duration::ZERO));
        assert!(p.next_delay(8, None).is_none());
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let p = RetryPolicy::new(vec![Duration::ZERO, Duration::from_secs(1)], 0.0);
        assert_eq!(
            p.next_delay(1, Some(Duration::from_secs(30))),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            p.next_delay(1, Some(Duration::from_secs(10 * 24 * 3600))),
            Some(Duration::from_secs(24 * 3600))
        );
        assert_eq!(
            p.next_delay(1, Some(Duration::from_millis(1))),
            Some(Duration::from_secs(1))
        );
    }

    proptest! {
        #[test]
        fn delays_stay_within_jitter_and_attempts_are_bounded(
            secs in proptest::collection::vec(0u64..100_000, 1..12),
            jitter in 0.0f64..0.5,
            made in 0u32..20,
        ) {
            let schedule: Vec<Duration> = secs.iter().copied().map(Duration::from_secs).collect();
            let p = RetryPolicy::new(schedule.clone(), jitter);
            match p.next_delay(made, None) {
                None => prop_assert!(made as usize >= schedule.len()),
                Some(d) => {
                    let base = schedule[made as usize].as_secs_f64();
                    prop_assert!(d.as_secs_f64() >= base * (1.0 - jitter) - 1e-6);
                    prop_assert!(d.as_secs_f64() <= base * (1.0 + jitter) + 1e-6);
                }
            }
        }
    }
}
