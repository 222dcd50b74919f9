//! Where sources put events: durably into the log, with their deliveries.

use std::sync::Arc;

use async_trait::async_trait;
use estafeta_core::{Event, EventId};
use estafeta_engine::{Engine, Incoming};
use estafeta_store::AppendOutcome;

/// The sink could not store the events; nothing may be acknowledged upstream.
#[derive(Debug, thiserror::Error)]
#[error("the event log could not store the events")]
pub struct SinkError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Appends events durably. `Ok` means every event is on disk (or was already there).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Stores the events; each is de-duplicated by its source id and CloudEvents id. Returns,
    /// in order, the id each event is stored under (an earlier copy's id for a duplicate).
    async fn append(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError>;

    /// Stores events the caller guarantees are not in the log yet (it recognises its own
    /// re-reads), without a de-duplication claim each, which makes the append cheaper.
    async fn append_new(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError>;
}

/// Stores `incoming` and answers each event's id in the log.
async fn ingest(engine: &Engine, incoming: Vec<Incoming>) -> Result<Vec<EventId>, SinkError> {
    engine
        .ingest(incoming)
        .await
        .map(|outcomes| {
            outcomes
                .into_iter()
                .map(|o| match o {
                    AppendOutcome::Inserted(id) | AppendOutcome::Duplicate(id) => id,
                })
                .collect()
        })
        .map_err(|e| SinkError(Box::new(e)))
}

#[async_trait]
impl EventSink for Engine {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        let incoming = events
            .into_iter()
            .map(|event| Incoming {
                dedupe_key: Some(format!("src:{}\u{1f}{}", event.source_id, event.ce_id)),
                event,
            })
            .collect();
        ingest(self, incoming).await
    }

    async fn append_new(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        let incoming = events
            .into_iter()
            .map(|event| Incoming {
                dedupe_key: None,
                event,
            })
            .collect();
        ingest(self, incoming).await
    }
}

#[async_trait]
impl<T: EventSink + ?Sized> EventSink for Arc<T> {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        (**self).append(events).await
    }

    async fn append_new(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        (**self).append_new(events).await
    }
}
