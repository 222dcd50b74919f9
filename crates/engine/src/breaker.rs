//! A per-destination circuit breaker: after failing continuously for `failure_window` it
//! opens; while open only one probe attempt goes out every `probe_interval`; a success closes
//! it. Nothing is dropped while open: deliveries wait.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use estafeta_config::BreakerSettings;

#[derive(Debug, Default)]
struct State {
    failing_since: Option<Instant>,
    open: bool,
    next_probe: Option<Instant>,
    probe_in_flight: bool,
}

/// What the breaker allows right now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Send normally.
    Go,
    /// Send as the probe.
    Probe,
    /// Wait this long, then ask again.
    Wait(Duration),
}

#[derive(Debug)]
pub(crate) struct Breaker {
    settings: Option<BreakerSettings>,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(settings: Option<BreakerSettings>) -> Self {
        Self {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.lock().open
    }

    pub(crate) fn admit(&self) -> Admit {
        let Some(s) = self.settings else {
            return Admit::Go;
        };
        let mut st = self.lock();
        if !st.open {
            return Admit::Go;
        }
        let now = Instant::now();
        let due = st.next_probe.unwrap_or(now);
        if st.probe_in_flight || due > now {
            return Admit::Wait(due.saturating_duration_since(now).max(s.probe_interval / 4));
        }
        st.probe_in_flight = true;
        st.next_probe = Some(now + s.probe_interval);
        Admit::Probe
    }

    /// Gives the probe slot back when the probe never reached the endpoint.
    pub(crate) fn release_probe(&self) {
        let mut st = self.lock();
        st.probe_in_flight = false;
        st.next_probe = Some(Instant::now());
    }

    /// Records an attempt's result; returns true when the breaker just opened.
    pub(crate) fn record(&self, endpoint_failed: bool, was_probe: bool) -> bool {
        let Some(s) = self.settings else { return false };
        let mut st = self.lock();
        if was_probe {
            st.probe_in_flight = false;
        }
        if !endpoint_failed {
            *st = State::default();
            return false;
        }
        let now = Instant::now();
        let since = *st.failing_since.get_or_insert(now);
        if !st.open && now.duration_since(since) >= s.failure_window {
            st.open = true;
            st.next_probe = Some(now + s.probe_interval);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_window_and_probes() {
        let b = Breaker::new(Some(BreakerSettings {
            failure_window: Duration::ZERO,
            probe_interval: Duration::from_millis(20),
        }));
        assert_eq!(b.admit(), Admit::Go);
        assert!(b.record(true, false));
        assert!(matches!(b.admit(), Admit::Wait(_)));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if b.admit() == Admit::Probe {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // A second caller must wait while the probe is out.
        assert!(matches!(b.admit(), Admit::Wait(_)));
        b.record(false, true);
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admit::Go);
    }

    #[test]
    fn disabled_breaker_always_admits() {
        let b = Breaker::new(None);
        for _ in 0..10 {
            b.record(true, false);
        }
        assert_eq!(b.admit(), Admit::Go);
    }
}
