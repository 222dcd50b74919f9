//! End-to-end tests: the real `estafeta` binary, a real SQLite store on disk, and local peers
//! (a webhook receiver that verifies Standard Webhooks signatures, chat and mail servers, an
//! S3-compatible server, NATS with JetStream).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod amqp;
mod bench_enrich;
mod cdc;
mod delivery;
mod examples;
mod ingest;
mod kafka;
mod mail;
mod mqtt;
mod nats;
mod notify;
mod object_storage;
mod partner_to_bucket;
mod providers;
mod reliability;
mod retention;
mod schedules;
mod secrets;
mod server;
mod steps;
mod visitor_alert;
