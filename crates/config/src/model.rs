//! The configuration file's shape: serde structs, unknown keys rejected. Field docs here are
//! the configuration reference (`docs/configuration.md` follows them).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::duration::DurationText;
use crate::text::Text;

/// The whole file. Every section is optional: an empty file runs the embedded defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Where data lives: `sqlite://PATH` (default `sqlite://./estafeta-data/estafeta.db`).
    pub storage: Option<Spanned<String>>,
    /// Ingest settings.
    pub ingest: IngestConfig,
    /// Logging.
    pub log: LogConfig,
    /// Event sources; an `http` source exists even when not listed.
    pub sources: Vec<SourceConfig>,
    /// Routes from sources to destinations.
    pub routes: Vec<RouteConfig>,
    /// Destinations events are delivered to.
    pub destinations: Vec<DestinationConfig>,
    /// Retention policies for events and objects (see `docs/retention.md`).
    pub retention: crate::retention::RetentionConfig,
}

/// `server:` — the API listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on, `IP:PORT` (default `127.0.0.1:8080`; port 0 picks a free port).
    pub listen: Spanned<String>,
    /// Largest accepted request body in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// The admin API token. Default: `ESTAFETA_ADMIN_TOKEN`, else one generated on first
    /// start and printed once.
    pub admin_token: Option<Text>,
    /// How long to let in-flight attempts finish on shutdown (default `10s`).
    pub shutdown_grace: DurationText,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: Spanned::new(
                "127.0.0.1:8080".to_owned(),
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            ),
            max_body_bytes: 1024 * 1024,
            admin_token: None,
            shutdown_grace: DurationText::from_secs(10),
        }
    }
}

/// `ingest:` — how events are accepted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// How long an event id (or `Idempotency-Key`) is remembered to drop duplicates
    /// (default `24h`).
    pub dedupe_window: DurationText,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            dedupe_window: DurationText::from_secs(24 * 3600),
        }
    }
}

/// `log:` — logging.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A filter such as `info` or `estafeta_engine=debug,info` (default `info`; the
    /// `ESTAFETA_LOG` variable overrides it).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One entry of `sources:`. (Unknown keys are rejected by the kind's own struct: serde
/// cannot combine `deny_unknown_fields` with `flatten`.)
#[derive(Debug, Deserialize)]
pub struct SourceConfig {
    /// Unique id, referenced by routes' `from`.
    pub id: Spanned<String>,
    /// The kind of source and its settings.
    #[serde(flatten)]
    pub kind: SourceKind,
}

/// Source kinds.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceKind {
    /// Events POSTed to `/v1/events`.
    Http(HttpSourceConfig),
    /// PostgreSQL change data capture.
    Postgres(Box<crate::postgres_source::PostgresSourceConfig>),
    /// MySQL/MariaDB change data capture (binary log).
    Mysql(Box<crate::mysql_source::MysqlSourceConfig>),
    /// A queue (outbox) table polled in PostgreSQL, MySQL/MariaDB or SQLite.
    Outbox(Box<crate::outbox_source::OutboxSourceConfig>),
    /// Runs on a cron expression, an interval or once.
    Schedule(Box<crate::schedule_source::ScheduleSourceConfig>),
    /// A RabbitMQ (AMQP 0-9-1) queue consumed with acknowledgements after the durable append.
    Amqp(Box<crate::amqp_source::AmqpSourceConfig>),
    /// A NATS JetStream stream read through a durable consumer.
    Nats(Box<crate::nats_source::NatsSourceConfig>),
    /// Kafka topics read in a consumer group, offsets committed after storing.
    Kafka(Box<crate::kafka_source::KafkaSourceConfig>),
    /// MQTT topic filters subscribed with QoS 1 in a persistent session.
    Mqtt(Box<crate::mqtt_source::MqttSourceConfig>),
}

/// `kind: http` — the ingest API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSourceConfig {}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique id.
    pub id: Spanned<String>,
    /// Source ids this route reads (default: all sources).
    #[serde(default)]
    pub from: OneOrMany,
    /// Event-type globs (`order.*`); default: every type.
    #[serde(default, rename = "match")]
    pub match_types: OneOrMany,
    /// A CEL expression the event must satisfy, e.g. `data.total > 100`.
    #[serde(default)]
    pub filter: Option<Spanned<String>>,
    /// `none` (default) or `key`: one delivery in flight per event key, in log order.
    #[serde(default)]
    pub ordering: Ordering,
    /// Steps run in order before the destinations: `enrich`, `filter`, `transform`.
    #[serde(default)]
    pub steps: Vec<crate::route_steps::StepConfig>,
    /// Where matching events go.
    pub to: Vec<RouteTarget>,
}

/// A string or a list of strings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// Nothing given.
    #[default]
    None,
    /// One value.
    One(Spanned<String>),
    /// Several values.
    Many(Vec<Spanned<String>>),
}

impl OneOrMany {
    /// The values, in order.
    #[must_use]
    pub fn values(&self) -> Vec<&Spanned<String>> {
        match self {
            Self::None => Vec::new(),
            Self::One(v) => vec![v],
            Self::Many(v) => v.iter().collect(),
        }
    }
}

