//! One MQTT session: connect with the persistent session, subscribe, turn each message into
//! an event, append, and send each PUBACK once the append holding it is durable, in order.
//! Ends on a lost connection (an error) or on shutdown, after storing and acknowledging
//! what was already read.

use std::time::Duration;

use chrono::Utc;
use estafeta_core::Event;
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event as MqttEvent, EventLoop,
    MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;

use super::{MqttError, MqttSource};
use crate::broker::{Decoder, Message};
use crate::pipeline::{Appender, Stored};
use crate::status::SourceState;

/// The largest packet MQTT allows; the broker decides what it accepts.
const MAX_PACKET: usize = 268_435_455;
/// Appends in flight at once (the store's group commit merges them).
const APPENDS_IN_FLIGHT: usize = 32;
/// Time allowed for the TCP connect and the CONNACK.
const CONNECT_TIMEOUT_SECS: u64 = 10;
/// Time allowed at shutdown for the last acknowledgements and the DISCONNECT to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

type Polled = Result<MqttEvent, ConnectionError>;

/// Polls the connection in its own task, so a `select!` elsewhere never drops a poll half
/// way (a half-written PUBACK would be lost). Ends after an error or the DISCONNECT.
async fn pump(mut events: EventLoop, tx: mpsc::Sender<Polled>) {
    loop {
        let polled = events.poll().await;
        let last = matches!(
            polled,
            Err(_) | Ok(MqttEvent::Outgoing(Outgoing::Disconnect))
        );
        if tx.send(polled).await.is_err() || last {
            return;
        }
    }
}

/// Stops the pump when the session ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn run(src: &MqttSource, decoder: &Decoder) -> Result<(), MqttError> {
    let s = &src.settings;
    let address = format!("{}:{}", s.host, s.port);
    src.board
        .update(&src.id, |st| st.state = SourceState::Starting);
    let mut options = MqttOptions::new(&s.client_id, &s.host, s.port);
    options
        .set_keep_alive(s.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_request_channel_capacity(1024);
    if let Some(c) = &s.credentials {
        options.set_credentials(c.username.expose(), c.password.expose());
    }
    let (client, mut events) = AsyncClient::new(options, 1024);
    let mut network = events.network_options();
    network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    events.set_network_options(network);
    let (tx, mut rx) = mpsc::channel(64);
    let _pump = AbortOnDrop(tokio::spawn(pump(events, tx)).abort_handle());

    let mut appender: Appender<Publish> = Appender::new(src.sink.clone(), APPENDS_IN_FLIGHT);
    let mut connected = false;
    loop {
        tokio::select! {
            biased;
            () = src.cancel.cancelled() => break,
            stored = appender.next(), if !appender.is_empty() => {
                acknowledge(src, &client, stored.map_err(MqttError::Sink)?).await;
            }
            polled = rx.recv(), if !appender.is_full() => {
                let Some(polled) = polled else {
                    return Err(MqttError::Lost("the connection task ended".into()));
                };
                match polled {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                        connected = true;
                        subscribe(src, &client, &ack).await?;
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                        if let Some(i) = ack
                            .return_codes
                            .iter()
                            .position(|c| matches!(c, SubscribeReasonCode::Failure))
                        {
                            let filter = s.topics.get(i).cloned().unwrap_or_default();
                            return Err(MqttError::Subscription { filter });
                        }
                        tracing::info!(source_id = %src.id, filters = s.topics.len(), "mqtt subscribed");
                        src.board.update(&src.id, |st| {
                            st.state = SourceState::Running;
                            st.error = None;
                        });
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let event = decode(decoder, &p);
                        appender.submit(event.into_iter().collect(), Some(p));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(failed(e, connected, address)),
                }
            }
        }
    }
    close(src, &client, &mut appender, &mut rx).await
}

