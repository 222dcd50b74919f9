//! The MQTT source against real Mosquitto brokers: the machine's (`ESTAFETA_MQTT_URL`,
//! default `mqtt://127.0.0.1:1883`) for wildcard subscriptions, decoding, the persistent
//! session and acknowledgement after storing; and a broker of the test's own for a kill -9
//! of the broker. Each test uses its own topics and client id.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use estafeta_config::mqtt_destination::broker_address;
use estafeta_core::{Event, EventId};
use estafeta_sources::{EventSink, SinkError, SourceState};
use estafeta_testkit::Mosquitto;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

use crate::harness::{Harness, start_with_sink};

fn url() -> String {
    std::env::var("ESTAFETA_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

fn unique() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

/// Publishes each `(topic, payload)` with QoS 1 and returns once the broker acknowledged
/// them all.
async fn publish(url: &str, messages: &[(String, Vec<u8>)]) {
    let (host, port) = broker_address(url).unwrap();
    let (client, mut events) = AsyncClient::new(
        MqttOptions::new(format!("pub-{}", unique()), host, port),
        1024,
    );
    for (topic, payload) in messages {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while acked < messages.len() {
            if let MqttEvent::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("the broker acknowledged every publish");
}

/// Stops the source and removes its persistent session from the shared broker (a
/// clean-session connect with its client id).
async fn forget(h: &mut Harness, client_id: &str) {
    h.stop().await;
    forget_session(client_id).await;
}

/// Removes the persistent session of `client_id` from the shared broker.
async fn forget_session(client_id: &str) {
    let (host, port) = broker_address(&url()).unwrap();
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(o, 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(ev) = events.poll().await {
            if let MqttEvent::Incoming(Packet::ConnAck(_)) = ev {
                let _ = client.disconnect().await;
            }
            if matches!(ev, MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

fn config(url: &str, client_id: &str, topics: &[String], extra: &str) -> String {
    let topics = topics
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "sources:\n  - id: devices\n    kind: mqtt\n    url: {url}\n    client_id: {client_id}\n    topics: [{topics}]\n{extra}"
    )
}

async fn running(h: &Harness) {
    h.wait(20, "running", |h| {
        h.status("devices").state == SourceState::Running
    })
    .await;
}

#[tokio::test]
async fn messages_from_wildcard_filters_become_events() {
    let base = unique();
    let filters = [
        format!("{base}/+/turnstile/+/access"),
        format!("{base}/alarms/#"),
    ];
    let client_id = unique();
    let mut h = Harness::start(&config(&url(), &client_id, &filters, "")).await;
    running(&h).await;
    let ce = br#"{"specversion":"1.0","id":"ce-1","source":"/gate","type":"access.denied","data":{"badge":"B-7"}}"#;
    publish(
        &url(),
        &[
            (format!("{base}/lisbon/turnstile/3/access"), ce.to_vec()),
            (
                format!("{base}/porto/turnstile/1/access"),
                br#"{"badge":"B-8","granted":true}"#.to_vec(),
            ),
            (
                format!("{base}/porto/turnstile/1/status"),
                br#"{"ignored":true}"#.to_vec(),
            ),
            (
                format!("{base}/alarms/fire/floor2"),
                br#"{"level":3}"#.to_vec(),
            ),
        ],
    )
    .await;
    h.wait(20, "3 events", |h| h.sink.all().len() == 3).await;
    let events = h.sink.all();
    let types: Vec<&str> = events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(
        types,
        [
            "access.denied",
            &format!("{base}/porto/turnstile/1/access"),
            &format!("{base}/alarms/fire/floor2"),
        ]
    );
    assert_eq!(events[0].ce_id, "ce-1");
    assert_eq!(events[1].data.as_ref().unwrap()["badge"], "B-8");
    let topic = format!("{base}/porto/turnstile/1/access");
    assert_eq!(events[1].subject.as_deref(), Some(topic.as_str()));
    assert_eq!(events[1].key.as_deref(), Some(topic.as_str()));
    h.wait(10, "all acknowledged", |h| h.status("devices").events == 3)
        .await;
    let st = h.status("devices");
    assert_eq!(st.state, SourceState::Running);
    let position = st.position.unwrap();
    assert!(
        position.starts_with(&format!("{base}/alarms/fire/floor2 (packet ")),
        "{position}"
    );
    assert!(st.last_event_at.is_some());
    forget(&mut h, &client_id).await;
}

#[tokio::test]
async fn an_undecodable_payload_becomes_a_failed_record() {
    let base = unique();
    let client_id = unique();
    let mut h = Harness::start(&config(
        &url(),
        &client_id,
        &[format!("{base}/#")],
        "    decode: { format: json }\n",
    ))
    .await;
    running(&h).await;
    publish(
        &url(),
        &[
            (format!("{base}/a"), b"not json at all".to_vec()),
            (format!("{base}/b"), br#"{"ok":1}"#.to_vec()),
        ],
    )
    .await;
    h.wait(20, "2 events", |h| h.sink.all().len() == 2).await;
    let events = h.sink.all();
    assert_eq!(events[0].ty, "estafeta.message.undecodable");
    let failed = events[0].data.as_ref().unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("JSON"),
        "{failed}"
    );
    assert_eq!(failed["payload"], "not json at all");
    assert_eq!(events[1].ty, format!("{base}/b"));
    h.wait(10, "counted", |h| h.status("devices").undecodable == 1)
        .await;
    forget(&mut h, &client_id).await;
}

#[tokio::test]
async fn messages_published_while_stopped_arrive_after_a_restart() {
    let base = unique();
    let client_id = unique();
    let mut h = Harness::start(&config(&url(), &client_id, &[format!("{base}/#")], "")).await;
    running(&h).await;
    let batch = |from: usize, to: usize| {
        (from..to)
            .map(|i| (format!("{base}/n"), format!("{{\"i\":{i}}}").into_bytes()))
            .collect::<Vec<_>>()
    };
    publish(&url(), &batch(0, 5)).await;
    h.wait(20, "5 events", |h| h.status("devices").events == 5)
        .await;
    h.stop().await;
    publish(&url(), &batch(5, 15)).await;
    h.restart_sources();
    h.wait(20, "15 events", |h| h.sink.all().len() == 15).await;
    let is: Vec<i64> = h
        .sink
        .data()
        .iter()
        .map(|d| d["i"].as_i64().unwrap())
        .collect();
    assert_eq!(
        is,
        (0..15).collect::<Vec<_>>(),
        "each message once, in order"
    );
    forget(&mut h, &client_id).await;
}

/// A sink that refuses appends while `failing` is set.
#[derive(Default)]
struct Flaky {
    failing: std::sync::atomic::AtomicBool,
    refused: AtomicUsize,
    events: Mutex<Vec<Event>>,
}

#[async_trait]
impl EventSink for Flaky {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(SinkError(Box::new(std::io::Error::other("disk full"))));
        }
        let ids = events.iter().map(|e| e.id).collect();
        self.events.lock().unwrap().extend(events);
        Ok(ids)
    }

    async fn append_new(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        self.append(events).await
    }
}

/// Waits until `cond` holds, or panics after 20 s naming `what`.
async fn wait(what: &str, cond: &dyn Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn messages_are_acknowledged_only_after_they_are_stored() {
    let base = unique();
    let client_id = unique();
    let yaml = config(&url(), &client_id, &[format!("{base}/#")], "");
    let sink = Arc::new(Flaky::default());
    sink.failing.store(true, Ordering::SeqCst);
    let (sources, _dir) = start_with_sink(&yaml, Arc::clone(&sink) as Arc<dyn EventSink>).await;
    let board = sources.board().clone();
    wait("running", &|| {
        board.get("devices").unwrap().state == SourceState::Running
    })
    .await;
    let messages: Vec<_> = (0..10)
        .map(|i| (format!("{base}/n"), format!("{{\"i\":{i}}}").into_bytes()))
        .collect();
    publish(&url(), &messages).await;
    // The log refuses them: the session ends without acknowledging anything.
    wait("a refused append", &|| {
        sink.refused.load(Ordering::SeqCst) > 0
    })
    .await;
    wait("reconnecting", &|| {
        board.get("devices").unwrap().state == SourceState::Reconnecting
    })
    .await;
    let error = board.get("devices").unwrap().error.unwrap_or_default();
    assert!(error.contains("could not store"), "{error}");
    sink.failing.store(false, Ordering::SeqCst);
    // The broker hands every unacknowledged message over again.
    wait("10 messages stored", &|| {
        sink.events.lock().unwrap().len() >= 10
    })
    .await;
    let mut is: Vec<i64> = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.data.as_ref().unwrap()["i"].as_i64().unwrap())
        .collect();
    is.sort_unstable();
    is.dedup();
    assert_eq!(is, (0..10).collect::<Vec<_>>());
    let st = board.get("devices").unwrap();
    assert!(st.reconnects >= 1);
    sources.shutdown(Duration::from_secs(10)).await;
    forget_session(&client_id).await;
}

#[tokio::test]
async fn a_killed_broker_is_reconnected_to_and_messages_after_the_restart_arrive() {
    let Some(mut broker) = Mosquitto::start().await else {
        return;
    };
    let base = unique();
    let h = Harness::start(&config(
        &broker.url(),
        &unique(),
        &[format!("{base}/#")],
        "",
    ))
    .await;
    running(&h).await;
    publish(
        &broker.url(),
        &[(format!("{base}/n"), br#"{"i":0}"#.to_vec())],
    )
    .await;
    h.wait(20, "1 event", |h| h.status("devices").events == 1)
        .await;

    broker.kill();
    h.wait(20, "reconnecting", |h| {
        h.status("devices").state == SourceState::Reconnecting
    })
    .await;
    assert!(!h.sources.as_ref().unwrap().board().not_ready().is_empty());
    broker.restart().await;
    running(&h).await;
    publish(
        &broker.url(),
        &[(format!("{base}/n"), br#"{"i":1}"#.to_vec())],
    )
    .await;
    h.wait(20, "2 events", |h| h.sink.all().len() >= 2).await;
    let is: Vec<i64> = h
        .sink
        .data()
        .iter()
        .map(|d| d["i"].as_i64().unwrap())
        .collect();
    assert!(is.contains(&1), "{is:?}");
    assert!(h.status("devices").reconnects >= 1);
}
