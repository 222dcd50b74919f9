//! `retention:` — how long events (with their deliveries and attempts) and objects written
//! by `s3`/`file` destinations are kept, and how often the background job applies that.
//!
//! Event policies go from the most specific to the least: a source's own period wins over
//! its tenant's, which wins over the global `older_than`. Events that still have unfinished
//! deliveries (`pending`, `retrying`) are never deleted.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::duration::DurationText;
use crate::settings::{DestinationKindSettings, DestinationSettings};
use crate::validate::Ctx;

/// The default time between two retention passes (`1h`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// The shortest accepted `interval`.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `retention:` — every policy is optional; without any, nothing is deleted automatically.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Time between two passes of the background job (default `1h`).
    pub interval: Option<DurationText>,
    /// How long events, their deliveries and their attempts are kept.
    pub events: EventRetentionConfig,
    /// How long objects are kept under a destination's prefix.
    pub objects: Vec<ObjectRetentionConfig>,
}

/// `retention.events:` — periods by scope; the most specific one applies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventRetentionConfig {
    /// Delete events received longer ago than this (every tenant and source without a
    /// period of its own), e.g. `30d`. Default: kept forever.
    pub older_than: Option<DurationText>,
    /// Periods per tenant id, e.g. `{ acme: 90d }`.
    pub tenants: BTreeMap<String, DurationText>,
    /// Periods per source id (all tenants), e.g. `{ visitors: 7d }`.
    pub sources: BTreeMap<String, DurationText>,
}

/// One entry of `retention.objects:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRetentionConfig {
    /// The id of an `s3` or `file` destination.
    pub destination: Spanned<String>,
    /// Key prefix from the bucket's (or directory's) root, e.g. `sales/`. Default: the
    /// destination's own `prefix` (everything when it has none).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Delete objects last modified longer ago than this, e.g. `30d`.
    pub older_than: DurationText,
}

/// Validated retention policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Time between two passes.
    pub interval: Duration,
    /// Event periods.
    pub events: EventRetention,
    /// Object policies.
    pub objects: Vec<ObjectRetention>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            events: EventRetention::default(),
            objects: Vec::new(),
        }
    }
}

impl RetentionSettings {
    /// Whether no policy is configured (the background job has nothing to do).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.objects.is_empty()
    }
}

/// Validated event periods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRetention {
    /// The global period.
    pub default: Option<Duration>,
    /// Periods per tenant.
    pub tenants: BTreeMap<String, Duration>,
    /// Periods per source.
    pub sources: BTreeMap<String, Duration>,
}

impl EventRetention {
    /// Whether no event period is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.tenants.is_empty() && self.sources.is_empty()
    }
}

/// One validated object policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRetention {
    /// The `s3` or `file` destination's id.
    pub destination: String,
    /// Key prefix from the root.
    pub prefix: String,
    /// The period.
    pub older_than: Duration,
}

fn period(cx: &mut Ctx<'_>, d: DurationText, field: &str) -> Duration {
    if d.0 < Duration::from_secs(1) {
        cx.err_at(0, 0, field, "must be at least `1s`");
    }
    d.0
}

/// Validates `retention:` against the configured sources and destinations.
pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    raw: &RetentionConfig,
    source_ids: &HashSet<String>,
    destinations: &[DestinationSettings],
) -> RetentionSettings {
    let interval = raw.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
    if interval < MIN_INTERVAL {
        cx.err_at(0, 0, "retention.interval", "must be at least `100ms`");
    }
    let mut events = EventRetention {
        default: raw
            .events
            .older_than
            .map(|d| period(cx, d, "retention.events.older_than")),
        ..EventRetention::default()
    };
    for (tenant, d) in &raw.events.tenants {
        let field = format!("retention.events.tenants.{tenant}");
        if tenant.is_empty() {
            cx.err_at(0, 0, &field, "a tenant id cannot be empty");
        }
        events
            .tenants
            .insert(tenant.clone(), period(cx, *d, &field));
    }
    for (source, d) in &raw.events.sources {
        let field = format!("retention.events.sources.{source}");
        if !source_ids.contains(source) {
            cx.err_at(0, 0, &field, format!("there is no source `{source}`"));
        }
        events
            .sources
            .insert(source.clone(), period(cx, *d, &field));
    }
    let mut objects = Vec::new();
    for (i, o) in raw.objects.iter().enumerate() {
        let p = format!("retention.objects[{i}]");
        let older_than = period(cx, o.older_than, &format!("{p}.older_than"));
        let id = &o.destination.value;
        let own_prefix = match destinations.iter().find(|d| &d.id == id).map(|d| &d.kind) {
            Some(DestinationKindSettings::S3(s)) => s.layout.prefix.clone(),
            Some(DestinationKindSettings::File(f)) => f.layout.prefix.clone(),
            Some(_) => {
                cx.err(
                    &o.destination,
                    format!("{p}.destination"),
                    format!("`{id}` is not an `s3` or `file` destination"),
                );
                continue;
            }
            None => {
                cx.err(
                    &o.destination,
                    format!("{p}.destination"),
                    format!("there is no destination `{id}`"),
                );
                continue;
            }
        };
        let prefix = o.prefix.clone().unwrap_or(own_prefix);
        if prefix.starts_with('/') || prefix.split('/').any(|s| s == "..") {
            cx.err(
                &o.destination,
                format!("{p}.prefix"),
                "must be relative (no leading `/`, no `..`)",
            );
        }
        objects.push(ObjectRetention {
            destination: id.clone(),
            prefix,
            older_than,
        });
    }
    RetentionSettings {
        interval,
        events,
        objects,
    }
}
