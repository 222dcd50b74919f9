//! Retention: the background job that applies the configured policies every `interval`
//! (old events with their deliveries and attempts; old objects under a destination's
//! prefix), and the on-demand purges behind `POST /v1/purge`. Every pass and every purge is
//! recorded in the store's audit log; deleted counts go to the `estafeta_retention_*`
//! metrics.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use estafeta_config::DestinationSettings;
use estafeta_config::retention::{EventRetention, RetentionSettings};
use estafeta_core::metric_names as m;
use estafeta_destinations::object::{ObjectSweeper, SweepError, SweepReport};
use estafeta_store::retention::{
    AuditEntry, EventPurge, PURGE_BATCH, PurgeCounts, PurgePreview, purge_events,
};
use estafeta_store::{Store, StoreError};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The actor recorded for the background job's deletions.
pub const RETENTION_ACTOR: &str = "retention";

/// How many keys or ids a report samples.
pub const SAMPLE: usize = 20;

/// Why a purge could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// No `s3` or `file` destination has this id.
    #[error("there is no `s3` or `file` destination `{0}`")]
    UnknownDestination(String),
    /// Listing or deleting objects failed.
    #[error("the objects could not be purged")]
    Objects(#[source] SweepError),
    /// The store failed.
    #[error("the store failed")]
    Store(#[source] StoreError),
}

/// An event purge's result: what was (or, in a dry run, would be) deleted.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EventPurgeReport {
    /// The counts.
    pub counts: PurgeCounts,
    /// The oldest matching event ids (dry run only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<String>,
    /// Matching events kept because a delivery of theirs is unfinished (dry run only).
    pub kept_unfinished: u64,
}

/// Applies retention policies and purges. Cheap to clone.
#[derive(Clone)]
pub struct Retention {
    store: Arc<dyn Store>,
    settings: Arc<RetentionSettings>,
    sweepers: Arc<HashMap<String, Arc<ObjectSweeper>>>,
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The event filters a set of periods stands for at `now`, most specific first: each
/// source's own period, each tenant's (its sources with a period of their own left out),
/// then the global one (every tenant and source with its own period left out). Each comes
/// with a label naming the policy.
#[must_use]
pub fn event_filters(events: &EventRetention, now: DateTime<Utc>) -> Vec<(String, EventPurge)> {
    let cutoff = |d: std::time::Duration| {
        now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    };
    let own_sources: Vec<String> = events.sources.keys().cloned().collect();
    let mut out = Vec::new();
    for (source, d) in &events.sources {
        let mut f = EventPurge::before(cutoff(*d));
        f.source_id = Some(source.clone());
        out.push((format!("source:{source}"), f));
    }
    for (tenant, d) in &events.tenants {
        let mut f = EventPurge::before(cutoff(*d));
        f.tenant = Some(estafeta_core::TenantId::new(tenant));
        f.exclude_sources.clone_from(&own_sources);
        out.push((format!("tenant:{tenant}"), f));
    }
    if let Some(d) = events.default {
        let mut f = EventPurge::before(cutoff(d));
        f.exclude_tenants = events.tenants.keys().cloned().collect();
        f.exclude_sources = own_sources;
        out.push(("global".to_owned(), f));
    }
    out
}

fn count_deleted(trigger: &'static str, counts: &PurgeCounts) {
    for (kind, n) in [
        ("events", counts.events),
        ("deliveries", counts.deliveries),
        ("attempts", counts.attempts),
    ] {
        metrics::counter!(m::RETENTION_DELETED, "kind" => kind, "trigger" => trigger).increment(n);
    }
}

fn scope_of(filter: &EventPurge) -> Value {
    serde_json::to_value(filter).unwrap_or(Value::Null)
}

impl Retention {
    /// Policies `settings` over `store`, with a sweeper for every `s3` and `file`
    /// destination (those whose client cannot be made are left out, with a warning).
    #[must_use]
    pub fn new(
        settings: RetentionSettings,
        destinations: &[DestinationSettings],
        store: Arc<dyn Store>,
    ) -> Self {
        let mut sweepers = HashMap::new();
        for d in destinations {
            match ObjectSweeper::new(d) {
                Ok(s) => {
                    sweepers.insert(d.id.clone(), Arc::new(s));
                }
                Err(SweepError::NotObjectStorage { .. }) => {}
                Err(err) => {
                    tracing::warn!(dest_id = %d.id, error = %err, "objects of this destination cannot be purged");
                }
            }
        }
        Self {
            store,
            settings: Arc::new(settings),
            sweepers: Arc::new(sweepers),
        }
    }

