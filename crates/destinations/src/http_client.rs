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
