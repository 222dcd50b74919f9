//! `mark_on: delivered`: the rows this instance claimed (`processing`) and the events they
//! became, kept in the store's cursor for the source so a restart picks them up again, and
//! the check of their deliveries.

use std::collections::HashSet;

use estafeta_core::{Delivery, DeliveryStatus, EventId};
use estafeta_store::{Store, StoreError};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::OutboxError;
use super::row::RowId;

/// How a claimed row's deliveries ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Every delivery succeeded (or the event matched no route).
    Delivered { attempts: i64 },
    /// At least one delivery died: its destination and last error.
    Dead { error: String, attempts: i64 },
}

/// What is saved in the cursor.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// `[row id, event id]` pairs.
    #[serde(default)]
    watching: Vec<(RowId, EventId)>,
}

/// The claimed rows waiting for their deliveries.
#[derive(Debug)]
pub(super) struct Watch {
    entries: Vec<(RowId, EventId)>,
    ids: HashSet<RowId>,
    cap: usize,
    saved_empty: bool,
}

/// At most this many concurrent store reads while checking deliveries.
const LOOKUPS: usize = 16;

impl Watch {
    /// Most rows kept in `processing` at once: claiming pauses at this many, so a
    /// destination that is down does not move the whole table into `processing`.
    pub(super) fn cap_for(batch_size: usize) -> usize {
        (batch_size * 10).clamp(1_000, 20_000)
    }

    /// What the source saved before (nothing on first start).
    pub(super) async fn load(
        store: &dyn Store,
        source_id: &str,
        batch_size: usize,
    ) -> Result<Self, OutboxError> {
        let raw = store
            .get_cursor(source_id)
            .await
            .map_err(OutboxError::Store)?;
        let saved: Saved = match raw {
            None => Saved::default(),
            Some(r) => serde_json::from_str(&r).unwrap_or_else(|e| {
                tracing::warn!(source_id = %source_id, error = %e, "the outbox source's saved state is unreadable; starting without it");
                Saved::default()
            }),
        };
        let mut w = Self {
            entries: Vec::new(),
            ids: HashSet::new(),
            cap: Self::cap_for(batch_size),
            saved_empty: saved.watching.is_empty(),
        };
        w.add(saved.watching);
        if !w.is_empty() {
            tracing::info!(source_id = %source_id, rows = w.len(), "resuming the watch of processing outbox rows");
        }
        Ok(w)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many more rows may be claimed.
    pub(super) fn room(&self) -> usize {
        self.cap.saturating_sub(self.entries.len())
    }

    /// Adds rows (a row already watched keeps its entry: a re-read row's event is the same
    /// event, de-duplicated by the log).
    pub(super) fn add(&mut self, rows: impl IntoIterator<Item = (RowId, EventId)>) {
        for (row, event) in rows {
            if self.ids.insert(row.clone()) {
                self.entries.push((row, event));
            }
        }
    }

    pub(super) fn remove(&mut self, rows: &[RowId]) {
        let gone: HashSet<&RowId> = rows.iter().collect();
        self.entries.retain(|(r, _)| !gone.contains(r));
        for r in rows {
            self.ids.remove(r);
        }
    }

    /// Saves the list durably (skipped while it stays empty).
    pub(super) async fn save(
        &mut self,
        store: &dyn Store,
        source_id: &str,
    ) -> Result<(), OutboxError> {
        if self.entries.is_empty() && self.saved_empty {
            return Ok(());
        }
        let raw = serde_json::to_string(&Saved {
            watching: self.entries.clone(),
        })
        .map_err(|e| OutboxError::Store(StoreError::Invalid(e.to_string())))?;
        store
            .put_cursor(source_id, &raw)
            .await
            .map_err(OutboxError::Store)?;
        self.saved_empty = self.entries.is_empty();
        Ok(())
    }

    /// The watched rows whose deliveries have all finished, with how.
    pub(super) async fn finished(
        &self,
        store: &dyn Store,
    ) -> Result<Vec<(RowId, Outcome)>, OutboxError> {
        let mut checks = futures::stream::iter(self.entries.iter().cloned())
            .map(|(row, event)| async move {
                store
                    .deliveries_for_event(event)
                    .await
                    .map(|d| (row, outcome(&d)))
            })
            .buffer_unordered(LOOKUPS);
        let mut out = Vec::new();
        while let Some(r) = checks.next().await {
            let (row, outcome) = r.map_err(OutboxError::Store)?;
            if let Some(o) = outcome {
                out.push((row, o));
            }
        }
        Ok(out)
    }
}

/// `None` while any delivery may still be attempted.
pub(super) fn outcome(deliveries: &[Delivery]) -> Option<Outcome> {
    if deliveries.iter().any(|d| !d.status.is_terminal()) {
        return None;
    }
    let attempts = i64::from(deliveries.iter().map(|d| d.attempts).max().unwrap_or(0));
    let dead = deliveries
        .iter()
        .filter(|d| d.status == DeliveryStatus::Dead)
        .max_by_key(|d| d.updated_at);
    Some(match dead {
        Some(d) => Outcome::Dead {
            error: format!(
                "delivery to `{}` failed: {}",
                d.destination_id,
                d.last_error.as_deref().unwrap_or("no attempts left")
            ),
            attempts,
        },
        None => Outcome::Delivered { attempts },
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use estafeta_core::{DeliveryId, TenantId};

    use super::*;

    fn delivery(status: DeliveryStatus, attempts: u32, error: Option<&str>) -> Delivery {
        Delivery {
            id: DeliveryId::new(),
            event_id: EventId::new(),
            tenant: TenantId::default(),
            route_id: "r".into(),
            destination_id: "hook".into(),
            target_index: 0,
            status,
            attempts,
            next_at: None,
            last_error: error.map(str::to_owned),
            key: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn rows_settle_when_every_delivery_is_finished() {
        use DeliveryStatus::*;
        assert_eq!(
            outcome(&[]),
            Some(Outcome::Delivered { attempts: 0 }),
            "no route matched: nothing to wait for"
        );
        assert_eq!(
            outcome(&[
                delivery(Delivered, 1, None),
                delivery(Retrying, 2, Some("503"))
            ]),
            None
        );
        assert_eq!(
            outcome(&[delivery(Delivered, 1, None), delivery(Delivered, 3, None)]),
            Some(Outcome::Delivered { attempts: 3 })
        );
        assert_eq!(
            outcome(&[
                delivery(Delivered, 1, None),
                delivery(Dead, 4, Some("HTTP 500"))
            ]),
            Some(Outcome::Dead {
                error: "delivery to `hook` failed: HTTP 500".into(),
                attempts: 4
            })
        );
    }

    #[test]
    fn the_saved_list_reads_back() {
        let e = EventId::new();
        let s = serde_json::to_string(&Saved {
            watching: vec![(RowId::Int(4), e)],
        })
        .unwrap();
        let back: Saved = serde_json::from_str(&s).unwrap();
        assert_eq!(back.watching, vec![(RowId::Int(4), e)]);
        let mut w = Watch {
            entries: Vec::new(),
            ids: HashSet::new(),
            cap: 2,
            saved_empty: true,
        };
        w.add([(RowId::Int(1), e), (RowId::Int(1), EventId::new())]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.room(), 1);
        w.remove(&[RowId::Int(1)]);
        assert!(w.is_empty());
    }
}
