//! `kind: amqp` sources — messages consumed from a RabbitMQ (AMQP 0-9-1) queue with manual
//! acknowledgements after the durable append: the file's shape, the validated settings and
//! the validation between them.

use serde::Deserialize;

use crate::amqp_destination::{DeclareConfig, DeclareSettings, MAX_NAME_BYTES, validate_declare};
use crate::broker_source::{DecodeConfig, DecodeSettings};
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// Unacknowledged messages the broker hands over at once when `prefetch` is not set.
pub const DEFAULT_PREFETCH: u16 = 100;

/// `kind: amqp` — consume a queue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    /// Server address, `amqp://user:password@host:5672/vhost` (`amqps://` for TLS; the
    /// default virtual host `/` is written `%2f`); default
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`. It holds the password: use `${secret:…}` or
    /// `${env:…}`.
    #[serde(default)]
    pub url: Option<Text>,
    /// The queue to consume. It must exist, or be listed in `declare.queues`.
    pub queue: String,
    /// Most messages delivered and not yet acknowledged (AMQP `basic.qos`), 1–65535
    /// (default 100). Messages are acknowledged once stored, so this bounds what is in
    /// memory and what the broker redelivers after a crash.
    #[serde(default = "default_prefetch")]
    pub prefetch: u32,
    /// Exchanges, queues and bindings to create when connecting (all optional).
    #[serde(default)]
    pub declare: DeclareConfig,
    /// How message payloads become events (see the broker sources' `decode:` block).
    #[serde(default)]
    pub decode: DecodeConfig,
}

fn default_prefetch() -> u32 {
    u32::from(DEFAULT_PREFETCH)
}

/// A validated AMQP source.
#[derive(Debug, Clone)]
pub struct AmqpSourceSettings {
    /// Source id.
    pub id: String,
    /// Server address (holds the password).
    pub url: Secret,
    /// Queue consumed.
    pub queue: String,
    /// `basic.qos` prefetch count.
    pub prefetch: u16,
    /// What to declare on connect.
    pub declare: DeclareSettings,
    /// How payloads are decoded.
    pub decode: DecodeSettings,
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &AmqpSourceConfig,
) -> Option<AmqpSourceSettings> {
    let url = crate::amqp_destination::validate_url(cx, p, c.url.as_ref())?;
    if c.queue.trim().is_empty() {
        cx.err_entry(format!("{p}.queue"), "must name the queue to consume");
    } else if c.queue.len() > MAX_NAME_BYTES || c.queue.chars().any(char::is_control) {
        cx.err_entry(
            format!("{p}.queue"),
            "a queue name is at most 255 bytes without control characters",
        );
    }
    let prefetch = match u16::try_from(c.prefetch) {
        Ok(n) if n > 0 => n,
        _ => {
            cx.err_entry(format!("{p}.prefetch"), "must be between 1 and 65535");
            DEFAULT_PREFETCH
        }
    };
    let declare = validate_declare(cx, p, &c.declare);
    let decode = crate::broker_source::validate(cx, &format!("{p}.decode"), &c.decode);
    Some(AmqpSourceSettings {
        id: id.to_owned(),
        url,
        queue: c.queue.clone(),
        prefetch,
        declare,
        decode,
    })
}
