//! What the AMQP destination and the `amqp` source share: opening a named connection,
//! declaring the `declare:` block's exchanges, queues and bindings, checking that an exchange
//! or queue exists, and the errors of those steps with whether retrying can help.

use estafeta_config::amqp_destination::{DeclareSettings, ExchangeType};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// Why the connection or a channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The server could not be reached, or refused the connection.
    #[error("cannot connect to the AMQP server")]
    Connect(#[source] lapin::Error),
    /// A channel could not be opened or set up.
    #[error("the AMQP channel failed")]
    Channel(#[source] lapin::Error),
    /// An exchange, queue or binding of the `declare:` block was refused.
    #[error("cannot declare {what}")]
    Declare {
        /// What was declared, e.g. "queue `orders`".
        what: String,
        /// The broker's answer.
        #[source]
        source: lapin::Error,
    },
    /// A name is not an AMQP short string (over 255 bytes).
    #[error("`{name}` is longer than the 255 bytes AMQP allows")]
    Name {
        /// The name, cut to 40 characters.
        name: String,
    },
    /// The exchange to publish to does not exist.
    #[error("exchange `{exchange}` does not exist on the broker")]
    NoExchange {
        /// Exchange name.
        exchange: String,
        /// The broker's answer.
        #[source]
        source: lapin::Error,
    },
    /// The queue to consume does not exist.
    #[error(
        "queue `{queue}` does not exist on the broker (declare it, or add it to `declare.queues`)"
    )]
    NoQueue {
        /// Queue name.
        queue: String,
        /// The broker's answer.
        #[source]
        source: lapin::Error,
    },
}

impl LinkError {
    /// True when retrying the same thing will not help until a person changes something
    /// (credentials, permissions, a missing exchange, a declaration that conflicts with what
    /// exists).
    #[must_use]
    pub fn is_final(&self) -> bool {
        match self {
            Self::Name { .. } | Self::NoExchange { .. } | Self::NoQueue { .. } => true,
            Self::Connect(e) => matches!(
                amqp_error(e),
                Some(
                    AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                        | AMQPErrorKind::Hard(
                            AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH
                        )
                )
            ),
            Self::Channel(e) | Self::Declare { source: e, .. } => matches!(
                amqp_error(e),
                Some(AMQPErrorKind::Soft(
                    AMQPSoftError::ACCESSREFUSED
                        | AMQPSoftError::NOTFOUND
                        | AMQPSoftError::PRECONDITIONFAILED
                ))
            ),
        }
    }
}

/// The AMQP error code inside a client error, if the broker sent one.
#[must_use]
pub fn amqp_error(e: &lapin::Error) -> Option<&AMQPErrorKind> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.kind()),
        _ => None,
    }
}

/// True when the broker answered "not found" (404).
#[must_use]
pub fn is_not_found(e: &lapin::Error) -> bool {
    matches!(
        amqp_error(e),
        Some(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// A name as an AMQP short string.
///
/// # Errors
/// A name over 255 bytes.
pub fn short(name: &str) -> Result<ShortString, LinkError> {
    ShortString::try_new(name).map_err(|_| LinkError::Name {
        name: name.chars().take(40).collect(),
    })
}

/// Opens a connection named `name` (the `connection_name` client property, shown by
/// `rabbitmqctl list_connections` and the management UI). Automatic recovery is off: the
/// caller reconnects, so delivery tags of a lost channel are never reused.
///
/// # Errors
/// The server is unreachable or refused the connection.
pub async fn connect(url: &str, name: &str) -> Result<Connection, LinkError> {
    let properties =
        ConnectionProperties::default().with_connection_name(LongString::from(name.as_bytes()));
    Connection::connect(url, properties)
        .await
        .map_err(LinkError::Connect)
}

/// Declares the `declare:` block on `channel`: exchanges, then queues, then bindings.
///
/// # Errors
/// The first declaration the broker refused (the channel is closed then).
pub async fn declare(channel: &Channel, d: &DeclareSettings) -> Result<(), LinkError> {
    for (name, kind, durable) in &d.exchanges {
        let kind = match kind {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Headers => ExchangeKind::Headers,
        };
        let options = ExchangeDeclareOptions {
            durable: *durable,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(short(name)?, kind, options, FieldTable::default())
            .await
            .map_err(|source| LinkError::Declare {
                what: format!("exchange `{name}`"),
                source,
            })?;
    }
    for (name, durable, quorum) in &d.queues {
        let options = QueueDeclareOptions {
            durable: *durable || *quorum,
            ..QueueDeclareOptions::default()
        };
        let mut arguments = FieldTable::default();
        if *quorum {
            arguments.insert(
                ShortString::from("x-queue-type"),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        channel
            .queue_declare(short(name)?, options, arguments)
            .await
            .map_err(|source| LinkError::Declare {
                what: format!("queue `{name}`"),
                source,
            })?;
    }
    for (queue, exchange, key) in &d.bindings {
        channel
            .queue_bind(
                short(queue)?,
                short(exchange)?,
                short(key)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| LinkError::Declare {
                what: format!(
                    "the binding of queue `{queue}` to exchange `{exchange}` with key `{key}`"
                ),
                source,
            })?;
    }
    Ok(())
}

/// Checks that `exchange` exists (a passive declare; a missing one closes the channel).
///
/// # Errors
/// [`LinkError::NoExchange`] when it does not exist, [`LinkError::Channel`] otherwise.
pub async fn check_exchange(channel: &Channel, exchange: &str) -> Result<(), LinkError> {
    let options = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            short(exchange)?,
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|source| {
            if is_not_found(&source) {
                LinkError::NoExchange {
                    exchange: exchange.to_owned(),
                    source,
                }
            } else {
                LinkError::Channel(source)
            }
        })
}

/// How many messages of `queue` are ready for delivery (a passive declare; a missing queue
/// closes the channel).
///
/// # Errors
/// [`LinkError::NoQueue`] when it does not exist, [`LinkError::Channel`] otherwise.
pub async fn ready_messages(channel: &Channel, queue: &str) -> Result<u32, LinkError> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(short(queue)?, options, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .map_err(|source| {
            if is_not_found(&source) {
                LinkError::NoQueue {
                    queue: queue.to_owned(),
                    source,
                }
            } else {
                LinkError::Channel(source)
            }
        })
}
