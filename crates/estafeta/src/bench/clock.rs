//! The bench's one clock: nanoseconds since a process-wide monotonic origin, shared by the
//! generator (which stamps events) and the receiver (which stamps arrivals).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the origin (set on first use).
pub(super) fn now_ns() -> u64 {
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A span between two readings of [`now_ns`].
pub(super) fn between(from_ns: u64, to_ns: u64) -> Duration {
    Duration::from_nanos(to_ns.saturating_sub(from_ns))
}
