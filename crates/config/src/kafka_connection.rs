//! How Estafeta reaches a Kafka cluster — bootstrap brokers, TLS and SASL — shared by the
//! `kafka` source and destination: the file's shape, the validated settings and the checks.

use serde::Deserialize;

use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// The bootstrap address used when `brokers` is not set.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// `sasl:` — SASL authentication (with `tls: true` on real clusters).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `scram-sha-256`, `scram-sha-512` (default) or `plain`.
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: Text,
    /// Password; use `${secret:…}`.
    pub password: Text,
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaslMechanism {
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512.
    #[default]
    ScramSha512,
    /// PLAIN (the password travels as it is: only over TLS).
    Plain,
}

impl SaslMechanism {
    /// The name librdkafka and the Kafka protocol use.
    #[must_use]
    pub fn protocol_name(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::Plain => "PLAIN",
        }
    }
}

/// Validated SASL credentials.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    /// Mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: Secret,
    /// Password.
    pub password: Secret,
}

/// The validated connection part of a Kafka source or destination.
#[derive(Debug, Clone)]
pub struct KafkaConnection {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// Connect with TLS.
    pub tls: bool,
    /// A PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<String>,
    /// SASL credentials.
    pub sasl: Option<SaslSettings>,
}

impl KafkaConnection {
    /// librdkafka's `security.protocol` for these settings.
    #[must_use]
    pub fn security_protocol(&self) -> &'static str {
        match (self.tls, self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }
}

/// True when `name` can be a Kafka topic: 1 to 249 of letters, digits, `.`, `_` and `-`,
/// not `.` or `..`.
#[must_use]
pub fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Checks the connection fields of a `kafka` entry at path `p`.
pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    brokers: Option<&Text>,
    tls: bool,
    ca_file: Option<&Text>,
    sasl: Option<&SaslConfig>,
) -> Option<KafkaConnection> {
    let brokers = match brokers {
        None => DEFAULT_BROKERS.to_owned(),
        Some(t) => {
            let text = cx
                .resolve(t, &format!("{p}.brokers"))?
                .value
                .expose()
                .trim()
                .to_owned();
            let well_formed = !text.is_empty()
                && text.split(',').all(|one| {
                    let one = one.trim();
                    !one.contains("://")
                        && one.rsplit_once(':').is_some_and(|(host, port)| {
                            !host.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0)
                        })
                });
            if !well_formed {
                cx.err_text(
                    t,
                    format!("{p}.brokers"),
                    "bootstrap brokers are `host:port`, several separated by commas (no scheme), e.g. `kafka-1:9092,kafka-2:9092`",
                );
            }
            text
        }
    };
    let ca_file = match ca_file {
        None => None,
        Some(t) => {
            let path = cx
                .resolve(t, &format!("{p}.ca_file"))?
                .value
                .expose()
                .to_owned();
            if !tls {
                cx.err_text(
                    t,
                    format!("{p}.ca_file"),
                    "`ca_file` is used only with `tls: true`",
                );
            } else if path.trim().is_empty() {
                cx.err_text(t, format!("{p}.ca_file"), "must name a PEM file");
            }
            Some(path)
        }
    };
    let sasl = match sasl {
        None => None,
        Some(s) => {
            let username = cx
                .resolve(&s.username, &format!("{p}.sasl.username"))?
                .value;
            let password = cx
                .resolve(&s.password, &format!("{p}.sasl.password"))?
                .value;
            if username.expose().is_empty() {
                cx.err_text(
                    &s.username,
                    format!("{p}.sasl.username"),
                    "must not be empty",
                );
            }
            if s.mechanism == SaslMechanism::Plain && !tls {
                cx.err_text(
                    &s.username,
                    format!("{p}.sasl.mechanism"),
                    "`plain` sends the password as it is: use it with `tls: true`, or use `scram-sha-512`",
                );
            }
            Some(SaslSettings {
                mechanism: s.mechanism,
                username,
                password,
            })
        }
    };
    Some(KafkaConnection {
        brokers,
        tls,
        ca_file,
        sasl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(is_topic_name("orders"));
        assert!(is_topic_name("dbserver1.inventory.customers"));
        assert!(is_topic_name("a_b-c"));
        assert!(!is_topic_name(""));
        assert!(!is_topic_name("."));
        assert!(!is_topic_name(".."));
        assert!(!is_topic_name("orders created"));
        assert!(!is_topic_name("orders/created"));
        assert!(!is_topic_name(&"x".repeat(250)));
    }

    #[test]
    fn security_protocol_follows_tls_and_sasl() {
        let mut c = KafkaConnection {
            brokers: DEFAULT_BROKERS.to_owned(),
            tls: false,
            ca_file: None,
            sasl: None,
        };
        assert_eq!(c.security_protocol(), "plaintext");
        c.tls = true;
        assert_eq!(c.security_protocol(), "ssl");
        c.sasl = Some(SaslSettings {
            mechanism: SaslMechanism::ScramSha512,
            username: Secret::new("u".into()),
            password: Secret::new("p".into()),
        });
        assert_eq!(c.security_protocol(), "sasl_ssl");
        c.tls = false;
        assert_eq!(c.security_protocol(), "sasl_plaintext");
    }
}
