//! `kind: nats` as a source — a durable JetStream pull consumer.
//!
//! **Flow.** Messages are fetched in batches (`batch_size`), each decoded into an event (or a
//! failed record, `estafeta.message.undecodable`), appended to the log, and acknowledged one
//! by one only after the append that holds them is durable, in order. A crash before the
//! acknowledgement makes the server deliver the message again after `ack_wait`; its
//! CloudEvents id (`<stream>:<stream sequence>` unless the message is a CloudEvent with its
//! own id) makes the log store it once.
//!
//! **Back-pressure.** `max_ack_pending` bounds what the server hands over before it hears
//! an acknowledgement, and at most four appends are in flight at once.
//!
//! **Connection loss.** The client reconnects by itself; the status shows `reconnecting`
//! meanwhile and counts reconnections. A failure of the consumer itself (deleted, a pull
//! refused) ends the session after the appends in flight are stored and acknowledged, and
//! the supervisor starts a new one with backoff.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, Message as JsMessage};
use async_nats::{ConnectOptions, Event as ClientEvent};
use chrono::Utc;
use estafeta_config::nats_destination::NatsAuth;
use estafeta_config::nats_source::{NatsSourceSettings, NatsStart};
use futures::{FutureExt as _, StreamExt as _};

use crate::broker::{Decoder, Message, report_lag};
use crate::pipeline::Appender;
use crate::status::{SourceState, StatusBoard};
use crate::supervisor::{Failure, error_chain, supervise};

/// Appends in flight at once.
const MAX_APPENDS_IN_FLIGHT: usize = 4;
/// Longest wait for the connection to drain at the end of a session.
const DRAIN: Duration = Duration::from_secs(5);
/// How often the server sends heartbeats on an idle pull.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum NatsSourceError {
    /// The server, stream or consumer is not as the config says.
    #[error("{0}")]
    Setup(String),
    /// A lost connection, a failed pull, a failed acknowledgement.
    #[error("{what}")]
    Broker {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The log could not store the events; nothing of theirs was acknowledged.
    #[error("the event log could not store the messages' events")]
    Sink(#[source] crate::sink::SinkError),
}

impl NatsSourceError {
    fn broker(what: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Broker {
            what: what.into(),
            source: Box::new(e),
        }
    }

    fn failure(&self) -> Failure {
        match self {
            Self::Setup(_) => Failure::Setup(error_chain(self)),
            _ => Failure::Transient(error_chain(self)),
        }
    }
}

/// One running source of this kind.
pub(crate) type NatsSource = crate::Source<NatsSourceSettings>;

impl NatsSource {
    /// Runs until cancelled, starting a new session with backoff after a failure.
    pub(crate) async fn run(self) {
        let this = &self;
        supervise(&self.id, &self.board, &self.cancel, || async move {
            this.session().await.map_err(|e| e.failure())
        })
        .await;
    }

    async fn connect(&self) -> Result<async_nats::Client, NatsSourceError> {
        let s = &self.settings;
        let board = self.board.clone();
        let id = self.id.clone();
        let mut options = ConnectOptions::new()
            .name(format!("estafeta source {}", self.id))
            .connection_timeout(Duration::from_secs(10))
            .retry_on_initial_connect()
            .event_callback(move |event| {
                on_client_event(board.clone(), id.clone(), event);
                async {}
            });
        options = match &s.auth {
            NatsAuth::None => options,
            NatsAuth::Token(token) => options.token(token.expose().to_owned()),
            NatsAuth::UserPassword { username, password } => options
                .user_and_password(username.expose().to_owned(), password.expose().to_owned()),
        };
        let servers: Vec<String> = s.url.split(',').map(|u| u.trim().to_owned()).collect();
        options.connect(servers).await.map_err(|e| {
            NatsSourceError::broker(format!("cannot connect to the NATS server ({})", s.url), e)
        })
    }

    async fn consumer(&self, client: async_nats::Client) -> Result<PullConsumer, NatsSourceError> {
        let s = &self.settings;
        let js = jetstream::new(client);
        let stream = match js.get_stream(&s.stream).await {
            Ok(stream) => stream,
            Err(e) if e.to_string().contains("not found") => {
                return Err(NatsSourceError::Setup(format!(
                    "the JetStream stream `{}` does not exist on the server; create it (e.g. `nats stream add {}`) with the subjects it should keep",
                    s.stream, s.stream
                )));
            }
            Err(e) => {
                return Err(NatsSourceError::broker(
                    format!("cannot read the JetStream stream `{}`", s.stream),
                    e,
                ));
            }
        };
        let deliver_policy = match s.start {
            NatsStart::Earliest => DeliverPolicy::All,
            NatsStart::Latest => DeliverPolicy::New,
            NatsStart::Time(at) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                    at.timestamp_nanos_opt().unwrap_or_default(),
                ))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            },
        };
        let config = pull::Config {
            durable_name: Some(s.consumer.clone()),
            description: Some(format!("Estafeta source {}", self.id)),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: s.ack_wait,
            max_ack_pending: i64::from(s.max_ack_pending),
            filter_subject: s.subject.clone().unwrap_or_default(),
            ..Default::default()
        };
        stream.create_consumer(config).await.map_err(|e| {
            NatsSourceError::Setup(format!(
                "the server refused the durable consumer `{}` on stream `{}`: {e} (a consumer's start position cannot change: delete it with `nats consumer rm {} {}` to start over)",
                s.consumer, s.stream, s.stream, s.consumer
            ))
        })
    }

    /// One session: connect, take messages in until cancelled or a failure.
    async fn session(&self) -> Result<(), NatsSourceError> {
        let s = &self.settings;
        self.board
            .update(&self.id, |st| st.state = SourceState::Starting);
        let client = self.connect().await?;
        let consumer = self.consumer(client.clone()).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(s.batch_size as usize)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|e| NatsSourceError::broker("cannot start pulling messages", e))?;
        tracing::info!(source_id = %self.id, stream = %s.stream, consumer = %s.consumer, "consuming the JetStream stream");
        self.board.update(&self.id, |st| {
            st.state = SourceState::Running;
            st.error = None;
        });
        let decoder = Decoder::new(&self.id, "nats", &s.decode, self.board.clone());
        let mut appender: Appender<Vec<JsMessage>> =
            Appender::new(Arc::clone(&self.sink), MAX_APPENDS_IN_FLIGHT);
        let batch_size = s.batch_size as usize;
        let result = loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break Ok(()),
                stored = appender.next(), if !appender.is_empty() => {
                    match stored {
                        Ok(stored) => self.acknowledge(stored.count, stored.position.unwrap_or_default()).await?,
                        Err(e) => return Err(NatsSourceError::Sink(e)),
                    }
                }
                first = messages.next(), if !appender.is_full() => {
                    let Some(first) = first else {
                        break Err(NatsSourceError::Setup("the server ended the consumer's message stream".to_owned()));
                    };
                    let mut batch = Vec::with_capacity(batch_size);
                    let mut failed = None;
                    match first {
                        Ok(m) => batch.push(m),
                        Err(e) => failed = Some(e),
                    }
                    while failed.is_none() && batch.len() < batch_size {
                        match messages.next().now_or_never() {
                            Some(Some(Ok(m))) => batch.push(m),
                            Some(Some(Err(e))) => failed = Some(e),
                            Some(None) | None => break,
                        }
                    }
                    if !batch.is_empty() {
                        let events = batch.iter().filter_map(|m| decoder.decode(&message(m))).collect();
                        appender.submit(events, Some(batch));
                    }
                    if let Some(e) = failed {
                        break Err(NatsSourceError::broker("pulling messages from the consumer failed", e));
                    }
                }
            }
        };
        // Store and acknowledge what is in flight before leaving, so nothing waits for
        // `ack_wait` to be delivered again.
        while !appender.is_empty() {
            let stored = appender.next().await.map_err(NatsSourceError::Sink)?;
            self.acknowledge(stored.count, stored.position.unwrap_or_default())
                .await?;
        }
        // Unsubscribe, flush the acknowledgements and close before the next session or a
        // restart: a pull request left open on a connection still closing would take
        // messages that then wait `ack_wait` to be delivered again.
        drop(messages);
        match tokio::time::timeout(DRAIN, client.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(source_id = %self.id, error = %e, "nats connection not drained");
            }
            Err(_) => tracing::debug!(source_id = %self.id, "nats connection not drained in time"),
        }
        result
    }

    /// Acknowledges messages whose events are durable, and reports progress.
    async fn acknowledge(
        &self,
        stored: usize,
        msgs: Vec<JsMessage>,
    ) -> Result<(), NatsSourceError> {
        for m in &msgs {
            m.ack().await.map_err(|e| NatsSourceError::Broker {
                what: "cannot acknowledge a stored message".to_owned(),
                source: e,
            })?;
        }
        // Only the last message's metadata is needed for the position and the lag.
        let last = msgs
            .last()
            .and_then(|m| m.info().ok())
            .map(|info| (info.stream_sequence, info.pending));
        ::metrics::counter!(estafeta_core::metric_names::SOURCE_EVENTS, "source" => self.id.clone())
            .increment(stored as u64);
        if let Some((seq, pending)) = last {
            report_lag(&self.board, &self.id, pending);
            let stream = &self.settings.stream;
            self.board.update(&self.id, |st| {
                st.events += stored as u64;
                st.last_event_at = Some(Utc::now());
                st.position = Some(format!("{stream}#{seq}"));
            });
        }
        Ok(())
    }
}

