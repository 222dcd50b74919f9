//! Durations written as text (`50ms`, `5s`, `10m`, `2h`, `1h 30m`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration parsed from human text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl DurationText {
    /// Whole seconds.
    #[must_use]
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// Milliseconds.
    #[must_use]
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
}

impl fmt::Debug for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let s = match Raw::deserialize(d)? {
            Raw::N(0) => return Ok(Self(Duration::ZERO)),
            Raw::N(n) => {
                return Err(serde::de::Error::custom(format!(
                    "`{n}` has no unit; write e.g. `{n}s` or `{n}ms`"
                )));
            }
            Raw::S(s) => s,
        };
        let t = s.trim();
        if t == "0" {
            return Ok(Self(Duration::ZERO));
        }
        humantime::parse_duration(t).map(Self).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration ({e}); write e.g. `50ms`, `5s`, `10m` or `2h`"
            ))
        })
    }
}

/// The default request timeout of the destinations (`30s`).
pub(crate) fn thirty_seconds() -> DurationText {
    DurationText::from_secs(30)
}
