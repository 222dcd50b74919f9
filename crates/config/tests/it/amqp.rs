//! `kind: amqp` sources and destinations in the configuration: defaults, the `declare:`
//! block, the shared `decode:` block, and how mistakes are named.

use std::time::Duration;

use estafeta_config::amqp_destination::{DEFAULT_URL, ExchangeType};
use estafeta_config::broker_source::Format;
use estafeta_config::{DestinationKindSettings, Lookup, SourceKindSettings, load_str};

struct Env;
impl Lookup for Env {
    fn env(&self, name: &str) -> Option<String> {
        (name == "AMQP_URL").then(|| "amqps://app:pw@rabbit.example:5671/prod".into())
    }
    fn secret(&self, _name: &str) -> Option<String> {
        None
    }
}

#[test]
fn amqp_destinations_validate_with_their_defaults() {
    let yaml = r#"
destinations:
  - id: rabbit
    kind: amqp
    exchange: orders
    routing_key: "orders.{{ type }}"
    declare:
      exchanges: [{ name: orders }]
      queues: [{ name: orders.audit, quorum: true }]
      bindings: [{ queue: orders.audit, exchange: orders, routing_key: "orders.#" }]
  - id: direct
    kind: amqp
    url: ${env:AMQP_URL}
    exchange: ""
    routing_key: invoices
    mandatory: false
    persistent: false
    timeout: 5s
"#;
    let cfg = load_str(yaml, "a.yaml", &Env).unwrap();
    let DestinationKindSettings::Amqp(a) = &cfg.destinations[0].kind else {
        panic!("not an amqp destination");
    };
    assert_eq!(a.url.expose(), DEFAULT_URL);
    assert!(a.mandatory && a.persistent);
    assert_eq!(a.timeout, Duration::from_secs(30));
    assert_eq!(
        a.declare.exchanges,
        vec![("orders".to_owned(), ExchangeType::Topic, true)]
    );
    assert_eq!(
        a.declare.queues,
        vec![("orders.audit".to_owned(), true, true)]
    );
    assert_eq!(a.declare.bindings[0].2, "orders.#");
    let DestinationKindSettings::Amqp(d) = &cfg.destinations[1].kind else {
        panic!("not an amqp destination");
    };
    assert_eq!(d.url.expose(), "amqps://app:pw@rabbit.example:5671/prod");
    assert!(!d.mandatory && !d.persistent);
    assert_eq!(d.exchange, "");
    assert!(
        !format!("{d:?}").contains("pw@"),
        "the password is not in Debug output"
    );
}

#[test]
fn amqp_destination_mistakes_are_named() {
    let bad = r#"
destinations:
  - id: r1
    kind: amqp
    url: http://rabbit:5672
    exchange: orders
    routing_key: "orders.{{ type "
    timeout: 0s
  - id: r2
    kind: amqp
    exchange: ""
    routing_key: ""
    declare:
      exchanges: [{ name: amq.mine }]
      queues: [{ name: q, durable: false, quorum: true }]
      bindings: [{ queue: q, exchange: "" }]
"#;
    let text = load_str(bad, "a.yaml", &Env).unwrap_err().to_string();
    for expected in [
        "destinations[0].url: an AMQP server address",
        "destinations[0].routing_key: template does not compile",
        "destinations[0].timeout: must be more than 0s",
        "destinations[1].routing_key: the default exchange",
        "destinations[1].declare.exchanges[0].name: names starting with `amq.`",
        "destinations[1].declare.queues[0].durable: a quorum queue is always durable",
        "destinations[1].declare.bindings[0].exchange: must name an exchange",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
    let unknown = "destinations:\n  - id: r\n    kind: amqp\n    exchange: x\n    routing_key: k\n    confirm: true\n";
    let text = load_str(unknown, "a.yaml", &Env).unwrap_err().to_string();
    assert!(text.contains("confirm"), "{text}");
}

#[test]
fn amqp_sources_validate_and_name_their_problems() {
    let yaml = r#"
sources:
  - id: orders
    kind: amqp
    queue: orders.incoming
    declare:
      queues: [{ name: orders.incoming }]
    decode: { format: json, type: order.placed }
  - id: raw
    kind: amqp
    url: ${env:AMQP_URL}
    queue: telemetry
    prefetch: 5
"#;
    let cfg = load_str(yaml, "s.yaml", &Env).unwrap();
    let SourceKindSettings::Amqp(a) = &cfg.sources[0].kind else {
        panic!("not an amqp source");
    };
    assert_eq!(cfg.sources[0].kind.name(), "amqp");
    assert_eq!(a.queue, "orders.incoming");
    assert_eq!(a.prefetch, 100);
    assert_eq!(a.decode.format, Format::Json);
    assert_eq!(a.decode.event_type.as_deref(), Some("order.placed"));
    assert_eq!(a.declare.queues.len(), 1);
    let SourceKindSettings::Amqp(b) = &cfg.sources[1].kind else {
        panic!("not an amqp source");
    };
    assert_eq!(b.prefetch, 5);
    assert_eq!(b.decode.format, Format::Auto);

    let bad = r#"
sources:
  - id: s1
    kind: amqp
    url: "rabbit:5672"
    queue: ""
    prefetch: 0
  - id: s2
    kind: amqp
    queue: q
    prefetch: 70000
    decode: { type: "two words" }
"#;
    let text = load_str(bad, "s.yaml", &Env).unwrap_err().to_string();
    for expected in [
        "sources[0].url: an AMQP server address",
        "sources[0].queue: must name the queue",
        "sources[0].prefetch: must be between 1 and 65535",
        "sources[1].prefetch: must be between 1 and 65535",
        "sources[1].decode.type: an event type",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
}
