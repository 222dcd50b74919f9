//! Estafeta's configuration in three steps: parse (YAML into serde structs, unknown keys
//! rejected, errors with line and column), validate (pure, every problem reported at once,
//! `${env:…}`/`${secret:…}` resolved) and hand the runtime validated [`settings`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod amqp_destination;
pub mod amqp_source;
pub mod broker_source;
pub mod chat_destination;
pub mod duration;
pub mod kafka_connection;
pub mod kafka_destination;
pub mod kafka_source;
pub mod model;
pub mod mqtt_destination;
pub mod mqtt_source;
pub mod mysql_source;
pub mod nats_destination;
pub mod nats_source;
pub mod ntfy_destination;
pub mod object_destination;
pub mod outbox_source;
pub mod postgres_source;
pub mod provider;
pub mod provider_http;
pub mod retention;
pub mod route_steps;
pub mod schedule_source;
pub mod settings;
pub mod smtp_destination;
pub mod telegram_destination;
pub mod text;

pub use duration::DurationText;
pub use settings::{
    BreakerSettings, DestinationKindSettings, DestinationSettings, RESERVED_WEBHOOK_HEADERS,
    RateLimit, WebhookSettings,
};
pub use text::{Lookup, ProcessLookup, Secret, Text};

mod errors;
mod parse;
mod validate;

pub use errors::{ConfigError, ConfigErrors};
pub use parse::{defaults, load_file, load_str, parse_str};
pub use validate::{
    Config, DEFAULT_STORAGE, RouteSettings, SourceKindSettings, SourceSettings, StorageSettings,
    TargetSettings, template_name, validate,
};
