//! End-to-end tests: the real `estafeta` binary, a real SQLite store on disk, and a local
//! webhook receiver that verifies Standard Webhooks signatures.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod bench_enrich;
mod cdc;
mod delivery;
mod examples;
mod ingest;
mod mail;
mod notify;
mod reliability;
mod server;
mod steps;
mod visitor_alert;
