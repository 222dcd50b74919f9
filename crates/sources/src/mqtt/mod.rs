//! `kind: mqtt` — messages on MQTT topic filters become events.
//!
//! **Session.** The source connects with a fixed client id and `clean session = false`, so
//! the broker keeps its subscriptions and queues QoS 1 messages published while Estafeta is
//! down or reconnecting; it subscribes to every configured filter with QoS 1 after each
//! CONNACK (re-subscribing an existing session is harmless, and picks up new filters).
//!
//! **Acknowledgements.** Acks are manual: each message is decoded by the shared broker
//! decoder (one event, or an `estafeta.message.undecodable` failed record), appended through
//! the pipeline, and its PUBACK is sent only once the append holding it is durable — in the
//! order the messages arrived. A message whose PUBACK was not sent is delivered again by the
//! broker after a reconnect or a restart, so nothing is lost; since MQTT 3.1.1 carries no
//! message id, such a redelivery is stored again (a duplicate) unless the payload is a
//! CloudEvent with its own `id`.
//!
//! **Failures.** A lost connection ends the session; the supervisor reconnects with backoff
//! (`reconnecting` on the status board, counted in `reconnects` and
//! `estafeta_source_reconnects_total`). A broker that refuses the credentials or the client
//! id, or refuses a subscription, is a set-up problem: checked again every minute.

mod session;

use std::error::Error as StdError;

use estafeta_config::mqtt_source::MqttSourceSettings;

use crate::broker::Decoder;
use crate::sink::SinkError;
use crate::supervisor::{Failure, supervise};

/// Metric names of this source (documented in `docs/sources/mqtt.md`).
pub mod metrics {
    pub use estafeta_core::metric_names::{
        SOURCE_EVENTS as EVENTS, SOURCE_RECONNECTS as RECONNECTS, SOURCE_UNDECODABLE as UNDECODABLE,
    };
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MqttError {
    /// The broker could not be reached.
    #[error("cannot connect to the MQTT broker at {address}")]
    Connect {
        address: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The broker answered the CONNECT with a refusal a person must fix.
    #[error("the MQTT broker at {address} refused the connection: {reason}")]
    Refused { address: String, reason: String },
    /// The broker refused a subscription.
    #[error(
        "the MQTT broker refused the subscription to `{filter}` (not authorised, or a filter it does not allow)"
    )]
    Subscription { filter: String },
    /// The connection was lost after it was up.
    #[error("the connection to the MQTT broker was lost")]
    Lost(#[source] Box<dyn StdError + Send + Sync>),
    /// The log could not store the events; nothing was acknowledged.
    #[error("the event log could not store the messages' events")]
    Sink(#[source] SinkError),
}

impl MqttError {
    fn needs_a_person(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::Subscription { .. })
    }

    /// The error with its causes, for logs and the status board.
    fn report(&self) -> String {
        crate::supervisor::error_chain(self)
    }
}

/// One running source of this kind.
pub(crate) type MqttSource = crate::Source<MqttSourceSettings>;

impl MqttSource {
    /// Runs until cancelled; reconnects with backoff after a lost connection, and tries
    /// again every minute after a refusal (see [`Supervisor`]).
    pub(crate) async fn run(self) {
        let decoder = Decoder::new(&self.id, "mqtt", &self.settings.decode, self.board.clone());
        let (this, decoder) = (&self, &decoder);
        supervise(&self.id, &self.board, &self.cancel, || async move {
            session::run(this, decoder).await.map_err(|e| {
                if e.needs_a_person() {
                    Failure::Setup(e.report())
                } else {
                    Failure::Transient(e.report())
                }
            })
        })
        .await;
    }
}
