//! Why a destination could not be built from its validated settings. Messages name the
//! destination and the setting, never a secret (a URL may carry a token: it is not shown).

use crate::webhook::signing::SecretError;

/// A destination that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The URL does not parse.
    #[error("destination `{id}`: the url is not valid")]
    InvalidUrl {
        /// Destination id.
        id: String,
        /// The parser's reason.
        #[source]
        source: url::ParseError,
    },
    /// The URL's scheme is not `http` or `https`, or it has no host.
    #[error(
        "destination `{id}`: the url must be http:// or https:// with a host (got scheme `{scheme}`)"
    )]
    UnsupportedUrl {
        /// Destination id.
        id: String,
        /// The scheme found.
        scheme: String,
    },
    /// A configured header name is not a valid HTTP header name.
    #[error("destination `{id}`: `{name}` is not a valid header name")]
    InvalidHeaderName {
        /// Destination id.
        id: String,
        /// The name as configured.
        name: String,
        /// The parser's reason.
        #[source]
        source: reqwest::header::InvalidHeaderName,
    },
    /// A configured header value is not a valid HTTP header value.
    #[error("destination `{id}`: the value of header `{name}` is not a valid header value")]
    InvalidHeaderValue {
        /// Destination id.
        id: String,
        /// The header's name.
        name: String,
        /// The parser's reason.
        #[source]
        source: reqwest::header::InvalidHeaderValue,
    },
    /// A configured header is one Estafeta sets itself.
    #[error("destination `{id}`: header `{name}` is set by Estafeta and cannot be configured")]
    ReservedHeader {
        /// Destination id.
        id: String,
        /// The header's name.
        name: String,
    },
    /// The signing secret is not `whsec_` followed by base64.
    #[error("destination `{id}`: invalid signing secret")]
    InvalidSecret {
        /// Destination id.
        id: String,
        /// What is wrong with it.
        #[source]
        source: SecretError,
    },
    /// A setting of the destination cannot be used (a template that does not compile,
    /// credentials a header cannot carry).
    #[error("destination `{id}`: {message}")]
    Template {
        /// Destination id.
        id: String,
        /// What is wrong, without secrets.
        message: String,
    },
    /// A configured e-mail address that the mail library does not take.
    #[error("destination `{id}`: `{field}`: `{address}` is not a valid e-mail address")]
    InvalidAddress {
        /// Destination id.
        id: String,
        /// The field, e.g. `to[1]`.
        field: String,
        /// The address as configured.
        address: String,
        /// The library's reason.
        #[source]
        source: lettre::address::AddressError,
    },
    /// The TLS settings for an SMTP server could not be prepared (e.g. no certificate roots).
    #[error("destination `{id}`: TLS for the SMTP server `{host}` cannot be set up")]
    SmtpTls {
        /// Destination id.
        id: String,
        /// The server's host.
        host: String,
        /// The library's error.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// The S3 client could not be built from the settings.
    #[error("destination `{id}`: the S3 client cannot be built")]
    ObjectStore {
        /// Destination id.
        id: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
    /// librdkafka refused the producer's settings.
    #[error("destination `{id}`: the Kafka producer cannot be built")]
    Kafka {
        /// Destination id.
        id: String,
        /// librdkafka's error (boxed: it is large).
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// The HTTP client could not be built (e.g. no TLS roots).
    #[error("destination `{id}`: the HTTP client cannot be built")]
    HttpClient {
        /// Destination id.
        id: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
}
