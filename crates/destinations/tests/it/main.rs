//! Integration tests of the destinations against the local webhook receiver and SMTP server,
//! and of object storage against a real S3-compatible server (moto) and a directory.

#![allow(clippy::unwrap_used)]

mod amqp;
mod kafka;
mod lookup;
mod mqtt;
mod nats;
mod object;
mod object_retention;
mod smtp;
mod webhook;
