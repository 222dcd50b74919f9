//! `kind: amqp` destinations — messages published to a RabbitMQ (AMQP 0-9-1) exchange with
//! publisher confirms: the file's shape, the validated settings and the validation between
//! them. Also the pieces the `amqp` source shares: the server address and the `declare:`
//! block (exchanges, queues and bindings created on connect).

use std::time::Duration;

use estafeta_core::template::TemplateSet;
use serde::Deserialize;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// The server address used when `url` is not set.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The longest exchange, queue or routing key AMQP 0-9-1 carries (a short string).
pub const MAX_NAME_BYTES: usize = 255;

/// `kind: amqp` — publish each delivery to an exchange.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// Server address, `amqp://user:password@host:5672/vhost` (`amqps://` for TLS; the
    /// default virtual host `/` is written `%2f`); default
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`. It holds the password: use `${secret:…}` or
    /// `${env:…}`.
    #[serde(default)]
    pub url: Option<Text>,
    /// Exchange to publish to; `""` is the default exchange, which routes to the queue named
    /// by the routing key.
    pub exchange: String,
    /// Routing key: a template over the event, e.g. `orders.{{ type }}` (at most 255 bytes
    /// once rendered).
    pub routing_key: String,
    /// Ask the broker to return a message no queue receives; such a delivery fails with an
    /// error naming the exchange and the key (default true).
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// Persistent messages (`delivery_mode` 2), kept by durable queues across broker
    /// restarts (default true).
    #[serde(default = "yes")]
    pub persistent: bool,
    /// Exchanges, queues and bindings to create when connecting (all optional).
    #[serde(default)]
    pub declare: DeclareConfig,
    /// Time allowed for connecting and for one publish with its confirmation (default `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub timeout: DurationText,
}

fn yes() -> bool {
    true
}

/// `declare:` — what to create on connect; existing ones must have the same settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclareConfig {
    /// Exchanges to declare.
    #[serde(default)]
    pub exchanges: Vec<ExchangeConfig>,
    /// Queues to declare.
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    /// Bindings of queues to exchanges.
    #[serde(default)]
    pub bindings: Vec<BindingConfig>,
}

/// An exchange to declare.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Exchange name.
    pub name: String,
    /// `direct`, `fanout`, `topic` (default) or `headers`.
    #[serde(default, rename = "type")]
    pub kind: ExchangeType,
    /// Survives a broker restart (default true).
    #[serde(default = "yes")]
    pub durable: bool,
}

/// The routing an exchange does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeType {
    /// Routing key equals the binding key.
    Direct,
    /// Every bound queue.
    Fanout,
    /// Binding keys with `*` (one word) and `#` (any words).
    #[default]
    Topic,
    /// Matching on headers.
    Headers,
}

/// A queue to declare.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue name.
    pub name: String,
    /// Survives a broker restart (default true).
    #[serde(default = "yes")]
    pub durable: bool,
    /// A quorum queue (replicated; `x-queue-type: quorum`) instead of a classic one
    /// (default false).
    #[serde(default)]
    pub quorum: bool,
}

/// A binding to declare.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// The queue that receives.
    pub queue: String,
    /// The exchange that routes to it.
    pub exchange: String,
    /// Binding key (`#` matches everything on a topic exchange); default `""`.
    #[serde(default)]
    pub routing_key: String,
}

/// Validated `declare:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclareSettings {
    /// Exchanges: name, type, durable.
    pub exchanges: Vec<(String, ExchangeType, bool)>,
    /// Queues: name, durable, quorum.
    pub queues: Vec<(String, bool, bool)>,
    /// Bindings: queue, exchange, routing key.
    pub bindings: Vec<(String, String, String)>,
}

/// A validated AMQP destination.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// Destination id.
    pub id: String,
    /// Server address (holds the password).
    pub url: Secret,
    /// Exchange (`""`: the default exchange).
    pub exchange: String,
    /// Routing key template source.
    pub routing_key: String,
    /// Unroutable messages are returned and fail the delivery.
    pub mandatory: bool,
    /// `delivery_mode` 2.
    pub persistent: bool,
    /// What to declare on connect.
    pub declare: DeclareSettings,
    /// Connect and publish timeout.
    pub timeout: Duration,
}

/// The name the routing key template is compiled under.
#[must_use]
pub fn routing_key_template_name(id: &str) -> String {
    format!("destinations.{id}.routing_key")
}

/// True when `url` is an `amqp://` or `amqps://` address with a host.
#[must_use]
pub fn is_amqp_url(url: &str) -> bool {
    url::Url::parse(url.trim())
        .is_ok_and(|u| matches!(u.scheme(), "amqp" | "amqps") && u.host().is_some())
}

