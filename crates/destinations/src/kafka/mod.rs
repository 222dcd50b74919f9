//! The Kafka destination (`kind: kafka`) and the client settings the Kafka source shares.
//!
//! * [`Kafka`] produces each delivery to a topic rendered from the event, through an
//!   idempotent producer with `acks=all`: a delivery succeeds only once every in-sync replica
//!   has the message. Retries inside the producer keep order and cannot duplicate.
//! * [`binding`] lays the event out per the CloudEvents Kafka protocol binding: structured
//!   (the whole event as JSON in the value) or binary (the data in the value, the attributes
//!   in `ce_` headers); the message key is the event's key, so one key keeps its partition.
//! * [`client_config`] turns validated connection settings (brokers, TLS, SASL) into a
//!   librdkafka configuration; the Kafka source builds its consumer from it too.
//!
//! Credentials are never logged; neither are message values.

pub mod binding;
mod producer;

use estafeta_config::kafka_connection::KafkaConnection;
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;

pub use producer::Kafka;

/// A librdkafka configuration for `connection`, with `client_id` naming the client to the
/// brokers (it shows in their logs and quotas).
#[must_use]
pub fn client_config(connection: &KafkaConnection, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &connection.brokers)
        .set("client.id", client_id)
        .set("security.protocol", connection.security_protocol())
        .set_log_level(RDKafkaLogLevel::Warning);
    if let Some(ca) = &connection.ca_file {
        config.set("ssl.ca.location", ca);
    }
    if let Some(sasl) = &connection.sasl {
        config
            .set("sasl.mechanism", sasl.mechanism.protocol_name())
            .set("sasl.username", sasl.username.expose())
            .set("sasl.password", sasl.password.expose());
    }
    config
}

#[cfg(test)]
mod tests {
    use estafeta_config::Secret;
    use estafeta_config::kafka_connection::{SaslMechanism, SaslSettings};

    use super::*;

    #[test]
    fn client_config_carries_brokers_tls_and_sasl() {
        let connection = KafkaConnection {
            brokers: "k1:9093,k2:9093".to_owned(),
            tls: true,
            ca_file: Some("/etc/kafka/ca.pem".to_owned()),
            sasl: Some(SaslSettings {
                mechanism: SaslMechanism::ScramSha256,
                username: Secret::new("estafeta".to_owned()),
                password: Secret::new("pw".to_owned()),
            }),
        };
        let c = client_config(&connection, "estafeta-test");
        assert_eq!(c.get("bootstrap.servers"), Some("k1:9093,k2:9093"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(c.get("sasl.username"), Some("estafeta"));
    }
}
