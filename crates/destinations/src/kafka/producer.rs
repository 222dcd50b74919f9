//! `impl Destination for Kafka`: an idempotent, `acks=all` producer; a delivery succeeds when
//! the cluster acknowledged the message, and failures are classified retryable or final.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use estafeta_config::kafka_connection::is_topic_name;
use estafeta_config::kafka_destination::{
    KafkaDestinationSettings, KafkaMode, key_template_name, topic_template_name,
};
use estafeta_core::template::TemplateSet;
use estafeta_core::{Destination, OutboundMessage, SendError, SendOk};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use super::binding;
use crate::build_error::BuildError;

/// Grace on top of the delivery timeout before the send is abandoned locally.
const LOCAL_GRACE: Duration = Duration::from_secs(5);

/// A Kafka topic (fixed or rendered per event), written by an idempotent producer.
pub struct Kafka {
    settings: KafkaDestinationSettings,
    templates: TemplateSet,
    topic_name: Option<String>,
    key_name: Option<String>,
    /// Replaced when librdkafka reports a fatal error (an idempotent producer that lost its
    /// sequence cannot go on).
    producer: Mutex<Arc<FutureProducer>>,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("id", &self.settings.id)
            .field("brokers", &self.settings.connection.brokers)
            .field("topic", &self.settings.topic)
            .finish_non_exhaustive()
    }
}

