//! MQTT end to end with the real binary and the local Mosquitto (`ESTAFETA_MQTT_URL`,
//! default `mqtt://127.0.0.1:1883`): routed events published to MQTT topics; an MQTT source
//! killed with `kill -9` mid-stream and restarted loses nothing (duplicates stay bounded);
//! and `examples/mqtt-turnstile-alerts` alerting on denied reads through ntfy and MQTT.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use estafeta_config::mqtt_destination::broker_address;
use estafeta_testkit::ntfy::FakeNtfy;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde_json::{Value, json};

use crate::server::{Server, event};

const T: Duration = Duration::from_secs(60);

fn url() -> String {
    std::env::var("ESTAFETA_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
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

fn options(client_id: &str) -> MqttOptions {
    let (host, port) = broker_address(&url()).unwrap();
    MqttOptions::new(client_id, host, port)
}

/// A subscriber to `filter` whose subscription the broker confirmed, with the client that
/// keeps it alive.
async fn subscriber(filter: &str) -> (AsyncClient, EventLoop) {
    let (client, mut events) = AsyncClient::new(options(&format!("sub-{}", unique())), 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(
            events.poll().await.unwrap(),
            Event::Incoming(Packet::SubAck(_))
        ) {}
    })
    .await
    .expect("suback");
    (client, events)
}

async fn next_publish(events: &mut EventLoop) -> Publish {
    tokio::time::timeout(T, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                return p;
            }
        }
    })
    .await
    .expect("a message")
}

