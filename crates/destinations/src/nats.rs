//! The NATS destination: each delivery is one message on a subject rendered from the event.
//!
//! * With `jetstream: true` (the default) the message is published through JetStream and is
//!   delivered only once the stream acknowledged it. The `Nats-Msg-Id` header carries the
//!   delivery id, so a retried delivery inside the stream's duplicate window is stored once.
//! * With `jetstream: false` it is a core-NATS publish followed by a flush: delivered once
//!   the server has the bytes (no subscriber or stream is required).
//! * The body is the delivery's rendered message; headers `ce-type`, `ce-id`,
//!   `content-type` and `X-Estafeta-Delivery` go with it.
//! * Errors: no stream listening on the subject, a message over the server's size limit or
//!   a subject that does not render to a valid one are final; timeouts, a lost connection
//!   and other JetStream refusals are retryable. The client connects on first use and
//!   reconnects by itself afterwards.
//!
//! Credentials are never logged; neither are subjects' payloads.

use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::{Client, ConnectOptions, HeaderMap};
use bytes::Bytes;
use estafeta_config::nats_destination::{
    NatsAuth, NatsSettings, is_publish_subject, subject_template_name,
};
use estafeta_core::template::TemplateSet;
use estafeta_core::{Destination, OutboundMessage, SendError, SendOk};
use tokio::sync::OnceCell;

use crate::build_error::BuildError;

/// A NATS server (or cluster), publishing with or without JetStream.
pub struct Nats {
    id: String,
    servers: Vec<String>,
    jetstream: bool,
    auth: NatsAuth,
    timeout: Duration,
    templates: TemplateSet,
    subject_name: String,
    /// `(max_events, max_wait)` in batch mode.
    batch: Option<(usize, Duration)>,
    /// Connected on first use; the client reconnects by itself afterwards.
    client: OnceCell<Client>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("id", &self.id)
            .field("servers", &self.servers)
            .field("jetstream", &self.jetstream)
            .finish_non_exhaustive()
    }
}

