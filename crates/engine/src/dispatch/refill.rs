//! Paging a destination's backlog in from the store. A queue keeps at most `capacity`
//! deliveries in memory; beyond that, new deliveries stay only in the store (they are durable
//! there already) and this loop reads them back, oldest first, as room frees up. It also
//! does the recovery after a restart: every lane starts "spilled" and pages its unfinished
//! deliveries in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use estafeta_config::model::Ordering;
use estafeta_core::{DeliveryId, Event, EventId};
use tokio::time::Instant;

use crate::dispatch::lane::{Lane, LaneDeps};
use crate::dispatch::queue::Item;

/// Most deliveries read from the store in one page.
const PAGE: usize = 1_000;
/// Most event ids asked for in one query.
const EVENT_CHUNK: usize = 500;

impl Lane {
    /// Runs until cancelled: whenever the backlog is spilled and memory has room, reads the
    /// next page of unfinished deliveries (with their events) and queues those not held yet.
    pub(crate) async fn refill_loop(self: Arc<Self>, deps: Arc<LaneDeps>) {
        loop {
            let wake = self.refill_wake.notified();
            match self.refill_once(&deps).await {
                Ok(true) => continue, // more to read right away
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(dest_id = %self.id, error = %err, "cannot read the backlog from the store; will try again");
                }
            }
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = deps.cancel.cancelled() => return,
            }
        }
    }

    /// One page. Returns true when another page should follow at once.
    async fn refill_once(&self, deps: &LaneDeps) -> Result<bool, estafeta_store::StoreError> {
        let (cursor, room) = {
            let mut q = self.queue();
            let depth = q.depth();
            if !q.spill.active || depth > self.capacity / 2 {
                return Ok(false);
            }
            if q.spill.cursor.is_none() {
                q.spill.dropped_at_pass_start = q.spill.dropped;
            }
            (q.spill.cursor, (self.capacity - depth).min(PAGE))
        };
        let page = deps
            .store
            .unfinished_deliveries_for(&self.id, cursor, room)
            .await?;
        let mut events: HashMap<EventId, Arc<Event>> = HashMap::new();
        let wanted: Vec<EventId> = {
            let q = self.queue();
            let mut ids: Vec<EventId> = page
                .iter()
                .filter(|d| !q.knows(d.id) && !deps.settling.contains(d.id))
                .map(|d| d.event_id)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        for chunk in wanted.chunks(EVENT_CHUNK) {
            for e in deps.store.get_events(chunk).await? {
                events.insert(e.id, Arc::new(e));
            }
        }
        let now = Instant::now();
        let now_utc = Utc::now();
        let full = page.len() >= room;
        let last: Option<DeliveryId> = page.last().map(|d| d.id);
        let mut added = 0usize;
        {
            let mut q = self.queue();
            for d in page {
                if q.knows(d.id) || deps.settling.contains(d.id) {
                    continue;
                }
                let at = d.next_at.map_or(now, |t| {
                    now + (t - now_utc).to_std().unwrap_or(Duration::ZERO)
                });
                let ordered = d.key.is_some()
                    && deps
                        .router
                        .route(&d.route_id)
                        .is_some_and(|r| r.ordering == Ordering::Key);
                let event = events.get(&d.event_id).cloned();
                q.push_new(
                    Item {
                        delivery: d,
                        event,
                        ordered,
                    },
                    at,
                );
                added += 1;
            }
            if full {
                q.spill.cursor = last;
            } else {
                // The end of a pass. If nothing was left out of memory since it began, the
                // store holds nothing the queue does not: stop paging.
                q.spill.cursor = None;
                if q.spill.dropped == q.spill.dropped_at_pass_start {
                    q.spill.active = false;
                    tracing::info!(dest_id = %self.id, "backlog caught up; queueing from memory again");
                }
            }
        }
        if added > 0 {
            self.notify_work();
        }
        Ok(full)
    }
}
