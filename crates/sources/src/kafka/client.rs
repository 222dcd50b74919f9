//! The consumer side of the Kafka source: the librdkafka consumer with its settings, the
//! context that notices when every broker is unreachable, offset commits and the lag.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use estafeta_config::kafka_source::{KafkaSourceSettings, StartPosition};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Next offset to read, per (topic, partition).
pub(super) type Offsets = BTreeMap<(String, i32), i64>;

/// Notices that the consumer lost every broker, so the session can end and be retried
/// (status `reconnecting`, the reconnect counter) instead of waiting in silence.
#[derive(Default)]
pub(super) struct Context {
    pub(super) all_brokers_down: AtomicBool,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.all_brokers_down.store(true, Ordering::SeqCst);
        }
        tracing::debug!(error = %error, reason = %reason, "kafka client error");
    }
}

impl ConsumerContext for Context {}

pub(super) type KafkaConsumer = StreamConsumer<Context>;

/// A consumer of the source's topics in its group: offsets are committed by the source
/// itself, never automatically.
pub(super) fn consumer(s: &KafkaSourceSettings) -> Result<Arc<KafkaConsumer>, KafkaError> {
    let reset = match s.start {
        StartPosition::Latest => "latest",
        StartPosition::Earliest | StartPosition::Timestamp(_) => "earliest",
    };
    let consumer: KafkaConsumer =
        estafeta_destinations::kafka::client_config(&s.connection, &format!("estafeta-{}", s.id))
            .set("group.id", &s.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset)
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .set("topic.metadata.refresh.interval.ms", "10000")
            .create_with_context(Context::default())?;
    let names = s.subscription.names();
    let topics: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(Arc::new(consumer))
}

/// Commits `offsets` (the next offset to read per partition). Blocking: run off the runtime.
pub(super) fn commit(consumer: &KafkaConsumer, offsets: &Offsets) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for ((topic, partition), next) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)
}

/// Messages waiting: high watermark minus the group's committed offset (the low watermark
/// where none is committed), summed over the assigned partitions; `None` while no partition
/// is assigned or the cluster does not answer. Blocking: run off the runtime.
pub(super) fn lag(consumer: &KafkaConsumer) -> Option<u64> {
    let assignment = consumer.assignment().ok()?;
    if assignment.count() == 0 {
        return None;
    }
    let committed = consumer
        .committed_offsets(assignment, Duration::from_secs(2))
        .ok()?;
    let mut total = 0u64;
    for e in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
            .ok()?;
        let from = match e.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        total += u64::try_from(high - from).unwrap_or(0);
    }
    Some(total)
}

/// A metadata request: the cluster answers. Blocking: run off the runtime.
pub(super) fn reachable(consumer: &KafkaConsumer) -> Result<(), KafkaError> {
    consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map(|_| ())
}

/// `topic[partition]@offset` for people.
pub(super) fn position_text(offsets: &Offsets) -> Option<String> {
    if offsets.is_empty() {
        return None;
    }
    Some(
        offsets
            .iter()
            .map(|((t, p), next)| format!("{t}[{p}]@{}", next - 1))
            .collect::<Vec<_>>()
            .join(","),
    )
}