/// Delivery ordering for a route.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Deliveries go out concurrently.
    #[default]
    None,
    /// Deliveries of one event key go out one at a time, in log order.
    Key,
}

/// One entry of a route's `to:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    /// The destination id.
    pub destination: Spanned<String>,
    /// A minijinja template for the message body; default: the event as structured
    /// CloudEvent JSON.
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    /// Media type of the rendered template (default `application/json` when the template's
    /// output parses as JSON, else `text/plain; charset=utf-8`).
    #[serde(default)]
    pub content_type: Option<String>,
}

/// One entry of `destinations:`. (Unknown keys are rejected by the kind's own struct.)
#[derive(Debug, Deserialize)]
pub struct DestinationConfig {
    /// Unique id, referenced by routes.
    pub id: Spanned<String>,
    /// At most this many attempts in flight at once (default 32).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Optional rate limit, e.g. `100/s`, `600/min`.
    #[serde(default)]
    pub rate_limit: Option<Spanned<String>>,
    /// Most deliveries (with their events) kept in memory for this destination (default
    /// 20000). A larger backlog waits in the store and is read back as room frees up.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Retry schedule.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit breaker.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// The kind of destination and its settings.
    #[serde(flatten)]
    pub kind: DestinationKind,
}

fn default_concurrency() -> usize {
    32
}

fn default_queue_capacity() -> usize {
    20_000
}

/// Destination kinds.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DestinationKind {
    /// HTTP webhooks signed per the Standard Webhooks specification.
    Webhook(WebhookConfig),
    /// Messages to a Telegram chat through the Bot API.
    Telegram(crate::telegram_destination::TelegramConfig),
    /// Push notifications through an ntfy server.
    Ntfy(Box<crate::ntfy_destination::NtfyConfig>),
    /// A Slack channel's incoming webhook.
    Slack(crate::chat_destination::ChatConfig),
    /// A Microsoft Teams channel's incoming webhook (Workflows or connector).
    Teams(crate::chat_destination::ChatConfig),
    /// A Discord channel's webhook.
    Discord(crate::chat_destination::ChatConfig),
    /// A Google Chat space's incoming webhook.
    GoogleChat(crate::chat_destination::ChatConfig),
    /// E-mail through an SMTP server.
    Smtp(Box<crate::smtp_destination::SmtpConfig>),
    /// Messages published to NATS subjects, acknowledged by JetStream.
    Nats(Box<crate::nats_destination::NatsConfig>),
    /// Messages published to a RabbitMQ (AMQP 0-9-1) exchange with publisher confirms.
    Amqp(Box<crate::amqp_destination::AmqpConfig>),
    /// Messages produced to a Kafka topic (idempotent producer, `acks=all`).
    Kafka(Box<crate::kafka_destination::KafkaDestinationConfig>),
    /// Messages published with QoS 1 to MQTT topics.
    Mqtt(Box<crate::mqtt_destination::MqttConfig>),
    /// Batches of records as objects in an S3 or S3-compatible bucket.
    S3(Box<crate::object_destination::S3Config>),
    /// Batches of records as files under a local directory.
    File(Box<crate::object_destination::FileConfig>),
}

/// `kind: webhook`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Endpoint URL (`http://` or `https://`); `${env:…}` references allowed.
    pub url: Text,
    /// Signing secret, `whsec_` followed by base64 (Standard Webhooks); requests are unsigned
    /// without one.
    #[serde(default)]
    pub secret: Option<Text>,
    /// Extra request headers; values may use `${env:…}` and `${secret:…}`.
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// Time allowed for one request, connect to last byte (default `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub timeout: DurationText,
    /// Allow private, loopback and link-local addresses (default false: refused).
    #[serde(default)]
    pub allow_private_networks: bool,
    /// Send several events per request as a JSON array.
    #[serde(default)]
    pub batch: Option<BatchConfig>,
}

/// `batch:` of a webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events in one request (default 100).
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    /// Longest wait for a batch to fill (default `50ms`).
    #[serde(default = "default_batch_wait")]
    pub max_wait: DurationText,
}

fn default_batch_events() -> usize {
    100
}

fn default_batch_wait() -> DurationText {
    DurationText::from_millis(50)
}

/// `retry:` of a destination.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Delays before each attempt, e.g. `[0s, 5s, 5m]` (default: immediately, 5 s, 5 min,
    /// 30 min, 2 h, 5 h, 10 h, 10 h).
    pub schedule: Option<Vec<DurationText>>,
    /// Random spread applied to each delay, 0 to 1 (default 0.1 = ±10 %).
    pub jitter: Option<f64>,
}

/// `circuit_breaker:` of a destination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Turn the breaker on (default true).
    pub enabled: bool,
    /// Open after failing continuously for this long (default `1m`).
    pub failure_window: DurationText,
    /// While open, probe with one attempt this often (default `15s`).
    pub probe_interval: DurationText,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_window: DurationText::from_secs(60),
            probe_interval: DurationText::from_secs(15),
        }
    }
}