impl Nats {
    /// Builds the destination; it connects on the first send.
    ///
    /// # Errors
    /// A subject template that does not compile.
    pub fn new(settings: &NatsSettings) -> Result<Self, BuildError> {
        let subject_name = subject_template_name(&settings.id);
        let mut templates = TemplateSet::new();
        templates
            .add(&subject_name, &settings.subject)
            .map_err(|e| BuildError::Template {
                id: settings.id.clone(),
                message: format!("subject: {e}"),
            })?;
        let servers = settings
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Self {
            id: settings.id.clone(),
            servers,
            jetstream: settings.jetstream,
            auth: settings.auth.clone(),
            timeout: settings.timeout,
            templates,
            subject_name,
            batch: settings.batch,
            client: OnceCell::new(),
        })
    }

    /// The connected client, connecting first when needed.
    async fn client(&self) -> Result<&Client, SendError> {
        self.client
            .get_or_try_init(|| async {
                let mut options = ConnectOptions::new()
                    .name("estafeta")
                    .connection_timeout(self.timeout)
                    .request_timeout(Some(self.timeout));
                options = match &self.auth {
                    NatsAuth::None => options,
                    NatsAuth::Token(token) => options.token(token.expose().to_owned()),
                    NatsAuth::UserPassword { username, password } => options.user_and_password(
                        username.expose().to_owned(),
                        password.expose().to_owned(),
                    ),
                };
                options.connect(self.servers.clone()).await.map_err(|e| {
                    SendError::retryable(format!(
                        "cannot connect to the NATS server ({})",
                        self.servers.join(",")
                    ))
                    .with_source(e)
                })
            })
            .await
    }

    /// The subject for `msg`, rendered and checked.
    fn subject(&self, msg: &OutboundMessage) -> Result<String, SendError> {
        let subject = self
            .templates
            .render(&self.subject_name, &msg.event, &[])
            .map_err(|e| SendError::final_error(format!("cannot render the subject: {e}")))?;
        let subject = subject.trim().to_owned();
        if !is_publish_subject(&subject) {
            return Err(SendError::final_error(format!(
                "the subject rendered to `{subject}`, which is not a subject to publish to (tokens separated by `.`, no spaces or wildcards)"
            )));
        }
        Ok(subject)
    }

    async fn publish(
        &self,
        client: &Client,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<SendOk, SendError> {
        if !self.jetstream {
            // Both steps wait while the client reconnects: the timeout bounds them together.
            let sent = async {
                client
                    .publish_with_headers(subject.clone(), headers, body)
                    .await
                    .map_err(|e| {
                        SendError::retryable(format!("cannot publish to `{subject}`"))
                            .with_source(e)
                    })?;
                client.flush().await.map_err(|e| {
                    SendError::retryable(format!("cannot flush the publish to `{subject}`"))
                        .with_source(e)
                })
            };
            return match tokio::time::timeout(self.timeout, sent).await {
                Ok(Ok(())) => Ok(SendOk::default()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(SendError::retryable(format!(
                    "the publish to `{subject}` was not flushed within {:?}",
                    self.timeout
                ))),
            };
        }
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(self.timeout);
        let ack = async {
            js.publish_with_headers(subject.clone(), headers, body)
                .await?
                .await
        };
        match tokio::time::timeout(self.timeout, ack).await {
            Ok(Ok(ack)) => Ok(SendOk {
                status_code: None,
                response_excerpt: Some(format!(
                    "stream {} seq {}{}",
                    ack.stream,
                    ack.sequence,
                    if ack.duplicate { " (duplicate)" } else { "" }
                )),
            }),
            Ok(Err(e)) => Err(classify(&subject, e)),
            Err(_) => Err(SendError::retryable(format!(
                "JetStream did not acknowledge the message on `{subject}` within {:?}",
                self.timeout
            ))),
        }
    }
}

/// JetStream's refusal, retryable or final.
fn classify(subject: &str, e: async_nats::jetstream::context::PublishError) -> SendError {
    let err = match e.kind() {
        PublishErrorKind::StreamNotFound => SendError::final_error(format!(
            "no JetStream stream stores subject `{subject}`: create one, or set `jetstream: false` for a core publish"
        )),
        PublishErrorKind::MaxPayloadExceeded => SendError::final_error(format!(
            "the message for `{subject}` is larger than the server's max_payload"
        )),
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            SendError::final_error(format!("JetStream refused the message on `{subject}`"))
        }
        PublishErrorKind::TimedOut => SendError::retryable(format!(
            "JetStream did not acknowledge the message on `{subject}` in time"
        )),
        PublishErrorKind::BrokenPipe => SendError::retryable(format!(
            "the connection to NATS was lost while publishing to `{subject}`"
        )),
        PublishErrorKind::MaxAckPending | PublishErrorKind::Other => SendError::retryable(format!(
            "JetStream did not store the message on `{subject}`"
        )),
    };
    err.with_source(e)
}

/// A header value without the line breaks the NATS protocol cannot carry.
fn header_value(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// The headers of one delivery.
fn headers(msg: &OutboundMessage, with_msg_id: bool) -> HeaderMap {
    let delivery = msg.delivery_id.to_string();
    let mut h = HeaderMap::new();
    h.insert("ce-type", header_value(&msg.event.ty));
    h.insert("ce-id", header_value(msg.event.ce_id.as_str()));
    h.insert("content-type", msg.content_type);
    h.insert("X-Estafeta-Delivery", delivery.as_str());
    if with_msg_id {
        h.insert(async_nats::header::NATS_MESSAGE_ID, delivery.as_str());
    }
    h
}

#[async_trait::async_trait]
impl Destination for Nats {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        let subject = self.subject(msg)?;
        let client = self.client().await?;
        let started = Instant::now();
        let result = self
            .publish(
                client,
                subject,
                headers(msg, self.jetstream),
                msg.body.clone(),
            )
            .await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => tracing::debug!(dest_id = %self.id, elapsed_ms, "nats message published"),
            Err(err) => tracing::debug!(dest_id = %self.id, retryable = err.is_retryable(),
                elapsed_ms, error = %err, "nats publish failed"),
        }
        result
    }

    fn max_batch(&self) -> usize {
        self.batch.map_or(1, |(max, _)| max.max(1))
    }

    fn batch_wait(&self) -> Duration {
        self.batch.map_or(Duration::ZERO, |(_, wait)| wait)
    }

    async fn send_batch(&self, msgs: &[OutboundMessage]) -> Result<SendOk, SendError> {
        if let [one] = msgs {
            return self.send(one).await;
        }
        if self.batch.is_none() {
            return Err(SendError::final_error(format!(
                "destination `{}` is not in batch mode: send one message at a time",
                self.id
            )));
        }
        let subjects = msgs
            .iter()
            .map(|m| self.subject(m))
            .collect::<Result<Vec<_>, _>>()?;
        let client = self.client().await?;
        let started = Instant::now();
        let result = if self.jetstream {
            self.publish_jetstream_batch(client, msgs, subjects).await
        } else {
            self.publish_core_batch(client, msgs, subjects).await
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(dest_id = %self.id, messages = msgs.len(), ok = result.is_ok(), elapsed_ms, "nats batch published");
        result
    }
}