/// The broker-neutral view of a JetStream message.
fn message(m: &JsMessage) -> Message<'_> {
    let info = m.info().ok();
    let headers = m
        .headers
        .as_ref()
        .map(|h| {
            h.iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.as_ref(), v.as_str().as_bytes()))
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        payload: &m.payload,
        headers,
        key: None,
        channel: m.subject.as_str(),
        position: info
            .as_ref()
            .map(|i| format!("{}#{}", i.stream, i.stream_sequence))
            .unwrap_or_default(),
        stable_id: info
            .as_ref()
            .map(|i| format!("{}:{}", i.stream, i.stream_sequence)),
        timestamp: info
            .as_ref()
            .and_then(|i| i64::try_from(i.published.unix_timestamp_nanos()).ok())
            .map(chrono::DateTime::from_timestamp_nanos),
    }
}

/// Connection events from the client: the status follows the connection.
fn on_client_event(board: StatusBoard, id: String, event: ClientEvent) {
    match event {
        ClientEvent::Disconnected => {
            tracing::warn!(source_id = %id, "lost the connection to the NATS server; reconnecting");
            ::metrics::counter!(estafeta_core::metric_names::SOURCE_RECONNECTS, "source" => id.clone()).increment(1);
            board.update(&id, |s| {
                s.state = SourceState::Reconnecting;
                s.error = Some("lost the connection to the NATS server; reconnecting".to_owned());
                s.reconnects += 1;
            });
        }
        ClientEvent::Connected => board.update(&id, |s| {
            if s.state == SourceState::Reconnecting {
                s.state = SourceState::Running;
                s.error = None;
            }
        }),
        ClientEvent::ServerError(e) => {
            tracing::warn!(source_id = %id, error = %e, "the NATS server reported an error");
        }
        _ => {}
    }
}
