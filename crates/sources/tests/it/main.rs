//! Integration tests of the pulling sources against the real services of the machine.

#![allow(clippy::unwrap_used)]

mod amqp;
mod harness;
mod kafka;
mod mqtt;
mod mysql;
mod nats;
mod outbox;
mod postgres;
mod provider;
mod schedule_accuracy;