/// Resolves and checks an optional `url` field; the default address when absent.
pub(crate) fn validate_url(cx: &mut Ctx<'_>, p: &str, url: Option<&Text>) -> Option<Secret> {
    let Some(t) = url else {
        return Some(Secret::new(DEFAULT_URL.to_owned()));
    };
    let value = cx.resolve(t, &format!("{p}.url"))?.value;
    if !is_amqp_url(value.expose()) {
        cx.err_text(
            t,
            format!("{p}.url"),
            "an AMQP server address is `amqp://user:password@host:5672/vhost` or `amqps://…` (the default virtual host is written `%2f`)",
        );
    }
    Some(Secret::new(value.expose().trim().to_owned()))
}

/// Checks a name (exchange, queue, key) for AMQP: at most 255 bytes, no control characters.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.len() > MAX_NAME_BYTES {
        Some("is longer than the 255 bytes AMQP allows")
    } else if name.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    }
}

/// Checks a `declare:` block; `p` is the path of its parent (e.g. `destinations[0]`).
pub(crate) fn validate_declare(cx: &mut Ctx<'_>, p: &str, d: &DeclareConfig) -> DeclareSettings {
    let mut out = DeclareSettings::default();
    for (i, e) in d.exchanges.iter().enumerate() {
        let field = format!("{p}.declare.exchanges[{i}].name");
        if e.name.trim().is_empty() {
            cx.err_entry(
                field,
                "must name an exchange (the default exchange exists already)",
            );
        } else if e.name.starts_with("amq.") {
            cx.err_entry(
                field,
                "names starting with `amq.` are reserved by the broker",
            );
        } else if let Some(problem) = name_problem(&e.name) {
            cx.err_entry(field, problem);
        }
        out.exchanges.push((e.name.clone(), e.kind, e.durable));
    }
    for (i, q) in d.queues.iter().enumerate() {
        let field = format!("{p}.declare.queues[{i}].name");
        if q.name.trim().is_empty() {
            cx.err_entry(field, "must name a queue");
        } else if let Some(problem) = name_problem(&q.name) {
            cx.err_entry(field, problem);
        }
        if q.quorum && !q.durable {
            cx.err_entry(
                format!("{p}.declare.queues[{i}].durable"),
                "a quorum queue is always durable",
            );
        }
        out.queues.push((q.name.clone(), q.durable, q.quorum));
    }
    for (i, b) in d.bindings.iter().enumerate() {
        let at = format!("{p}.declare.bindings[{i}]");
        if b.queue.trim().is_empty() {
            cx.err_entry(format!("{at}.queue"), "must name a queue");
        }
        if b.exchange.trim().is_empty() {
            cx.err_entry(
                format!("{at}.exchange"),
                "must name an exchange (the default exchange cannot be bound)",
            );
        }
        for (name, value) in [
            ("queue", &b.queue),
            ("exchange", &b.exchange),
            ("routing_key", &b.routing_key),
        ] {
            if let Some(problem) = name_problem(value) {
                cx.err_entry(format!("{at}.{name}"), problem);
            }
        }
        out.bindings
            .push((b.queue.clone(), b.exchange.clone(), b.routing_key.clone()));
    }
    out
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &AmqpConfig,
) -> Option<AmqpSettings> {
    let url = validate_url(cx, p, c.url.as_ref())?;
    if let Some(problem) = name_problem(&c.exchange) {
        cx.err_entry(format!("{p}.exchange"), problem);
    }
    let mut templates = TemplateSet::new();
    if let Err(e) = templates.add(&routing_key_template_name(id), &c.routing_key) {
        cx.err_entry(
            format!("{p}.routing_key"),
            format!(
                "template does not compile: {} (line {} of the template)",
                e.message,
                e.line.unwrap_or(1)
            ),
        );
    } else if c.exchange.is_empty() && c.routing_key.trim().is_empty() {
        cx.err_entry(
            format!("{p}.routing_key"),
            "the default exchange (`exchange: \"\"`) routes by queue name: the routing key must name a queue",
        );
    } else if !c.routing_key.contains("{{")
        && !c.routing_key.contains("{%")
        && let Some(problem) = name_problem(&c.routing_key)
    {
        cx.err_entry(format!("{p}.routing_key"), problem);
    }
    let declare = validate_declare(cx, p, &c.declare);
    if c.timeout.0.is_zero() {
        cx.err_entry(format!("{p}.timeout"), "must be more than 0s");
    }
    Some(AmqpSettings {
        id: id.to_owned(),
        url,
        exchange: c.exchange.clone(),
        routing_key: c.routing_key.clone(),
        mandatory: c.mandatory,
        persistent: c.persistent,
        declare,
        timeout: c.timeout.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_urls_need_the_scheme_and_a_host() {
        assert!(is_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f"));
        assert!(is_amqp_url("amqps://rabbit.example.com/prod"));
        assert!(!is_amqp_url("http://127.0.0.1:5672"));
        assert!(!is_amqp_url("127.0.0.1:5672"));
    }

    #[test]
    fn names_are_short_strings_without_control_characters() {
        assert!(name_problem("orders.created").is_none());
        assert!(name_problem(&"x".repeat(256)).is_some());
        assert!(name_problem("a\nb").is_some());
    }
}
