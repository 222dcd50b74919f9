//! Configuration: parsing, validation and error reporting as a user sees them.

#![allow(clippy::unwrap_used)]

mod amqp;
mod kafka;
mod mqtt;
mod object;
mod retention;
mod steps;

use estafeta_config::{Lookup, SourceKindSettings, StorageSettings, load_str};

struct Env;
impl Lookup for Env {
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "HOOK_URL" => Some("https://hooks.example.org/in".into()),
            _ => None,
        }
    }
    fn secret(&self, name: &str) -> Option<String> {
        (name == "shop_whsec").then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())
    }
}

const GOOD: &str = r#"
server: { listen: "127.0.0.1:9999" }
routes:
  - id: big-orders
    from: http
    match: "order.*"
    filter: 'data.total > 100 && subject.startsWith("br-")'
    to:
      - destination: shop
        template: "Order {{ id }}: {{ data.total }}"
destinations:
  - id: shop
    kind: webhook
    url: ${env:HOOK_URL}
    secret: ${secret:shop_whsec}
    headers: { X-Team: integrations }
    retry: { schedule: [0s, 1s, 2s] }
    rate_limit: 100/s
"#;

#[test]
fn a_good_file_validates() {
    let c = load_str(GOOD, "good.yaml", &Env).unwrap();
    assert_eq!(c.listen.port(), 9999);
    assert_eq!(c.routes[0].match_types, vec!["order.*".to_owned()]);
    assert!(c.routes[0].filter.is_some());
    assert_eq!(c.destinations[0].retry.max_attempts(), 3);
    assert!(
        c.sources
            .iter()
            .any(|s| s.id == "http" && matches!(s.kind, SourceKindSettings::Http))
    );
    assert!(c.templates.contains("routes.big-orders.to[0].template"));
    // Secrets never show in debug output.
    assert!(!format!("{c:?}").contains("MfKQ9r8"));
}

#[test]
fn empty_file_means_defaults() {
    let c = load_str("", "empty.yaml", &Env).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        c.storage,
        StorageSettings::Sqlite {
            path: "./estafeta-data/estafeta.db".into()
        }
    );
}

#[test]
fn unknown_keys_are_errors_with_line_and_column() {
    let err = load_str(
        "server:\n  listen: 127.0.0.1:1\n  lisen: x\n",
        "f.yaml",
        &Env,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("f.yaml:3:"), "{text}");
    assert!(text.contains("lisen"), "{text}");
}

#[test]
fn all_problems_are_reported_at_once_with_places() {
    let yaml = r#"
routes:
  - id: r1
    from: nowhere
    filter: "data.total >"
    to:
      - destination: missing
        template: "{{ data.x "
destinations:
  - id: d1
    kind: webhook
    url: ftp://x
    secret: ${secret:nope}
"#;
    let err = load_str(yaml, "bad.yaml", &Env).unwrap_err();
    let text = err.to_string();
    assert!(err.0.len() >= 5, "{text}");
    assert!(
        text.contains("bad.yaml:3:9: routes[0].from: no source with id `nowhere`"),
        "{text}"
    );
    assert!(
        text.contains("routes[0].filter: route `r1`: filter does not compile"),
        "{text}"
    );
    assert!(
        text.contains("routes[0].to[0].destination: no destination with id `missing`"),
        "{text}"
    );
    assert!(text.contains("routes[0].to[0].template"), "{text}");
    assert!(text.contains("destinations[0].url"), "{text}");
    assert!(text.contains("secret `nope` is not defined"), "{text}");
    // Each error points at a line.
    assert!(err.0.iter().all(|e| e.line > 0), "{text}");
}

#[test]
fn bad_durations_and_rates_are_named() {
    let yaml = "destinations:\n  - id: d\n    kind: webhook\n    url: https://x.example\n    timeout: soon\n";
    let text = load_str(yaml, "d.yaml", &Env).unwrap_err().to_string();
    // Inside a kind's settings serde reports the entry's position.
    assert!(text.contains("d.yaml:2:5"), "{text}");
    assert!(text.contains("not a duration"), "{text}");
    let yaml = "destinations:\n  - id: d\n    kind: webhook\n    url: https://x.example\n    rate_limit: lots\n";
    let text = load_str(yaml, "d.yaml", &Env).unwrap_err().to_string();
    assert!(
        text.contains("d.yaml:5:17: destinations[0].rate_limit"),
        "{text}"
    );
}

