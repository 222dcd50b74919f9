//! The one place a destination kind is wired in: validated settings in, a running
//! `Arc<dyn Destination>` out.

use std::sync::Arc;

use estafeta_config::{DestinationKindSettings, DestinationSettings};
use estafeta_core::Destination;

use crate::build_error::BuildError;
use crate::http_client::HttpClients;
use crate::webhook::Webhook;

/// Builds the destination `settings` describe. HTTP destinations get their own pooled
/// client from `clients`, sized to the destination's concurrency.
///
/// # Errors
/// Settings that cannot be turned into a destination (see [`BuildError`]).
pub fn build(
    settings: &DestinationSettings,
    clients: &HttpClients,
) -> Result<Arc<dyn Destination>, BuildError> {
    match &settings.kind {
        DestinationKindSettings::Webhook(webhook) => Ok(Arc::new(Webhook::new(
            webhook,
            clients,
            settings.concurrency,
        )?)),
        DestinationKindSettings::Telegram(telegram) => Ok(Arc::new(crate::Telegram::new(
            telegram,
            clients,
            settings.concurrency,
        )?)),
        DestinationKindSettings::Chat(chat) => Ok(Arc::new(crate::Chat::new(
            chat,
            clients,
            settings.concurrency,
        )?)),
        DestinationKindSettings::Ntfy(ntfy) => Ok(Arc::new(crate::Ntfy::new(
            ntfy,
            clients,
            settings.concurrency,
        )?)),
        DestinationKindSettings::Smtp(smtp) => {
            Ok(Arc::new(crate::Smtp::new(smtp, settings.concurrency)?))
        }
        DestinationKindSettings::Kafka(kafka) => Ok(Arc::new(crate::Kafka::new(kafka)?)),
        DestinationKindSettings::Nats(nats) => Ok(Arc::new(crate::Nats::new(nats)?)),
        DestinationKindSettings::Amqp(amqp) => Ok(Arc::new(crate::Amqp::new(amqp)?)),
        DestinationKindSettings::Mqtt(mqtt) => Ok(Arc::new(crate::Mqtt::new(mqtt)?)),
        DestinationKindSettings::S3(s3) => Ok(Arc::new(crate::ObjectStorage::s3(s3)?)),
        DestinationKindSettings::File(file) => Ok(Arc::new(crate::ObjectStorage::file(file)?)),
    }
}
