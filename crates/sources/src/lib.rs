//! Sources that bring events in by themselves — database change data capture, outbox
//! tables, schedules — and the board where each reports how it is doing. Every source appends through an
//! [`EventSink`] and acknowledges upstream only after the sink says the events are durable.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod amqp;
pub mod broker;
mod kafka;
pub mod mqtt;
pub mod mysql;
mod nats;
pub mod outbox;
mod pipeline;
pub mod postgres;
pub mod provider;
mod row_change;
pub mod schedule;
mod sink;
mod status;
mod supervisor;

use std::sync::Arc;

use estafeta_config::{SourceKindSettings, SourceSettings};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use schedule::Schedules;
pub use sink::{EventSink, SinkError};
pub use status::{
    SlotStats, SnapshotProgress, SourceState, SourceStatus, StatusBoard, TableProgress,
};

/// What every pulling source is given: its id, where it stores events and its checkpoint,
/// the status board and its cancellation token. Sources hold one and reach its fields
/// through `Deref`.
pub(crate) struct SourceCtx {
    pub(crate) id: String,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) store: Arc<dyn estafeta_store::Store>,
    pub(crate) board: StatusBoard,
    pub(crate) cancel: CancellationToken,
}

/// One pulling source: its context and its kind's settings. Each kind implements `run` on
/// its own `Source<Settings>`.
pub(crate) struct Source<S> {
    ctx: SourceCtx,
    settings: S,
}

impl<S> Source<S> {
    fn new(ctx: SourceCtx, settings: S) -> Self {
        Self { ctx, settings }
    }
}

impl<S> std::ops::Deref for Source<S> {
    type Target = SourceCtx;

    fn deref(&self) -> &SourceCtx {
        &self.ctx
    }
}

/// The running pulling sources.
#[derive(Clone)]
pub struct Sources {
    board: StatusBoard,
    schedules: Schedules,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Sources {
    /// Starts every source that pulls (the `http` ones are served by the API). Each runs in
    /// its own task until [`Sources::shutdown`]. Providers read the named credentials their
    /// settings use from `credentials`, at each run.
    pub fn start(
        sources: &[SourceSettings],
        sink: Arc<dyn EventSink>,
        cursors: Arc<dyn estafeta_store::Store>,
        credentials: &estafeta_store::vault::Credentials,
    ) -> Self {
        let board = StatusBoard::default();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut schedules = Vec::new();
        for s in sources {
            let ctx = |kind: &'static str| {
                board.register(&s.id, kind, SourceState::Starting);
                SourceCtx {
                    id: s.id.clone(),
                    sink: Arc::clone(&sink),
                    store: Arc::clone(&cursors),
                    board: board.clone(),
                    cancel: cancel.child_token(),
                }
            };
            match &s.kind {
                SourceKindSettings::Http => board.register(&s.id, "http", SourceState::Running),
                SourceKindSettings::Postgres(pg) => {
                    let capture = Source::new(ctx("postgres"), (**pg).clone());
                    tracker.spawn(capture.run());
                }
                SourceKindSettings::Mysql(my) => {
                    let capture = Source::new(ctx("mysql"), (**my).clone());
                    tracker.spawn(capture.run());
                }
                SourceKindSettings::Kafka(k) => {
                    let kafka = Source::new(ctx("kafka"), (**k).clone());
                    tracker.spawn(kafka.run());
                }
                SourceKindSettings::Outbox(ob) => {
                    let outbox = Source::new(ctx("outbox"), (**ob).clone());
                    tracker.spawn(outbox.run());
                }
                SourceKindSettings::Schedule(sc) => schedules.push((s.id.clone(), (**sc).clone())),
                SourceKindSettings::Amqp(a) => {
                    let consumer = Source::new(ctx("amqp"), (**a).clone());
                    tracker.spawn(consumer.run());
                }
                SourceKindSettings::Nats(n) => {
                    let consumer = Source::new(ctx("nats"), (**n).clone());
                    tracker.spawn(consumer.run());
                }
                SourceKindSettings::Mqtt(m) => {
                    let consumer = Source::new(ctx("mqtt"), (**m).clone());
                    tracker.spawn(consumer.run());
                }
            }
        }
        // All schedules share one scheduler and one pool of workers.
        let schedules = Schedules::start(
            schedules,
            sink,
            cursors,
            &board,
            &cancel,
            &tracker,
            credentials,
        );
        tracker.close();
        Self {
            board,
            schedules,
            cancel,
            tracker,
        }
    }

    /// Every source's status.
    #[must_use]
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// The running schedules (`/v1/schedules`).
    #[must_use]
    pub fn schedules(&self) -> &Schedules {
        &self.schedules
    }

    /// Stops intake: each source finishes storing what it read, acknowledges it upstream and
    /// closes its connections.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.cancel.cancel();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sources did not stop within the grace period");
        }
    }
}
