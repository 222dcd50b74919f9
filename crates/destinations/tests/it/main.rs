//! Integration tests of the destinations against the local webhook receiver and SMTP server.

#![allow(clippy::unwrap_used)]

mod lookup;
mod smtp;
mod webhook;
