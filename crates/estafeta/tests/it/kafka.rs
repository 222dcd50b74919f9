//! Kafka end to end with the real binary and a real Kafka-protocol broker (tansu, one per
//! test): offsets are committed only after storing, so a `kill -9` in the middle of a topic
//! loses nothing and stores nothing twice; routed events are produced to a topic; and
//! `examples/kafka-debezium-to-webhook` turns Debezium change events into signed webhooks.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use estafeta_testkit::{Tansu, WebhookReceiver};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::server::{Server, WHSEC, event};

const T: Duration = Duration::from_secs(120);

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for r in admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "20")
        .create()
        .unwrap()
}

/// Produces `(key, value)` pairs, all in flight at once.
async fn produce_all(p: &FutureProducer, topic: &str, messages: &[(String, String)]) {
    let sends = messages.iter().map(|(k, v)| {
        p.send(
            FutureRecord::to(topic).key(k.as_str()).payload(v.as_str()),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
}

/// Every event of `source` in the log, following the pages.
async fn logged(s: &Server, source: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(c) => format!("/v1/events?source={source}&limit=1000&cursor={c}"),
            None => format!("/v1/events?source={source}&limit=1000"),
        };
        let page = s.get_json(&path).await;
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(c) => next = Some(c.to_owned()),
            None => return all,
        }
    }
}

