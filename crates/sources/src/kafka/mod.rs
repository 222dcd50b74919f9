//! `kind: kafka` — a consumer group reading topics (or a topic pattern). Each message is
//! decoded by the shared broker decoder (CloudEvents in either mode, Debezium change
//! events, plain JSON; an undecodable message becomes an `estafeta.message.undecodable`
//! event), appended through the pipeline, and its offset is committed only after the append
//! that holds it is durable, in order. A crash before a commit means the messages are read
//! again; their stable id (`kafka:<topic>/<partition>/<offset>`, the CloudEvents id of
//! messages that carry none) makes the log store them once.
//!
//! librdkafka reconnects by itself; when every broker is unreachable the session ends, the
//! status shows `reconnecting` (counted in `estafeta_source_reconnects_total`), and a new
//! consumer joins the group after the supervisor's backoff, resuming at the committed
//! offsets. The status carries the committed positions and the lag (high watermark minus
//! committed offset, summed over the assigned partitions).

mod client;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use estafeta_config::kafka_source::{KafkaSourceSettings, StartPosition};
use estafeta_core::Event;
use futures::FutureExt as _;
use rdkafka::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{BorrowedMessage, Headers as _};

use self::client::{KafkaConsumer, Offsets};
use crate::broker::{Decoder, Message, report_lag};
use crate::pipeline::Appender;
use crate::status::SourceState;
use crate::supervisor::{Failure, error_chain, supervise};

/// Longest wait for the cluster to answer an offset commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Appends in flight at once.
const IN_FLIGHT: usize = 4;
/// How often the lag is measured and the brokers' reachability checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);

pub(crate) type KafkaSource = crate::Source<KafkaSourceSettings>;

impl KafkaSource {
    pub(crate) async fn run(self) {
        let decoder = Decoder::new(&self.id, "kafka", &self.settings.decode, self.board.clone());
        let (this, decoder) = (&self, &decoder);
        supervise(&self.id, &self.board, &self.cancel, || {
            this.session(decoder)
        })
        .await;
    }

