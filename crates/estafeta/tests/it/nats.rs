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
    js.create_stream(stream::Config {
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

    let got = read_stream(&js, &prefix.to_uppercase()).await;
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

/// Every message in stream `name`, read by an ephemeral consumer without acknowledgements.
async fn read_stream(js: &jetstream::Context, name: &str) -> Vec<jetstream::Message> {
    let stream = js.get_stream(name).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = consumer
        .fetch()
        .max_messages(10_000)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(m) = msgs.next().await {
        out.push(m.unwrap());
    }
    out
}

/// Every `seq` in the output stream's messages (duplicates kept).
async fn output_seqs(js: &jetstream::Context, name: &str) -> Vec<u64> {
    read_stream(js, name)
        .await
        .iter()
        .map(|m| {
            let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            body["data"]["seq"].as_u64().unwrap()
        })
        .collect()
}

/// Events of source `id` in the log, counted page by page.
async fn logged(s: &Server, id: &str) -> usize {
    let mut count = 0;
    let mut cursor = String::new();
    loop {
        let page = s
            .get_json(&format!("/v1/events?source={id}&limit=1000{cursor}"))
            .await;
        count += page["items"].as_array().unwrap().len();
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return count,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_bridge_survives_kill_9_without_losing_a_message() {
    const N: u64 = 3_000;
    let tag = format!("{:012x}", rand::random::<u64>() >> 16);
    let (input, output) = (format!("E2E_IN_{tag}"), format!("E2E_OUT_{tag}"));
    let js = jetstream::new(async_nats::connect(url()).await.unwrap());
    for (name, subject) in [(&input, "e2ein"), (&output, "e2eout")] {
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subject}_{tag}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut acks = Vec::new();
    for seq in 0..N {
        acks.push(
            js.publish(
                format!("e2ein_{tag}.door"),
                format!("{{\"seq\":{seq}}}").into(),
            )
            .await
            .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"sources:
  - id: doors
    kind: nats
    url: {url}
    stream: {input}
    batch_size: 100
    ack_wait: 2s
routes:
  - id: bridge
    from: doors
    match: "e2ein_*"
    to:
      - destination: out
destinations:
  - id: out
    kind: nats
    url: {url}
    subject: "e2eout_{tag}.door"
    concurrency: 8
"#,
        url = url()
    );
    let s = Server::start(dir.path(), &cfg).await;
    s.wait_json("/v1/sources/doors", T, |v| {
        v["events"].as_u64().unwrap_or(0) >= 300
    })
    .await;
    s.kill9().await;

    let s = Server::start(dir.path(), &cfg).await;
    let status = s
        .wait_json("/v1/sources/doors", T, |v| {
            v["events"].as_u64().unwrap_or(0) > 0 && v["lag"] == 0 && v["state"] == "running"
        })
        .await;
    assert_eq!(status["kind"], "nats");
    assert_eq!(status["position"], format!("{input}#{N}"));
    let deadline = tokio::time::Instant::now() + T;
    let mut seqs = output_seqs(&js, &output).await;
    loop {
        let mut distinct = seqs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct == (0..N).collect::<Vec<_>>() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {N} messages in the output",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        seqs = output_seqs(&js, &output).await;
    }
    // A message read again after the crash is stored once (its id is the stream sequence).
    assert_eq!(logged(&s, "doors").await, N as usize);
    let ready = s.req(reqwest::Method::GET, "/readyz").send().await.unwrap();
    assert!(ready.status().is_success(), "{}", ready.status());
    s.terminate().await;
    for name in [&input, &output] {
        js.delete_stream(name).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_orders_example_runs_as_documented() {
    let tag = format!("{:010x}", rand::random::<u64>() >> 24);
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/nats-orders/estafeta.yaml"),
    )
    .unwrap()
    .replace("ORDERS", &format!("ORDERS_{tag}"))
    .replace("orders.", &format!("orders{tag}."))
    .replace("audit.", &format!("audit{tag}."))
    .replace(
        "allow_private_networks: false",
        "allow_private_networks: true",
    );
    let js = jetstream::new(async_nats::connect(url()).await.unwrap());
    let (orders, audit) = (format!("ORDERS_{tag}"), format!("AUDIT_{tag}"));
    for (name, subject) in [(&orders, "orders"), (&audit, "audit")] {
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subject}{tag}.>")],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let rx = estafeta_testkit::WebhookReceiver::start_with_secret(crate::server::WHSEC).await;
    let ntfy = estafeta_testkit::FakeNtfy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("example.yaml");
    std::fs::write(&cfg, text).unwrap();
    let storage = format!("sqlite://{}/estafeta.db", dir.path().display());
    let s = Server::start_with_args(
        dir.path(),
        &cfg,
        &["--listen", "127.0.0.1:0", "--storage", &storage],
        &[
            ("NATS_URL", url().as_str()),
            ("FINANCE_HOOK_URL", rx.url().as_str()),
            ("NTFY_URL", ntfy.base_url().as_str()),
            ("ESTAFETA_SECRET_FINANCE_WHSEC", crate::server::WHSEC),
        ],
    )
    .await;
    let subject = format!("orders{tag}.created");
    for body in [
        r#"{"id": "o-1", "total": 1520.0, "customer": "ACME Ltda"}"#,
        r#"{"id": "o-2", "total": 80.5}"#,
        "not json",
    ] {
        js.publish(subject.clone(), body.as_bytes().to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // The big order, signed, at the finance webhook; only that one.
    assert!(rx.wait_for_count(1, T).await);
    let req = &rx.requests()[0];
    assert_eq!(req.signature_valid, Some(true));
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["data"]["id"], "o-1");
    // The unreadable message, reported on ntfy with its place and reason.
    assert!(ntfy.wait_for_messages(1, T).await);
    let alert = &ntfy.messages()[0];
    assert_eq!(alert.topic, "orders-ops");
    assert!(
        alert.message.contains(&format!("ORDERS_{tag}#3"))
            && alert.message.contains("not valid JSON"),
        "{}",
        alert.message
    );
    // Both orders (not the failed record) copied to the audit stream.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let seqs = output_audit(&js, &audit).await;
        if seqs.len() == 2 {
            assert!(
                seqs.iter()
                    .all(|s| s == &format!("audit{tag}.orders{tag}.created")),
                "{seqs:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit holds {seqs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = s
        .wait_json("/v1/sources/orders", T, |v| {
            v["position"] == format!("ORDERS_{tag}#3")
        })
        .await;
    assert_eq!(
        (status["undecodable"].as_u64(), status["events"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(rx.count(), 1);
    s.terminate().await;
    for name in [&orders, &audit] {
        js.delete_stream(name).await.unwrap();
    }
}

/// The subjects of the messages in stream `name`.
async fn output_audit(js: &jetstream::Context, name: &str) -> Vec<String> {
    read_stream(js, name)
        .await
        .iter()
        .map(|m| m.subject.to_string())
        .collect()
}