fn source_config(brokers: &str, topic: &str) -> String {
    format!(
        "sources:\n  - id: orders-in\n    kind: kafka\n    brokers: \"{brokers}\"\n    topics: [{topic}]\n    batch_size: 25\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_consuming_then_restart_stores_every_message_once() {
    let Some(tansu) = Tansu::start().await else {
        return;
    };
    const N: usize = 20_000;
    let topic = "orders";
    create_topic(&tansu.brokers(), topic, 3).await;
    let messages: Vec<(String, String)> = (0..N)
        .map(|n| (format!("c{}", n % 17), json!({"n": n}).to_string()))
        .collect();
    produce_all(&producer(&tansu.brokers()), topic, &messages).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = source_config(&tansu.brokers(), topic);
    let s = Server::start(dir.path(), &cfg).await;
    let before = s
        .wait_json("/v1/sources/orders-in", T, |v| {
            v["events"].as_u64().unwrap_or(0) >= 500
        })
        .await;
    s.kill9().await;
    let stored_before = before["events"].as_u64().unwrap();
    assert!(
        stored_before < N as u64,
        "the source finished before the kill ({stored_before} stored): make the topic longer"
    );

    let s = Server::start(dir.path(), &cfg).await;
    let status = s
        .wait_json("/v1/sources/orders-in", T, |v| {
            v["state"] == "running" && v["position"].is_string()
        })
        .await;
    assert!(status["position"].as_str().is_some(), "{status}");
    // Waits for the log itself: tansu's watermarks can read low, so `lag: 0` alone does
    // not mean every message was read yet.
    let deadline = tokio::time::Instant::now() + T;
    let (ns, distinct) = loop {
        let ns: Vec<u64> = logged(&s, "orders-in")
            .await
            .iter()
            .map(|e| e["data"]["n"].as_u64().unwrap())
            .collect();
        let distinct: HashSet<u64> = ns.iter().copied().collect();
        if distinct.len() == N || tokio::time::Instant::now() > deadline {
            break (ns, distinct);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(distinct.len(), N, "messages lost");
    assert_eq!(ns.len(), N, "a message stored twice");
    let ready = s.req(reqwest::Method::GET, "/readyz").send().await.unwrap();
    assert!(ready.status().is_success(), "{}", ready.status());
    s.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_events_are_produced_to_a_topic_in_binary_mode() {
    let Some(tansu) = Tansu::start().await else {
        return;
    };
    create_topic(&tansu.brokers(), "shop.order.created", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"routes:
  - id: orders
    match: "order.*"
    to:
      - destination: bus
destinations:
  - id: bus
    kind: kafka
    brokers: "{brokers}"
    topic: "shop.{{{{ type }}}}"
    mode: binary
    compression: zstd
    timeout: 10s
"#,
        brokers = tansu.brokers()
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
    let ids: HashSet<String> = delivered["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", tansu.brokers())
        .set("group.id", "e2e-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["shop.order.created"]).unwrap();
    let mut seen = HashSet::new();
    while seen.len() < 3 {
        let m = tokio::time::timeout(T, c.recv()).await.unwrap().unwrap();
        let headers = m.headers().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("ce_type").as_deref(), Some("order.created"));
        let delivery = header("X-Estafeta-Delivery").unwrap();
        assert!(ids.contains(&delivery), "{delivery} was not delivered");
        let data: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        seen.insert(data["id"].as_u64().unwrap());
    }
    s.terminate().await;
}

/// `examples/kafka-debezium-to-webhook`: Debezium change events on the inventory topics
/// reach the CRM (customer changes, in the CDC event shape) and fulfilment (new orders,
/// through the route's template).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_debezium_example_sends_changes_to_webhooks() {
    let Some(tansu) = Tansu::start().await else {
        return;
    };
    let brokers = tansu.brokers();
    create_topic(&brokers, "dbserver1.inventory.customers", 1).await;
    create_topic(&brokers, "dbserver1.inventory.orders", 1).await;
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/kafka-debezium-to-webhook/estafeta.yaml"),
    )
    .unwrap()
    // The example refuses private addresses; the receiver here is on loopback.
    .replace(
        "allow_private_networks: false",
        "allow_private_networks: true",
    );
    let cfg = dir.path().join("example.yaml");
    std::fs::write(&cfg, config).unwrap();
    let storage = format!("sqlite://{}/estafeta.db", dir.path().display());
    let s = Server::start_with_args(
        dir.path(),
        &cfg,
        &["--listen", "127.0.0.1:0", "--storage", &storage],
        &[
            ("KAFKA_BROKERS", brokers.as_str()),
            ("CRM_HOOK", format!("{}/crm", rx.url()).as_str()),
            (
                "FULFILMENT_HOOK",
                format!("{}/fulfilment", rx.url()).as_str(),
            ),
            ("ESTAFETA_SECRET_HOOKS_WHSEC", WHSEC),
        ],
    )
    .await;

    let source = |table: &str| {
        json!({"version": "2.7.0.Final", "connector": "mysql",
        "name": "dbserver1", "db": "inventory", "table": table, "ts_ms": 1_767_225_600_000_u64})
    };
    let customer_update = json!({
        "schema": {"type": "struct", "name": "dbserver1.inventory.customers.Envelope"},
        "payload": {
            "before": {"id": 1004, "email": "anne@example.com"},
            "after": {"id": 1004, "email": "anne.k@example.com"},
            "source": source("customers"), "op": "u", "ts_ms": 1_767_225_600_123_u64
        }
    });
    let new_order = json!({
        "before": null,
        "after": {"id": 10005, "purchaser": 1004, "quantity": 2},
        "source": source("orders"), "op": "c", "ts_ms": 1_767_225_601_000_u64
    });
    let p = producer(&brokers);
    produce_all(
        &p,
        "dbserver1.inventory.customers",
        &[(json!({"id": 1004}).to_string(), customer_update.to_string())],
    )
    .await;
    produce_all(
        &p,
        "dbserver1.inventory.orders",
        &[(json!({"id": 10005}).to_string(), new_order.to_string())],
    )
    .await;

    assert!(rx.wait_for_count(2, T).await, "{}", s.logs());
    assert_eq!(rx.bad_signatures(), 0);
    let reqs = rx.requests();
    let find = |suffix: &str| {
        reqs.iter()
            .find(|r| r.uri.path().ends_with(suffix))
            .and_then(|r| r.json())
            .unwrap_or_else(|| panic!("no JSON request to {suffix}"))
    };
    let crm = find("/crm");
    assert_eq!(crm["type"], "customers.update");
    assert_eq!(crm["subject"], "1004");
    assert_eq!(crm["data"]["op"], "update");
    assert_eq!(crm["data"]["before"]["email"], "anne@example.com");
    assert_eq!(crm["data"]["after"]["email"], "anne.k@example.com");
    assert_eq!(
        find("/fulfilment"),
        json!({"order": 10005, "customer": 1004, "quantity": 2})
    );
    s.terminate().await;
}