impl Nats {
    /// Publishes every message of a batch at once and waits for all acknowledgements; the
    /// first final error, else the first retryable one, is the batch's outcome.
    async fn publish_jetstream_batch(
        &self,
        client: &Client,
        msgs: &[OutboundMessage],
        subjects: Vec<String>,
    ) -> Result<SendOk, SendError> {
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(self.timeout);
        let all = async {
            let mut pending = Vec::with_capacity(msgs.len());
            for (msg, subject) in msgs.iter().zip(subjects) {
                match js
                    .publish_with_headers(subject.clone(), headers(msg, true), msg.body.clone())
                    .await
                {
                    Ok(ack) => pending.push((subject, ack)),
                    Err(e) => return Err(classify(&subject, e)),
                }
            }
            let acks =
                futures::future::join_all(pending.into_iter().map(|(subject, ack)| async move {
                    ack.await.map_err(|e| classify(&subject, e))
                }))
                .await;
            let mut retryable = None;
            let mut stored = Vec::with_capacity(acks.len());
            for ack in acks {
                match ack {
                    Ok(a) => stored.push(a),
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => retryable = retryable.or(Some(e)),
                }
            }
            match retryable {
                Some(e) => Err(e),
                None => Ok(stored),
            }
        };
        match tokio::time::timeout(self.timeout, all).await {
            Ok(Ok(acks)) => {
                let first = acks.iter().map(|a| a.sequence).min().unwrap_or_default();
                let last = acks.iter().map(|a| a.sequence).max().unwrap_or_default();
                let duplicates = acks.iter().filter(|a| a.duplicate).count();
                let stream = acks.first().map(|a| a.stream.clone()).unwrap_or_default();
                Ok(SendOk {
                    status_code: None,
                    response_excerpt: Some(format!(
                        "{} messages, stream {stream} seq {first}–{last}{}",
                        acks.len(),
                        if duplicates > 0 {
                            format!(" ({duplicates} duplicates)")
                        } else {
                            String::new()
                        }
                    )),
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::retryable(format!(
                "JetStream did not acknowledge a batch of {} messages within {:?}",
                msgs.len(),
                self.timeout
            ))),
        }
    }

    /// Publishes every message of a batch on core NATS and flushes once.
    async fn publish_core_batch(
        &self,
        client: &Client,
        msgs: &[OutboundMessage],
        subjects: Vec<String>,
    ) -> Result<SendOk, SendError> {
        let sent = async {
            for (msg, subject) in msgs.iter().zip(subjects) {
                client
                    .publish_with_headers(subject.clone(), headers(msg, false), msg.body.clone())
                    .await
                    .map_err(|e| {
                        SendError::retryable(format!("cannot publish to `{subject}`"))
                            .with_source(e)
                    })?;
            }
            client.flush().await.map_err(|e| {
                SendError::retryable("cannot flush a batch of publishes").with_source(e)
            })
        };
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(())) => Ok(SendOk::default()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::retryable(format!(
                "a batch of {} publishes was not flushed within {:?}",
                msgs.len(),
                self.timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_lose_control_characters() {
        assert_eq!(header_value("a\r\nb"), "ab");
        assert_eq!(header_value("order.created"), "order.created");
    }
}
