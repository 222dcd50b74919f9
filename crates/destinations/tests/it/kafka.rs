//! The Kafka destination against a real Kafka-protocol broker (tansu, one per test, see
//! `estafeta_testkit::Tansu`): a delivery succeeds once the broker acknowledged it and the
//! message is then readable with its key, value and headers (structured and binary mode);
//! one key stays on one partition; templated topics; an unreachable broker is retryable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use estafeta_config::kafka_connection::KafkaConnection;
use estafeta_config::kafka_destination::{Compression, KafkaDestinationSettings, KafkaMode};
use estafeta_core::{DeliveryId, Destination, Event, OutboundMessage};
use estafeta_destinations::Kafka;
use estafeta_testkit::Tansu;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn settings(brokers: &str, topic: &str, mode: KafkaMode) -> KafkaDestinationSettings {
    KafkaDestinationSettings {
        id: "bus".into(),
        connection: KafkaConnection {
            brokers: brokers.into(),
            tls: false,
            ca_file: None,
            sasl: None,
        },
        topic: topic.into(),
        key: None,
        mode,
        compression: Compression::Gzip,
        timeout: Duration::from_secs(10),
        batch: None,
    }
}

fn msg(ty: &str, key: &str, n: u32) -> OutboundMessage {
    let ce = serde_json::json!({"specversion": "1.0", "id": format!("e{n}"), "source": "/shop",
        "type": ty, "partitionkey": key, "data": {"n": n}});
    let event: Event =
        estafeta_core::event::parse_cloudevent(ce, &Default::default(), "http", chrono::Utc::now())
            .unwrap();
    let body = serde_json::to_vec(&event.to_cloudevent()).unwrap();
    OutboundMessage {
        delivery_id: DeliveryId::new(),
        event: Arc::new(event),
        body: Bytes::from(body),
        content_type: "application/cloudevents+json",
        attempt: 1,
    }
}

