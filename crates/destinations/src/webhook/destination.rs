//! `Webhook`: the `Destination` that POSTs messages to an HTTP endpoint, signed per the
//! Standard Webhooks specification, one at a time or as JSON-array batches.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use estafeta_config::WebhookSettings;
use estafeta_core::{Destination, OutboundMessage, SendError, SendOk};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

use super::outcome::classify_response;
use super::signing::{decode_secret, sign};
use crate::build_error::BuildError;
use crate::http_client::{ClientOptions, Endpoint, HttpClients};

/// The content type of a batch request.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const X_ESTAFETA_DELIVERY: HeaderName = HeaderName::from_static("x-estafeta-delivery");
const X_ESTAFETA_ATTEMPT: HeaderName = HeaderName::from_static("x-estafeta-attempt");

/// Headers Estafeta sets on every request; configuring them is a build error.
use estafeta_config::RESERVED_WEBHOOK_HEADERS as RESERVED_HEADERS;

/// A webhook destination: one pooled HTTP client, requests signed when a key is set.
///
/// Every request is `POST <url>` with the message body and its content type, the configured
/// headers, `user-agent: Estafeta/<version>`, `webhook-id` (the delivery id),
/// `webhook-timestamp` (unix seconds, fresh per attempt), `webhook-signature` (when
/// signing), `x-estafeta-delivery` and `x-estafeta-attempt`.
///
/// In batch mode every request carries a JSON array of the message bodies (a body that is
/// not JSON is embedded as a JSON string) with content type [`BATCH_CONTENT_TYPE`]; its
/// `webhook-id` and `x-estafeta-delivery` are the first message's delivery id and its
/// `x-estafeta-attempt` the highest attempt number in the batch. A single `send` in batch
/// mode is a batch of one, so the receiver always sees arrays.
pub struct Webhook {
    id: String,
    /// The URL may carry a token in its query: never shown.
    endpoint: Endpoint,
    key: Option<Vec<u8>>,
    headers: HeaderMap,
    batch: Option<(usize, Duration)>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("host", &self.endpoint.host)
            .field("signed", &self.key.is_some())
            .field("timeout", &self.endpoint.timeout)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Builds the destination; `concurrency` sizes its connection pool.
    ///
    /// # Errors
    /// A URL that is not http(s) with a host, an invalid or reserved header, a signing
    /// secret that is not `whsec_` + base64, or an HTTP client that cannot be built.
    pub fn new(
        settings: &WebhookSettings,
        clients: &HttpClients,
        concurrency: usize,
    ) -> Result<Self, BuildError> {
        let id = settings.id.clone();
        let endpoint = Endpoint::new(
            &id,
            settings.url.expose(),
            clients,
            ClientOptions {
                timeout: settings.timeout,
                max_idle_per_host: concurrency,
                allow_private_networks: settings.allow_private_networks,
            },
        )?;
        let key = settings
            .signing_key
            .as_ref()
            .map(|secret| decode_secret(secret.expose()))
            .transpose()
            .map_err(|source| BuildError::InvalidSecret {
                id: id.clone(),
                source,
            })?;
        let headers = build_headers(&id, settings, clients.user_agent())?;
        Ok(Self {
            id,
            endpoint,
            key,
            headers,
            batch: settings.batch,
        })
    }

