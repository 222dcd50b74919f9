//! The AMQP destination: each delivery is one message published to a RabbitMQ (AMQP 0-9-1)
//! exchange with a routing key rendered from the event.
//!
//! * The channel is in publisher-confirm mode: a delivery is delivered only once the broker
//!   confirmed the message (for a persistent message on a durable queue: once it is on disk).
//!   A negative confirmation (the broker could not store it, e.g. a full queue that rejects
//!   publishes) is retryable.
//! * With `mandatory` (the default) a message no queue receives is returned by the broker:
//!   the delivery fails for good with an error naming the exchange and the routing key.
//! * Properties: `message_id` = the delivery id (receivers de-duplicate on it),
//!   `content_type`, `type` = the event type, `timestamp` = the event time, `app_id`
//!   `estafeta`, `delivery_mode` 2 when persistent; headers `ce-id`, `ce-type`, `ce-source`,
//!   `ce-subject` (when set) and `X-Estafeta-Delivery`.
//! * Errors: a missing exchange, refused access, a message over the broker's size limit and a
//!   routing key that does not render to one are final; an unreachable broker, a lost
//!   connection and timeouts are retryable. The connection is opened on first use and again
//!   after it was lost; the `declare:` block runs on every new channel.
//!
//! The URL (it holds the password) and payloads are never logged.

use std::time::Instant;

use estafeta_config::amqp_destination::{AmqpSettings, routing_key_template_name};
use estafeta_core::template::TemplateSet;
use estafeta_core::{Destination, OutboundMessage, SendError, SendOk};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

pub use self::link::LinkError;
use crate::build_error::BuildError;

pub mod link;

/// A RabbitMQ exchange, publishing with confirms.
pub struct Amqp {
    settings: AmqpSettings,
    exchange: ShortString,
    templates: TemplateSet,
    key_name: String,
    /// The connection and its publishing channel, opened on first use and again after a loss.
    link: tokio::sync::Mutex<Link>,
}

/// The open connection and channel, if any.
#[derive(Default)]
struct Link {
    connection: Option<Connection>,
    channel: Option<Channel>,
}

impl std::fmt::Debug for Amqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Amqp")
            .field("id", &self.settings.id)
            .field("exchange", &self.settings.exchange)
            .finish_non_exhaustive()
    }
}

impl Amqp {
    /// Builds the destination; it connects on the first send.
    ///
    /// # Errors
    /// A routing key template that does not compile.
    pub fn new(settings: &AmqpSettings) -> Result<Self, BuildError> {
        let key_name = routing_key_template_name(&settings.id);
        let mut templates = TemplateSet::new();
        templates
            .add(&key_name, &settings.routing_key)
            .map_err(|e| BuildError::Template {
                id: settings.id.clone(),
                message: format!("routing_key: {e}"),
            })?;
        let exchange =
            ShortString::try_new(settings.exchange.as_str()).map_err(|_| BuildError::Template {
                id: settings.id.clone(),
                message: "exchange: the name is longer than 255 bytes".to_owned(),
            })?;
        Ok(Self {
            settings: settings.clone(),
            exchange,
            templates,
            key_name,
            link: tokio::sync::Mutex::new(Link::default()),
        })
    }

    /// The publishing channel, connecting and setting it up first when needed.
    async fn channel(&self) -> Result<Channel, SendError> {
        let mut open = self.link.lock().await;
        if let Some(channel) = &open.channel
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        open.channel = None;
        let s = &self.settings;
        let setup = async {
            let connection = match open.connection.take() {
                Some(c) if c.status().connected() => c,
                _ => {
                    let name = format!("estafeta destination {}", s.id);
                    link::connect(s.url.expose(), &name).await?
                }
            };
            let channel = connection.create_channel().await;
            open.connection = Some(connection);
            let channel = channel.map_err(LinkError::Channel)?;
            link::declare(&channel, &s.declare).await?;
            if !s.exchange.is_empty() {
                link::check_exchange(&channel, &s.exchange).await?;
            }
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(LinkError::Channel)?;
            Ok::<_, LinkError>(channel)
        };
        let channel = match tokio::time::timeout(s.timeout, setup).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(link_error(e)),
            Err(_) => {
                return Err(SendError::retryable(format!(
                    "could not connect to the AMQP server within {:?}",
                    s.timeout
                )));
            }
        };
        open.channel = Some(channel.clone());
        Ok(channel)
    }

    /// The routing key for `msg`, rendered and checked.
    fn routing_key(&self, msg: &OutboundMessage) -> Result<ShortString, SendError> {
        let key = self
            .templates
            .render(&self.key_name, &msg.event, &[])
            .map_err(|e| SendError::final_error(format!("cannot render the routing key: {e}")))?;
        let key = key.trim().to_owned();
        if key.chars().any(char::is_control) {
            return Err(SendError::final_error(
                "the routing key rendered to text with control characters",
            ));
        }
        ShortString::try_new(key).map_err(|e| {
            SendError::final_error("the routing key rendered to more than 255 bytes").with_source(e)
        })
    }

    async fn publish(
        &self,
        channel: &Channel,
        key: ShortString,
        msg: &OutboundMessage,
    ) -> Result<SendOk, SendError> {
        let s = &self.settings;
        let options = BasicPublishOptions {
            mandatory: s.mandatory,
            immediate: false,
        };
        let confirmed = async {
            channel
                .basic_publish(
                    self.exchange.clone(),
                    key.clone(),
                    options,
                    &msg.body,
                    properties(msg, s.persistent),
                )
                .await?
                .await
        };
        let exchange = shown_exchange(&s.exchange);
        match tokio::time::timeout(s.timeout, confirmed).await {
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(SendOk {
                status_code: None,
                response_excerpt: Some(format!("confirmed by {exchange} with key `{key}`")),
            }),
            Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                Err(SendError::final_error(format!(
                    "the message was unroutable: {exchange} has no queue bound for routing key `{key}` (returned by the broker: {} {})",
                    returned.reply_code, returned.reply_text
                )))
            }
            Ok(Ok(Confirmation::Nack(None))) => Err(SendError::retryable(format!(
                "the broker refused to store the message published to {exchange} with key `{key}` (negative confirm, e.g. a full queue)"
            ))),
            Ok(Err(e)) => Err(classify(&exchange, key.as_str(), e)),
            Err(_) => Err(SendError::retryable(format!(
                "the broker did not confirm the message to {exchange} with key `{key}` within {:?}",
                s.timeout
            ))),
        }
    }
}

