//! Typed, prefixed identifiers (`evt_…`, `dlv_…`, `att_…`, `run_…`) built on ULIDs, so ids sort by
//! creation time and can never be mixed up across kinds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Error returned when a string is not a valid id of the expected kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{value}` is not a valid {kind} id (expected `{prefix}` followed by 26 characters)")]
pub struct IdParseError {
    kind: &'static str,
    prefix: &'static str,
    value: String,
}

/// A ULID greater than every one this process made before (ULIDs made in the same millisecond
/// increment the random part instead of drawing a new one), so ids sort in creation order.
fn monotonic() -> Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let mut g = GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Overflow needs 2^80 ids in one millisecond; fall back to a fresh random one.
    g.generate().unwrap_or_else(|_| Ulid::new())
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            /// The textual prefix of this kind of id.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id, ordered after every id made earlier in this process.
            #[must_use]
            pub fn new() -> Self {
                Self(monotonic())
            }

            /// Wraps an existing ULID.
            #[must_use]
            pub fn from_ulid(ulid: Ulid) -> Self {
                Self(ulid)
            }

            /// The ULID inside.
            #[must_use]
            pub fn ulid(&self) -> Ulid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || IdParseError { kind: $kind, prefix: $prefix, value: s.to_owned() };
                let rest = s.strip_prefix($prefix).ok_or_else(err)?;
                Ulid::from_string(rest).map(Self).map_err(|_| err())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// Identifies one event in the log.
    EventId, "evt_", "event"
);
typed_id!(
    /// Identifies one delivery: one event going to one destination through one route.
    DeliveryId, "dlv_", "delivery"
);
typed_id!(
    /// Identifies one attempt of a delivery.
    AttemptId, "att_", "attempt"
);
typed_id!(
    /// Identifies one run of a schedule (a tick, a catch-up after downtime, or a manual run).
    ScheduleRunId, "run_", "schedule run"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let id = EventId::new();
        let text = id.to_string();
        assert!(text.starts_with("evt_"));
        assert_eq!(text.parse::<EventId>(), Ok(id));
    }

    #[test]
    fn rejects_the_wrong_prefix() {
        let id = DeliveryId::new().to_string();
        let err = id.parse::<EventId>().unwrap_err();
        assert!(err.to_string().contains("not a valid event id"));
    }

    #[test]
    fn ids_made_later_sort_later() {
        let ids: Vec<String> = (0..10_000).map(|_| EventId::new().to_string()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
