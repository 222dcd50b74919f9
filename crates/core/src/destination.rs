//! The `Destination` trait every sink implements, and the classification of send errors that
//! the retry machinery reads.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::event::Event;
use crate::ids::DeliveryId;

/// One message ready to send: the rendered body of one delivery.
#[derive(Clone, Debug)]
pub struct OutboundMessage {
    /// The delivery's id (the receiver's de-duplication key).
    pub delivery_id: DeliveryId,
    /// The event being delivered.
    pub event: Arc<Event>,
    /// The body: a structured CloudEvent or the rendered template.
    pub body: Bytes,
    /// The body's media type.
    pub content_type: &'static str,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
}

/// A successful send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendOk {
    /// Status code of the answer (HTTP status for webhooks).
    pub status_code: Option<u16>,
    /// The first bytes of the answer.
    pub response_excerpt: Option<String>,
}

/// Whether a failure is worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendErrorKind {
    /// Retry later; `after` is the delay the destination asked for (`Retry-After`), if any.
    Retryable {
        /// The delay asked for by the destination.
        after: Option<Duration>,
    },
    /// Retrying will not help.
    Final,
}

/// A failed send, classified for the retry machinery.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Retryable or final.
    pub kind: SendErrorKind,
    /// Status code of the answer, when there was one.
    pub status_code: Option<u16>,
    /// Human-readable reason, without secrets or payloads.
    pub message: String,
    /// The first bytes of the answer.
    pub response_excerpt: Option<String>,
    /// The underlying cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SendError {
    /// A retryable failure.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: SendErrorKind::Retryable { after: None },
            status_code: None,
            message: message.into(),
            response_excerpt: None,
            source: None,
        }
    }

    /// A final failure.
    pub fn final_error(message: impl Into<String>) -> Self {
        Self {
            kind: SendErrorKind::Final,
            status_code: None,
            message: message.into(),
            response_excerpt: None,
            source: None,
        }
    }

    /// Attaches the status code.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status_code = Some(status);
        self
    }

    /// Attaches an excerpt of the answer.
    #[must_use]
    pub fn with_excerpt(mut self, excerpt: Option<String>) -> Self {
        self.response_excerpt = excerpt;
        self
    }

    /// Attaches the cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// True when retrying may help.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, SendErrorKind::Retryable { .. })
    }
}

/// A place events are sent to. Implementations must be cheap to call concurrently: the
/// engine bounds concurrency and rate per destination, not the implementation.
#[async_trait::async_trait]
pub trait Destination: Send + Sync + 'static {
    /// The destination's configured id.
    fn id(&self) -> &str;

    /// The kind name (`webhook`, …), for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Sends one message.
    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError>;

    /// Largest number of messages `send_batch` takes at once; 1 means no batching.
    fn max_batch(&self) -> usize {
        1
    }

    /// How long to wait for a batch to fill before sending what there is.
    fn batch_wait(&self) -> Duration {
        Duration::ZERO
    }

    /// Sends several messages as one unit: all share the outcome.
    async fn send_batch(&self, msgs: &[OutboundMessage]) -> Result<SendOk, SendError> {
        match msgs {
            [one] => self.send(one).await,
            _ => Err(SendError::final_error(format!(
                "destination `{}` does not support batches",
                self.id()
            ))),
        }
    }
}
