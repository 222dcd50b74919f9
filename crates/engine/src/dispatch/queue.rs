//! A destination's queue: deliveries waiting for their time (a timer heap), per-key lanes for
//! routes with `ordering: key`, and the set of deliveries in flight. Guarded by one mutex; every
//! operation is short and never awaits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use estafeta_core::{Delivery, DeliveryId, Event};
use tokio::time::Instant;

/// A delivery the dispatcher holds, with its event when already in memory.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) delivery: Delivery,
    pub(crate) event: Option<Arc<Event>>,
    /// True when its route orders by key and the event has a key.
    pub(crate) ordered: bool,
}

impl Item {
    fn lane_key(&self) -> Option<(String, String)> {
        if !self.ordered {
            return None;
        }
        self.delivery
            .key
            .clone()
            .map(|k| (self.delivery.route_id.clone(), k))
    }
}

#[derive(Debug)]
enum Slot {
    Waiting { generation: u64, item: Box<Item> },
    InFlight,
}

/// What happened to a request to (re)schedule a delivery.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Scheduled.
    Scheduled,
    /// Waiting behind an earlier delivery with the same key.
    Queued,
    /// It is being attempted right now; nothing changed.
    AlreadyInFlight,
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    heap: BinaryHeap<Reverse<(Instant, u64, DeliveryId)>>,
    slots: HashMap<DeliveryId, Slot>,
    lanes: HashMap<(String, String), VecDeque<Item>>,
    /// Ids waiting in `lanes`.
    laned_ids: std::collections::HashSet<DeliveryId>,
    next_gen: u64,
    in_flight: usize,
    /// The backlog is larger than memory: new deliveries stay in the store only, and are
    /// paged in as room frees up (see `Spill`).
    pub(crate) spill: Spill,
}

/// Paging state for a backlog that does not fit in memory.
#[derive(Debug, Default)]
pub(crate) struct Spill {
    /// True while some unfinished deliveries of this destination are only in the store.
    pub(crate) active: bool,
    /// Where the current pass over the store's unfinished deliveries is.
    pub(crate) cursor: Option<DeliveryId>,
    /// Deliveries left out of memory so far.
    pub(crate) dropped: u64,
    /// `dropped` when the current pass started: a pass that ends with no new drops has seen
    /// everything, and paging can stop.
    pub(crate) dropped_at_pass_start: u64,
}

impl Queue {
    fn schedule(&mut self, item: Item, at: Instant) {
        self.next_gen += 1;
        let generation = self.next_gen;
        let id = item.delivery.id;
        self.heap.push(Reverse((at, generation, id)));
        self.slots.insert(
            id,
            Slot::Waiting {
                generation,
                item: Box::new(item),
            },
        );
    }

    /// A delivery that is new to the dispatcher (or requeued by an operator).
    pub(crate) fn push_new(&mut self, item: Item, at: Instant) -> Pushed {
        match self.slots.get(&item.delivery.id) {
            Some(Slot::InFlight) => return Pushed::AlreadyInFlight,
            Some(Slot::Waiting { .. }) => {
                // Requeued while waiting: move it to the new time.
                self.schedule(item, at);
                return Pushed::Scheduled;
            }
            None => {}
        }
        if let Some(key) = item.lane_key() {
            if let Some(lane) = self.lanes.get_mut(&key) {
                if self.laned_ids.insert(item.delivery.id) {
                    lane.push_back(item);
                }
                return Pushed::Queued;
            }
            self.lanes.insert(key, VecDeque::new());
        }
        self.schedule(item, at);
        Pushed::Scheduled
    }

