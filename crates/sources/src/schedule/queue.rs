//! The priority queues runs wait in for a worker: `high`, `normal` and `low`, served by
//! smooth weighted round robin (6:3:1) over the queues that hold runs, so low-priority runs
//! get at least one turn in every ten while they wait — they never starve — and take every
//! turn when the others are empty. The queue is bounded: each schedule has at most one run
//! in it (see the runtime), so its capacity is the number of schedules.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use estafeta_config::schedule_source::Priority;
use estafeta_core::metric_names::SCHEDULE_QUEUE_DEPTH;
use tokio::sync::Semaphore;

/// Turns per round for `high`, `normal`, `low`.
const WEIGHTS: [i64; 3] = [6, 3, 1];

fn slot(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

/// Three FIFO queues served by smooth weighted round robin.
#[derive(Debug)]
pub(crate) struct Weighted<T> {
    queues: [VecDeque<T>; 3],
    credit: [i64; 3],
}

impl<T> Default for Weighted<T> {
    fn default() -> Self {
        Self {
            queues: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
            credit: [0; 3],
        }
    }
}

impl<T> Weighted<T> {
    pub(crate) fn push(&mut self, p: Priority, item: T) {
        self.queues[slot(p)].push_back(item);
    }

    /// The next item: every non-empty queue earns its weight, the richest is served and pays
    /// the round's total. Queues that empty out lose their credit, so a burst of one
    /// priority cannot bank turns for later.
    pub(crate) fn pop(&mut self) -> Option<(Priority, T)> {
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, weight) in WEIGHTS.iter().enumerate() {
            if self.queues[i].is_empty() {
                self.credit[i] = 0;
                continue;
            }
            self.credit[i] += weight;
            total += weight;
            if best.is_none_or(|b| self.credit[i] > self.credit[b]) {
                best = Some(i);
            }
        }
        let i = best?;
        self.credit[i] -= total;
        self.queues[i]
            .pop_front()
            .map(|item| (Priority::ALL[i], item))
    }

    pub(crate) fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    pub(crate) fn len_of(&self, p: Priority) -> usize {
        self.queues[slot(p)].len()
    }
}

/// The shared queue: workers wait on it; pushes never block.
pub(crate) struct RunQueue<T> {
    inner: Mutex<Weighted<T>>,
    items: Semaphore,
    capacity: usize,
}

impl<T> RunQueue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Weighted::default()),
            items: Semaphore::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Adds a run; gives it back when the queue is full or closed.
    pub(crate) fn push(&self, p: Priority, item: T) -> Result<(), T> {
        if self.items.is_closed() {
            return Err(item);
        }
        {
            let mut q = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if q.len() >= self.capacity {
                return Err(item);
            }
            q.push(p, item);
            gauge(&q, p);
        }
        self.items.add_permits(1);
        Ok(())
    }

    /// The next run by weight; `None` once the queue is closed.
    pub(crate) async fn pop(&self) -> Option<(Priority, T)> {
        self.items.acquire().await.ok()?.forget();
        let mut q = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (p, item) = q.pop()?;
        gauge(&q, p);
        Some((p, item))
    }

    /// Wakes every waiting worker with `None`; runs still queued stay unrun.
    pub(crate) fn close(&self) {
        self.items.close();
    }

    /// Runs waiting now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn gauge<T>(q: &Weighted<T>, p: Priority) {
    #[allow(clippy::cast_precision_loss)]
    let depth = q.len_of(p) as f64;
    metrics::gauge!(SCHEDULE_QUEUE_DEPTH, "priority" => p.as_str()).set(depth);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn drain(w: &mut Weighted<u32>) -> Vec<Priority> {
        std::iter::from_fn(|| w.pop().map(|(p, _)| p)).collect()
    }

    #[test]
    fn full_queues_are_served_six_three_one() {
        let mut w = Weighted::default();
        for i in 0..100 {
            for p in Priority::ALL {
                w.push(p, i);
            }
        }
        let order = drain(&mut w);
        let first_ten = &order[..10];
        let count = |p| first_ten.iter().filter(|x| **x == p).count();
        assert_eq!(
            (
                count(Priority::High),
                count(Priority::Normal),
                count(Priority::Low)
            ),
            (6, 3, 1)
        );
        // Once high and normal are empty, low takes every turn.
        assert!(
            order[order.len() - 30..]
                .iter()
                .all(|p| *p == Priority::Low)
        );
        assert_eq!(order.len(), 300);
    }

    #[test]
    fn each_queue_is_first_in_first_out() {
        let mut w = Weighted::default();
        for i in 0..5 {
            w.push(Priority::Normal, i);
        }
        let got: Vec<u32> = std::iter::from_fn(|| w.pop().map(|(_, i)| i)).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    proptest! {
        /// While low-priority runs wait, every ten turns serve at least one of them.
        #[test]
        fn low_never_starves(pushes in prop::collection::vec(0usize..3, 1..400), low in 1usize..50) {
            let mut w = Weighted::default();
            for (i, p) in pushes.iter().enumerate() {
                w.push(Priority::ALL[*p], i);
            }
            for i in 0..low {
                w.push(Priority::Low, 10_000 + i);
            }
            let mut since_low = 0;
            while w.len_of(Priority::Low) > 0 {
                let (p, _) = w.pop().unwrap();
                if p == Priority::Low {
                    since_low = 0;
                } else {
                    since_low += 1;
                    prop_assert!(since_low < 10, "low waited {since_low} turns");
                }
            }
        }
    }

    #[tokio::test]
    async fn bounded_and_closable() {
        let q = RunQueue::new(2);
        assert!(q.push(Priority::Low, 1).is_ok());
        assert!(q.push(Priority::High, 2).is_ok());
        assert_eq!(q.push(Priority::High, 3), Err(3));
        assert_eq!(q.pop().await, Some((Priority::High, 2)));
        assert_eq!(q.len(), 1);
        q.close();
        assert_eq!(q.pop().await, None);
        assert_eq!(q.push(Priority::Low, 4), Err(4));
    }
}
