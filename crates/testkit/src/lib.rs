//! Local peers for Estafeta's tests: a webhook receiver that records requests, verifies
//! Standard Webhooks signatures and answers as scripted; a throw-away PostgreSQL database
//! per test.

pub mod postgres;
mod signature;
mod webhook_receiver;

pub use webhook_receiver::{Arrival, ReceivedRequest, ReceiverBuilder, WebhookReceiver};
