//! Validated, resolved settings: what the runtime components are built from. Nothing here
//! can be invalid; secrets are wrapped in [`Secret`].

use std::time::Duration;

use estafeta_core::RetryPolicy;

use crate::text::Secret;

/// A validated webhook destination.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Destination id.
    pub id: String,
    /// Endpoint URL (http or https), may carry a secret in its query.
    pub url: Secret,
    /// The signing secret as written (`whsec_<base64>`), if signing.
    pub signing_key: Option<Secret>,
    /// Extra headers (name, value).
    pub headers: Vec<(String, Secret)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Whether private addresses are allowed.
    pub allow_private_networks: bool,
    /// Batch mode: most events per request and the longest wait; `None` sends one per request.
    pub batch: Option<(usize, Duration)>,
}

/// Rate limit: `count` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

/// Circuit breaker settings; `None` in [`DestinationSettings`] means disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Open after failing continuously for this long.
    pub failure_window: Duration,
    /// Probe this often while open.
    pub probe_interval: Duration,
}

/// What every destination has besides its kind.
#[derive(Debug, Clone)]
pub struct DestinationSettings {
    /// Destination id.
    pub id: String,
    /// Max attempts in flight.
    pub concurrency: usize,
    /// Most deliveries kept in memory.
    pub queue_capacity: usize,
    /// Optional rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Circuit breaker, if enabled.
    pub breaker: Option<BreakerSettings>,
    /// The kind and its settings.
    pub kind: DestinationKindSettings,
}

/// Kind-specific validated settings.
#[derive(Debug, Clone)]
pub enum DestinationKindSettings {
    /// A webhook.
    Webhook(WebhookSettings),
    /// A Telegram chat.
    Telegram(Box<crate::telegram_destination::TelegramSettings>),
    /// An ntfy topic.
    Ntfy(Box<crate::ntfy_destination::NtfySettings>),
    /// A chat channel's incoming webhook (Slack, Teams, Discord, Google Chat).
    Chat(Box<crate::chat_destination::ChatSettings>),
    /// E-mail through an SMTP server.
    Smtp(Box<crate::smtp_destination::SmtpSettings>),
    /// NATS subjects, JetStream or core.
    Nats(Box<crate::nats_destination::NatsSettings>),
    /// A RabbitMQ exchange, publisher confirms.
    Amqp(Box<crate::amqp_destination::AmqpSettings>),
    /// A Kafka topic, acknowledged by all in-sync replicas.
    Kafka(Box<crate::kafka_destination::KafkaDestinationSettings>),
    /// MQTT topics, QoS 1.
    Mqtt(Box<crate::mqtt_destination::MqttSettings>),
    /// Objects in an S3 or S3-compatible bucket.
    S3(Box<crate::object_destination::S3Settings>),
    /// Files under a local directory.
    File(Box<crate::object_destination::FileSettings>),
}

impl DestinationKindSettings {
    /// How values printed by a route's template for this destination are escaped.
    #[must_use]
    pub fn template_escape(&self) -> estafeta_core::template::Escape {
        match self {
            Self::Webhook(_) | Self::Ntfy(_) | Self::Nats(_) | Self::Mqtt(_) | Self::Amqp(_) => {
                estafeta_core::template::Escape::None
            }
            Self::Kafka(_) => estafeta_core::template::Escape::None,
            Self::Telegram(t) => t.parse_mode.escape(),
            Self::Chat(c) => c.service.escape(),
            Self::Smtp(s) if s.html => estafeta_core::template::Escape::Html,
            Self::Smtp(_) => estafeta_core::template::Escape::None,
            // A template's output is parsed as one JSON record: values printed between
            // quotes cannot break out of their string.
            Self::S3(_) | Self::File(_) => estafeta_core::template::Escape::Json,
        }
    }
}

/// Headers a webhook sets itself; configuring them is an error.
pub const RESERVED_WEBHOOK_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-estafeta-delivery",
    "x-estafeta-attempt",
];
