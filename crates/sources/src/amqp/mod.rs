//! `kind: amqp` as a source — a RabbitMQ (AMQP 0-9-1) queue consumed with manual
//! acknowledgements.
//!
//! **Flow.** Deliveries that arrive together are decoded into events (or failed records,
//! `estafeta.message.undecodable`), appended to the log, and acknowledged — with one
//! `basic.ack` covering the batch (`multiple`) — only after the append that holds them is
//! durable, in order. A crash before the acknowledgement makes the broker deliver the messages
//! again; a message's `message_id` becomes its CloudEvents id (unless it is a CloudEvent with
//! its own id), so the log stores it once.
//!
//! **Back-pressure.** `prefetch` (`basic.qos`) bounds the deliveries not yet acknowledged,
//! and at most four appends are in flight at once.
//!
//! **Connection loss.** Automatic recovery is off: when the connection or channel fails the
//! session ends (the status shows `reconnecting`, the reconnect counter goes up) and the
//! supervisor opens a new connection with backoff. The delivery tags of the old channel are
//! void then; nothing is acknowledged on the new channel for them — the broker redelivers
//! what was not acknowledged, and the stable ids keep the log free of duplicates.
//!
//! **Lag.** Every few seconds a passive declare of the queue tells how many messages are
//! ready (not yet delivered): the status `lag` and `estafeta_source_lag_messages`.

mod message;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use estafeta_config::amqp_source::AmqpSourceSettings;
use estafeta_destinations::amqp::link::{self, LinkError};
use futures::{FutureExt as _, StreamExt as _};
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use crate::broker::{Decoder, report_lag};
use crate::pipeline::Appender;
use crate::status::SourceState;
use crate::supervisor::{Failure, error_chain, supervise};

/// Appends in flight at once.
const MAX_APPENDS_IN_FLIGHT: usize = 4;
/// How often the queue's ready count is read for the lag.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// Time allowed to connect and set the channel up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum AmqpSourceError {
    /// Connecting, declaring or checking the queue failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The connection or channel failed while consuming.
    #[error("{what}")]
    Broker {
        what: &'static str,
        #[source]
        source: lapin::Error,
    },
    /// The channel closed before an acknowledgement could be sent.
    #[error(
        "the AMQP channel closed before stored messages were acknowledged; the broker delivers them again"
    )]
    AckLost,
    /// The broker ended the consumer (e.g. the queue was deleted).
    #[error("the broker cancelled the consumer of queue `{0}`")]
    Cancelled(String),
    /// Connecting took too long.
    #[error("could not connect to the AMQP server within {0:?}")]
    Timeout(Duration),
    /// The log could not store the events; nothing of theirs was acknowledged.
    #[error("the event log could not store the messages' events")]
    Sink(#[source] crate::sink::SinkError),
}

impl AmqpSourceError {
    fn broker(what: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| Self::Broker { what, source }
    }

    fn failure(&self) -> Failure {
        match self {
            Self::Link(e) if e.is_final() => Failure::Setup(error_chain(self)),
            _ => Failure::Transient(error_chain(self)),
        }
    }
}

/// What a finished append makes safe to acknowledge: the last delivery of its batch.
struct Acked {
    acker: Acker,
    tag: u64,
}

/// One running source of this kind.
pub(crate) type AmqpSource = crate::Source<AmqpSourceSettings>;

impl AmqpSource {
    /// Runs until cancelled, starting a new session with backoff after a failure.
    pub(crate) async fn run(self) {
        let this = &self;
        supervise(&self.id, &self.board, &self.cancel, || async move {
            this.session().await.map_err(|e| e.failure())
        })
        .await;
    }