    /// A delivery whose attempt failed and that will be attempted again at `at`; it keeps its
    /// place at the head of its key lane.
    pub(crate) fn push_retry(&mut self, item: Item, at: Instant) {
        if matches!(self.slots.get(&item.delivery.id), Some(Slot::InFlight)) {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        self.schedule(item, at);
    }

    /// Puts an item taken by [`Self::pop_due`] back, unattempted (breaker open, shutdown).
    pub(crate) fn put_back(&mut self, item: Item, at: Instant) {
        self.push_retry(item, at);
    }

    /// A delivery is finished (delivered or dead): releases the next one of its key lane.
    pub(crate) fn finish(&mut self, item: &Item, now: Instant) {
        if matches!(self.slots.remove(&item.delivery.id), Some(Slot::InFlight)) {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        if let Some(key) = item.lane_key() {
            let next = self.lanes.get_mut(&key).and_then(VecDeque::pop_front);
            match next {
                Some(next) => {
                    self.laned_ids.remove(&next.delivery.id);
                    self.schedule(next, now);
                }
                None => {
                    self.lanes.remove(&key);
                }
            }
        }
    }

    /// Takes the next due item, or tells when the next one will be due.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Result<Item, Option<Instant>> {
        while let Some(Reverse((at, generation, id))) = self.heap.peek().cloned() {
            match self.slots.get(&id) {
                Some(Slot::Waiting { generation: g, .. }) if *g == generation => {}
                _ => {
                    // Stale entry: rescheduled or finished since.
                    self.heap.pop();
                    continue;
                }
            }
            if at > now {
                return Err(Some(at));
            }
            self.heap.pop();
            if let Some(Slot::Waiting { item, .. }) = self.slots.insert(id, Slot::InFlight) {
                self.in_flight += 1;
                return Ok(*item);
            }
        }
        Err(None)
    }

    /// True when the queue holds this delivery in any form.
    pub(crate) fn knows(&self, id: DeliveryId) -> bool {
        self.slots.contains_key(&id) || self.laned_ids.contains(&id)
    }

    pub(crate) fn is_in_flight(&self, id: DeliveryId) -> bool {
        matches!(self.slots.get(&id), Some(Slot::InFlight))
    }

    /// Deliveries held (waiting, queued behind a key, or in flight).
    pub(crate) fn depth(&self) -> usize {
        self.slots.len() + self.laned_ids.len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use estafeta_core::{DeliveryStatus, EventId, TenantId};

    use super::*;

    fn item(key: Option<&str>) -> Item {
        Item {
            delivery: Delivery {
                id: DeliveryId::new(),
                event_id: EventId::new(),
                tenant: TenantId::default(),
                route_id: "r".into(),
                destination_id: "d".into(),
                target_index: 0,
                status: DeliveryStatus::Pending,
                attempts: 0,
                next_at: None,
                last_error: None,
                key: key.map(str::to_owned),
                created_at: Utc::now(),
                updated_at: Utc::now(),
            },
            event: None,
            ordered: key.is_some(),
        }
    }

    #[test]
    fn one_in_flight_per_key_in_order() {
        let mut q = Queue::default();
        let now = Instant::now();
        let (a, b, c) = (item(Some("k")), item(Some("k")), item(Some("other")));
        assert_eq!(q.push_new(a.clone(), now), Pushed::Scheduled);
        assert_eq!(q.push_new(b.clone(), now), Pushed::Queued);
        assert_eq!(q.push_new(c.clone(), now), Pushed::Scheduled);
        let first = q.pop_due(now).unwrap();
        let second = q.pop_due(now).unwrap();
        assert_eq!(first.delivery.id, a.delivery.id);
        assert_eq!(second.delivery.id, c.delivery.id);
        assert!(q.pop_due(now).is_err(), "b must wait for a");
        // a fails and retries: b still waits.
        q.push_retry(first.clone(), now);
        let again = q.pop_due(now).unwrap();
        assert_eq!(again.delivery.id, a.delivery.id);
        q.finish(&again, now);
        assert_eq!(q.pop_due(now).unwrap().delivery.id, b.delivery.id);
    }

    #[test]
    fn requeue_moves_a_waiting_item_and_ignores_in_flight() {
        let mut q = Queue::default();
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(60);
        let a = item(None);
        q.push_new(a.clone(), later);
        assert!(q.pop_due(now).is_err());
        assert_eq!(q.push_new(a.clone(), now), Pushed::Scheduled);
        let got = q.pop_due(now).unwrap();
        assert_eq!(got.delivery.id, a.delivery.id);
        assert_eq!(q.push_new(a.clone(), now), Pushed::AlreadyInFlight);
        assert!(q.pop_due(later).is_err(), "the stale heap entry is skipped");
        q.finish(&got, now);
        assert_eq!(q.depth(), 0);
    }
}
