//! The MQTT destination against the local Mosquitto (`ESTAFETA_MQTT_URL`, default
//! `mqtt://127.0.0.1:1883`): QoS 1 publishes received by a subscriber with their payload on
//! the rendered topic, the retain flag, the final error for a topic that renders with
//! wildcards, and the retryable one for an unreachable broker. Each test uses its own topics.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use estafeta_config::mqtt_destination::{MqttSettings, broker_address};
use estafeta_core::{DeliveryId, Destination, Event, OutboundMessage};
use estafeta_destinations::Mqtt;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, MqttOptions, Packet, Publish, QoS};

fn address() -> (String, u16) {
    let url = std::env::var("ESTAFETA_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    broker_address(&url).unwrap()
}

fn unique() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

fn settings(topic: &str) -> MqttSettings {
    let (host, port) = address();
    MqttSettings {
        id: "devices".into(),
        host,
        port,
        topic: topic.into(),
        retain: false,
        client_id: None,
        credentials: None,
        keep_alive: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
    }
}

fn msg(ty: &str, body: &'static [u8]) -> OutboundMessage {
    let ce = serde_json::json!({"specversion": "1.0", "id": "e1", "source": "/shop",
        "type": ty, "data": {"id": 77, "site": "lisbon"}});
    let event: Event =
        estafeta_core::event::parse_cloudevent(ce, &Default::default(), "http", chrono::Utc::now())
            .unwrap();
    OutboundMessage {
        delivery_id: DeliveryId::new(),
        event: Arc::new(event),
        body: Bytes::from_static(body),
        content_type: "application/json",
        attempt: 1,
    }
}

/// A subscriber to `filter` whose subscription the broker has confirmed.
async fn subscriber(filter: &str) -> EventLoop {
    let (host, port) = address();
    let options = MqttOptions::new(format!("test-sub-{}", unique()), host, port);
    let (client, mut events) = AsyncClient::new(options, 10);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let MqttEvent::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("suback");
    events
}

async fn next_publish(events: &mut EventLoop) -> Publish {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let MqttEvent::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                return p;
            }
        }
    })
    .await
    .expect("a message within 5 s")
}

#[tokio::test]
async fn qos1_publishes_arrive_on_the_rendered_topic_with_the_payload() {
    let base = format!("estafeta-test/{}", unique());
    let mut sub = subscriber(&format!("{base}/#")).await;
    let dest = Mqtt::new(&settings(&format!(
        "{base}/{{{{ type }}}}/{{{{ data.site }}}}"
    )))
    .unwrap();
    let ok = dest
        .send(&msg("order.created", b"{\"id\":77}"))
        .await
        .unwrap();
    assert!(ok.response_excerpt.unwrap().starts_with("puback"));
    let got = next_publish(&mut sub).await;
    assert_eq!(got.topic, format!("{base}/order.created/lisbon"));
    assert_eq!(&got.payload[..], b"{\"id\":77}");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert!(!got.retain);

    // Several at once on one connection, each acknowledged.
    let msgs: Vec<_> = (0..20).map(|_| msg("order.paid", b"x")).collect();
    let sends = msgs.iter().map(|m| dest.send(m));
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    for _ in 0..20 {
        assert_eq!(
            next_publish(&mut sub).await.topic,
            format!("{base}/order.paid/lisbon")
        );
    }
}

#[tokio::test]
async fn retained_messages_reach_later_subscribers() {
    let topic = format!("estafeta-test/{}/state", unique());
    let mut s = settings(&topic);
    s.retain = true;
    let dest = Mqtt::new(&s).unwrap();
    dest.send(&msg("door.state", b"open")).await.unwrap();
    let mut late = subscriber(&topic).await;
    let got = next_publish(&mut late).await;
    assert_eq!(&got.payload[..], b"open");
    assert!(got.retain);
    // Clear the retained message (an empty retained payload removes it).
    dest.send(&msg("door.state", b"")).await.unwrap();
}

#[tokio::test]
async fn a_topic_that_renders_with_wildcards_or_empty_is_a_final_error() {
    let dest = Mqtt::new(&settings("alerts/{{ data.site }}/#")).unwrap();
    let err = dest.send(&msg("a", b"x")).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("alerts/lisbon/#"), "{err}");

    let dest = Mqtt::new(&settings("{{ data.missing | default('') }}")).unwrap();
    let err = dest.send(&msg("a", b"x")).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_retryable_error() {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = settings("estafeta-test/unreachable");
    s.port = port;
    let dest = Mqtt::new(&s).unwrap();
    let err = dest.send(&msg("a", b"x")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn a_restarted_broker_is_reconnected_on_the_next_send() {
    let Some(mut broker) = estafeta_testkit::Mosquitto::start().await else {
        return;
    };
    let mut s = settings("estafeta-test/restart");
    s.host = "127.0.0.1".into();
    s.port = broker.port();
    let dest = Mqtt::new(&s).unwrap();
    dest.send(&msg("a", b"1")).await.unwrap();
    broker.kill();
    let err = dest.send(&msg("a", b"2")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    broker.restart().await;
    dest.send(&msg("a", b"3")).await.unwrap();
}
