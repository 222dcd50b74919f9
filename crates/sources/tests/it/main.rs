//! Integration tests of the pulling sources against the real services of the machine.

#![allow(clippy::unwrap_used)]

mod harness;
mod mysql;
mod outbox;
mod postgres;
mod provider;
mod schedule_accuracy;