/// Creates `topic` with `partitions` partitions.
pub(crate) async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// A consumer of `topic` from its beginning, in a group of its own.
pub(crate) fn consumer(brokers: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// What a test checks of one consumed message.
#[derive(Debug)]
pub(crate) struct Got {
    pub(crate) partition: i32,
    pub(crate) key: Option<String>,
    pub(crate) value: Vec<u8>,
    pub(crate) headers: Vec<(String, String)>,
}

impl Got {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn got(m: &BorrowedMessage<'_>) -> Got {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Got {
        partition: m.partition(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        value: m.payload().unwrap_or_default().to_vec(),
        headers,
    }
}

/// Reads `n` messages (or fails after 30 s).
pub(crate) async fn read(c: &StreamConsumer, n: usize) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "read {} of {n} messages: {out:?}",
            out.len()
        );
        if let Ok(m) = tokio::time::timeout(left, c.recv()).await {
            out.push(got(&m.unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn acknowledged_messages_are_readable_with_key_value_and_headers() {
    let Some(tansu) = Tansu::start().await else {
        return;
    };
    let topic = unique("orders");
    create_topic(&tansu.brokers(), &topic, 3).await;
    let kafka = Kafka::new(&settings(&tansu.brokers(), &topic, KafkaMode::Structured)).unwrap();
    let mut sent = Vec::new();
    for n in 0..6 {
        let key = if n % 2 == 0 {
            "customer-7"
        } else {
            "customer-9"
        };
        let m = msg("order.created", key, n);
        let ok = kafka.send(&m).await.unwrap();
        assert!(
            ok.response_excerpt
                .unwrap()
                .starts_with(&format!("{topic}["))
        );
        sent.push(m);
    }
    let got = read(&consumer(&tansu.brokers(), &topic), 6).await;
    for m in &sent {
        let delivery = m.delivery_id.to_string();
        let g = got
            .iter()
            .find(|g| g.header("X-Estafeta-Delivery") == Some(delivery.as_str()))
            .unwrap_or_else(|| panic!("delivery {delivery} not read: {got:?}"));
        assert_eq!(g.value, m.body.to_vec());
        assert_eq!(g.key.as_deref(), m.event.key.as_deref());
        assert_eq!(
            g.header("content-type"),
            Some("application/cloudevents+json")
        );
    }
    // One key, one partition — and the order of that key's events is kept.
    for key in ["customer-7", "customer-9"] {
        let of_key: Vec<&Got> = got
            .iter()
            .filter(|g| g.key.as_deref() == Some(key))
            .collect();
        assert_eq!(of_key.len(), 3);
        assert!(of_key.iter().all(|g| g.partition == of_key[0].partition));
        let ns: Vec<u64> = of_key
            .iter()
            .map(|g| {
                serde_json::from_slice::<serde_json::Value>(&g.value).unwrap()["data"]["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(ns, sorted, "order of key {key}");
    }
}

#[tokio::test]
async fn binary_mode_puts_data_in_the_value_and_attributes_in_ce_headers() {
    let Some(tansu) = Tansu::start().await else {
        return;
    };
    let topic = unique("binary");
    create_topic(&tansu.brokers(), &topic, 1).await;
    let kafka = Kafka::new(&settings(&tansu.brokers(), &topic, KafkaMode::Binary)).unwrap();
    let m = msg("order.paid", "customer-7", 42);
    kafka.send(&m).await.unwrap();
    let got = read(&consumer(&tansu.brokers(), &topic), 1).await;
    let g = &got[0];
    assert_eq!(g.value, b"{\"n\":42}");
    assert_eq!(g.key.as_deref(), Some("customer-7"));
    assert_eq!(g.header("ce_specversion"), Some("1.0"));
    assert_eq!(g.header("ce_id"), Some("e42"));
    assert_eq!(g.header("ce_type"), Some("order.paid"));
    assert_eq!(g.header("ce_source"), Some("/shop"));
    assert_eq!(g.header("content-type"), Some("application/json"));
    assert!(g.header("ce_time").is_some());
}

#[tokio::test]
async fn a_templated_topic_is_rendered_per_event() {
    let Some(tansu) = Tansu::start().await else {
        return;
    };
    let prefix = unique("shop");
    let topic = format!("{prefix}.order.refunded");
    create_topic(&tansu.brokers(), &topic, 1).await;
    let template = format!("{prefix}.{{{{ type }}}}");
    let kafka = Kafka::new(&settings(
        &tansu.brokers(),
        &template,
        KafkaMode::Structured,
    ))
    .unwrap();
    kafka.send(&msg("order.refunded", "k", 1)).await.unwrap();
    let got = read(&consumer(&tansu.brokers(), &topic), 1).await;
    assert_eq!(got.len(), 1);

    // A rendered name Kafka would refuse is a final error, before anything is sent.
    let err = kafka
        .send(&msg("order refunded!", "k", 2))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.message.contains("not a Kafka topic name"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_a_retryable_failure() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut s = settings(
        &format!("127.0.0.1:{port}"),
        "orders",
        KafkaMode::Structured,
    );
    s.timeout = Duration::from_secs(2);
    let kafka = Kafka::new(&s).unwrap();
    let started = Instant::now();
    let err = kafka.send(&msg("order.created", "k", 1)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_topic_that_does_not_exist_is_created_by_tansu_on_first_write() {
    // Like Apache Kafka with `auto.create.topics.enable` on (its default). When it is off
    // the delivery fails with a final error naming the topic (see the unit test of the
    // classification and docs/destinations/kafka.md).
    let Some(tansu) = Tansu::start().await else {
        return;
    };
    let topic = unique("unknown");
    let kafka = Kafka::new(&settings(&tansu.brokers(), &topic, KafkaMode::Structured)).unwrap();
    kafka.send(&msg("order.created", "k", 1)).await.unwrap();
    assert_eq!(read(&consumer(&tansu.brokers(), &topic), 1).await.len(), 1);
}

#[tokio::test]
async fn a_batch_is_produced_at_once_and_acknowledged_together() {
    let Some(tansu) = Tansu::start().await else {
        return;
    };
    let topic = unique("batch");
    create_topic(&tansu.brokers(), &topic, 2).await;
    let mut s = settings(&tansu.brokers(), &topic, KafkaMode::Structured);
    s.batch = Some((200, Duration::from_millis(5)));
    let kafka = Kafka::new(&s).unwrap();
    assert_eq!(kafka.max_batch(), 200);
    let batch: Vec<OutboundMessage> = (0..50).map(|n| msg("order.created", "k", n)).collect();
    let ok = kafka.send_batch(&batch).await.unwrap();
    assert_eq!(
        ok.response_excerpt.as_deref(),
        Some("50 messages acknowledged")
    );
    let got = read(&consumer(&tansu.brokers(), &topic), 50).await;
    // One key: one partition, in the batch's order.
    let ids: Vec<String> = got
        .iter()
        .map(|g| g.header("X-Estafeta-Delivery").unwrap().to_owned())
        .collect();
    let sent: Vec<String> = batch.iter().map(|m| m.delivery_id.to_string()).collect();
    assert_eq!(ids, sent);

    // A batch to a broker nobody runs fails as a whole, and may be retried.
    let mut s = settings("127.0.0.1:1", &topic, KafkaMode::Structured);
    s.batch = Some((200, Duration::from_millis(5)));
    s.timeout = Duration::from_secs(1);
    let err = Kafka::new(&s)
        .unwrap()
        .send_batch(&batch[..3])
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}