    /// The endpoint's `host[:port]` (the URL itself may hold a secret).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    async fn post(
        &self,
        webhook_id: &str,
        attempt: u32,
        content_type: HeaderValue,
        body: Bytes,
    ) -> Result<SendOk, SendError> {
        self.endpoint.check()?;
        let timestamp = unix_now();
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, content_type);
        let id_value = HeaderValue::from_str(webhook_id).map_err(|e| {
            SendError::final_error("the delivery id is not a valid header value").with_source(e)
        })?;
        headers.insert(WEBHOOK_ID, id_value.clone());
        headers.insert(X_ESTAFETA_DELIVERY, id_value);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(X_ESTAFETA_ATTEMPT, HeaderValue::from(attempt));
        if let Some(key) = &self.key {
            let signature = sign(key, webhook_id, timestamp, &body);
            // Base64 and `v1,` are always valid header characters.
            if let Ok(value) = HeaderValue::from_str(&signature) {
                headers.insert(WEBHOOK_SIGNATURE, value);
            }
        }
        let started = Instant::now();
        let result = match self
            .endpoint
            .client
            .post(self.endpoint.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
        {
            Ok(resp) => classify_response(resp, &self.endpoint.host).await,
            Err(err) => Err(self.endpoint.transport_error(err)),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(ok) => {
                tracing::debug!(dest_id = %self.id, host = %self.endpoint.host, status = ?ok.status_code, elapsed_ms, "webhook delivered")
            }
            Err(err) => {
                tracing::debug!(dest_id = %self.id, host = %self.endpoint.host, status = ?err.status_code, retryable = err.is_retryable(), elapsed_ms, error = %err, "webhook failed")
            }
        }
        result
    }

    async fn post_batch(&self, msgs: &[OutboundMessage]) -> Result<SendOk, SendError> {
        let Some(first) = msgs.first() else {
            return Ok(SendOk::default());
        };
        let attempt = msgs
            .iter()
            .map(|m| m.attempt)
            .max()
            .unwrap_or(first.attempt);
        let body = batch_body(msgs);
        let content_type = HeaderValue::from_static(BATCH_CONTENT_TYPE);
        self.post(&first.delivery_id.to_string(), attempt, content_type, body)
            .await
    }
}

#[async_trait::async_trait]
impl Destination for Webhook {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        if self.batch.is_some() {
            return self.post_batch(std::slice::from_ref(msg)).await;
        }
        let content_type = HeaderValue::from_str(msg.content_type).map_err(|e| {
            SendError::final_error(format!(
                "content type `{}` is not a valid header value",
                msg.content_type
            ))
            .with_source(e)
        })?;
        self.post(
            &msg.delivery_id.to_string(),
            msg.attempt,
            content_type,
            msg.body.clone(),
        )
        .await
    }

    fn max_batch(&self) -> usize {
        self.batch.map_or(1, |(max, _)| max.max(1))
    }

    fn batch_wait(&self) -> Duration {
        self.batch.map_or(Duration::ZERO, |(_, wait)| wait)
    }

    async fn send_batch(&self, msgs: &[OutboundMessage]) -> Result<SendOk, SendError> {
        match (self.batch, msgs) {
            (Some(_), _) => self.post_batch(msgs).await,
            (None, [one]) => self.send(one).await,
            (None, _) => Err(SendError::final_error(format!(
                "destination `{}` is not in batch mode: send one message at a time",
                self.id
            ))),
        }
    }
}

