//! The MQTT destination: each delivery is one QoS 1 message on a topic rendered from the
//! event, delivered once the broker answered with its PUBACK.
//!
//! * The payload is the delivery's body: the event as a structured CloudEvent (JSON) or the
//!   route's rendered template. MQTT 3.1.1 has no headers, so the delivery id travels only
//!   inside a structured CloudEvent (`id`); receivers de-duplicate on it.
//! * One connection per destination (clean session), opened on first use. A task drives it:
//!   it sends keep-alive pings and matches each PUBACK to the publish it answers (rumqttc
//!   hands publishes out in the order they were queued, so a FIFO of waiters is enough).
//! * Errors: a topic that renders empty or with wildcards, or a message larger than MQTT
//!   allows, is final; a refused or lost connection and a missing PUBACK are retryable. A
//!   lost connection fails every publish waiting on it and is replaced on the next send.
//!
//! Credentials and payloads are never logged.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use estafeta_config::mqtt_destination::{
    MqttCredentials, MqttSettings, is_topic_name, topic_template_name,
};
use estafeta_core::template::TemplateSet;
use estafeta_core::{Destination, OutboundMessage, SendError, SendOk};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::oneshot;

use crate::build_error::BuildError;

/// The largest packet MQTT allows (the remaining length is at most 268,435,455 bytes).
const MAX_PACKET: usize = 268_435_455;

/// What a waiting publish is told: its packet id once acknowledged, or why it failed.
type Answer = Result<u16, String>;

/// An MQTT broker, published to with QoS 1.
pub struct Mqtt {
    id: String,
    host: String,
    port: u16,
    retain: bool,
    client_id: String,
    credentials: Option<MqttCredentials>,
    keep_alive: Duration,
    timeout: Duration,
    templates: TemplateSet,
    topic_name: String,
    /// The current connection; replaced after it is lost.
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mqtt")
            .field("id", &self.id)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Publishes waiting for the broker, shared between senders and the connection's task.
#[derive(Default)]
struct Waiting {
    /// Queued to the client, not yet given a packet id (in queue order).
    queued: VecDeque<oneshot::Sender<Answer>>,
    /// Sent, waiting for the PUBACK of their packet id.
    sent: HashMap<u16, oneshot::Sender<Answer>>,
    /// Why the connection ended, once it did.
    closed: Option<String>,
}

impl Waiting {
    /// Ends the connection: every waiting publish fails with `reason`.
    fn close(&mut self, reason: &str) {
        self.closed = Some(reason.to_owned());
        for tx in self
            .queued
            .drain(..)
            .chain(self.sent.drain().map(|(_, tx)| tx))
        {
            let _ = tx.send(Err(reason.to_owned()));
        }
    }
}

/// One connection to the broker and the publishes waiting on it.
struct Connection {
    client: AsyncClient,
    waiting: Arc<Mutex<Waiting>>,
    /// The task driving the connection, stopped with it.
    task: tokio::task::AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_closed(&self) -> bool {
        self.waiting().closed.is_some()
    }
}

/// Drives one connection until it fails or the destination drops it; `connected` hears
/// about the first CONNACK (or the failure to get one).
async fn drive(
    mut events: EventLoop,
    waiting: Arc<Mutex<Waiting>>,
    connected: oneshot::Sender<Result<(), ConnectionError>>,
    dest_id: String,
) {
    let lock = || waiting.lock().unwrap_or_else(PoisonError::into_inner);
    let mut connected = Some(connected);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut w = lock();
                if let Some(tx) = w.queued.pop_front() {
                    w.sent.insert(pkid, tx);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(tx) = lock().sent.remove(&ack.pkid) {
                    let _ = tx.send(Ok(ack.pkid));
                }
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => {
                lock().close("the destination was closed");
                return;
            }
            Err(e) => {
                tracing::debug!(dest_id = %dest_id, error = %e, "mqtt connection ended");
                lock().close(&format!("the connection to the MQTT broker was lost: {e}"));
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Err(e));
                }
                return;
            }
        }
    }
}

/// A client id unlikely to be used by anyone else: `estafeta-<id>-<8 hex digits>`.
fn fresh_client_id(id: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = nanos ^ std::process::id().rotate_left(16);
    format!("estafeta-{id}-{mix:08x}")
}

