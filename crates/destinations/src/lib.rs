//! Estafeta's destinations: where deliveries are sent.
//!
//! Each kind lives in its own module ([`webhook`], [`telegram`], [`ntfy`], [`chat`] for
//! Slack, Teams, Discord and Google Chat, [`smtp`] for e-mail, [`nats`] for NATS subjects (JetStream or core), [`amqp`] for RabbitMQ exchanges, [`object`] for S3 buckets and
//! local directories) and implements
//! [`estafeta_core::Destination`]. [`registry::build`] turns validated
//! [`estafeta_config::DestinationSettings`] into an `Arc<dyn Destination>`; it is the one
//! place a new kind is wired in. HTTP destinations get their pooled clients from
//! [`HttpClients`], which installs the rustls crypto provider first.
//!
//! [`lookup`] is the HTTP side of a route's `enrich` steps, on the same outbound machinery.
//!
//! Rate limits, concurrency limits, retries and circuit breaking are the engine's job, not
//! a destination's.

pub mod amqp;
mod build_error;
pub mod catalog;
pub mod chat;
mod http_client;
pub mod kafka;
pub mod lookup;
pub mod mqtt;
pub mod nats;
pub mod ntfy;
pub mod object;
pub mod registry;
pub mod smtp;
pub mod telegram;
pub mod webhook;

pub use amqp::Amqp;
pub use build_error::BuildError;
pub use chat::Chat;
pub use http_client::{HttpClients, USER_AGENT, install_crypto_provider};
pub use kafka::Kafka;
pub use lookup::{Lookup, LookupAnswer, LookupFailure, LookupRequest};
pub use mqtt::Mqtt;
pub use nats::Nats;
pub use ntfy::Ntfy;
pub use object::ObjectStorage;
pub use registry::build;
pub use smtp::Smtp;
pub use telegram::Telegram;
pub use webhook::Webhook;
