//! What every broker source (Kafka, NATS, AMQP, MQTT) shares: a [`Message`] as the broker
//! handed it over, the [`Decoder`] that turns it into an event — or, when it cannot, into a
//! failed record (an `estafeta.message.undecodable` event with the reason) — and the lag
//! report.
//!
//! The at-least-once rule for broker sources: every message becomes an event (undecodable
//! ones too), the events are appended through the pipeline, and a message is acknowledged
//! upstream only after the append that holds it is durable. So nothing is skipped in silence
//! and nothing is acknowledged before it is on disk.

mod cloudevents;
mod debezium;
mod decode;
mod undecodable;

use chrono::{DateTime, Utc};

pub(crate) use decode::Decoder;

use crate::status::StatusBoard;

/// The event type of a failed record: a message a broker source could not decode.
pub const UNDECODABLE_TYPE: &str = "estafeta.message.undecodable";

/// One message as the broker handed it over.
#[derive(Debug, Clone)]
pub(crate) struct Message<'a> {
    /// The bytes.
    pub(crate) payload: &'a [u8],
    /// Headers (Kafka, NATS, AMQP headers; MQTT 5 user properties), in order.
    pub(crate) headers: Vec<(&'a str, &'a [u8])>,
    /// The message key (Kafka), if any.
    pub(crate) key: Option<&'a [u8]>,
    /// The topic, subject or routing key the message came on.
    pub(crate) channel: &'a str,
    /// Where the message sits upstream, as text for people (e.g. `orders[0]@42`).
    pub(crate) position: String,
    /// An id the broker repeats when it delivers the message again (Kafka topic, partition
    /// and offset; NATS stream sequence; AMQP `message-id`). It becomes the CloudEvents id of
    /// messages that carry none, so a redelivered message is stored once.
    pub(crate) stable_id: Option<String>,
    /// The broker's timestamp, if it gives one.
    pub(crate) timestamp: Option<DateTime<Utc>>,
}

/// Reports how many messages wait upstream: the status board's `lag` and the
/// `estafeta_source_lag_messages` gauge.
pub(crate) fn report_lag(board: &StatusBoard, source_id: &str, lag: u64) {
    #[allow(clippy::cast_precision_loss)] // a gauge; exact up to 2^53 messages
    ::metrics::gauge!(estafeta_core::metric_names::SOURCE_LAG, "source" => source_id.to_owned())
        .set(lag as f64);
    board.update(source_id, |s| s.lag = Some(lag));
}