fn build_headers(
    id: &str,
    settings: &WebhookSettings,
    user_agent: &str,
) -> Result<HeaderMap, BuildError> {
    let mut headers = HeaderMap::with_capacity(settings.headers.len() + 8);
    if let Ok(ua) = HeaderValue::from_str(user_agent) {
        headers.insert(USER_AGENT, ua);
    }
    for (name, value) in &settings.headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|source| {
            BuildError::InvalidHeaderName {
                id: id.to_owned(),
                name: name.clone(),
                source,
            }
        })?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(BuildError::ReservedHeader {
                id: id.to_owned(),
                name: name.clone(),
            });
        }
        let mut value = HeaderValue::from_str(value.expose()).map_err(|source| {
            BuildError::InvalidHeaderValue {
                id: id.to_owned(),
                name: name.clone(),
                source,
            }
        })?;
        value.set_sensitive(true);
        if header == USER_AGENT {
            // A configured user agent replaces Estafeta's instead of adding a second one.
            headers.insert(header, value);
        } else {
            headers.append(header, value);
        }
    }
    Ok(headers)
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The JSON array of the bodies: JSON bodies as they are, others as JSON strings.
pub(crate) fn batch_body(msgs: &[OutboundMessage]) -> Bytes {
    let mut out = Vec::with_capacity(2 + msgs.iter().map(|m| m.body.len() + 1).sum::<usize>());
    out.push(b'[');
    for (i, msg) in msgs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let is_json = std::str::from_utf8(&msg.body)
            .is_ok_and(|s| serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok());
        if is_json {
            out.extend_from_slice(&msg.body);
        } else {
            let text = serde_json::Value::from(String::from_utf8_lossy(&msg.body).into_owned());
            out.extend_from_slice(text.to_string().as_bytes());
        }
    }
    out.push(b']');
    Bytes::from(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use estafeta_config::Secret;
    use estafeta_core::{DeliveryId, Event};

    use super::*;

    fn event() -> Arc<Event> {
        let ce = serde_json::json!({"specversion": "1.0", "id": "1", "source": "/t", "type": "t"});
        Arc::new(
            estafeta_core::event::parse_cloudevent(
                ce,
                &Default::default(),
                "http",
                chrono::Utc::now(),
            )
            .unwrap(),
        )
    }

    fn msg(body: &'static [u8]) -> OutboundMessage {
        OutboundMessage {
            delivery_id: DeliveryId::new(),
            event: event(),
            body: Bytes::from_static(body),
            content_type: "application/json",
            attempt: 1,
        }
    }

    fn settings(url: &str) -> WebhookSettings {
        WebhookSettings {
            id: "hook".into(),
            url: Secret::new(url.into()),
            signing_key: None,
            headers: vec![],
            timeout: Duration::from_secs(5),
            allow_private_networks: false,
            batch: None,
        }
    }

    #[test]
    fn batch_body_is_a_json_array() {
        let body = batch_body(&[
            msg(br#"{"a":1}"#),
            msg(b"plain \"text\""),
            msg(b" [1, 2]\n"),
        ]);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([{"a": 1}, "plain \"text\"", [1, 2]])
        );
        assert_eq!(&batch_body(&[])[..], b"[]");
        let body = batch_body(&[msg(b"{\"a\":\xff}")]);
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    }

    #[test]
    fn validates_at_build_time_without_echoing_secrets() {
        let clients = HttpClients::new();
        let build = |s: WebhookSettings| Webhook::new(&s, &clients, 4);
        assert!(matches!(
            build(settings("not a url?token=abc")),
            Err(BuildError::InvalidUrl { .. })
        ));
        assert!(matches!(
            build(settings("ftp://example.org/")),
            Err(BuildError::UnsupportedUrl { .. })
        ));
        assert!(matches!(
            build(settings("mailto:a@example.org")),
            Err(BuildError::UnsupportedUrl { .. })
        ));

        let mut s = settings("https://example.org/");
        s.headers = vec![("bad name".into(), Secret::new("v".into()))];
        assert!(matches!(
            build(s.clone()),
            Err(BuildError::InvalidHeaderName { .. })
        ));
        s.headers = vec![("x-token".into(), Secret::new("line\nbreak-secret".into()))];
        let err = build(s.clone()).unwrap_err();
        assert!(matches!(err, BuildError::InvalidHeaderValue { .. }));
        assert!(!format!("{err} {err:?}").contains("break-secret"));
        s.headers = vec![("Webhook-Signature".into(), Secret::new("v".into()))];
        assert!(matches!(
            build(s.clone()),
            Err(BuildError::ReservedHeader { .. })
        ));

        let mut s = settings("https://example.org/");
        s.signing_key = Some(Secret::new("whsec_***".into()));
        let err = build(s.clone()).unwrap_err();
        assert!(matches!(err, BuildError::InvalidSecret { .. }));
        assert!(!format!("{err} {err:?}").contains("***"));
        s.signing_key = Some(Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()));
        assert!(matches!(build(s), Err(BuildError::InvalidSecret { .. })));
    }

    #[test]
    fn debug_does_not_show_the_url() {
        let hook = Webhook::new(
            &settings("https://example.org:8443/h?token=abc"),
            &HttpClients::new(),
            1,
        )
        .unwrap();
        let shown = format!("{hook:?}");
        assert!(shown.contains("example.org:8443"));
        assert!(!shown.contains("token"));
        assert_eq!(hook.max_batch(), 1);
        assert_eq!(hook.batch_wait(), Duration::ZERO);
    }
}
