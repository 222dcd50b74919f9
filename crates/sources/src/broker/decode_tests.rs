//! Tests of the broker decoder: each format, the failed records and the ids.

use estafeta_config::broker_source::Envelope;
use serde_json::json;

use super::*;
use crate::broker::UNDECODABLE_TYPE;
use crate::status::SourceState;

fn decoder(format: Format) -> (Decoder, StatusBoard) {
    let board = StatusBoard::default();
    board.register("src", "kafka", SourceState::Running);
    let settings = DecodeSettings {
        format,
        event_type: None,
        envelope: Envelope::Estafeta,
    };
    (
        Decoder::new("src", "kafka", &settings, board.clone()),
        board,
    )
}

fn msg(payload: &[u8]) -> Message<'_> {
    Message {
        payload,
        headers: Vec::new(),
        key: Some(b"k-1"),
        channel: "orders",
        position: "orders[0]@5".into(),
        stable_id: Some("orders/0/5".into()),
        timestamp: None,
    }
}

#[test]
fn plain_json_takes_the_channel_as_type_and_the_stable_id() {
    let (d, board) = decoder(Format::Auto);
    let e = d.decode(&msg(br#"{"n": 1}"#)).unwrap();
    assert_eq!(e.ty, "orders");
    assert_eq!(e.ce_id, "orders/0/5");
    assert_eq!(e.ce_source, "/estafeta/kafka/src");
    assert_eq!(e.key.as_deref(), Some("k-1"));
    assert_eq!(e.data, Some(json!({"n": 1})));
    assert_eq!(board.get("src").unwrap().undecodable, 0);
}

#[test]
fn auto_recognises_structured_cloudevents_and_debezium() {
    let (d, _) = decoder(Format::Auto);
    let ce = br#"{"specversion":"1.0","id":"x1","source":"/a","type":"order.paid","data":{"n":2}}"#;
    let e = d.decode(&msg(ce)).unwrap();
    assert_eq!((e.ty.as_str(), e.ce_id.as_str()), ("order.paid", "x1"));
    let dbz =
        br#"{"before":null,"after":{"id":1},"op":"c","source":{"db":"shop","table":"orders"}}"#;
    let e = d.decode(&msg(dbz)).unwrap();
    assert_eq!(e.ty, "orders.insert");
}

#[test]
fn undecodable_messages_become_failed_records_with_the_reason() {
    let (d, board) = decoder(Format::Auto);
    let e = d.decode(&msg(b"\xff\xfe not json")).unwrap();
    assert_eq!(e.ty, UNDECODABLE_TYPE);
    assert_eq!(e.ce_id, "orders/0/5");
    let data = e.data.unwrap();
    assert!(data["reason"].as_str().unwrap().contains("not valid JSON"));
    assert_eq!(data["position"], "orders[0]@5");
    assert!(data["payload_base64"].is_string());
    assert_eq!(board.get("src").unwrap().undecodable, 1);

    let (d, _) = decoder(Format::Cloudevents);
    let e = d.decode(&msg(br#"{"n": 1}"#)).unwrap();
    assert_eq!(e.ty, UNDECODABLE_TYPE);
    assert_eq!(e.data.unwrap()["payload"], r#"{"n": 1}"#);

    let (d, _) = decoder(Format::Debezium);
    let e = d.decode(&msg(br#"{"n": 1}"#)).unwrap();
    assert!(
        e.data.unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("not a Debezium change event")
    );
}

#[test]
fn debezium_tombstones_are_skipped_only_when_asked_for() {
    let (d, _) = decoder(Format::Debezium);
    assert!(d.decode(&msg(b"")).is_none());
    let (d, _) = decoder(Format::Auto);
    assert_eq!(d.decode(&msg(b"")).unwrap().ty, UNDECODABLE_TYPE);
}

#[test]
fn raw_keeps_text_and_bytes_and_json_format_takes_any_value() {
    let (d, _) = decoder(Format::Raw);
    let e = d.decode(&msg(b"door 3 opened")).unwrap();
    assert_eq!(e.data, Some(json!("door 3 opened")));
    let e = d.decode(&msg(&[0, 159, 146, 150])).unwrap();
    assert!(e.data_is_base64);
    let (d, _) = decoder(Format::Json);
    let e = d.decode(&msg(b"[1,2]")).unwrap();
    assert_eq!(e.data, Some(json!([1, 2])));
}

#[test]
fn without_a_stable_id_each_message_gets_a_fresh_id() {
    let (d, _) = decoder(Format::Json);
    let mut m = msg(b"1");
    m.stable_id = None;
    let a = d.decode(&m).unwrap();
    let b = d.decode(&m).unwrap();
    assert_ne!(a.ce_id, b.ce_id);
}

#[test]
fn large_undecodable_payloads_are_cut() {
    let (d, _) = decoder(Format::Json);
    let big = vec![b'x'; 300 * 1024];
    let e = d.decode(&msg(&big)).unwrap();
    let data = e.data.unwrap();
    assert_eq!(data["size"], 300 * 1024);
    assert_eq!(data["truncated"], true);
    assert_eq!(data["payload"].as_str().unwrap().len(), 256 * 1024);
}