    /// Connects, declares, checks the queue and starts consuming.
    async fn open(
        &self,
    ) -> Result<(lapin::Connection, lapin::Channel, lapin::Consumer), AmqpSourceError> {
        let s = &self.settings;
        let setup = async {
            let name = format!("estafeta source {}", self.id);
            let connection = link::connect(s.url.expose(), &name).await?;
            let channel = connection
                .create_channel()
                .await
                .map_err(LinkError::Channel)?;
            link::declare(&channel, &s.declare).await?;
            let ready = link::ready_messages(&channel, &s.queue).await?;
            report_lag(&self.board, &self.id, u64::from(ready));
            channel
                .basic_qos(s.prefetch, BasicQosOptions::default())
                .await
                .map_err(LinkError::Channel)?;
            let consumer = channel
                .basic_consume(
                    link::short(&s.queue)?,
                    link::short(&format!("estafeta-{}", self.id))?,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(LinkError::Channel)?;
            Ok::<_, AmqpSourceError>((connection, channel, consumer))
        };
        tokio::time::timeout(SETUP_TIMEOUT, setup)
            .await
            .map_err(|_| AmqpSourceError::Timeout(SETUP_TIMEOUT))?
    }

    /// One session: connect, take messages in until cancelled or a failure.
    async fn session(&self) -> Result<(), AmqpSourceError> {
        let s = &self.settings;
        self.board
            .update(&self.id, |st| st.state = SourceState::Starting);
        let (connection, channel, mut consumer) = self.open().await?;
        // The lag is read on its own channel: a failed passive declare closes its channel.
        let lag_channel = connection
            .create_channel()
            .await
            .map_err(AmqpSourceError::broker(
                "cannot open the channel for the lag",
            ))?;
        tracing::info!(source_id = %self.id, queue = %s.queue, prefetch = s.prefetch, "consuming the AMQP queue");
        self.board.update(&self.id, |st| {
            st.state = SourceState::Running;
            st.error = None;
        });
        let decoder = Decoder::new(&self.id, "amqp", &s.decode, self.board.clone());
        let mut appender: Appender<Acked> =
            Appender::new(Arc::clone(&self.sink), MAX_APPENDS_IN_FLIGHT);
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let batch_max = usize::from(s.prefetch);
        let result = loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break Ok(()),
                stored = appender.next(), if !appender.is_empty() => {
                    match stored {
                        Ok(stored) => {
                            if let Some(acked) = stored.position
                                && let Err(e) = self.acknowledge(stored.count, acked).await
                            {
                                break Err(e);
                            }
                        }
                        Err(e) => break Err(AmqpSourceError::Sink(e)),
                    }
                }
                first = consumer.next(), if !appender.is_full() => {
                    let Some(first) = first else {
                        break Err(AmqpSourceError::Cancelled(s.queue.clone()));
                    };
                    let mut batch = Vec::new();
                    let mut failed = None;
                    match first {
                        Ok(d) => batch.push(d),
                        Err(e) => failed = Some(e),
                    }
                    while failed.is_none() && batch.len() < batch_max {
                        match consumer.next().now_or_never() {
                            Some(Some(Ok(d))) => batch.push(d),
                            Some(Some(Err(e))) => failed = Some(e),
                            Some(None) | None => break,
                        }
                    }
                    if let Some(last) = batch.last() {
                        let acked = Acked { acker: last.acker.clone(), tag: last.delivery_tag };
                        let events = batch
                            .iter()
                            .filter_map(|d| {
                                let headers = message::headers(d);
                                decoder.decode(&message::view(d, &s.queue, &headers))
                            })
                            .collect();
                        appender.submit(events, Some(acked));
                    }
                    if let Some(e) = failed {
                        break Err(AmqpSourceError::Broker { what: "the AMQP consumer failed", source: e });
                    }
                }
                _ = lag_tick.tick() => {
                    match link::ready_messages(&lag_channel, &s.queue).await {
                        Ok(ready) => report_lag(&self.board, &self.id, u64::from(ready)),
                        Err(e) => break Err(e.into()),
                    }
                }
            }
        };
        // Store what is in flight and acknowledge it while the channel is still open; when
        // it is not, the broker redelivers those messages and their ids de-duplicate them.
        while !appender.is_empty() {
            match appender.next().await {
                Ok(stored) => {
                    if let (Some(acked), true) = (stored.position, result.is_ok()) {
                        self.acknowledge(stored.count, acked).await?;
                    }
                }
                Err(e) => return Err(AmqpSourceError::Sink(e)),
            }
        }
        if result.is_ok() {
            let _closed = channel.close(200, "shutting down".into()).await;
            let _closed = connection.close(200, "shutting down".into()).await;
        }
        result
    }

    /// Acknowledges every delivery up to `acked` (their events are durable) and reports
    /// progress.
    async fn acknowledge(&self, stored: usize, acked: Acked) -> Result<(), AmqpSourceError> {
        let sent = acked
            .acker
            .ack(BasicAckOptions { multiple: true })
            .await
            .map_err(AmqpSourceError::broker(
                "cannot acknowledge stored messages",
            ))?;
        if !sent {
            return Err(AmqpSourceError::AckLost);
        }
        ::metrics::counter!(estafeta_core::metric_names::SOURCE_EVENTS, "source" => self.id.clone())
            .increment(stored as u64);
        let position = format!("{}#{}", self.settings.queue, acked.tag);
        self.board.update(&self.id, |st| {
            st.events += stored as u64;
            st.last_event_at = Some(Utc::now());
            st.position = Some(position);
        });
        Ok(())
    }
}