impl Kafka {
    /// Builds the destination and its producer (which connects in the background).
    ///
    /// # Errors
    /// A template that does not compile, or settings librdkafka refuses.
    pub fn new(settings: &KafkaDestinationSettings) -> Result<Self, BuildError> {
        let id = &settings.id;
        let mut templates = TemplateSet::new();
        let template_error = |field: &str, e: &dyn std::fmt::Display| BuildError::Template {
            id: id.clone(),
            message: format!("{field}: {e}"),
        };
        let topic_name = if settings.topic.contains("{{") || settings.topic.contains("{%") {
            let name = topic_template_name(id);
            templates
                .add(&name, &settings.topic)
                .map_err(|e| template_error("topic", &e))?;
            Some(name)
        } else {
            None
        };
        let key_name = match &settings.key {
            Some(source) => {
                let name = key_template_name(id);
                templates
                    .add(&name, source)
                    .map_err(|e| template_error("key", &e))?;
                Some(name)
            }
            None => None,
        };
        let producer = build_producer(settings)?;
        Ok(Self {
            settings: settings.clone(),
            templates,
            topic_name,
            key_name,
            producer: Mutex::new(Arc::new(producer)),
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        Arc::clone(&self.producer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// After a failure: a producer in a fatal state is replaced by a new one.
    fn renew_if_fatal(&self, used: &Arc<FutureProducer>) {
        let Some((code, _reason)) = used.client().fatal_error() else {
            return;
        };
        tracing::warn!(dest_id = %self.settings.id, code = ?code, "kafka producer fatal error, renewing the producer");
        match build_producer(&self.settings) {
            Ok(fresh) => {
                let mut slot = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
                if Arc::ptr_eq(&slot, used) {
                    *slot = Arc::new(fresh);
                }
            }
            Err(err) => {
                tracing::warn!(dest_id = %self.settings.id, error = %err, "kafka producer cannot be renewed");
            }
        }
    }

    fn topic(&self, msg: &OutboundMessage) -> Result<String, SendError> {
        let Some(name) = &self.topic_name else {
            return Ok(self.settings.topic.clone());
        };
        let topic = self
            .templates
            .render(name, &msg.event, &[])
            .map_err(|e| SendError::final_error(format!("cannot render the topic: {e}")))?;
        let topic = topic.trim().to_owned();
        if !is_topic_name(&topic) {
            return Err(SendError::final_error(format!(
                "the topic rendered to `{topic}`, which is not a Kafka topic name (1 to 249 letters, digits, `.`, `_` or `-`)"
            )));
        }
        Ok(topic)
    }

    fn key(&self, msg: &OutboundMessage) -> Result<Option<String>, SendError> {
        let key = match &self.key_name {
            Some(name) => self
                .templates
                .render(name, &msg.event, &[])
                .map_err(|e| SendError::final_error(format!("cannot render the key: {e}")))?,
            None => msg.event.key.clone().unwrap_or_default(),
        };
        Ok((!key.is_empty()).then_some(key))
    }
}

fn build_producer(settings: &KafkaDestinationSettings) -> Result<FutureProducer, BuildError> {
    let timeout_ms = settings.timeout.as_millis().to_string();
    let request_timeout_ms = settings
        .timeout
        .min(Duration::from_secs(30))
        .as_millis()
        .to_string();
    super::client_config(&settings.connection, "estafeta")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.codec", settings.compression.codec())
        .set("message.timeout.ms", &timeout_ms)
        .set("request.timeout.ms", &request_timeout_ms)
        .set("linger.ms", "5")
        .create()
        .map_err(|source| BuildError::Kafka {
            id: settings.id.clone(),
            source: Box::new(source),
        })
}

/// The cluster's refusal, retryable or final.
fn classify(topic: &str, e: KafkaError) -> SendError {
    use RDKafkaErrorCode as C;
    let final_error = |m: String| SendError::final_error(m);
    let err = match e.rdkafka_error_code() {
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownTopicId) => {
            final_error(format!(
                "topic `{topic}` does not exist and the cluster did not create it: create the topic (or enable auto.create.topics.enable on the brokers)"
            ))
        }
        Some(C::InvalidTopic) => {
            final_error(format!("the cluster refuses `{topic}` as a topic name"))
        }
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge) => {
            final_error(format!(
                "the message for `{topic}` is larger than the cluster accepts (message.max.bytes / max.message.bytes)"
            ))
        }
        Some(C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) => final_error(format!(
            "the cluster does not allow writing to `{topic}` (ACLs)"
        )),
        Some(C::SaslAuthenticationFailed | C::Authentication) => {
            final_error("the cluster refused the SASL credentials".to_owned())
        }
        Some(C::InvalidRecord | C::InvalidMessage | C::InvalidTimestamp) => final_error(format!(
            "the cluster refused the message for `{topic}` as invalid"
        )),
        Some(C::MessageTimedOut) => SendError::retryable(format!(
            "the message for `{topic}` was not acknowledged in time (are the brokers reachable?)"
        )),
        _ => SendError::retryable(format!("the message for `{topic}` was not delivered")),
    };
    err.with_source(e)
}

#[async_trait::async_trait]
impl Destination for Kafka {
    fn id(&self) -> &str {
        &self.settings.id
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        let producer = self.producer();
        let started = Instant::now();
        let result = self
            .produce(&producer, msg)
            .await
            .map(|(topic, partition, offset)| SendOk {
                status_code: None,
                response_excerpt: Some(format!("{topic}[{partition}]@{offset}")),
            });
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => {
                tracing::debug!(dest_id = %self.settings.id, elapsed_ms, "kafka message delivered")
            }
            Err(err) => {
                tracing::debug!(dest_id = %self.settings.id, retryable = err.is_retryable(),
                elapsed_ms, error = %err, "kafka delivery failed")
            }
        }
        result
    }

    fn max_batch(&self) -> usize {
        self.settings.batch.map_or(1, |(max, _)| max.max(1))
    }

    fn batch_wait(&self) -> Duration {
        self.settings.batch.map_or(Duration::ZERO, |(_, wait)| wait)
    }

    /// Every message of the batch goes to the producer at once; the first final error, else
    /// the first retryable one, is the batch's outcome.
    async fn send_batch(&self, msgs: &[OutboundMessage]) -> Result<SendOk, SendError> {
        if let [one] = msgs {
            return self.send(one).await;
        }
        if self.settings.batch.is_none() {
            return Err(SendError::final_error(format!(
                "destination `{}` is not in batch mode: send one message at a time",
                self.settings.id
            )));
        }
        let producer = self.producer();
        let started = Instant::now();
        let results =
            futures::future::join_all(msgs.iter().map(|m| self.produce(&producer, m))).await;
        let mut retryable = None;
        let mut delivered = 0_usize;
        for r in results {
            match r {
                Ok(_) => delivered += 1,
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => retryable = retryable.or(Some(e)),
            }
        }
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(dest_id = %self.settings.id, messages = msgs.len(), delivered, elapsed_ms, "kafka batch produced");
        match retryable {
            Some(e) => Err(e),
            None => Ok(SendOk {
                status_code: None,
                response_excerpt: Some(format!("{delivered} messages acknowledged")),
            }),
        }
    }
}

impl Kafka {
    /// Produces one message and waits for the cluster's acknowledgement: its topic,
    /// partition and offset.
    async fn produce(
        &self,
        producer: &Arc<FutureProducer>,
        msg: &OutboundMessage,
    ) -> Result<(String, i32, i64), SendError> {
        let topic = self.topic(msg)?;
        let key = self.key(msg)?;
        let layout = match self.settings.mode {
            KafkaMode::Structured => binding::structured(msg),
            KafkaMode::Binary => binding::binary(msg).map_err(SendError::final_error)?,
        };
        let mut headers = OwnedHeaders::new_with_capacity(layout.headers.len());
        for (name, value) in &layout.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(value) = layout.value.as_deref() {
            record = record.payload(value);
        }
        if let Some(key) = key.as_deref() {
            record = record.key(key);
        }
        let sent = tokio::time::timeout(
            self.settings.timeout + LOCAL_GRACE,
            producer.send(record, Timeout::After(self.settings.timeout)),
        )
        .await;
        match sent {
            Ok(Ok(delivery)) => Ok((topic, delivery.partition, delivery.offset)),
            Ok(Err((e, _message))) => {
                self.renew_if_fatal(producer);
                Err(classify(&topic, e))
            }
            Err(_) => Err(SendError::retryable(format!(
                "the message for `{topic}` was not acknowledged within {:?}",
                self.settings.timeout + LOCAL_GRACE
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_topics_and_oversized_messages_are_final_timeouts_retryable() {
        let e = classify(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic),
        );
        assert!(!e.is_retryable());
        assert!(e.message.contains("`t`"));
        let e = classify(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert!(!e.is_retryable());
        let e = classify(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        );
        assert!(e.is_retryable());
        let e = classify(
            "t",
            KafkaError::MessageProduction(RDKafkaErrorCode::AllBrokersDown),
        );
        assert!(e.is_retryable());
    }
}