    /// The policies.
    #[must_use]
    pub fn settings(&self) -> &RetentionSettings {
        &self.settings
    }

    /// Runs a pass every `interval` until `cancel` fires (nothing when no policy is set).
    pub fn spawn(&self, cancel: CancellationToken, tracker: &TaskTracker) {
        if self.settings.is_empty() {
            return;
        }
        let this = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(this.settings.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = async { this.run_pass().await; } => {}
                }
            }
        });
    }

    /// Applies every policy once and records the pass in the audit log (one entry for
    /// events, one for objects, each listing its policies' counts). Answers whether every
    /// policy could be applied.
    pub async fn run_pass(&self) -> bool {
        let now = Utc::now();
        let mut ok = true;
        let filters = event_filters(&self.settings.events, now);
        if !filters.is_empty() {
            let mut total = PurgeCounts::default();
            let mut policies = Vec::new();
            let mut error = None;
            for (label, filter) in filters {
                match purge_events(self.store.as_ref(), &filter, PURGE_BATCH).await {
                    Ok(c) => {
                        count_deleted("retention", &c);
                        total.add(c);
                        policies.push(
                            json!({"policy": label, "filter": scope_of(&filter), "counts": c}),
                        );
                    }
                    Err(err) => {
                        tracing::warn!(policy = %label, error = %err, "retention: events could not be deleted");
                        error = Some(format!("policy `{label}`: {err}"));
                        ok = false;
                    }
                }
            }
            let mut entry = AuditEntry::new(
                RETENTION_ACTOR,
                "events",
                json!({ "policies": policies }),
                json!(total),
                false,
            );
            entry.error = error;
            self.audit(entry).await;
        }
        if !self.settings.objects.is_empty() {
            let mut deleted = 0_u64;
            let mut policies = Vec::new();
            let mut errors = Vec::new();
            for p in &self.settings.objects {
                let before =
                    now - chrono::Duration::from_std(p.older_than).unwrap_or(chrono::Duration::MAX);
                match self.sweep(&p.destination, &p.prefix, before, false).await {
                    Ok(r) => {
                        metrics::counter!(m::RETENTION_DELETED, "kind" => "objects", "trigger" => "retention")
                            .increment(r.deleted);
                        deleted += r.deleted;
                        policies.push(json!({"destination": p.destination, "prefix": p.prefix,
                            "before": before, "deleted": r.deleted, "bytes": r.bytes}));
                    }
                    Err(err) => {
                        tracing::warn!(dest_id = %p.destination, error = %err, "retention: objects could not be deleted");
                        errors.push(format!(
                            "`{}` `{}`: {}",
                            p.destination,
                            p.prefix,
                            chain(&err)
                        ));
                        ok = false;
                    }
                }
            }
            let mut entry = AuditEntry::new(
                RETENTION_ACTOR,
                "objects",
                json!({ "policies": policies }),
                json!({ "objects": deleted }),
                false,
            );
            entry.error = (!errors.is_empty()).then(|| errors.join("; "));
            self.audit(entry).await;
        }
        let status = if ok { "ok" } else { "failed" };
        metrics::counter!(m::RETENTION_PASSES, "status" => status).increment(1);
        ok
    }

    async fn audit(&self, entry: AuditEntry) {
        if let Err(err) = self.store.record_audit(entry).await {
            tracing::warn!(error = %err, "retention: the audit entry could not be recorded");
        }
    }

    async fn sweep(
        &self,
        destination: &str,
        prefix: &str,
        before: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<SweepReport, RetentionError> {
        let sweeper = self
            .sweepers
            .get(destination)
            .ok_or_else(|| RetentionError::UnknownDestination(destination.to_owned()))?;
        sweeper
            .sweep(prefix, before, dry_run, SAMPLE)
            .await
            .map_err(RetentionError::Objects)
    }

    /// Deletes the events `filter` selects (or, when `dry_run`, reports what would go) and
    /// records it in the audit log as done by `actor`.
    ///
    /// # Errors
    /// The store failed; batches committed before stay deleted (and are audited).
    pub async fn purge_events(
        &self,
        filter: &EventPurge,
        dry_run: bool,
        actor: &str,
    ) -> Result<EventPurgeReport, RetentionError> {
        let (report, error) = if dry_run {
            let PurgePreview {
                counts,
                sample,
                kept_unfinished,
            } = self
                .store
                .preview_event_purge(filter, SAMPLE)
                .await
                .map_err(RetentionError::Store)?;
            let sample = sample.iter().map(ToString::to_string).collect();
            (
                EventPurgeReport {
                    counts,
                    sample,
                    kept_unfinished,
                },
                None,
            )
        } else {
            match purge_events(self.store.as_ref(), filter, PURGE_BATCH).await {
                Ok(counts) => {
                    count_deleted("purge", &counts);
                    (
                        EventPurgeReport {
                            counts,
                            ..EventPurgeReport::default()
                        },
                        None,
                    )
                }
                Err(err) => (EventPurgeReport::default(), Some(err)),
            }
        };
        let mut entry = AuditEntry::new(
            actor,
            "events",
            scope_of(filter),
            json!(report.counts),
            dry_run,
        );
        entry.error = error.as_ref().map(ToString::to_string);
        self.store
            .record_audit(entry)
            .await
            .map_err(RetentionError::Store)?;
        match error {
            Some(err) => Err(RetentionError::Store(err)),
            None => Ok(report),
        }
    }

    /// Deletes the objects under `prefix` of `destination` last modified before `before`
    /// (or, when `dry_run`, reports them) and records it in the audit log as done by
    /// `actor`.
    ///
    /// # Errors
    /// An unknown destination, a listing or deletion that failed (objects deleted before
    /// stay deleted, and the failure is audited), or the store.
    pub async fn purge_objects(
        &self,
        destination: &str,
        prefix: &str,
        before: DateTime<Utc>,
        dry_run: bool,
        actor: &str,
    ) -> Result<SweepReport, RetentionError> {
        if !self.sweepers.contains_key(destination) {
            return Err(RetentionError::UnknownDestination(destination.to_owned()));
        }
        let result = self.sweep(destination, prefix, before, dry_run).await;
        let scope = json!({"destination": destination, "prefix": prefix, "before": before});
        let counts = match &result {
            Ok(r) => json!({"matched": r.matched, "deleted": r.deleted, "bytes": r.bytes}),
            Err(_) => json!({}),
        };
        if let Ok(r) = &result {
            metrics::counter!(m::RETENTION_DELETED, "kind" => "objects", "trigger" => "purge")
                .increment(r.deleted);
        }
        let mut entry = AuditEntry::new(actor, "objects", scope, counts, dry_run);
        entry.error = result.as_ref().err().map(chain);
        self.store
            .record_audit(entry)
            .await
            .map_err(RetentionError::Store)?;
        result
    }
}

