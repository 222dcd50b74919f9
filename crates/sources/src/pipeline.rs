//! Overlapping reads with durable writes: a source hands batches to an [`Appender`], which
//! keeps a few appends in flight (the store's group commit merges them) and gives them back
//! in order, each with the upstream position it makes safe to acknowledge.

use std::sync::Arc;

use estafeta_core::{Event, EventId};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;

use crate::sink::{EventSink, SinkError};

/// A finished append.
pub(crate) struct Stored<P> {
    /// How many events it held.
    pub(crate) count: usize,
    /// The position that may be acknowledged now that this append (and every earlier one)
    /// is durable.
    pub(crate) position: Option<P>,
}

type Pending<P> = BoxFuture<'static, (Result<Vec<EventId>, SinkError>, usize, Option<P>)>;

/// Appends in flight, completed in submission order.
pub(crate) struct Appender<P> {
    sink: Arc<dyn EventSink>,
    in_flight: FuturesOrdered<Pending<P>>,
    max: usize,
    /// The source recognises its own re-reads: store without de-duplication claims.
    new_only: bool,
}

impl<P: Send + 'static> Appender<P> {
    pub(crate) fn new(sink: Arc<dyn EventSink>, max_in_flight: usize) -> Self {
        Self {
            sink,
            in_flight: FuturesOrdered::new(),
            max: max_in_flight.max(1),
            new_only: false,
        }
    }

    /// Like [`Appender::new`], for a source that never hands over an event already in the
    /// log (see [`EventSink::append_new`]).
    pub(crate) fn new_events_only(sink: Arc<dyn EventSink>, max_in_flight: usize) -> Self {
        Self {
            new_only: true,
            ..Self::new(sink, max_in_flight)
        }
    }

    /// Starts storing `events`; `position` is acknowledged once they are durable.
    pub(crate) fn submit(&mut self, events: Vec<Event>, position: Option<P>) {
        let sink = Arc::clone(&self.sink);
        let count = events.len();
        let new_only = self.new_only;
        self.in_flight.push_back(Box::pin(async move {
            let result = if events.is_empty() {
                Ok(Vec::new())
            } else if new_only {
                sink.append_new(events).await
            } else {
                sink.append(events).await
            };
            (result, count, position)
        }));
    }

    /// No room for another append: stop reading until one finishes.
    pub(crate) fn is_full(&self) -> bool {
        self.in_flight.len() >= self.max
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The oldest append, once it is done; pending forever when none is in flight (use
    /// it in `select!` with an `if !is_empty()` guard).
    pub(crate) async fn next(&mut self) -> Result<Stored<P>, SinkError> {
        match self.in_flight.next().await {
            Some((result, count, position)) => result.map(|_| Stored { count, position }),
            None => std::future::pending().await,
        }
    }
}
