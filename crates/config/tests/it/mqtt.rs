//! `kind: mqtt` sources and destinations in the configuration: defaults, credentials from
//! secrets, topic and filter rules, the shared `decode:` block, and how mistakes are named.

use std::time::Duration;

use estafeta_config::broker_source::Format;
use estafeta_config::{DestinationKindSettings, Lookup, SourceKindSettings, load_str};

struct Env;
impl Lookup for Env {
    fn env(&self, name: &str) -> Option<String> {
        (name == "MQTT_URL").then(|| "mqtt://broker.example:1884".into())
    }
    fn secret(&self, name: &str) -> Option<String> {
        (name == "mqtt_password").then(|| "s3cret".into())
    }
}

#[test]
fn mqtt_destinations_validate_with_their_defaults() {
    let yaml = r#"
destinations:
  - id: devices
    kind: mqtt
    topic: "alerts/{{ data.site }}/{{ type }}"
  - id: panel
    kind: mqtt
    url: ${env:MQTT_URL}
    topic: panel/state
    retain: true
    client_id: estafeta-panel
    username: estafeta
    password: ${secret:mqtt_password}
    keep_alive: 10s
    timeout: 5s
"#;
    let cfg = load_str(yaml, "m.yaml", &Env).unwrap();
    let DestinationKindSettings::Mqtt(d) = &cfg.destinations[0].kind else {
        panic!("not an mqtt destination");
    };
    assert_eq!((d.host.as_str(), d.port), ("127.0.0.1", 1883));
    assert!(!d.retain && d.client_id.is_none() && d.credentials.is_none());
    assert_eq!(d.keep_alive, Duration::from_secs(30));
    assert_eq!(d.timeout, Duration::from_secs(30));
    let DestinationKindSettings::Mqtt(p) = &cfg.destinations[1].kind else {
        panic!("not an mqtt destination");
    };
    assert_eq!((p.host.as_str(), p.port), ("broker.example", 1884));
    assert!(p.retain);
    assert_eq!(p.client_id.as_deref(), Some("estafeta-panel"));
    let creds = p.credentials.as_ref().unwrap();
    assert_eq!(creds.password.expose(), "s3cret");
    assert!(
        !format!("{p:?}").contains("s3cret"),
        "the password must not show in Debug"
    );
    assert_eq!(p.keep_alive, Duration::from_secs(10));
}

#[test]
fn mqtt_destination_mistakes_are_named() {
    let bad = r#"
destinations:
  - id: a
    kind: mqtt
    url: mqtts://broker:8883
    topic: "alerts/#"
    username: only-the-user
    keep_alive: 1s
    timeout: 0s
  - id: b
    kind: mqtt
    topic: "alerts/{{ type "
"#;
    let text = load_str(bad, "m.yaml", &Env).unwrap_err().to_string();
    for expected in [
        "destinations[0].url: an MQTT broker address is `mqtt://host:1883`",
        "destinations[0].topic: `alerts/#` is not a topic to publish to",
        "destinations[0].username: authentication needs both",
        "destinations[0].keep_alive: must be between 5s and 65535s",
        "destinations[0].timeout: must be more than 0s",
        "destinations[1].topic: template does not compile",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
    // QoS is always 1: there is no setting for it.
    let text = load_str(
        "destinations:\n  - id: c\n    kind: mqtt\n    topic: x\n    qos: 2\n",
        "m.yaml",
        &Env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        text.contains("m.yaml:5:5") && text.contains("unknown field `qos`"),
        "{text}"
    );
}

#[test]
fn mqtt_sources_validate_with_a_fixed_client_id_and_the_decode_block() {
    let yaml = r#"
sources:
  - id: turnstiles
    kind: mqtt
    topics: ["site/+/turnstile/+/access", "site/+/alarms/#"]
    decode: { format: json, type: turnstile.access }
"#;
    let cfg = load_str(yaml, "m.yaml", &Env).unwrap();
    let SourceKindSettings::Mqtt(s) = &cfg.sources[0].kind else {
        panic!("not an mqtt source");
    };
    assert_eq!(s.client_id, "estafeta-turnstiles");
    assert_eq!(s.topics.len(), 2);
    assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1883));
    assert_eq!(s.decode.format, Format::Json);
    assert_eq!(s.decode.event_type.as_deref(), Some("turnstile.access"));
    assert_eq!(cfg.sources[0].kind.name(), "mqtt");
}

#[test]
fn mqtt_source_mistakes_are_named() {
    let bad = r#"
sources:
  - id: a
    kind: mqtt
    topics: ["site/#/x", "ok/+", "bad+/y"]
    decode: { type: "two words" }
  - id: b
    kind: mqtt
    topics: []
    client_id: ""
"#;
    let text = load_str(bad, "m.yaml", &Env).unwrap_err().to_string();
    for expected in [
        "sources[0].topics[0]: `site/#/x` is not a topic filter",
        "sources[0].topics[2]: `bad+/y` is not a topic filter",
        "sources[0].decode.type: an event type must be non-empty",
        "sources[1].topics: list at least one topic filter",
        "sources[1].client_id: must be non-empty",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
    assert!(!text.contains("topics[1]"), "{text}");
}