/// An error with its causes, for the audit log and logs.
fn chain(err: &RetentionError) -> String {
    let mut out = err.to_string();
    let mut cur = std::error::Error::source(err);
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_most_specific_period_wins() {
        let day = Duration::from_secs(86_400);
        let events = EventRetention {
            default: Some(30 * day),
            tenants: [("acme".to_owned(), 90 * day)].into_iter().collect(),
            sources: [("visitors".to_owned(), 7 * day)].into_iter().collect(),
        };
        let now = Utc::now();
        let filters = event_filters(&events, now);
        let labels: Vec<&str> = filters.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["source:visitors", "tenant:acme", "global"]);
        let (_, source) = &filters[0];
        assert_eq!(source.source_id.as_deref(), Some("visitors"));
        assert_eq!(source.before, now - chrono::Duration::days(7));
        let (_, tenant) = &filters[1];
        assert_eq!(tenant.exclude_sources, ["visitors"]);
        assert_eq!(tenant.before, now - chrono::Duration::days(90));
        let (_, global) = &filters[2];
        assert_eq!(global.exclude_tenants, ["acme"]);
        assert_eq!(global.exclude_sources, ["visitors"]);
        assert!(global.tenant.is_none() && global.source_id.is_none());
    }

    #[test]
    fn no_period_no_filter() {
        assert!(event_filters(&EventRetention::default(), Utc::now()).is_empty());
    }

    struct NoEnv;
    impl estafeta_config::Lookup for NoEnv {
        fn env(&self, _: &str) -> Option<String> {
            None
        }
        fn secret(&self, _: &str) -> Option<String> {
            None
        }
    }

    /// One pass: old files under the prefix go, the pass is audited for events and objects,
    /// and a dry-run purge of objects deletes nothing but is audited with its actor.
    #[tokio::test]
    async fn a_pass_applies_the_policies_and_records_them() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        let yaml = format!(
            "retention:\n  events:\n    older_than: 1h\n  objects:\n    - destination: archive\n      prefix: sales/\n      older_than: 1d\ndestinations:\n  - id: archive\n    kind: file\n    path: {}\n",
            files.display()
        );
        let config = estafeta_config::load_str(&yaml, "t.yaml", &NoEnv).unwrap();
        for (key, days) in [
            ("sales/old.csv", 3_u64),
            ("sales/new.csv", 0),
            ("hr/old.csv", 3),
        ] {
            let path = files.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"a\n").unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(std::time::SystemTime::now() - Duration::from_secs(days * 86_400))
                .unwrap();
        }
        let store: Arc<dyn Store> = Arc::new(
            estafeta_store::SqliteStore::open(estafeta_store::SqliteOptions::new(
                dir.path().join("t.db"),
            ))
            .await
            .unwrap(),
        );
        let r = Retention::new(
            config.retention.clone(),
            &config.destinations,
            Arc::clone(&store),
        );
        assert!(r.run_pass().await);
        assert!(!files.join("sales/old.csv").exists());
        assert!(files.join("sales/new.csv").exists());
        assert!(files.join("hr/old.csv").exists());

        let dry = r
            .purge_objects("archive", "hr/", Utc::now(), true, "ops")
            .await
            .unwrap();
        assert_eq!((dry.matched, dry.deleted), (1, 0));
        assert!(files.join("hr/old.csv").exists());
        assert!(matches!(
            r.purge_objects("nowhere", "", Utc::now(), true, "ops")
                .await,
            Err(RetentionError::UnknownDestination(_))
        ));

        let audit = store.list_audit(10, None).await.unwrap().items;
        let kinds: Vec<(&str, &str, bool)> = audit
            .iter()
            .map(|e| (e.actor.as_str(), e.kind.as_str(), e.dry_run))
            .collect();
        assert_eq!(
            kinds,
            [
                ("ops", "objects", true),
                ("retention", "objects", false),
                ("retention", "events", false)
            ]
        );
        assert_eq!(audit[1].counts["objects"], 1);
        assert_eq!(audit[1].scope["policies"][0]["prefix"], "sales/");
        store.close().await;
    }
}