#[test]
fn unknown_kinds_and_postgres_storage_are_explained() {
    let text = load_str(
        "destinations:\n  - id: d\n    kind: carrier-pigeon\n",
        "k.yaml",
        &Env,
    )
    .unwrap_err()
    .to_string();
    assert!(text.contains("carrier-pigeon"), "{text}");
    let text = load_str("storage: postgres://db/x\n", "s.yaml", &Env)
        .unwrap_err()
        .to_string();
    assert!(text.contains("s.yaml:1"), "{text}");
    assert!(text.contains("cluster mode"), "{text}");
}

#[test]
fn examples_in_the_repository_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    // Examples are files in `examples/` or in a folder of their own there.
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            paths.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            paths.push(path);
        }
    }
    for path in paths {
        if path.extension().is_some_and(|e| e == "yaml") {
            struct Any;
            impl Lookup for Any {
                fn env(&self, name: &str) -> Option<String> {
                    // Database URLs by their conventional names, endpoints otherwise.
                    Some(match name {
                        n if n.starts_with("PG") => "postgres://app@db.example:5432/app".into(),
                        n if n.starts_with("MYSQL") || n.starts_with("MARIADB") => {
                            "mysql://app@db.example:3306/app".into()
                        }
                        n if n.starts_with("KAFKA") => "kafka-1:9092,kafka-2:9092".into(),
                        n if n.starts_with("NATS") => "nats://nats.example:4222".into(),
                        n if n.starts_with("MQTT") => "mqtt://broker.example:1883".into(),
                        n if n.ends_with("CHAT_ID") => "-1001234567890".into(),
                        n if n.starts_with("AMQP") => {
                            "amqp://app:pw@rabbit.example:5672/%2f".into()
                        }
                        _ => "https://example.org/hook".into(),
                    })
                }
                fn secret(&self, name: &str) -> Option<String> {
                    // Bot tokens by their name, signing secrets otherwise.
                    Some(if name.starts_with("telegram") {
                        "123456789:AAH-example_token".into()
                    } else {
                        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()
                    })
                }
            }
            estafeta_config::load_file(&path, &Any)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs found in {}", dir.display());
}

#[test]
fn headers_estafeta_sets_itself_are_refused() {
    let yaml = "destinations:\n  - id: d\n    kind: webhook\n    url: https://x.example\n    headers: { Webhook-Signature: forged }\n";
    let text = load_str(yaml, "h.yaml", &Env).unwrap_err().to_string();
    assert!(
        text.contains("destinations[0].headers.Webhook-Signature"),
        "{text}"
    );
}

#[test]
fn telegram_destinations_validate_and_name_their_problems() {
    let yaml = r#"
routes:
  - id: alerts
    from: http
    match: "visitor.*"
    to:
      - destination: ops
        template: "*{{ data.name }}* has {{ data.hits }} record(s)"
destinations:
  - id: ops
    kind: telegram
    token: "123456:AAH-abc_DEF"
    chat_id: "-1001234567890"
    parse_mode: markdown_v2
    message_thread_id: 7
    api_url: http://127.0.0.1:8081/
    allow_private_networks: true
"#;
    let cfg = load_str(yaml, "t.yaml", &Env).unwrap();
    let estafeta_config::DestinationKindSettings::Telegram(t) = &cfg.destinations[0].kind else {
        panic!("not a telegram destination");
    };
    assert_eq!(t.chat_id, "-1001234567890");
    assert_eq!(t.api_url, "http://127.0.0.1:8081");
    assert_eq!(t.message_thread_id, Some(7));
    // The route's template escapes printed values for MarkdownV2.
    let event = estafeta_core::event::parse_cloudevent(
        serde_json::json!({"specversion":"1.0","id":"1","source":"s","type":"visitor.created",
                           "data":{"name":"Ana_B.","hits":2}}),
        &estafeta_core::TenantId::default(),
        "http",
        chrono::Utc::now(),
    )
    .unwrap();
    let name = estafeta_config::template_name("alerts", 0);
    assert_eq!(
        cfg.templates.render(&name, &event, &[]).unwrap(),
        "*Ana\\_B\\.* has 2 record(s)"
    );

    let bad = r#"
destinations:
  - id: ops
    kind: telegram
    token: "not-a-token"
    chat_id: "ops room"
    parse_mode: markdown
"#;
    let text = load_str(bad, "t.yaml", &Env).unwrap_err().to_string();
    assert!(
        text.contains("parse_mode") || text.contains("markdown"),
        "{text}"
    );
    let bad = "destinations:\n  - id: ops\n    kind: telegram\n    token: \"not-a-token\"\n    chat_id: \"ops room\"\n";
    let text = load_str(bad, "t.yaml", &Env).unwrap_err().to_string();
    // Inside a kind's settings serde reports the entry's position.
    assert!(
        text.contains("t.yaml:2:9: destinations[0].token: a bot token looks like"),
        "{text}"
    );
    assert!(
        text.contains("destinations[0].chat_id: a chat id is a number"),
        "{text}"
    );
}

#[test]
fn ntfy_destinations_validate_and_name_their_problems() {
    let yaml = r#"
destinations:
  - id: os
    kind: ntfy
    url: https://ntfy.example.org/
    topic: service-orders
    title: "Order {{ data.id }}"
    priority: high
    tags: [wrench]
    click: "https://erp.example/os/{{ data.id }}"
    token: tk_abc
"#;
    let cfg = load_str(yaml, "n.yaml", &Env).unwrap();
    let estafeta_config::DestinationKindSettings::Ntfy(n) = &cfg.destinations[0].kind else {
        panic!("not an ntfy destination");
    };
    assert_eq!(n.server, "https://ntfy.example.org");
    assert_eq!(n.priority, 4);
    assert!(matches!(
        n.auth,
        estafeta_config::ntfy_destination::NtfyAuth::Token(_)
    ));

    let bad = "destinations:\n  - id: os\n    kind: ntfy\n    topic: \"service orders\"\n    priority: 9\n    title: \"{{ data.id \"\n    username: ana\n";
    let text = load_str(bad, "n.yaml", &Env).unwrap_err().to_string();
    assert!(
        text.contains("destinations[0].topic: a topic is 1 to 64"),
        "{text}"
    );
    assert!(
        text.contains("destinations[0].priority: a priority is 1 to 5"),
        "{text}"
    );
    assert!(
        text.contains("destinations[0].title: template does not compile"),
        "{text}"
    );
    assert!(
        text.contains("destinations[0].username: basic authentication needs both"),
        "{text}"
    );
}

#[test]
fn nats_destinations_validate_and_name_their_problems() {
    let yaml = r#"
destinations:
  - id: bus
    kind: nats
    url: nats://127.0.0.1:4222,nats://10.0.0.2:4222
    subject: "orders.{{ type }}"
    username: estafeta
    password: s3cret
"#;
    let cfg = load_str(yaml, "n.yaml", &Env).unwrap();
    let estafeta_config::DestinationKindSettings::Nats(n) = &cfg.destinations[0].kind else {
        panic!("not a nats destination");
    };
    assert!(n.jetstream);
    assert_eq!(n.url, "nats://127.0.0.1:4222,nats://10.0.0.2:4222");
    assert!(matches!(
        n.auth,
        estafeta_config::nats_destination::NatsAuth::UserPassword { .. }
    ));

    let bad = "destinations:\n  - id: bus\n    kind: nats\n    url: http://x\n    subject: \"orders.{{ type \"\n    token: t\n    username: u\n  - id: b2\n    kind: nats\n    subject: \"orders.*\"\n    timeout: 0s\n";
    let text = load_str(bad, "n.yaml", &Env).unwrap_err().to_string();
    for expected in [
        "destinations[0].url: a NATS server address",
        "destinations[0].subject: template does not compile",
        "destinations[0].token: use either `token`",
        "destinations[1].subject: `orders.*` is not a subject to publish to",
        "destinations[1].timeout: must be more than 0s",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
}