/// Publishes with QoS 1 and waits for every PUBACK.
async fn publish(messages: &[(String, Vec<u8>)]) {
    let (client, mut events) = AsyncClient::new(options(&format!("pub-{}", unique())), 1024);
    for (topic, payload) in messages {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(T, async {
        while acked < messages.len() {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("every publish acknowledged");
}

/// Removes the broker's persistent session of `client_id` (a clean-session connect).
async fn forget_session(client_id: &str) {
    let mut o = options(client_id);
    o.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(o, 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::ConnAck(_)) = ev {
                let _ = client.disconnect().await;
            }
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_events_are_published_to_mqtt_topics() {
    let base = unique();
    let (_client, mut sub) = subscriber(&format!("{base}/#")).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"routes:
  - id: orders
    match: "order.*"
    to:
      - destination: devices
  - id: doors
    match: "door.*"
    to:
      - destination: devices
        template: "open door {{{{ data.id }}}}"
destinations:
  - id: devices
    kind: mqtt
    url: {url}
    topic: "{base}/{{{{ type }}}}/{{{{ data.id }}}}"
    timeout: 5s
"#,
        url = url()
    );
    let s = Server::start(dir.path(), &cfg).await;
    let r = s
        .post_event(&event("o-1", "order.created", json!({"id": 7})))
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let got = next_publish(&mut sub).await;
    assert_eq!(got.topic, format!("{base}/order.created/7"));
    let body: Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(body["type"], "order.created");
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["data"]["id"], 7);

    s.post_event(&event("d-1", "door.opened", json!({"id": 3})))
        .await;
    let got = next_publish(&mut sub).await;
    assert_eq!(got.topic, format!("{base}/door.opened/3"));
    assert_eq!(&got.payload[..], b"open door 3");
    s.wait_json("/v1/deliveries?status=delivered", T, |v| {
        v["items"].as_array().unwrap().len() == 2
    })
    .await;
    s.terminate().await;
}

/// Every event of source `id` in the log: the `n` of each (in log order).
async fn logged(s: &Server, id: &str) -> Vec<i64> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(c) => format!("/v1/events?source={id}&limit=1000&cursor={c}"),
            None => format!("/v1/events?source={id}&limit=1000"),
        };
        let page = s.get_json(&path).await;
        out.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["data"]["n"].as_i64()),
        );
        match page["next"].as_str() {
            Some(c) => next = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_message_and_duplicates_stay_bounded() {
    const N: i64 = 600;
    let base = unique();
    let client_id = format!("estafeta-{base}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "sources:\n  - id: devices\n    kind: mqtt\n    url: {url}\n    client_id: {client_id}\n    topics: [\"{base}/+/reading\"]\n",
        url = url()
    );
    let s = Server::start(dir.path(), &cfg).await;
    s.wait_json("/v1/sources/devices", T, |v| v["state"] == "running")
        .await;

    // Publish in the background while the binary is killed and started again.
    let publisher = tokio::spawn({
        let base = base.clone();
        async move {
            for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
                let batch: Vec<_> = chunk
                    .iter()
                    .map(|n| {
                        (
                            format!("{base}/d{}/reading", n % 7),
                            json!({ "n": n }).to_string().into_bytes(),
                        )
                    })
                    .collect();
                publish(&batch).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let deadline = std::time::Instant::now() + T;
    loop {
        let stored = logged(&s, "devices").await.len();
        if stored >= 100 {
            assert!(
                stored < 500,
                "the stream was nearly over before the kill ({stored})"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the source stored too little"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9().await;
    let s = Server::start(dir.path(), &cfg).await;
    publisher.await.unwrap();

    let deadline = std::time::Instant::now() + T;
    loop {
        let all = logged(&s, "devices").await;
        let distinct: HashSet<i64> = all.iter().copied().collect();
        if distinct.len() == usize::try_from(N).unwrap() {
            // Only what was stored but not yet acknowledged at the kill comes again: at most
            // the broker's in-flight window plus the appends in flight.
            let duplicates = all.len() - distinct.len();
            eprintln!("{duplicates} duplicate(s) after the kill");
            assert!(duplicates <= 100, "{duplicates} duplicates");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the restart {} of {N} messages were stored",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.terminate().await;
    forget_session(&client_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnstile_example_alerts_denied_access() {
    let ntfy = FakeNtfy::start().await;
    let base = unique();
    let client_id = format!("estafeta-turnstile-{base}");
    let (_client, mut displays) = subscriber(&format!("{base}/site/+/display/#")).await;
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/mqtt-turnstile-alerts/estafeta.yaml"),
    )
    .unwrap()
    // Topics and session of the test's own on the shared broker; the local ntfy server.
    .replace("site/", &format!("{base}/site/"))
    .replace("estafeta-turnstile-alerts", &client_id)
    .replace(
        "allow_private_networks: false",
        "allow_private_networks: true",
    )
    .replace("[0s, 10s, 1m, 10m]", "[0s, 100ms]");
    let cfg = dir.path().join("example.yaml");
    std::fs::write(&cfg, example).unwrap();
    let storage = format!("sqlite://{}/estafeta.db", dir.path().display());
    let s = Server::start_with_args(
        dir.path(),
        &cfg,
        &["--listen", "127.0.0.1:0", "--storage", &storage],
        &[
            ("MQTT_URL", url().as_str()),
            ("NTFY_URL", ntfy.base_url().as_str()),
            ("ESTAFETA_SECRET_MQTT_PASSWORD", "anything"),
        ],
    )
    .await;
    s.wait_json("/v1/sources/turnstiles", T, |v| v["state"] == "running")
        .await;
    let topic = format!("{base}/site/lisbon/turnstile/3/access");
    publish(&[
        (
            topic.clone(),
            br#"{"site":"lisbon","turnstile":"3","badge":"B-7","result":"granted"}"#.to_vec(),
        ),
        (
            topic.clone(),
            br#"{"site":"lisbon","turnstile":"3","badge":"B-1042","result":"denied","reason":"badge expired"}"#.to_vec(),
        ),
        (topic.clone(), b"\x00garbage".to_vec()),
    ])
    .await;

    assert!(ntfy.wait_for_messages(1, T).await, "no ntfy alert");
    let m = &ntfy.messages()[0];
    assert_eq!(m.topic, "site-security");
    assert_eq!(
        m.message,
        "Badge B-1042 denied at turnstile 3: badge expired"
    );
    assert_eq!(m.title.as_deref(), Some("Access denied at lisbon"));
    assert_eq!(m.priority, Some(4));
    let shown = next_publish(&mut displays).await;
    assert_eq!(shown.topic, format!("{base}/site/lisbon/display/3"));
    assert_eq!(&shown.payload[..], b"ACCESS DENIED: badge expired");

    // Only the denied read made deliveries (ntfy and the display); the granted read and the
    // garbage (kept as a failed record, and counted) are in the log.
    s.wait_json("/v1/deliveries?status=delivered", T, |v| {
        v["items"].as_array().unwrap().len() == 2
    })
    .await;
    let st = s
        .wait_json("/v1/sources/turnstiles", T, |v| v["events"] == 3)
        .await;
    assert_eq!(st["undecodable"], 1, "{st}");
    assert_eq!(st["events"], 3, "{st}");
    assert_eq!(ntfy.messages().len(), 1);
    let all = s.get_json("/v1/deliveries").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    let failed = s
        .get_json("/v1/events?source=turnstiles&type=estafeta.message.undecodable")
        .await;
    assert_eq!(
        failed["items"][0]["data"]["channel"],
        topic.as_str(),
        "{failed}"
    );
    s.terminate().await;
    forget_session(&client_id).await;
}
