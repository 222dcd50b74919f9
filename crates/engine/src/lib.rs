//! The route engine: takes events in (routing them and appending them durably with their
//! deliveries), dispatches deliveries per destination with retries, circuit breakers and
//! per-key ordering, recovers unfinished work after a restart, and replays routes.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod breaker;
mod dispatch;
pub mod retention;
mod router;
mod steps;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use estafeta_config::model::Ordering;
use estafeta_config::{Config, DestinationSettings};
use estafeta_core::metric_names as m;
use estafeta_core::{Delivery, DeliveryId, DeliveryStatus, Destination, Event, EventId, TenantId};
use estafeta_store::{AppendOutcome, NewEvent, Store, StoreError};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use retention::Retention;
pub use router::Router;
pub use steps::StepBuildError;

use crate::dispatch::lane::{Lane, LaneDeps};
use crate::dispatch::queue::{Item, Pushed};

/// Engine errors.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A route or destination the engine does not know.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Conflict(String),
    /// A route's step could not be built.
    #[error(transparent)]
    Steps(#[from] StepBuildError),
    /// A destination's settings and its built implementation don't match.
    #[error("destination `{0}` is configured but was not built")]
    MissingDestination(String),
}

/// An event to take in, with its de-duplication key.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The event.
    pub event: Event,
    /// `Idempotency-Key`, or the producer's `source` + `id`; `None` when the producer
    /// guarantees the event is not in the log yet (see `NewEvent::dedupe_key`).
    pub dedupe_key: Option<String>,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy)]
pub enum ReplayFrom {
    /// Events received at or after this time.
    Time(DateTime<Utc>),
    /// Events after this one (exclusive).
    AfterEvent(EventId),
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Events read from the log.
    pub scanned: u64,
    /// Events the route selected.
    pub matched: u64,
    /// New deliveries created.
    pub deliveries: u64,
}

/// A destination's live state.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationStats {
    /// Destination id.
    pub id: String,
    /// Deliveries held in memory (waiting, queued behind a key, or in flight).
    pub queued: usize,
    /// Attempts running now.
    pub in_flight: usize,
    /// Whether the circuit breaker is open.
    pub circuit_open: bool,
}

struct Inner {
    retention: Retention,
    store: Arc<dyn Store>,
    router: Arc<Router>,
    lanes: HashMap<String, Arc<Lane>>,
    deps: Arc<LaneDeps>,
}

