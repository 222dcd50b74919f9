//! Integration tests of the destinations against the local webhook receiver.

#![allow(clippy::unwrap_used)]

mod webhook;
