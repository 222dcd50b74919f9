//! Local peers for Estafeta's tests: a webhook receiver that records requests, verifies
//! Standard Webhooks signatures and answers as scripted; fake Telegram Bot API and ntfy
//! servers that check requests like the real services, answer their errors and rate limits
//! and record what they accept; an SMTP server that authenticates, answers scripted
//! refusals and records (and parses) the messages it takes; a "person records" look-up API
//! behind a bearer token that can be slowed, taken down or stopped; a throw-away PostgreSQL
//! database per test; a real S3-compatible server (moto) per test; brokers of a test's own that it
//! can kill and restart (tansu for Kafka, nats-server, Mosquitto) and a way to close one test's
//! RabbitMQ connections.

pub mod kafka;
mod local;
pub mod lookup_api;
pub mod mosquitto;
pub mod moto;
pub mod nats_server;
pub mod ntfy;
pub mod partner_api;
pub mod postgres;
pub mod rabbitmq;
mod signature;
pub mod smtp;
pub mod telegram;
mod webhook_receiver;

pub use kafka::Tansu;
pub use lookup_api::{LookupApi, LookupApiBuilder, LookupRecord, LookupRequest};
pub use mosquitto::Mosquitto;
pub use moto::Moto;
pub use nats_server::NatsServer;
pub use ntfy::{FakeNtfy, NtfyBuilder, NtfyMessage, NtfyRequest};
pub use partner_api::{PartnerApi, PartnerApiBuilder, PartnerRequest};
pub use telegram::{FakeTelegram, TelegramMessage, TelegramRequest};
pub use webhook_receiver::{Arrival, ReceivedRequest, ReceiverBuilder, WebhookReceiver};