/// The running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts lanes for every destination and re-queues unfinished deliveries from the store.
    ///
    /// # Errors
    /// A destination without an implementation, or the store failing during recovery.
    pub async fn start(
        config: &Config,
        store: Arc<dyn Store>,
        destinations: Vec<Arc<dyn Destination>>,
    ) -> Result<Self, EngineError> {
        let clients = estafeta_destinations::HttpClients::new();
        let engine = Self::start_inner(
            Router::new(config, &clients)?,
            &config.destinations,
            config.retention.clone(),
            store,
            destinations,
        )
        .await?;
        let deps = &engine.inner.deps;
        engine
            .inner
            .retention
            .spawn(deps.cancel.clone(), &deps.tracker);
        Ok(engine)
    }

    /// Like [`Engine::start`] with an explicit router and settings.
    ///
    /// # Errors
    /// See [`Engine::start`].
    pub async fn start_with(
        router: Router,
        settings: &[DestinationSettings],
        store: Arc<dyn Store>,
        destinations: Vec<Arc<dyn Destination>>,
    ) -> Result<Self, EngineError> {
        let retention = estafeta_config::retention::RetentionSettings::default();
        Self::start_inner(router, settings, retention, store, destinations).await
    }

    async fn start_inner(
        router: Router,
        settings: &[DestinationSettings],
        retention: estafeta_config::retention::RetentionSettings,
        store: Arc<dyn Store>,
        destinations: Vec<Arc<dyn Destination>>,
    ) -> Result<Self, EngineError> {
        let retention = Retention::new(retention, settings, Arc::clone(&store));
        let mut built: HashMap<String, Arc<dyn Destination>> = destinations
            .into_iter()
            .map(|d| (d.id().to_owned(), d))
            .collect();
        let settling = Arc::new(dispatch::recorder::Settling::default());
        let recorder_tx =
            dispatch::recorder::spawn(Arc::clone(&store), 16_384, Arc::clone(&settling));
        let deps = Arc::new(LaneDeps {
            store: Arc::clone(&store),
            router: Arc::new(router),
            recorder: recorder_tx,
            settling,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let mut lanes = HashMap::new();
        for s in settings {
            let dest = built
                .remove(&s.id)
                .ok_or_else(|| EngineError::MissingDestination(s.id.clone()))?;
            let step_slots = deps.router.step_slots(&s.id);
            lanes.insert(
                s.id.clone(),
                Arc::new(Lane::new(s, dest, s.queue_capacity, step_slots)),
            );
        }
        let inner = Arc::new(Inner {
            retention,
            store,
            router: Arc::clone(&deps.router),
            lanes,
            deps: Arc::clone(&deps),
        });
        let engine = Self { inner };
        engine.warn_orphans().await?;
        for lane in engine.inner.lanes.values() {
            // Recovery: every queue starts by paging its unfinished deliveries in.
            lane.start_paging();
            tokio::spawn(Arc::clone(lane).refill_loop(Arc::clone(&deps)));
            tokio::spawn(Arc::clone(lane).run(Arc::clone(&deps)));
        }
        engine.spawn_gauges();
        Ok(engine)
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Retention policies and purges.
    #[must_use]
    pub fn retention(&self) -> &Retention {
        &self.inner.retention
    }

    /// The routing table.
    #[must_use]
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Logs unfinished deliveries whose destination is no longer configured.
    async fn warn_orphans(&self) -> Result<(), EngineError> {
        let mut orphans: HashMap<String, u64> = HashMap::new();
        for c in self.inner.store.delivery_counts().await? {
            let unfinished = matches!(c.status, DeliveryStatus::Pending | DeliveryStatus::Retrying);
            if unfinished && !self.inner.lanes.contains_key(&c.destination_id) {
                *orphans.entry(c.destination_id).or_insert(0) += c.count;
            }
        }
        for (dest, n) in orphans {
            tracing::warn!(dest_id = %dest, deliveries = n, "unfinished deliveries for a destination that is no longer configured; they wait until it is configured again");
        }
        Ok(())
    }

    fn item(&self, delivery: Delivery, event: Option<Arc<Event>>) -> Item {
        let ordered = delivery.key.is_some()
            && self
                .inner
                .router
                .route(&delivery.route_id)
                .is_some_and(|r| r.ordering == Ordering::Key);
        Item {
            delivery,
            event,
            ordered,
        }
    }

    /// Queues a delivery the store already holds, within the destination's memory bound.
    fn enqueue(
        &self,
        delivery: Delivery,
        event: Option<Arc<Event>>,
        at: Instant,
    ) -> Option<Pushed> {
        let lane = self.inner.lanes.get(&delivery.destination_id)?;
        lane.offer(self.item(delivery, event), at)
    }

    /// Queues a delivery routing just created: after its destination's first delay, or, when
    /// routing failed (a filter error), only counted and logged as dead.
    fn enqueue_fresh(&self, d: Delivery, event: Option<Arc<Event>>) {
        if d.status == DeliveryStatus::Dead {
            metrics::counter!(m::DELIVERIES_DEAD, "destination" => d.destination_id.clone())
                .increment(1);
            tracing::info!(route_id = %d.route_id, dest_id = %d.destination_id, delivery_id = %d.id,
                error = d.last_error.as_deref().unwrap_or(""), "delivery is dead: the route could not evaluate the event");
            return;
        }
        let delay = self
            .inner
            .lanes
            .get(&d.destination_id)
            .map_or(Duration::ZERO, |l| l.first_delay());
        self.enqueue(d, event, Instant::now() + delay);
    }

    /// Routes events, appends them durably with their deliveries, and queues the deliveries.
    /// Returns one outcome per event, in order, once the events are on disk.
    ///
    /// # Errors
    /// The store could not write; nothing was stored.
    pub async fn ingest(&self, incoming: Vec<Incoming>) -> Result<Vec<AppendOutcome>, StoreError> {
        let batch: Vec<NewEvent> = incoming
            .into_iter()
            .map(|i| {
                let deliveries = self.inner.router.plan(&i.event);
                NewEvent {
                    event: Arc::new(i.event),
                    dedupe_key: i.dedupe_key,
                    deliveries,
                }
            })
            .collect();
        // The store and the queues share each event; only the small delivery records are
        // copied.
        let keep: Vec<(Arc<Event>, Vec<Delivery>)> = batch
            .iter()
            .map(|n| (Arc::clone(&n.event), n.deliveries.clone()))
            .collect();
        let outcomes = self.inner.store.append(batch).await?;
        for (outcome, (event, deliveries)) in outcomes.iter().zip(keep) {
            if let AppendOutcome::Inserted(_) = outcome {
                metrics::counter!(m::EVENTS_INGESTED, "source" => event.source_id.clone())
                    .increment(1);
                for d in deliveries {
                    self.enqueue_fresh(d, Some(Arc::clone(&event)));
                }
            }
        }
        Ok(outcomes)
    }

    /// Re-queues one delivery now (an operator's retry), whatever its state, unless an
    /// attempt is running.
    ///
    /// # Errors
    /// Unknown delivery, an attempt in flight, or the store failing.
    pub async fn retry_delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<Delivery, EngineError> {
        let d = self
            .inner
            .store
            .get_delivery(tenant, id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no delivery `{id}`")))?;
        let Some(lane) = self.inner.lanes.get(&d.destination_id) else {
            return Err(EngineError::Conflict(format!(
                "destination `{}` is no longer configured",
                d.destination_id
            )));
        };
        if lane.is_in_flight(id) {
            return Err(EngineError::Conflict(format!(
                "delivery `{id}` is being attempted right now"
            )));
        }
        // The route decides again with its current rules: a filter that failed may have
        // been fixed, or may now exclude the event.
        let route = self.inner.router.route(&d.route_id).ok_or_else(|| {
            EngineError::Conflict(format!("route `{}` is no longer configured", d.route_id))
        })?;
        let event = self
            .inner
            .store
            .get_event(tenant, d.event_id)
            .await?
            .ok_or_else(|| {
                EngineError::Conflict(format!("event `{}` is no longer in the log", d.event_id))
            })?;
        match router::decide(route, &event) {
            router::Decision::Selected => {}
            router::Decision::Filtered | router::Decision::Skip => {
                return Err(EngineError::Conflict(format!(
                    "route `{}` no longer selects event `{}`; nothing to retry",
                    d.route_id, d.event_id
                )));
            }
            router::Decision::Failed(reason) => return Err(EngineError::Conflict(reason)),
        }
        let d = self
            .inner
            .store
            .requeue_delivery(tenant, id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no delivery `{id}`")))?;
        let pushed =
            self.inner.lanes.get(&d.destination_id).map(|lane| {
                lane.push_new(self.item(d.clone(), Some(Arc::new(event))), Instant::now())
            });
        match pushed {
            Some(Pushed::AlreadyInFlight) => Err(EngineError::Conflict(format!(
                "delivery `{id}` is being attempted right now"
            ))),
            _ => Ok(d),
        }
    }

    /// Sends again, through one route, every event of `tenant` from a point in the log:
    /// creates new deliveries for the events the route selects now.
    ///
    /// # Errors
    /// Unknown route or the store failing.
    pub async fn replay(
        &self,
        tenant: &TenantId,
        route_id: &str,
        from: ReplayFrom,
    ) -> Result<ReplayReport, EngineError> {
        let route = self
            .inner
            .router
            .route(route_id)
            .ok_or_else(|| EngineError::NotFound(format!("no route `{route_id}`")))?;
        let mut report = ReplayReport::default();
        let (mut after, since) = match from {
            ReplayFrom::Time(t) => (None, Some(t)),
            ReplayFrom::AfterEvent(id) => (Some(id), None),
        };
        loop {
            let events = self
                .inner
                .store
                .scan_events(tenant, after, since, 1_000)
                .await?;
            let Some(last) = events.last() else { break };
            after = Some(last.id);
            let mut fresh = Vec::new();
            let mut by_event = HashMap::new();
            for ev in events {
                report.scanned += 1;
                let before = fresh.len();
                self.inner.router.plan_route(route, &ev, &mut fresh);
                if fresh.len() > before {
                    report.matched += 1;
                    by_event.insert(ev.id, Arc::new(ev));
                }
            }
            report.deliveries += fresh.len() as u64;
            self.inner.store.insert_deliveries(fresh.clone()).await?;
            for d in fresh {
                let ev = by_event.get(&d.event_id).cloned();
                self.enqueue_fresh(d, ev);
            }
        }
        Ok(report)
    }

    /// Live state of every destination.
    #[must_use]
    pub fn destination_stats(&self) -> Vec<DestinationStats> {
        let mut v: Vec<_> = self
            .inner
            .lanes
            .values()
            .map(|l| {
                let (queued, in_flight) = l.depth();
                DestinationStats {
                    id: l.id.clone(),
                    queued,
                    in_flight,
                    circuit_open: l.breaker.is_open(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn spawn_gauges(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.deps.cancel.is_cancelled() {
                    return;
                }
                for lane in inner.lanes.values() {
                    let (depth, _) = lane.depth();
                    #[allow(clippy::cast_precision_loss)]
                    metrics::gauge!(m::QUEUE_DEPTH, "destination" => lane.id.clone())
                        .set(depth as f64);
                }
            }
        });
    }

    /// Stops taking work, lets attempts in flight finish within `grace`, writes their results
    /// and closes the store. What is left is attempted after the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let deps = &self.inner.deps;
        deps.cancel.cancel();
        deps.tracker.close();
        if tokio::time::timeout(grace, deps.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "attempts still running after the grace period; they will be retried after restart"
            );
        }
        // Everything recorded before this message is written when the answer comes.
        let (done, flushed) = tokio::sync::oneshot::channel();
        if deps
            .recorder
            .send(dispatch::recorder::Msg::Flush(done))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), flushed).await;
        }
        self.inner.store.close().await;
    }
}