    /// One consumer, from joining the group until cancellation or a lost cluster.
    async fn session(&self, decoder: &Decoder) -> Result<(), Failure> {
        self.board
            .update(&self.id, |s| s.state = SourceState::Starting);
        let consumer = client::consumer(&self.settings).map_err(|e| {
            Failure::Setup(format!(
                "the Kafka consumer cannot be set up: {}",
                error_chain(&e)
            ))
        })?;
        blocking(&consumer, client::reachable).await.map_err(|e| {
            Failure::Transient(format!(
                "the Kafka cluster at {} does not answer: {e}",
                self.settings.connection.brokers
            ))
        })?;
        tracing::info!(source_id = %self.id, group_id = %self.settings.group_id, "kafka source running");
        self.board.update(&self.id, |s| {
            s.state = SourceState::Running;
            s.error = None;
        });
        let mut appender: Appender<Offsets> = Appender::new(Arc::clone(&self.sink), IN_FLIGHT);
        let mut committed = Offsets::new();
        let mut check = tokio::time::interval(CHECK_EVERY);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => {
                    while !appender.is_empty() {
                        let stored = appender.next().await.map_err(|e| sink_failure(&e))?;
                        self.stored(&consumer, &mut committed, stored.count, stored.position).await?;
                    }
                    return Ok(());
                }
                stored = appender.next(), if !appender.is_empty() => {
                    let stored = stored.map_err(|e| sink_failure(&e))?;
                    self.stored(&consumer, &mut committed, stored.count, stored.position).await?;
                }
                received = consumer.recv(), if !appender.is_full() => {
                    let mut events = Vec::new();
                    let mut upto = Offsets::new();
                    match received {
                        Ok(m) => self.take(decoder, &m, &mut events, &mut upto),
                        Err(e) => self.consume_error(&e)?,
                    }
                    while events.len() < self.settings.batch_size {
                        match consumer.recv().now_or_never() {
                            Some(Ok(m)) => self.take(decoder, &m, &mut events, &mut upto),
                            Some(Err(e)) => self.consume_error(&e)?,
                            None => break,
                        }
                    }
                    if !upto.is_empty() {
                        appender.submit(events, Some(upto));
                    }
                }
                _ = check.tick() => {
                    if consumer.context().all_brokers_down.swap(false, Ordering::SeqCst) {
                        return Err(Failure::Transient(format!(
                            "every Kafka broker at {} is unreachable",
                            self.settings.connection.brokers
                        )));
                    }
                    if let Ok(Some(lag)) = blocking(&consumer, |c| Ok(client::lag(c))).await {
                        report_lag(&self.board, &self.id, lag);
                    }
                }
            }
        }
    }

    /// Decodes one message into `events` and moves its partition's next offset in `upto`.
    fn take(
        &self,
        decoder: &Decoder,
        m: &BorrowedMessage<'_>,
        events: &mut Vec<Event>,
        upto: &mut Offsets,
    ) {
        let topic = m.topic();
        let (partition, offset) = (m.partition(), m.offset());
        upto.insert((topic.to_owned(), partition), offset + 1);
        let timestamp = m
            .timestamp()
            .to_millis()
            .and_then(DateTime::<Utc>::from_timestamp_millis);
        if let (StartPosition::Timestamp(start), Some(at)) = (self.settings.start, timestamp)
            && at < start
        {
            return;
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key, h.value.unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let msg = Message {
            payload: m.payload().unwrap_or_default(),
            headers,
            key: m.key(),
            channel: topic,
            position: format!("{topic}[{partition}]@{offset}"),
            stable_id: Some(format!("kafka:{topic}/{partition}/{offset}")),
            timestamp,
        };
        if let Some(event) = decoder.decode(&msg) {
            events.push(event);
        }
    }

    /// A consumer error: fatal ones end the session; others (a subscribed topic that does
    /// not exist yet, a partition's fetch error) are shown as a warning and reading goes on.
    fn consume_error(&self, e: &rdkafka::error::KafkaError) -> Result<(), Failure> {
        if matches!(e, rdkafka::error::KafkaError::MessageConsumptionFatal(_)) {
            return Err(Failure::Transient(format!(
                "the Kafka consumer failed: {}",
                error_chain(e)
            )));
        }
        let text = error_chain(e);
        tracing::warn!(source_id = %self.id, error = %text, "kafka consumer error");
        self.board.update(&self.id, |s| s.warning = Some(text));
        Ok(())
    }

    /// An append is durable: commit its offsets and show it. A commit the cluster does not
    /// answer within [`COMMIT_TIMEOUT`] ends the session (the broker is likely gone): the
    /// messages are read again and stored once by their stable id.
    async fn stored(
        &self,
        consumer: &Arc<KafkaConsumer>,
        committed: &mut Offsets,
        count: usize,
        position: Option<Offsets>,
    ) -> Result<(), Failure> {
        let Some(offsets) = position else {
            return Ok(());
        };
        let to_commit = offsets.clone();
        let commit = blocking(consumer, move |c| client::commit(c, &to_commit));
        match tokio::time::timeout(COMMIT_TIMEOUT, commit).await {
            Ok(Ok(())) => {}
            // The messages are read again (by this or another group member) and stored
            // once by their stable id.
            Ok(Err(e)) => {
                tracing::warn!(source_id = %self.id, error = %e, "kafka offsets not committed");
            }
            Err(_) => {
                return Err(Failure::Transient(format!(
                    "the Kafka cluster at {} did not answer an offset commit within {COMMIT_TIMEOUT:?}",
                    self.settings.connection.brokers
                )));
            }
        }
        committed.extend(offsets);
        ::metrics::counter!(estafeta_core::metric_names::SOURCE_EVENTS, "source" => self.id.clone())
            .increment(count as u64);
        let now = Utc::now();
        let position = client::position_text(committed);
        self.board.update(&self.id, |s| {
            s.events += count as u64;
            if count > 0 {
                s.last_event_at = Some(now);
            }
            s.position = position;
        });
        Ok(())
    }
}

fn sink_failure(e: &crate::sink::SinkError) -> Failure {
    Failure::Transient(format!(
        "the event log could not store the messages: {}",
        error_chain(e)
    ))
}

/// Runs a blocking librdkafka call off the async runtime.
async fn blocking<T: Send + 'static>(
    consumer: &Arc<KafkaConsumer>,
    f: impl FnOnce(&KafkaConsumer) -> Result<T, rdkafka::error::KafkaError> + Send + 'static,
) -> Result<T, String> {
    let c = Arc::clone(consumer);
    match tokio::task::spawn_blocking(move || f(&c)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(e) => Err(e.to_string()),
    }
}
