//! A destination's lane: takes due deliveries from its queue and runs attempts within the
//! destination's concurrency limit, rate limit and circuit breaker; classifies outcomes and
//! schedules retries or parks deliveries as dead.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use estafeta_config::DestinationSettings;
use estafeta_core::metric_names as m;
use estafeta_core::{
    Attempt, AttemptId, AttemptOutcome, DeliveryStatus, Destination, OutboundMessage, RetryPolicy,
    SendError, SendErrorKind, SendOk, StepTrace,
};
use estafeta_store::{AttemptRecord, Store};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::breaker::{Admit, Breaker};
use crate::dispatch::queue::{Item, Pushed, Queue};
use crate::router::Router;
use crate::steps::{End, Prepared};

/// How an attempt ended, for the record.
enum Concluded<'a> {
    Sent(&'a SendOk),
    Failed(&'a SendError),
    Filtered,
}

impl<'a> From<&'a Result<SendOk, SendError>> for Concluded<'a> {
    fn from(r: &'a Result<SendOk, SendError>) -> Self {
        match r {
            Ok(ok) => Self::Sent(ok),
            Err(e) => Self::Failed(e),
        }
    }
}

pub(crate) struct Lane {
    pub(crate) id: String,
    destination: Arc<dyn Destination>,
    queue: Mutex<Queue>,
    notify: Notify,
    /// Wakes the refill loop when room frees up.
    pub(crate) refill_wake: Notify,
    /// Most deliveries held in memory; the rest wait in the store.
    pub(crate) capacity: usize,
    /// Attempts running at once: the destination's concurrency, plus room for route steps'
    /// look-ups when a route with steps sends here.
    permits: Arc<Semaphore>,
    /// Sends at once (the destination's concurrency) when `permits` has room for steps.
    sends: Option<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
    pub(crate) breaker: Breaker,
    retry: RetryPolicy,
    metrics: LaneMetrics,
}

/// The lane's metric handles, registered once (a per-attempt lookup with label strings cost
/// measurable CPU at thousands of deliveries per second).
struct LaneMetrics {
    attempt_duration: metrics::Histogram,
    end_to_end: metrics::Histogram,
    delivered: metrics::Counter,
    dead: metrics::Counter,
    filtered: metrics::Counter,
    failed_retryable: metrics::Counter,
    failed_final: metrics::Counter,
    circuit_open: metrics::Gauge,
}

impl LaneMetrics {
    fn new(dest: &str) -> Self {
        let d = dest.to_owned();
        Self {
            attempt_duration: metrics::histogram!(m::ATTEMPT_DURATION, "destination" => d.clone()),
            end_to_end: metrics::histogram!(m::END_TO_END_LATENCY, "destination" => d.clone()),
            delivered: metrics::counter!(m::DELIVERIES_DELIVERED, "destination" => d.clone()),
            dead: metrics::counter!(m::DELIVERIES_DEAD, "destination" => d.clone()),
            filtered: metrics::counter!(m::DELIVERIES_FILTERED, "destination" => d.clone()),
            failed_retryable: metrics::counter!(m::ATTEMPTS_FAILED, "destination" => d.clone(), "class" => "retryable"),
            failed_final: metrics::counter!(m::ATTEMPTS_FAILED, "destination" => d.clone(), "class" => "final"),
            circuit_open: metrics::gauge!(m::CIRCUIT_OPEN, "destination" => d),
        }
    }

    fn failed(&self, outcome: AttemptOutcome) -> &metrics::Counter {
        if outcome == AttemptOutcome::Retryable {
            &self.failed_retryable
        } else {
            &self.failed_final
        }
    }
}

