//! `kind: kafka` sources and destinations: what validates, the defaults, and the problems
//! named with their field.

use estafeta_config::kafka_connection::SaslMechanism;
use estafeta_config::kafka_destination::{Compression, KafkaMode};
use estafeta_config::kafka_source::{StartPosition, Subscription};
use estafeta_config::{DestinationKindSettings, Lookup, SourceKindSettings, load_str};

struct Env;
impl Lookup for Env {
    fn env(&self, name: &str) -> Option<String> {
        (name == "KAFKA_BROKERS").then(|| "k1:9093,k2:9093".into())
    }
    fn secret(&self, name: &str) -> Option<String> {
        (name == "kafka_password").then(|| "s3cret".into())
    }
}

#[test]
fn kafka_destinations_validate_with_their_defaults() {
    let yaml = r#"
destinations:
  - id: bus
    kind: kafka
    brokers: ${env:KAFKA_BROKERS}
    tls: true
    sasl: { username: estafeta, password: "${secret:kafka_password}" }
    topic: "shop.{{ type }}"
    mode: binary
    compression: zstd
  - id: plain
    kind: kafka
    topic: orders
"#;
    let cfg = load_str(yaml, "k.yaml", &Env).unwrap();
    let DestinationKindSettings::Kafka(k) = &cfg.destinations[0].kind else {
        panic!("not a kafka destination");
    };
    assert_eq!(k.connection.brokers, "k1:9093,k2:9093");
    assert_eq!(k.connection.security_protocol(), "sasl_ssl");
    let sasl = k.connection.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(sasl.password.expose(), "s3cret");
    assert_eq!(format!("{:?}", sasl.password), "Secret([redacted])");
    assert_eq!(k.mode, KafkaMode::Binary);
    assert_eq!(k.compression, Compression::Zstd);
    let DestinationKindSettings::Kafka(p) = &cfg.destinations[1].kind else {
        panic!("not a kafka destination");
    };
    assert_eq!(p.connection.brokers, "127.0.0.1:9092");
    assert_eq!(p.mode, KafkaMode::Structured);
    assert_eq!(p.compression, Compression::None);
    assert_eq!(p.timeout, std::time::Duration::from_secs(30));
}

#[test]
fn kafka_destination_problems_name_their_field() {
    let bad = r#"
destinations:
  - id: a
    kind: kafka
    brokers: "kafka://k1:9092"
    topic: "orders created"
    ca_file: /etc/ca.pem
  - id: b
    kind: kafka
    topic: "shop.{{ type "
    key: "{% if %}"
    sasl: { mechanism: plain, username: u, password: p }
    timeout: 0s
"#;
    let text = load_str(bad, "k.yaml", &Env).unwrap_err().to_string();
    for expected in [
        "destinations[0].brokers: bootstrap brokers are `host:port`",
        "destinations[0].topic: `orders created` is not a Kafka topic name",
        "destinations[0].ca_file: `ca_file` is used only with `tls: true`",
        "destinations[1].topic: template does not compile",
        "destinations[1].key: template does not compile",
        "destinations[1].sasl.mechanism: `plain` sends the password as it is",
        "destinations[1].timeout: must be at least 1s",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
}

#[test]
fn kafka_sources_validate_with_their_defaults() {
    let yaml = r#"
sources:
  - id: orders-in
    kind: kafka
    topics: [orders, refunds]
  - id: cdc
    kind: kafka
    brokers: ${env:KAFKA_BROKERS}
    topic_pattern: 'dbserver1\.inventory\..*'
    group_id: estafeta-cdc
    start: "2026-01-31T00:00:00Z"
    batch_size: 100
    decode: { format: debezium }
"#;
    let cfg = load_str(yaml, "k.yaml", &Env).unwrap();
    let SourceKindSettings::Kafka(a) = &cfg.sources[0].kind else {
        panic!("not a kafka source");
    };
    assert_eq!(cfg.sources[0].kind.name(), "kafka");
    assert_eq!(
        a.subscription,
        Subscription::Topics(vec!["orders".into(), "refunds".into()])
    );
    assert_eq!(a.group_id, "estafeta-orders-in");
    assert_eq!(a.start, StartPosition::Earliest);
    assert_eq!(a.batch_size, 500);
    let SourceKindSettings::Kafka(b) = &cfg.sources[1].kind else {
        panic!("not a kafka source");
    };
    assert_eq!(
        b.subscription.names(),
        vec!["^dbserver1\\.inventory\\..*".to_owned()]
    );
    assert_eq!(b.group_id, "estafeta-cdc");
    assert!(matches!(b.start, StartPosition::Timestamp(_)));
    assert_eq!(
        b.decode.format,
        estafeta_config::broker_source::Format::Debezium
    );
}

#[test]
fn kafka_source_problems_name_their_field() {
    let bad = r#"
sources:
  - id: a
    kind: kafka
  - id: b
    kind: kafka
    topics: [orders]
    topic_pattern: "o.*"
    start: yesterday
    batch_size: 0
  - id: c
    kind: kafka
    topics: ["orders/eu"]
    decode: { type: "has space" }
"#;
    let text = load_str(bad, "k.yaml", &Env).unwrap_err().to_string();
    for expected in [
        "sources[0].topics: name the topics to read",
        "sources[1].topics: set either `topics` or `topic_pattern`",
        "sources[1].start: `yesterday` is not `earliest`, `latest` or an RFC 3339 time",
        "sources[1].batch_size: must be between 1 and 10000",
        "sources[2].topics: `orders/eu` is not a Kafka topic name",
        "sources[2].decode.type: an event type must be non-empty",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
}
