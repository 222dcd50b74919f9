//! One Estafeta instance for tests that need more than the shared harness: its own store,
//! and a log that appends to that store with one delivery per event (what the engine does,
//! minus routing), with a configurable append latency and simulated crashes after storing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use estafeta_core::{
    Attempt, AttemptId, AttemptOutcome, Delivery, DeliveryId, DeliveryStatus, Event, EventId,
};
use estafeta_sources::{EventSink, SinkError, SourceStatus, Sources};
use estafeta_store::{AttemptRecord, NewEvent, SqliteOptions, SqliteStore, Store};

pub(crate) struct StoreLog {
    store: Arc<dyn Store>,
    /// Events stored for the first time.
    pub(crate) inserted: Mutex<Vec<Event>>,
    /// Appends seen.
    pub(crate) calls: AtomicUsize,
    /// Fail this many appends *after* storing their events (a crash between the durable
    /// append and the row's write-back).
    pub(crate) fail_after_storing: AtomicUsize,
    /// Time one append takes (an fsync's worth), so two instances' claims overlap.
    latency: Duration,
}

impl StoreLog {
    fn new(store: Arc<dyn Store>, latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            inserted: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            fail_after_storing: AtomicUsize::new(0),
            latency,
        })
    }

    pub(crate) fn inserted(&self) -> Vec<Event> {
        self.inserted.lock().unwrap().clone()
    }

    fn event_id(&self, ce_id: &str) -> EventId {
        self.inserted()
            .into_iter()
            .find(|e| e.ce_id == ce_id)
            .unwrap_or_else(|| panic!("no event {ce_id}"))
            .id
    }
}

#[async_trait]
impl EventSink for StoreLog {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        let now = Utc::now();
        let batch: Vec<NewEvent> = events
            .iter()
            .map(|e| NewEvent {
                event: Arc::new(e.clone()),
                dedupe_key: Some(format!("src:{}\u{1f}{}", e.source_id, e.ce_id)),
                deliveries: vec![Delivery {
                    id: DeliveryId::new(),
                    event_id: e.id,
                    tenant: e.tenant.clone(),
                    route_id: "r".into(),
                    destination_id: "hook".into(),
                    target_index: 0,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    next_at: Some(now),
                    last_error: None,
                    key: None,
                    created_at: now,
                    updated_at: now,
                }],
            })
            .collect();
        let outcomes = self
            .store
            .append(batch)
            .await
            .map_err(|e| SinkError(Box::new(e)))?;
        let mut ids = Vec::with_capacity(outcomes.len());
        for (e, o) in events.into_iter().zip(outcomes) {
            if matches!(o, estafeta_store::AppendOutcome::Inserted(_)) {
                self.inserted.lock().unwrap().push(e);
            }
            ids.push(o.id());
        }
        if self
            .fail_after_storing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError("simulated crash after the append".into()));
        }
        Ok(ids)
    }

    async fn append_new(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        self.append(events).await
    }
}

/// One Estafeta instance: its own store and log.
pub(crate) struct Instance {
    pub(crate) log: Arc<StoreLog>,
    store: Arc<dyn Store>,
    sources: Option<Sources>,
    yaml: String,
    _dir: tempfile::TempDir,
}

impl Instance {
    pub(crate) async fn start(yaml: &str, latency: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(SqliteOptions::new(dir.path().join("log.db")))
                .await
                .unwrap(),
        );
        let mut i = Self {
            log: StoreLog::new(Arc::clone(&store), latency),
            store,
            sources: None,
            yaml: yaml.to_owned(),
            _dir: dir,
        };
        i.restart();
        i
    }

    pub(crate) fn restart(&mut self) {
        let config = estafeta_config::load_str(
            &self.yaml,
            "test.yaml",
            &estafeta_config::ProcessLookup::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.sources = Some(Sources::start(
            &config.sources,
            Arc::clone(&self.log) as Arc<dyn EventSink>,
            Arc::clone(&self.store),
            &estafeta_store::vault::Vault::new(
                Arc::clone(&self.store),
                estafeta_store::vault::MasterKey::generate(),
            )
            .credentials(),
        ));
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(s) = self.sources.take() {
            s.shutdown(Duration::from_secs(10)).await;
        }
    }

    pub(crate) fn status(&self) -> SourceStatus {
        self.sources.as_ref().unwrap().board().get("ob").unwrap()
    }

    /// Records one finished (or retrying) attempt of the event's delivery.
    pub(crate) async fn attempt(
        &self,
        ce_id: &str,
        status: DeliveryStatus,
        attempts: u32,
        error: Option<&str>,
    ) {
        let event = self.log.event_id(ce_id);
        let d = self
            .store
            .deliveries_for_event(event)
            .await
            .unwrap()
            .remove(0);
        let outcome = match status {
            DeliveryStatus::Delivered => AttemptOutcome::Delivered,
            DeliveryStatus::Dead => AttemptOutcome::Final,
            DeliveryStatus::Filtered => AttemptOutcome::Filtered,
            _ => AttemptOutcome::Retryable,
        };
        self.store
            .record_attempts(vec![AttemptRecord {
                attempt: Attempt {
                    id: AttemptId::new(),
                    delivery_id: d.id,
                    started_at: Utc::now(),
                    duration_ms: 1,
                    outcome,
                    status_code: None,
                    error: error.map(str::to_owned),
                    response_excerpt: None,
                    steps: Vec::new(),
                },
                status,
                attempts,
                next_at: (status == DeliveryStatus::Retrying)
                    .then(|| Utc::now() + chrono::Duration::hours(1)),
                last_error: error.map(str::to_owned),
            }])
            .await
            .unwrap();
    }
}
