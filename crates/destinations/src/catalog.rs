//! The destination kinds with a minimal JSON Schema each, for `GET /v1/plugins` (the console
//! renders forms from them). The schemas name each kind's required fields and main options;
//! the configuration reference (`docs/configuration.md`) has every field. A new kind adds a
//! row here next to its arm in [`registry`](crate::registry).

use serde_json::{Map, Value, json};

/// One destination kind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DestinationInfo {
    /// The `kind`.
    pub kind: &'static str,
    /// What it does.
    pub description: &'static str,
    /// A minimal JSON Schema of its settings.
    pub settings_schema: Value,
}

/// `(kind, description, required fields, optional fields)`; every field is a string except
/// the ones the schema builder knows to be otherwise.
const KINDS: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "webhook",
        "HTTP webhooks signed per the Standard Webhooks specification.",
        &["url"],
        &[
            "secret",
            "headers",
            "timeout",
            "allow_private_networks",
            "batch",
        ],
    ),
    (
        "telegram",
        "Messages to a Telegram chat through the Bot API.",
        &["token", "chat_id"],
        &[
            "parse_mode",
            "disable_notification",
            "message_thread_id",
            "long_messages",
            "api_url",
            "timeout",
        ],
    ),
    (
        "ntfy",
        "Push notifications through an ntfy server.",
        &["topic"],
        &[
            "url", "title", "priority", "tags", "click", "markdown", "token", "username",
            "password", "timeout",
        ],
    ),
    (
        "amqp",
        "Messages published to a RabbitMQ (AMQP 0-9-1) exchange with publisher confirms.",
        &["exchange", "routing_key"],
        &["url", "mandatory", "persistent", "declare", "timeout"],
    ),
    (
        "nats",
        "Messages published to NATS subjects, acknowledged by JetStream.",
        &["subject"],
        &[
            "url",
            "jetstream",
            "token",
            "username",
            "password",
            "timeout",
        ],
    ),
    (
        "mqtt",
        "Messages published with QoS 1 to MQTT topics.",
        &["topic"],
        &[
            "url",
            "retain",
            "client_id",
            "username",
            "password",
            "keep_alive",
            "timeout",
        ],
    ),
    (
        "kafka",
        "Messages produced to a Kafka topic (idempotent producer, acks=all).",
        &["topic"],
        &[
            "brokers",
            "tls",
            "ca_file",
            "sasl",
            "key",
            "mode",
            "compression",
            "timeout",
        ],
    ),
    (
        "slack",
        "A Slack channel's incoming webhook.",
        &["url"],
        &["timeout"],
    ),
    (
        "teams",
        "A Microsoft Teams channel's incoming webhook.",
        &["url"],
        &["timeout"],
    ),
    (
        "discord",
        "A Discord channel's webhook.",
        &["url"],
        &["timeout"],
    ),
    (
        "google_chat",
        "A Google Chat space's incoming webhook.",
        &["url"],
        &["timeout"],
    ),
    (
        "smtp",
        "E-mail through an SMTP server.",
        &["host", "from", "to"],
        &[
            "port", "tls", "username", "password", "cc", "bcc", "reply_to", "subject", "html",
            "timeout",
        ],
    ),
    (
        "s3",
        "Batches of records as objects (CSV, JSON Lines, JSON) in an S3-compatible bucket.",
        &["bucket", "access_key_id", "secret_access_key"],
        &[
            "endpoint",
            "region",
            "path_style",
            "prefix",
            "key",
            "format",
            "columns",
            "gzip",
            "split_arrays",
            "batch",
            "max_records",
            "max_bytes",
            "max_wait",
            "timeout",
        ],
    ),
    (
        "file",
        "Batches of records as files under a local directory.",
        &["path"],
        &[
            "prefix",
            "key",
            "format",
            "columns",
            "gzip",
            "split_arrays",
            "batch",
            "max_records",
            "max_bytes",
            "max_wait",
        ],
    ),
];

fn field_schema(name: &str) -> Value {
    match name {
        "allow_private_networks"
        | "disable_notification"
        | "markdown"
        | "html"
        | "gzip"
        | "split_arrays"
        | "path_style"
        | "jetstream"
        | "retain" => json!({ "type": "boolean" }),
        "mandatory" | "persistent" => json!({ "type": "boolean" }),
        "declare" => json!({
            "type": "object",
            "properties": {
                "exchanges": { "type": "array", "items": { "type": "object", "properties": {
                    "name": { "type": "string" },
                    "type": { "enum": ["direct", "fanout", "topic", "headers"] },
                    "durable": { "type": "boolean" } }, "required": ["name"] } },
                "queues": { "type": "array", "items": { "type": "object", "properties": {
                    "name": { "type": "string" },
                    "durable": { "type": "boolean" },
                    "quorum": { "type": "boolean" } }, "required": ["name"] } },
                "bindings": { "type": "array", "items": { "type": "object", "properties": {
                    "queue": { "type": "string" },
                    "exchange": { "type": "string" },
                    "routing_key": { "type": "string" } }, "required": ["queue", "exchange"] } },
            },
        }),
        "tls" => json!({ "type": "boolean" }),
        "sasl" => json!({
            "type": "object",
            "properties": {
                "mechanism": { "enum": ["scram-sha-256", "scram-sha-512", "plain"] },
                "username": { "type": "string" },
                "password": { "type": "string", "format": "password" },
            },
            "required": ["username", "password"],
        }),
        "port" | "message_thread_id" | "max_records" => json!({ "type": "integer" }),
        "tags" | "to" | "cc" | "bcc" | "columns" => {
            json!({ "type": "array", "items": { "type": "string" } })
        }
        "headers" => json!({ "type": "object", "additionalProperties": { "type": "string" } }),
        "batch" => json!({}),
        "secret" | "token" | "password" | "secret_access_key" => {
            json!({ "type": "string", "format": "password" })
        }
        _ => json!({ "type": "string" }),
    }
}

/// Every destination kind.
#[must_use]
pub fn catalog() -> Vec<DestinationInfo> {
    KINDS
        .iter()
        .map(|(kind, description, required, optional)| {
            let mut props = Map::new();
            props.insert("kind".into(), json!({ "const": kind }));
            props.insert("id".into(), json!({ "type": "string" }));
            for f in required.iter().chain(optional.iter()) {
                props.insert((*f).to_owned(), field_schema(f));
            }
            let mut req = vec!["id", "kind"];
            req.extend(required.iter());
            DestinationInfo {
                kind,
                description,
                settings_schema: json!({
                    "type": "object",
                    "required": req,
                    "properties": props,
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kind_has_a_schema_naming_its_kind() {
        let all = super::catalog();
        assert_eq!(all.len(), 14);
        for d in all {
            assert_eq!(d.settings_schema["properties"]["kind"]["const"], d.kind);
        }
    }
}
