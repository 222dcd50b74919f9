//! RabbitMQ end to end with the real binary and the local broker (`ESTAFETA_AMQP_URL`,
//! default `amqp://guest:guest@127.0.0.1:5672/%2f`): `kill -9` while consuming a queue loses
//! nothing and stores nothing twice, and the `examples/amqp-orders` pipeline routes urgent
//! orders to a webhook and republishes every order to an exchange. Each test uses its own
//! queue and exchange names.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use estafeta_testkit::WebhookReceiver;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};

use crate::server::{Server, WHSEC};

const T: Duration = Duration::from_secs(90);

fn url() -> String {
    std::env::var("ESTAFETA_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn unique() -> String {
    format!(
        "e2e{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The test's own connection, in confirm mode.
async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, channel)
}

async fn declare_queue(channel: &Channel, queue: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// Messages ready in `queue`.
async fn ready(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// Publishes a persistent JSON message to `queue` through the default exchange (confirmed
/// later, by `wait_for_confirms`).
async fn publish(channel: &Channel, queue: &str, body: &Value, message_id: &str) {
    let _confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.to_string().as_bytes(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(message_id.into())
                .with_content_type("application/json".into()),
        )
        .await
        .unwrap();
}

/// Every event of `source` in the log, through the API's pages.
async fn logged(s: &Server, source: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = s
            .get_json(&format!("/v1/events?source={source}&limit=1000{cursor}"))
            .await;
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_consuming_a_queue_stores_every_message_exactly_once() {
    const N: usize = 5000;
    let queue = format!("estafeta.{}", unique());
    let (_conn, ch) = channel().await;
    declare_queue(&ch, &queue).await;
    for i in 0..N {
        publish(&ch, &queue, &json!({"n": i}), &format!("m-{i}")).await;
    }
    assert!(ch.wait_for_confirms().await.unwrap().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "sources:\n  - id: q\n    kind: amqp\n    url: \"{}\"\n    queue: {queue}\n    prefetch: 20\n",
        url()
    );
    let s = Server::start(dir.path(), &cfg).await;
    // Kill once some messages are stored, while most still wait in the queue.
    let start = std::time::Instant::now();
    let stored_before = loop {
        let n = s.get_json("/v1/sources/q").await["events"]
            .as_u64()
            .unwrap_or(0);
        if n >= 100 {
            break n;
        }
        assert!(start.elapsed() < T, "the source stored nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    s.kill9().await;
    assert!(
        (stored_before as usize) < N,
        "the crash must interrupt consumption for the test to mean something"
    );

    let s = Server::start_with_file(dir.path(), &dir.path().join("estafeta.yaml")).await;
    let deadline = std::time::Instant::now() + T;
    loop {
        let drained = ready(&ch, &queue).await == 0;
        let status = s.get_json("/v1/sources/q").await;
        if drained && status["lag"] == 0 && logged(&s, "q").await.len() >= N {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not everything stored; status {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = logged(&s, "q").await;
    assert_eq!(events.len(), N, "each message stored exactly once");
    let ns: HashSet<i64> = events
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns.len(), N);
    s.terminate().await;
    // Everything was acknowledged: nothing comes back once the consumer is gone.
    assert_eq!(ready(&ch, &queue).await, 0);
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_amqp_orders_example_routes_urgent_orders_and_republishes_all() {
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    let u = unique();
    let (incoming, exchange, audit) = (
        format!("{u}.incoming"),
        format!("{u}.events"),
        format!("{u}.audit"),
    );
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/amqp-orders/estafeta.yaml"),
    )
    .unwrap()
    .replace("service-orders.", &format!("{u}."))
    .replace(
        "allow_private_networks: false",
        "allow_private_networks: true",
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("example.yaml");
    std::fs::write(&cfg, text).unwrap();
    let storage = format!("sqlite://{}/estafeta.db", dir.path().display());
    let s = Server::start_with_args(
        dir.path(),
        &cfg,
        &["--listen", "127.0.0.1:0", "--storage", &storage],
        &[
            ("AMQP_URL", url().as_str()),
            ("DISPATCH_HOOK", rx.url().as_str()),
            ("ESTAFETA_SECRET_HOOKS_WHSEC", WHSEC),
        ],
    )
    .await;
    s.wait_json("/v1/sources/service-orders", T, |v| v["state"] == "running")
        .await;

    let (_conn, ch) = channel().await;
    let ce = json!({"specversion": "1.0", "id": "so-1", "source": "/field-app",
        "type": "service_order.created",
        "data": {"id": 1, "site": "Porto Alegre", "priority": "urgent"}});
    publish(&ch, &incoming, &ce, "msg-1").await;
    publish(
        &ch,
        &incoming,
        &json!({"id": 2, "site": "Canoas", "priority": "low"}),
        "so-2",
    )
    .await;
    publish(
        &ch,
        &incoming,
        &json!({"id": 3, "site": "Gravataí", "priority": "urgent"}),
        "so-3",
    )
    .await;
    assert!(ch.wait_for_confirms().await.unwrap().is_empty());

    // Urgent ones to the webhook, signed, with the example's body.
    assert!(rx.wait_for_count(2, T).await, "{}", s.logs());
    let mut bodies: Vec<Value> = rx.requests().iter().filter_map(|r| r.json()).collect();
    bodies.sort_by_key(|b| b["order"].as_i64());
    assert_eq!(
        bodies,
        [
            json!({"order": 1, "site": "Porto Alegre", "priority": "urgent", "event": "so-1"}),
            json!({"order": 3, "site": "Gravataí", "priority": "urgent", "event": "so-3"}),
        ]
    );
    assert_eq!(rx.bad_signatures(), 0);

    // Every order to the exchange, read back from the audit queue bound to it.
    s.wait_json("/v1/deliveries?status=delivered", T, |v| {
        v["items"].as_array().unwrap().len() == 5
    })
    .await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        let got = ch
            .basic_get(audit.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message in the audit queue");
        let body: Value = serde_json::from_slice(&got.delivery.data).unwrap();
        assert_eq!(body["specversion"], "1.0");
        assert!(
            got.delivery.properties.message_id().is_some(),
            "the delivery id as message_id"
        );
        keys.push(got.delivery.routing_key.to_string());
    }
    keys.sort();
    assert_eq!(
        keys,
        [
            "service_order.created",
            "service_order.received",
            "service_order.received"
        ]
    );
    assert_eq!(ready(&ch, &incoming).await, 0);
    s.terminate().await;
    for q in [&incoming, &audit] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}
