//! The factory of pooled HTTP clients that HTTP destinations are built with, and the
//! process-wide rustls crypto provider it needs.

use std::sync::Once;
use std::time::Duration;

use crate::webhook::ssrf::PublicOnlyResolver;

/// The `user-agent` every Estafeta request carries unless a destination overrides it.
pub const USER_AGENT: &str = concat!("Estafeta/", env!("CARGO_PKG_VERSION"));

/// Installs the `ring` rustls crypto provider as the process default, once. A provider
/// installed earlier (by us or anyone else) is kept.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed: keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Builds one pooled `reqwest::Client` per destination, with what all share.
#[derive(Debug, Clone)]
pub struct HttpClients {
    user_agent: String,
}

impl Default for HttpClients {
    fn default() -> Self {
        Self::new()
    }
}

/// What one destination's client needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientOptions {
    /// Whole-request timeout: connect to the last byte of the answer.
    pub(crate) timeout: Duration,
    /// Idle connections kept per host; at least the destination's concurrency.
    pub(crate) max_idle_per_host: usize,
    /// Whether private addresses may be reached.
    pub(crate) allow_private_networks: bool,
}

impl HttpClients {
    /// The factory with Estafeta's user agent; installs the crypto provider.
    #[must_use]
    pub fn new() -> Self {
        install_crypto_provider();
        Self {
            user_agent: USER_AGENT.to_owned(),
        }
    }

    /// The default `user-agent` of the clients built here.
    #[must_use]
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// A client for requests that are not a destination's (the HTTP provider's pulls): the
    /// same SSRF guard, no redirects, no proxy. With `allow_private_networks` false, names
    /// that resolve only to private addresses are refused when connecting; IP-literal hosts
    /// are the caller's to check with [`crate::webhook::ssrf::refused_literal`].
    ///
    /// # Errors
    /// The client could not be built (TLS setup).
    pub fn guarded_client(
        &self,
        timeout: Duration,
        allow_private_networks: bool,
    ) -> Result<reqwest::Client, reqwest::Error> {
        self.client(ClientOptions {
            timeout,
            max_idle_per_host: 4,
            allow_private_networks,
        })
    }

    /// A client that never follows redirects and uses no proxy (a proxy would resolve
    /// names itself and defeat the SSRF guard). HTTP/1.1 for `http://`; for `https://`,
    /// HTTP/2 when the server offers it through ALPN.
    pub(crate) fn client(&self, opts: ClientOptions) -> Result<reqwest::Client, reqwest::Error> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(self.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .pool_max_idle_per_host(opts.max_idle_per_host.max(1))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true);
        if !opts.allow_private_networks {
            builder = builder.dns_resolver(PublicOnlyResolver);
        }
        builder.build()
    }
}

/// Where an HTTP destination sends: its URL (which may carry a credential and is never
/// shown), the `host[:port]` that messages name instead, the pooled client, and the SSRF
/// guard's verdict on an IP-literal host.
pub(crate) struct Endpoint {
    pub(crate) client: reqwest::Client,
    pub(crate) url: reqwest::Url,
    pub(crate) host: String,
    /// Set when the host is a private IP literal and private networks are not allowed.
    refused: Option<crate::webhook::ssrf::SsrfError>,
    pub(crate) timeout: Duration,
}

impl Endpoint {
    /// Parses `url` (http or https with a host) and builds its client.
    pub(crate) fn new(
        id: &str,
        url: &str,
        clients: &HttpClients,
        opts: ClientOptions,
    ) -> Result<Self, crate::BuildError> {
        use crate::BuildError;
        let url = reqwest::Url::parse(url).map_err(|source| BuildError::InvalidUrl {
            id: id.to_owned(),
            source,
        })?;
        let host = match (url.scheme(), url.host()) {
            ("http" | "https", Some(host)) => host,
            _ => {
                return Err(BuildError::UnsupportedUrl {
                    id: id.to_owned(),
                    scheme: url.scheme().to_owned(),
                });
            }
        };
        let refused = (!opts.allow_private_networks)
            .then(|| crate::webhook::ssrf::refused_literal(&host))
            .flatten();
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let client = clients
            .client(opts)
            .map_err(|source| BuildError::HttpClient {
                id: id.to_owned(),
                source,
            })?;
        Ok(Self {
            client,
            url,
            host,
            refused,
            timeout: opts.timeout,
        })
    }

    /// The final error to answer instead of sending, when the SSRF guard refused the host.
    pub(crate) fn check(&self) -> Result<(), estafeta_core::SendError> {
        match &self.refused {
            Some(ssrf) => Err(crate::webhook::outcome::refused(ssrf.clone())),
            None => Ok(()),
        }
    }

    /// A failure without an answer, classified (the URL is stripped).
    pub(crate) fn transport_error(&self, err: reqwest::Error) -> estafeta_core::SendError {
        crate::webhook::outcome::classify_transport(err, &self.host, self.timeout)
    }
}