pub(crate) struct LaneDeps {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) router: Arc<Router>,
    pub(crate) recorder: mpsc::Sender<crate::dispatch::recorder::Msg>,
    pub(crate) settling: Arc<crate::dispatch::recorder::Settling>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl Lane {
    /// A lane; `step_slots` is the room for route steps' look-ups beyond the destination's
    /// concurrency (0 when no route with steps sends here).
    pub(crate) fn new(
        settings: &DestinationSettings,
        destination: Arc<dyn Destination>,
        capacity: usize,
        step_slots: usize,
    ) -> Self {
        let limiter = settings.rate_limit.and_then(|rl| {
            let count = NonZeroU32::new(rl.count)?;
            let quota = Quota::with_period(rl.per / rl.count)?.allow_burst(
                count.min(
                    NonZeroU32::new(settings.concurrency.try_into().unwrap_or(u32::MAX))
                        .unwrap_or(count),
                ),
            );
            Some(RateLimiter::direct(quota))
        });
        Self {
            id: settings.id.clone(),
            destination,
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            refill_wake: Notify::new(),
            capacity: capacity.max(2),
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1) + step_slots)),
            sends: (step_slots > 0).then(|| Semaphore::new(settings.concurrency.max(1))),
            limiter,
            breaker: Breaker::new(settings.breaker),
            retry: settings.retry.clone(),
            metrics: LaneMetrics::new(&settings.id),
        }
    }

    pub(crate) fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn notify_work(&self) {
        self.notify.notify_one();
    }

    /// Queues a delivery regardless of the memory bound (an operator's retry).
    pub(crate) fn push_new(&self, item: Item, at: Instant) -> Pushed {
        let r = self.queue().push_new(item, at);
        self.notify.notify_one();
        r
    }

    /// Queues a new delivery if memory has room; otherwise it stays in the store only and the
    /// refill loop reads it back later. Returns `None` when it was left in the store.
    pub(crate) fn offer(&self, item: Item, at: Instant) -> Option<Pushed> {
        let r = {
            let mut q = self.queue();
            if q.spill.active || q.depth() >= self.capacity {
                if !q.spill.active {
                    tracing::info!(dest_id = %self.id, capacity = self.capacity, "backlog exceeds memory; paging deliveries from the store");
                }
                q.spill.active = true;
                q.spill.dropped += 1;
                return None;
            }
            q.push_new(item, at)
        };
        self.notify.notify_one();
        Some(r)
    }

    /// Marks the queue as spilled so the refill loop pages the store's unfinished deliveries
    /// in (used at start-up).
    pub(crate) fn start_paging(&self) {
        let mut q = self.queue();
        q.spill.active = true;
        q.spill.dropped += 1;
        drop(q);
        self.refill_wake.notify_one();
    }

    /// Delay before a new delivery's first attempt (`retry.schedule[0]`).
    pub(crate) fn first_delay(&self) -> Duration {
        self.retry.next_delay(0, None).unwrap_or(Duration::ZERO)
    }

    /// True while an attempt of this delivery runs.
    pub(crate) fn is_in_flight(&self, id: estafeta_core::DeliveryId) -> bool {
        self.queue().is_in_flight(id)
    }

    pub(crate) fn depth(&self) -> (usize, usize) {
        let q = self.queue();
        (q.depth(), q.in_flight())
    }

    /// Runs until cancelled.
    pub(crate) async fn run(self: Arc<Self>, deps: Arc<LaneDeps>) {
        let max_batch = self.destination.max_batch().max(1);
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                () = deps.cancel.cancelled() => return,
            };
            let Some(first) = self.next_due(&deps.cancel).await else {
                return;
            };
            let probe = match self.breaker.admit() {
                Admit::Go => false,
                Admit::Probe => true,
                Admit::Wait(d) => {
                    self.queue().put_back(first, Instant::now() + d);
                    continue;
                }
            };
            let mut items = vec![first];
            if max_batch > 1 && !probe {
                self.fill_batch(&mut items, max_batch, &deps.cancel).await;
            }
            let lane = Arc::clone(&self);
            let deps2 = Arc::clone(&deps);
            deps.tracker.spawn(async move {
                lane.attempt(items, probe, &deps2).await;
                drop(permit);
            });
        }
    }

    async fn next_due(&self, cancel: &CancellationToken) -> Option<Item> {
        loop {
            let notified = self.notify.notified();
            let wait = match self.queue().pop_due(Instant::now()) {
                Ok(item) => return Some(item),
                Err(next) => next,
            };
            tokio::select! {
                () = notified => {}
                () = sleep_until(wait) => {}
                () = cancel.cancelled() => return None,
            }
        }
    }

    async fn fill_batch(&self, items: &mut Vec<Item>, max: usize, cancel: &CancellationToken) {
        let deadline = Instant::now() + self.destination.batch_wait();
        while items.len() < max {
            let notified = self.notify.notified();
            match self.queue().pop_due(Instant::now()) {
                Ok(item) => {
                    items.push(item);
                    continue;
                }
                Err(_) if Instant::now() >= deadline => return,
                Err(_) => {}
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => return,
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Loads missing events, renders bodies and sends; records the outcome of every item.
    async fn attempt(&self, mut items: Vec<Item>, probe: bool, deps: &LaneDeps) {
        if let Err(err) = load_events(&mut items, deps).await {
            // The store did not answer: try these again shortly, without counting an attempt.
            tracing::warn!(dest_id = %self.id, error = %err, "cannot load events for delivery; will try again");
            let at = Instant::now() + Duration::from_secs(1);
            {
                let mut q = self.queue();
                for item in items {
                    q.put_back(item, at);
                }
            }
            if probe {
                self.breaker.release_probe();
            }
            self.notify.notify_one();
            return;
        }
        let started_at = Utc::now();
        let clock = Instant::now();
        // The route's steps, for every item at once (their look-ups overlap).
        let prepared = futures::future::join_all(
            items
                .into_iter()
                .map(|item| self.prepare(item, started_at, clock, deps)),
        )
        .await;
        let mut ready = Vec::with_capacity(prepared.len());
        let mut ready_items = Vec::with_capacity(prepared.len());
        for (item, p, traces) in prepared.into_iter().flatten() {
            match render(&deps.router, &item, &p) {
                Ok(msg) => {
                    ready.push(msg);
                    ready_items.push((item, traces));
                }
                Err(err) => {
                    self.conclude(
                        item,
                        started_at,
                        clock.elapsed(),
                        Concluded::Failed(&err),
                        traces,
                        deps,
                    )
                    .await;
                }
            }
        }
        if ready.is_empty() {
            if probe {
                // Nothing reached the endpoint: the breaker learns nothing.
                self.breaker.release_probe();
            }
            return;
        }
        // Only sends count against the destination's concurrency and rate limit.
        let _send_permit = match &self.sends {
            Some(sends) => match sends.acquire().await {
                Ok(p) => Some(p),
                Err(_) => return,
            },
            None => None,
        };
        if let Some(l) = &self.limiter {
            tokio::select! {
                () = l.until_ready() => {}
                () = deps.cancel.cancelled() => {
                    // Not attempted: back to the queue, to be prepared again after restart.
                    let mut q = self.queue();
                    for (item, _) in ready_items {
                        q.put_back(item, Instant::now());
                    }
                    drop(q);
                    if probe {
                        self.breaker.release_probe();
                    }
                    return;
                }
            }
        }
        let send_clock = Instant::now();
        let result = if ready.len() == 1 {
            self.destination.send(&ready[0]).await
        } else {
            self.destination.send_batch(&ready).await
        };
        let took = clock.elapsed();
        self.metrics
            .attempt_duration
            .record(send_clock.elapsed().as_secs_f64());
        let endpoint_failed = matches!(&result, Err(e) if e.is_retryable());
        let was_open = self.breaker.is_open();
        if self.breaker.record(endpoint_failed, probe) {
            tracing::warn!(dest_id = %self.id, "circuit breaker opened: destination keeps failing; probing until it recovers");
        }
        let open = self.breaker.is_open();
        if open != was_open {
            self.metrics.circuit_open.set(if open { 1.0 } else { 0.0 });
        }
        for (item, traces) in ready_items {
            self.conclude(
                item,
                started_at,
                took,
                Concluded::from(&result),
                traces,
                deps,
            )
            .await;
        }
    }

    /// Runs the route's steps for one item. Returns what to send, or `None` when the item was
    /// concluded here (its event is gone, a filter said no, or a step failed).
    async fn prepare(
        &self,
        item: Item,
        started_at: chrono::DateTime<Utc>,
        clock: Instant,
        deps: &LaneDeps,
    ) -> Option<(Item, Prepared, Vec<StepTrace>)> {
        let Some(event) = item.event.clone() else {
            // The event is gone (purged): nothing can be sent.
            let err = SendError::final_error("the event no longer exists in the log");
            self.conclude(
                item,
                started_at,
                Duration::ZERO,
                Concluded::Failed(&err),
                Vec::new(),
                deps,
            )
            .await;
            return None;
        };
        let steps = deps
            .router
            .route(&item.delivery.route_id)
            .and_then(|r| r.steps.as_ref());
        let Some(steps) = steps else {
            let p = Prepared {
                event,
                bindings: Vec::new(),
            };
            return Some((item, p, Vec::new()));
        };
        let run = steps.run(event, &deps.router.templates).await;
        match run.end {
            End::Go(p) => Some((item, p, run.traces)),
            End::Filtered => {
                self.conclude(
                    item,
                    started_at,
                    clock.elapsed(),
                    Concluded::Filtered,
                    run.traces,
                    deps,
                )
                .await;
                None
            }
            End::Failed(err) => {
                self.conclude(
                    item,
                    started_at,
                    clock.elapsed(),
                    Concluded::Failed(&err),
                    run.traces,
                    deps,
                )
                .await;
                None
            }
        }
    }

    async fn conclude(
        &self,
        mut item: Item,
        started_at: chrono::DateTime<Utc>,
        took: Duration,
        result: Concluded<'_>,
        steps: Vec<StepTrace>,
        deps: &LaneDeps,
    ) {
        let attempts = item.delivery.attempts + 1;
        let (outcome, status_code, error, excerpt) = match result {
            Concluded::Filtered => (AttemptOutcome::Filtered, None, None, None),
            Concluded::Sent(ok) => (
                AttemptOutcome::Delivered,
                ok.status_code,
                None,
                ok.response_excerpt.clone(),
            ),
            Concluded::Failed(e) => {
                let class = if e.is_retryable() {
                    AttemptOutcome::Retryable
                } else {
                    AttemptOutcome::Final
                };
                (
                    class,
                    e.status_code,
                    Some(e.message.clone()),
                    e.response_excerpt.clone(),
                )
            }
        };
        let (status, next) = match (outcome, result) {
            (AttemptOutcome::Delivered, _) => (DeliveryStatus::Delivered, None),
            (AttemptOutcome::Filtered, _) => (DeliveryStatus::Filtered, None),
            (AttemptOutcome::Retryable, Concluded::Failed(e)) => {
                let after = match e.kind {
                    SendErrorKind::Retryable { after } => after,
                    SendErrorKind::Final => None,
                };
                match self.retry.next_delay(attempts, after) {
                    Some(d) => (DeliveryStatus::Retrying, Some(d)),
                    None => (DeliveryStatus::Dead, None),
                }
            }
            _ => (DeliveryStatus::Dead, None),
        };
        match status {
            DeliveryStatus::Delivered => {
                self.metrics.delivered.increment(1);
                if let Some(ev) = &item.event {
                    let e2e = (Utc::now() - ev.received_at).to_std().unwrap_or_default();
                    self.metrics.end_to_end.record(e2e.as_secs_f64());
                }
            }
            DeliveryStatus::Filtered => self.metrics.filtered.increment(1),
            DeliveryStatus::Dead => {
                self.metrics.failed(outcome).increment(1);
                self.metrics.dead.increment(1);
                tracing::info!(dest_id = %self.id, delivery_id = %item.delivery.id, attempts, error = error.as_deref().unwrap_or(""), "delivery is dead");
            }
            _ => {
                self.metrics.failed(outcome).increment(1);
            }
        }
        let next_at = next.map(|d| Utc::now() + chrono::Duration::from_std(d).unwrap_or_default());
        let record = AttemptRecord {
            attempt: Attempt {
                id: AttemptId::new(),
                delivery_id: item.delivery.id,
                started_at,
                duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                outcome,
                status_code,
                error: error.clone(),
                response_excerpt: excerpt,
                steps,
            },
            status,
            attempts,
            next_at,
            last_error: error.clone(),
        };
        if status.is_terminal() {
            deps.settling.begin(item.delivery.id);
        }
        // Back-pressure: waits when the recorder is behind. A closed recorder (shutdown) is
        // fine: the delivery stays unfinished in the store and is attempted after restart.
        let _ = deps
            .recorder
            .send(crate::dispatch::recorder::Msg::Record(record))
            .await;
        item.delivery.attempts = attempts;
        item.delivery.status = status;
        item.delivery.last_error = error;
        item.delivery.next_at = next_at;
        match next {
            Some(d) => {
                // Keep memory small: events waiting long are reloaded when due.
                if d > Duration::from_secs(30) {
                    item.event = None;
                }
                self.queue().push_retry(item, Instant::now() + d);
                self.notify.notify_one();
            }
            None => {
                let paging = {
                    let mut q = self.queue();
                    q.finish(&item, Instant::now());
                    q.spill.active
                };
                self.notify.notify_one();
                if paging {
                    self.refill_wake.notify_one();
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads the events of items that don't carry theirs. Items whose event is not in the store
/// keep `None` (it was purged); a store error is returned and nothing is decided.
async fn load_events(
    items: &mut [Item],
    deps: &LaneDeps,
) -> Result<(), estafeta_store::StoreError> {
    let missing: Vec<_> = items
        .iter()
        .filter(|i| i.event.is_none())
        .map(|i| i.delivery.event_id)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let events = deps.store.get_events(&missing).await?;
    let events: std::collections::HashMap<_, _> =
        events.into_iter().map(|e| (e.id, Arc::new(e))).collect();
    for item in items.iter_mut().filter(|i| i.event.is_none()) {
        item.event = events.get(&item.delivery.event_id).cloned();
    }
    Ok(())
}

/// The message for one delivery: the route target's template, or the structured CloudEvent.
fn render(router: &Router, item: &Item, prepared: &Prepared) -> Result<OutboundMessage, SendError> {
    let event = Arc::clone(&prepared.event);
    let d = &item.delivery;
    let target = router.route(&d.route_id).and_then(|r| {
        r.targets
            .get(usize::try_from(d.target_index).unwrap_or(usize::MAX))
    });
    let (body, content_type): (Bytes, &'static str) = match target
        .and_then(|t| t.template.as_ref().map(|n| (t, n)))
    {
        Some((t, name)) => {
            let text = router
                .templates
                .render(name, &event, &prepared.extra())
                .map_err(|e| SendError::final_error(format!("cannot render the message: {e}")))?;
            let ct = match t.content_type.as_deref() {
                Some(ct) => known_content_type(ct),
                None if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() => {
                    "application/json"
                }
                None => "text/plain; charset=utf-8",
            };
            (Bytes::from(text), ct)
        }
        None => {
            let json = serde_json::to_vec(&estafeta_core::event::CloudEventJson(&event))
                .map_err(|e| SendError::final_error(format!("cannot encode the event: {e}")))?;
            (Bytes::from(json), "application/cloudevents+json")
        }
    };
    Ok(OutboundMessage {
        delivery_id: d.id,
        event,
        body,
        content_type,
        attempt: d.attempts + 1,
    })
}

/// The media types a template may declare; others are sent as `application/octet-stream`.
fn known_content_type(ct: &str) -> &'static str {
    match ct.split(';').next().unwrap_or("").trim() {
        "application/json" => "application/json",
        "application/cloudevents+json" => "application/cloudevents+json",
        "application/xml" | "text/xml" => "application/xml",
        "application/x-www-form-urlencoded" => "application/x-www-form-urlencoded",
        "text/html" => "text/html; charset=utf-8",
        "text/markdown" => "text/markdown; charset=utf-8",
        t if t.starts_with("text/") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
