//! The NATS source against real JetStream servers: the machine's (`ESTAFETA_NATS_URL`,
//! default `nats://127.0.0.1:4222`) for decoding and acknowledgement, and a server of the
//! test's own for a kill -9 of the broker. Each test makes its own stream.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use estafeta_sources::{EventSink, SourceState};
use estafeta_testkit::NatsServer;

use crate::harness::{Gated, Harness, start_with_sink};

fn url() -> String {
    std::env::var("ESTAFETA_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn unique() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

/// A file-backed stream named after `prefix` keeping `prefix.>`.
async fn make_stream(url: &str, prefix: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: prefix.to_uppercase(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

async fn publish(js: &jetstream::Context, subject: &str, payload: &[u8]) {
    js.publish(subject.to_owned(), payload.to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

fn config(url: &str, prefix: &str, extra: &str) -> String {
    format!(
        "sources:\n  - id: bus\n    kind: nats\n    url: {url}\n    stream: {}\n    batch_size: 50\n{extra}",
        prefix.to_uppercase()
    )
}

/// The consumer's acknowledgement floor (stream sequence) and messages handed over but
/// not acknowledged; `(0, 0)` before the source created the consumer.
async fn ack_state(js: &jetstream::Context, prefix: &str) -> (u64, usize) {
    let stream = js.get_stream(prefix.to_uppercase()).await.unwrap();
    let Ok(mut consumer) = stream
        .get_consumer::<jetstream::consumer::pull::Config>("estafeta-bus")
        .await
    else {
        return (0, 0);
    };
    let info = consumer.info().await.unwrap();
    (info.ack_floor.stream_sequence, info.num_ack_pending)
}

#[tokio::test]
async fn every_format_becomes_an_event_and_bad_messages_are_failed_records() {
    let prefix = unique();
    let js = make_stream(&url(), &prefix).await;
    let ce = br#"{"specversion":"1.0","id":"ce-1","source":"/shop","type":"order.created","data":{"n":1}}"#;
    publish(&js, &format!("{prefix}.orders"), ce).await;
    publish(&js, &format!("{prefix}.plain"), br#"{"door": 3}"#).await;
    publish(&js, &format!("{prefix}.plain"), b"not json at all").await;
    let dbz =
        br#"{"before":null,"after":{"id":9},"op":"c","source":{"db":"acc","table":"visitors"}}"#;
    publish(&js, &format!("{prefix}.cdc"), dbz).await;

    let h = Harness::start(&config(&url(), &prefix, "")).await;
    h.wait(20, "4 events", |h| h.sink.all().len() == 4).await;
    let events = h.sink.all();
    let types: Vec<&str> = events.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(
        types,
        [
            "order.created",
            &format!("{prefix}.plain"),
            "estafeta.message.undecodable",
            "visitors.insert"
        ]
    );
    assert_eq!(events[0].ce_id, "ce-1");
    assert_eq!(events[1].ce_id, format!("{}:2", prefix.to_uppercase()));
    let failed = events[2].data.as_ref().unwrap();
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(failed["payload"], "not json at all");
    assert_eq!(failed["position"], format!("{}#3", prefix.to_uppercase()));

    h.wait(10, "everything acknowledged", |h| {
        h.status("bus").position.as_deref() == Some(&format!("{}#4", prefix.to_uppercase()))
    })
    .await;
    let st = h.status("bus");
    assert_eq!(
        (st.state, st.events, st.undecodable, st.lag),
        (SourceState::Running, 4, 1, Some(0))
    );
    assert_eq!(ack_state(&js, &prefix).await, (4, 0));
}

#[tokio::test]
async fn messages_are_acknowledged_only_after_they_are_stored() {
    let prefix = unique();
    let js = make_stream(&url(), &prefix).await;
    for i in 0..20 {
        publish(
            &js,
            &format!("{prefix}.n"),
            format!("{{\"i\":{i}}}").as_bytes(),
        )
        .await;
    }
    let yaml = config(&url(), &prefix, "    batch_size: 100\n").replace("    batch_size: 50\n", "");
    let sink = Gated::closed();
    let (sources, _dir) = start_with_sink(&yaml, Arc::clone(&sink) as Arc<dyn EventSink>).await;

    // Handed over but held by the store: nothing acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (floor, pending) = ack_state(&js, &prefix).await;
        assert_eq!(floor, 0, "acknowledged before being stored");
        if pending == 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer never took the messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sink.open(100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ack_state(&js, &prefix).await != (20, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stored messages were not acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.stored(), 20);
    sources.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_restart_goes_on_from_the_durable_consumer() {
    let prefix = unique();
    let js = make_stream(&url(), &prefix).await;
    for i in 0..30 {
        publish(
            &js,
            &format!("{prefix}.n"),
            format!("{{\"i\":{i}}}").as_bytes(),
        )
        .await;
    }
    // A pull request the stopped session left on the server can still take a message
    // published after the stop; the server hands it out again after `ack_wait`.
    let mut h = Harness::start(&config(&url(), &prefix, "    ack_wait: 2s\n")).await;
    h.wait(20, "30 events", |h| h.sink.all().len() == 30).await;
    h.wait(10, "all acknowledged", |h| {
        h.status("bus").position.as_deref() == Some(&format!("{}#30", prefix.to_uppercase()))
    })
    .await;
    h.stop().await;
    for i in 30..45 {
        publish(
            &js,
            &format!("{prefix}.n"),
            format!("{{\"i\":{i}}}").as_bytes(),
        )
        .await;
    }
    h.restart_sources();
    h.wait(20, "45 events", |h| h.sink.all().len() == 45).await;
    let mut is: Vec<i64> = h
        .sink
        .data()
        .iter()
        .map(|d| d["i"].as_i64().unwrap())
        .collect();
    assert_eq!(
        is[..30],
        (0..30).collect::<Vec<_>>(),
        "the first session in stream order"
    );
    is.sort_unstable();
    assert_eq!(is, (0..45).collect::<Vec<_>>(), "each message once");
}

#[tokio::test]
async fn a_missing_stream_is_reported_with_its_name() {
    let prefix = unique();
    let h = Harness::start(&config(&url(), &prefix, "")).await;
    h.wait(20, "a failed status", |h| {
        h.status("bus").state == SourceState::Failed
    })
    .await;
    let err = h.status("bus").error.unwrap();
    assert!(
        err.contains(&prefix.to_uppercase()) && err.contains("does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn a_killed_server_is_reconnected_to_and_nothing_is_lost() {
    let Some(mut server) = NatsServer::start().await else {
        return;
    };
    let prefix = unique();
    let js = make_stream(&server.url(), &prefix).await;
    for i in 0..25 {
        publish(
            &js,
            &format!("{prefix}.n"),
            format!("{{\"i\":{i}}}").as_bytes(),
        )
        .await;
    }
    let h = Harness::start(&config(&server.url(), &prefix, "")).await;
    h.wait(20, "25 events", |h| h.sink.all().len() == 25).await;

    server.kill();
    h.wait(20, "reconnecting", |h| {
        h.status("bus").state == SourceState::Reconnecting
    })
    .await;
    server.restart().await;
    h.wait(30, "running again", |h| {
        h.status("bus").state == SourceState::Running
    })
    .await;
    let js = make_stream_client(&server.url()).await;
    for i in 25..50 {
        publish(
            &js,
            &format!("{prefix}.n"),
            format!("{{\"i\":{i}}}").as_bytes(),
        )
        .await;
    }
    h.wait(40, "50 events", |h| {
        let mut is: Vec<i64> = h
            .sink
            .data()
            .iter()
            .map(|d| d["i"].as_i64().unwrap())
            .collect();
        is.sort_unstable();
        is.dedup();
        is.len() == 50
    })
    .await;
    assert!(h.status("bus").reconnects >= 1);
}

async fn make_stream_client(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}
