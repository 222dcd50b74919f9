//! The webhook destination: HTTP POSTs signed per the Standard Webhooks specification.
//!
//! * [`Webhook`] implements [`estafeta_core::Destination`]: one pooled client per
//!   destination, redirects never followed, every answer classified for the retry machinery
//!   (2xx delivered; 408/425/429/5xx retryable, with `Retry-After` on 429 and 503; other 4xx
//!   and 3xx final; timeouts and connection failures retryable).
//! * [`signing`] signs and verifies `webhook-signature` headers.
//! * [`ssrf`] refuses private, loopback and link-local addresses after DNS resolution unless
//!   `allow_private_networks` is set.
//!
//! Errors and logs name the endpoint's host, never its URL (the query may carry a token), a
//! secret or a payload.

mod destination;
pub(crate) mod outcome;
pub mod signing;
pub mod ssrf;

pub use destination::{BATCH_CONTENT_TYPE, Webhook};
pub use outcome::EXCERPT_LIMIT;