impl Mqtt {
    /// Builds the destination; it connects on the first send.
    ///
    /// # Errors
    /// A topic template that does not compile.
    pub fn new(settings: &MqttSettings) -> Result<Self, BuildError> {
        let topic_name = topic_template_name(&settings.id);
        let mut templates = TemplateSet::new();
        templates
            .add(&topic_name, &settings.topic)
            .map_err(|e| BuildError::Template {
                id: settings.id.clone(),
                message: format!("topic: {e}"),
            })?;
        Ok(Self {
            id: settings.id.clone(),
            host: settings.host.clone(),
            port: settings.port,
            retain: settings.retain,
            client_id: settings
                .client_id
                .clone()
                .unwrap_or_else(|| fresh_client_id(&settings.id)),
            credentials: settings.credentials.clone(),
            keep_alive: settings.keep_alive,
            timeout: settings.timeout,
            templates,
            topic_name,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The open connection, opening a new one when there is none or the last one ended.
    async fn connection(&self) -> Result<Arc<Connection>, SendError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        *slot = None;
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_request_channel_capacity(10_000);
        if let Some(c) = &self.credentials {
            options.set_credentials(c.username.expose(), c.password.expose());
        }
        let (client, mut events) = AsyncClient::new(options, 10_000);
        let mut network = events.network_options();
        network.set_connection_timeout(self.timeout.as_secs().max(1));
        events.set_network_options(network);
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(drive(events, Arc::clone(&waiting), tx, self.id.clone()));
        // Dropped (and the task stopped) on every early return below.
        let conn = Arc::new(Connection {
            client,
            waiting,
            task: task.abort_handle(),
        });
        let address = format!("{}:{}", self.host, self.port);
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                let refused = matches!(e, ConnectionError::ConnectionRefused(_));
                let message = if refused {
                    format!(
                        "the MQTT broker at {address} refused the connection (check the credentials and the client id)"
                    )
                } else {
                    format!("cannot connect to the MQTT broker at {address}")
                };
                return Err(SendError::retryable(message).with_source(e));
            }
            Ok(Err(_)) | Err(_) => {
                return Err(SendError::retryable(format!(
                    "no answer from the MQTT broker at {address} within {:?}",
                    self.timeout
                )));
            }
        }
        tracing::debug!(dest_id = %self.id, "mqtt connected");
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// The topic for `msg`, rendered and checked.
    fn topic(&self, msg: &OutboundMessage) -> Result<String, SendError> {
        let topic = self
            .templates
            .render(&self.topic_name, &msg.event, &[])
            .map_err(|e| SendError::final_error(format!("cannot render the topic: {e}")))?;
        let topic = topic.trim().to_owned();
        if !is_topic_name(&topic) {
            return Err(SendError::final_error(format!(
                "the topic rendered to `{topic}`, which is not a topic to publish to (it must not be empty nor contain `+` or `#`)"
            )));
        }
        Ok(topic)
    }

    /// Queues one publish and waits for its PUBACK.
    async fn publish(&self, topic: &str, body: &[u8]) -> Result<SendOk, SendError> {
        // Fixed header (≤ 5 bytes) + topic length prefix and bytes + packet id + payload.
        if body.len() + topic.len() + 4 > MAX_PACKET {
            return Err(SendError::final_error(format!(
                "the message for `{topic}` is larger than MQTT allows (256 MiB)"
            )));
        }
        let conn = self.connection().await?;
        let (tx, rx) = oneshot::channel();
        {
            let mut w = conn.waiting();
            if let Some(reason) = &w.closed {
                return Err(SendError::retryable(reason.clone()));
            }
            conn.client
                .try_publish(topic, QoS::AtLeastOnce, self.retain, body.to_vec())
                .map_err(|e| {
                    SendError::retryable(format!("cannot queue the publish to `{topic}`"))
                        .with_source(e)
                })?;
            w.queued.push_back(tx);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(pkid))) => Ok(SendOk {
                status_code: None,
                response_excerpt: Some(format!("puback for packet {pkid}")),
            }),
            Ok(Ok(Err(reason))) => Err(SendError::retryable(reason)),
            Ok(Err(_)) => Err(SendError::retryable(
                "the connection to the MQTT broker ended before the PUBACK",
            )),
            Err(_) => Err(SendError::retryable(format!(
                "the MQTT broker did not acknowledge the message on `{topic}` within {:?}",
                self.timeout
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Destination for Mqtt {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "mqtt"
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        let topic = self.topic(msg)?;
        let started = Instant::now();
        let result = self.publish(&topic, &msg.body).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => tracing::debug!(dest_id = %self.id, elapsed_ms, "mqtt message published"),
            Err(err) => tracing::debug!(dest_id = %self.id, retryable = err.is_retryable(),
                elapsed_ms, error = %err, "mqtt publish failed"),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_client_ids_name_the_destination() {
        let id = fresh_client_id("alerts");
        assert!(id.starts_with("estafeta-alerts-"), "{id}");
        assert_eq!(id.len(), "estafeta-alerts-".len() + 8);
    }

    #[test]
    fn closing_fails_every_waiting_publish() {
        let mut w = Waiting::default();
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        w.queued.push_back(a);
        w.sent.insert(7, b);
        w.close("gone");
        assert_eq!(ra.try_recv().unwrap(), Err("gone".to_owned()));
        assert_eq!(rb.try_recv().unwrap(), Err("gone".to_owned()));
        assert!(w.closed.is_some());
    }
}
