//! NATS end to end: events posted to the real binary are routed to a `kind: nats`
//! destination and land, acknowledged and de-duplicated by delivery id, in a JetStream stream
//! of the local server (`ESTAFETA_NATS_URL`, default `nats://127.0.0.1:4222`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde_json::json;

use crate::server::{Server, event};

const T: Duration = Duration::from_secs(60);

fn url() -> String {
    std::env::var("ESTAFETA_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_events_land_in_a_jetstream_stream() {
    let prefix = format!(
        "este2e{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let js = jetstream::new(async_nats::connect(url()).await.unwrap());
    let stream = js
        .create_stream(stream::Config {
            name: prefix.to_uppercase(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"routes:
  - id: orders
    match: "order.*"
    to:
      - destination: bus
destinations:
  - id: bus
    kind: nats
    url: {url}
    subject: "{prefix}.{{{{ type }}}}.{{{{ data.id }}}}"
    timeout: 5s
"#,
        url = url()
    );
    let s = Server::start(dir.path(), &cfg).await;
    for i in 1..=3 {
        let r = s
            .post_event(&event(&format!("o-{i}"), "order.created", json!({"id": i})))
            .await;
        assert!(r.status().is_success(), "{}", r.status());
    }
    let delivered = s
        .wait_json("/v1/deliveries?status=delivered", T, |v| {
            v["items"].as_array().unwrap().len() == 3
        })
        .await;
    let delivery_ids: Vec<String> = delivered["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();

    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = batch.next().await {
        got.push(m.unwrap());
    }
    assert_eq!(got.len(), 3);
    let mut subjects: Vec<String> = got.iter().map(|m| m.subject.to_string()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        (1..=3)
            .map(|i| format!("{prefix}.order.created.{i}"))
            .collect::<Vec<_>>()
    );
    for m in &got {
        let h = m.headers.as_ref().unwrap();
        assert_eq!(h.get("ce-type").unwrap().as_str(), "order.created");
        let dlv = h.get("X-Estafeta-Delivery").unwrap().as_str();
        assert!(delivery_ids.iter().any(|d| d == dlv), "{dlv} not delivered");
        assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), dlv);
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body["type"], "order.created");
    }
    js.delete_stream(prefix.to_uppercase()).await.unwrap();
    s.terminate().await;
}
