//! The NATS destination against the local server with JetStream (`ESTAFETA_NATS_URL`,
//! default `nats://127.0.0.1:4222`): acknowledged publishes with their headers, JetStream
//! de-duplication by delivery id, core publishes, and the final error when no stream stores
//! the subject. Each test makes its own stream and subjects.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use estafeta_config::nats_destination::{NatsAuth, NatsSettings};
use estafeta_core::{DeliveryId, Destination, Event, OutboundMessage};
use estafeta_destinations::Nats;
use futures::StreamExt;

fn url() -> String {
    std::env::var("ESTAFETA_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn unique() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

fn settings(subject: &str, jetstream: bool) -> NatsSettings {
    NatsSettings {
        id: "bus".into(),
        url: url(),
        subject: subject.into(),
        jetstream,
        auth: NatsAuth::None,
        timeout: Duration::from_secs(5),
        batch: None,
    }
}

fn msg(delivery_id: DeliveryId) -> OutboundMessage {
    let ce = serde_json::json!({"specversion": "1.0", "id": "e1", "source": "/shop",
        "type": "order.created", "data": {"id": 77}});
    let event: Event =
        estafeta_core::event::parse_cloudevent(ce, &Default::default(), "http", chrono::Utc::now())
            .unwrap();
    OutboundMessage {
        delivery_id,
        event: Arc::new(event),
        body: Bytes::from_static(b"{\"id\":77}"),
        content_type: "application/json",
        attempt: 1,
    }
}

/// A stream named after `prefix` storing `prefix.>`.
async fn stream_for(prefix: &str) -> (jetstream::Context, stream::Stream) {
    let client = async_nats::connect(url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = js
        .create_stream(stream::Config {
            name: prefix.to_uppercase(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    (js, stream)
}

async fn read_all(stream: &stream::Stream, expected: usize) -> Vec<jetstream::Message> {
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(expected + 1)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        out.push(m.unwrap());
    }
    out
}

#[tokio::test]
async fn publishes_with_acknowledgement_headers_and_deduplication() {
    let prefix = format!("estit{}", unique());
    let (js, stream) = stream_for(&prefix).await;
    let nats = Nats::new(&settings(&format!("{prefix}.{{{{ type }}}}"), true)).unwrap();

    let id = DeliveryId::new();
    let ok = nats.send(&msg(id)).await.unwrap();
    assert!(ok.response_excerpt.unwrap().contains("seq 1"));
    // The same delivery again (a retry after a lost answer) is stored once.
    let again = nats.send(&msg(id)).await.unwrap();
    assert!(again.response_excerpt.unwrap().contains("duplicate"));
    nats.send(&msg(DeliveryId::new())).await.unwrap();

    let messages = read_all(&stream, 3).await;
    assert_eq!(messages.len(), 2, "the duplicate was stored");
    let first = &messages[0];
    assert_eq!(first.subject.as_str(), format!("{prefix}.order.created"));
    assert_eq!(first.payload.as_ref(), b"{\"id\":77}");
    let h = first.headers.as_ref().unwrap();
    assert_eq!(h.get("ce-type").unwrap().as_str(), "order.created");
    assert_eq!(h.get("ce-id").unwrap().as_str(), "e1");
    assert_eq!(h.get("content-type").unwrap().as_str(), "application/json");
    assert_eq!(
        h.get("X-Estafeta-Delivery").unwrap().as_str(),
        id.to_string()
    );
    assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), id.to_string());
    js.delete_stream(prefix.to_uppercase()).await.unwrap();
}

#[tokio::test]
async fn no_stream_for_the_subject_is_a_final_error_naming_it() {
    let subject = format!("estit{}.nowhere", unique());
    let nats = Nats::new(&settings(&subject, true)).unwrap();
    let err = nats.send(&msg(DeliveryId::new())).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.message.contains(&subject), "{}", err.message);
}

#[tokio::test]
async fn core_publish_reaches_subscribers_without_a_stream() {
    let subject = format!("estit{}.core", unique());
    let client = async_nats::connect(url()).await.unwrap();
    let mut sub = client.subscribe(subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    let nats = Nats::new(&settings(&subject, false)).unwrap();
    let id = DeliveryId::new();
    nats.send(&msg(id)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.payload.as_ref(), b"{\"id\":77}");
    let h = got.headers.unwrap();
    assert_eq!(
        h.get("X-Estafeta-Delivery").unwrap().as_str(),
        id.to_string()
    );
    assert!(h.get("Nats-Msg-Id").is_none());
}

#[tokio::test]
async fn a_subject_that_renders_invalid_is_final_and_an_unreachable_server_retryable() {
    let nats = Nats::new(&settings("orders.{{ data.missing }}", true)).unwrap();
    let err = nats.send(&msg(DeliveryId::new())).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");

    let mut s = settings("orders.x", true);
    s.url = "nats://127.0.0.1:1".into();
    s.timeout = Duration::from_millis(500);
    let err = Nats::new(&s)
        .unwrap()
        .send(&msg(DeliveryId::new()))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_batch_is_published_at_once_acknowledged_together_and_deduplicated_on_retry() {
    let prefix = format!("estit{}", unique());
    let (js, stream) = stream_for(&prefix).await;
    let mut s = settings(&format!("{prefix}.{{{{ type }}}}"), true);
    s.batch = Some((100, Duration::from_millis(5)));
    let nats = Nats::new(&s).unwrap();
    assert_eq!(nats.max_batch(), 100);
    let batch: Vec<OutboundMessage> = (0..5).map(|_| msg(DeliveryId::new())).collect();
    let ok = nats.send_batch(&batch).await.unwrap();
    assert!(ok.response_excerpt.unwrap().starts_with("5 messages"));
    // The whole batch again (its outcome was lost): every message is a duplicate.
    let again = nats.send_batch(&batch).await.unwrap();
    assert!(again.response_excerpt.unwrap().contains("(5 duplicates)"));
    let stored = read_all(&stream, 10).await;
    let ids: Vec<String> = stored
        .iter()
        .map(|m| {
            m.headers
                .as_ref()
                .unwrap()
                .get("Nats-Msg-Id")
                .unwrap()
                .as_str()
                .to_owned()
        })
        .collect();
    let sent: Vec<String> = batch.iter().map(|m| m.delivery_id.to_string()).collect();
    assert_eq!(ids, sent, "each delivery once, in order");
    js.delete_stream(prefix.to_uppercase()).await.unwrap();

    // No stream for the subject: the batch fails as a whole, finally.
    let mut s = settings(&format!("estit{}.nowhere", unique()), true);
    s.batch = Some((100, Duration::from_millis(5)));
    let err = Nats::new(&s).unwrap().send_batch(&batch).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}