/// How the exchange is named in messages.
fn shown_exchange(exchange: &str) -> String {
    if exchange.is_empty() {
        "the default exchange".to_owned()
    } else {
        format!("exchange `{exchange}`")
    }
}

/// A failed connect or set-up, retryable or final.
fn link_error(e: LinkError) -> SendError {
    let message = e.to_string();
    if e.is_final() {
        SendError::final_error(message).with_source(e)
    } else {
        SendError::retryable(message).with_source(e)
    }
}

/// The broker's refusal of a publish, retryable or final.
fn classify(exchange: &str, key: &str, e: lapin::Error) -> SendError {
    let soft = match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    };
    let err = match soft {
        Some(AMQPSoftError::NOTFOUND) => {
            SendError::final_error(format!("{exchange} does not exist on the broker"))
        }
        Some(AMQPSoftError::ACCESSREFUSED) => SendError::final_error(format!(
            "the broker refused access to {exchange}: the user may not publish to it"
        )),
        Some(AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::CONTENTTOOLARGE) => {
            SendError::final_error(format!(
                "the broker refused the message to {exchange} with key `{key}` (too large, or a precondition of the exchange)"
            ))
        }
        _ => SendError::retryable(format!(
            "the connection to the AMQP server was lost while publishing to {exchange}"
        )),
    };
    err.with_source(e)
}

/// The message's properties and headers.
fn properties(msg: &OutboundMessage, persistent: bool) -> BasicProperties {
    let delivery = msg.delivery_id.to_string();
    let event = &msg.event;
    let mut headers = FieldTable::default();
    let mut header = |name: &str, value: &str| {
        headers.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    };
    header("ce-id", &event.ce_id);
    header("ce-type", &event.ty);
    header("ce-source", &event.ce_source);
    if let Some(subject) = &event.subject {
        header("ce-subject", subject);
    }
    header("X-Estafeta-Delivery", &delivery);
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from(msg.content_type))
        .with_delivery_mode(if persistent { 2 } else { 1 })
        .with_timestamp(u64::try_from(event.time.timestamp()).unwrap_or(0))
        .with_app_id(ShortString::from("estafeta"))
        .with_headers(headers);
    if let Ok(id) = ShortString::try_new(delivery) {
        props = props.with_message_id(id);
    }
    if let Ok(ty) = ShortString::try_new(event.ty.as_str()) {
        props = props.with_type(ty);
    }
    props
}

#[async_trait::async_trait]
impl Destination for Amqp {
    fn id(&self) -> &str {
        &self.settings.id
    }

    fn kind(&self) -> &'static str {
        "amqp"
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        let key = self.routing_key(msg)?;
        let channel = self.channel().await?;
        let started = Instant::now();
        let result = self.publish(&channel, key, msg).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => {
                tracing::debug!(dest_id = %self.settings.id, elapsed_ms, "amqp message confirmed")
            }
            Err(err) => {
                tracing::debug!(dest_id = %self.settings.id, retryable = err.is_retryable(),
                elapsed_ms, error = %err, "amqp publish failed")
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_exchange_is_named_in_words() {
        assert_eq!(shown_exchange(""), "the default exchange");
        assert_eq!(shown_exchange("orders"), "exchange `orders`");
    }
}