/// Subscribes every filter with QoS 1 after a CONNACK.
async fn subscribe(src: &MqttSource, client: &AsyncClient, ack: &ConnAck) -> Result<(), MqttError> {
    tracing::info!(source_id = %src.id, session_present = ack.session_present, "mqtt connected");
    let filters = src
        .settings
        .topics
        .iter()
        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce))
        .collect::<Vec<_>>();
    client
        .subscribe_many(filters)
        .await
        .map_err(|e| MqttError::Lost(Box::new(e)))
}

/// The event for one message (none for a Debezium tombstone). The topic becomes the
/// event's `subject` and ordering `key` when the payload sets neither: a topic usually names
/// the device or thing the message is about.
fn decode(decoder: &Decoder, p: &Publish) -> Option<Event> {
    let msg = Message {
        payload: &p.payload,
        headers: Vec::new(),
        key: None,
        channel: &p.topic,
        position: position(p),
        stable_id: None,
        timestamp: None,
    };
    decoder.decode(&msg).map(|mut event| {
        if event.subject.is_none() {
            event.subject = Some(p.topic.clone());
        }
        if event.key.is_none() {
            event.key = Some(p.topic.clone());
        }
        event
    })
}

/// Where a message was, for people: its topic and packet id.
fn position(p: &Publish) -> String {
    format!("{} (packet {})", p.topic, p.pkid)
}

/// Sends the PUBACK of a stored message and reports it.
async fn acknowledge(src: &MqttSource, client: &AsyncClient, stored: Stored<Publish>) {
    let Some(p) = stored.position else { return };
    // Fails only when the connection task ended; the broker then redelivers the message.
    if let Err(e) = client.ack(&p).await {
        tracing::debug!(source_id = %src.id, error = %e, "mqtt acknowledgement not sent");
        return;
    }
    let n = stored.count as u64;
    if n > 0 {
        ::metrics::counter!(super::metrics::EVENTS, "source" => src.id.clone()).increment(n);
    }
    let now = Utc::now();
    let at = position(&p);
    src.board.update(&src.id, |st| {
        st.events += n;
        if n > 0 {
            st.last_event_at = Some(now);
        }
        st.position = Some(at);
    });
}

/// The session's error for a failed poll.
fn failed(e: ConnectionError, connected: bool, address: String) -> MqttError {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
                MqttError::Refused {
                    address,
                    reason: "bad user name or password, or not authorised".to_owned(),
                }
            }
            ConnectReturnCode::BadClientId => MqttError::Refused {
                address,
                reason: "the client id was rejected".to_owned(),
            },
            ConnectReturnCode::RefusedProtocolVersion => MqttError::Refused {
                address,
                reason: "the broker does not speak MQTT 3.1.1".to_owned(),
            },
            ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => {
                MqttError::Connect {
                    address,
                    source: Box::new(e),
                }
            }
        },
        e if connected => MqttError::Lost(Box::new(e)),
        e => MqttError::Connect {
            address,
            source: Box::new(e),
        },
    }
}

/// Shutdown: store and acknowledge what was read, then disconnect. Messages still arriving
/// are not acknowledged; the broker keeps them for the next session.
async fn close(
    src: &MqttSource,
    client: &AsyncClient,
    appender: &mut Appender<Publish>,
    rx: &mut mpsc::Receiver<Polled>,
) -> Result<(), MqttError> {
    while !appender.is_empty() {
        tokio::select! {
            stored = appender.next() => {
                acknowledge(src, client, stored.map_err(MqttError::Sink)?).await;
            }
            polled = rx.recv() => if polled.is_none() { break },
        }
    }
    if client.disconnect().await.is_ok() {
        // Keep the pump going until the acknowledgements and the DISCONNECT are out.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(polled) = rx.recv().await {
                if matches!(
                    polled,
                    Err(_) | Ok(MqttEvent::Outgoing(Outgoing::Disconnect))
                ) {
                    break;
                }
            }
        })
        .await;
    }
    Ok(())
}
