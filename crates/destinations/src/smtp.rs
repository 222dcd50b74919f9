//! The SMTP destination: each delivery is sent as one e-mail through an SMTP server (a
//! provider's submission service or your own relay), over a pool of connections kept per
//! destination (lettre's `AsyncSmtpTransport`, rustls on the `ring` provider).
//!
//! * The body is the route's rendered template (text/plain, or with `html: true` HTML plus a
//!   plain-text alternative); without a template, the event. The subject is the
//!   destination's template (default: the event type). `Message-ID` comes from the delivery
//!   id, so every attempt of one delivery carries the same one; `X-Estafeta-Delivery` too.
//! * Answers: 4xx replies (421, 450, 451, 452…), refused or reset connections and timeouts
//!   are retryable; 5xx replies are final — 535 as refused credentials, 550/553 with the
//!   server's reply text — and so are TLS failures (a certificate that is not valid, or the
//!   wrong `tls` mode for the port).
//! * Without `allow_private_networks`, a host name is resolved before connecting and the
//!   connection goes to a public address of it only (pinned, with TLS still checking the
//!   name), which holds against names that point inside and against DNS rebinding.
//!
//! Errors and logs name the server (`host:port`), never the credentials.

mod letter;
mod plain_text;

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use estafeta_config::smtp_destination::{SmtpSettings, SmtpTls};
use estafeta_core::{Destination, OutboundMessage, SendError, SendOk};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

use self::letter::Letter;
use crate::build_error::BuildError;
use crate::webhook::outcome::refused;
use crate::webhook::ssrf::{SsrfError, keep_public, private_range};

/// Longest part of a server's reply kept in an error.
const REPLY_LIMIT: usize = 300;
/// How long an idle pooled connection is kept open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// A transport and the address it is pinned to (`None`: connects by host name).
struct Pinned {
    addr: Option<IpAddr>,
    transport: Transport,
}

/// An SMTP destination.
pub struct Smtp {
    id: String,
    host: String,
    port: u16,
    /// `host:port`, for messages.
    server: String,
    tls: Option<Tls>,
    credentials: Option<Credentials>,
    timeout: Duration,
    pool_size: u32,
    /// Resolve host names and connect only to public addresses.
    public_only: bool,
    refused: Option<SsrfError>,
    letter: Letter,
    /// Built on first use (it starts a task) and rebuilt when the host's address changes.
    transport: Mutex<Option<Pinned>>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("id", &self.id)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Smtp {
    /// Builds the destination; `concurrency` sizes its connection pool. Connections are made
    /// when messages are sent.
    ///
    /// # Errors
    /// An address or subject template the mail library does not take, or TLS settings that
    /// cannot be prepared.
    pub fn new(settings: &SmtpSettings, concurrency: usize) -> Result<Self, BuildError> {
        crate::install_crypto_provider();
        let id = settings.id.clone();
        let literal = settings.host.parse::<IpAddr>().ok();
        let refused = match literal {
            Some(addr) if !settings.allow_private_networks => {
                private_range(addr).map(|range| SsrfError {
                    host: settings.host.clone(),
                    addr,
                    range,
                })
            }
            _ => None,
        };
        let tls = match settings.tls {
            SmtpTls::None => None,
            mode => {
                let params = TlsParameters::new(settings.host.clone()).map_err(|source| {
                    BuildError::SmtpTls {
                        id: id.clone(),
                        host: settings.host.clone(),
                        source,
                    }
                })?;
                Some(match mode {
                    SmtpTls::Tls => Tls::Wrapper(params),
                    _ => Tls::Required(params),
                })
            }
        };
        let server = match literal {
            Some(IpAddr::V6(_)) => format!("[{}]:{}", settings.host, settings.port),
            _ => format!("{}:{}", settings.host, settings.port),
        };
        Ok(Self {
            letter: Letter::new(settings)?,
            host: settings.host.clone(),
            port: settings.port,
            server,
            tls,
            credentials: settings.credentials.as_ref().map(|c| {
                Credentials::new(
                    c.username.expose().to_owned(),
                    c.password.expose().to_owned(),
                )
            }),
            timeout: settings.timeout,
            pool_size: u32::try_from(concurrency.clamp(1, 64)).unwrap_or(8),
            public_only: !settings.allow_private_networks && literal.is_none(),
            refused,
            transport: Mutex::new(None),
            id,
        })
    }

    /// A pooled transport that connects to `addr` (or to the host name when `None`).
    fn build_transport(&self, addr: Option<IpAddr>) -> Transport {
        let connect_to = addr.map_or_else(|| self.host.clone(), |a| a.to_string());
        let mut b = Transport::builder_dangerous(connect_to)
            .port(self.port)
            .timeout(Some(self.timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(self.pool_size)
                    .idle_timeout(IDLE_TIMEOUT),
            );
        b = b.tls(self.tls.clone().unwrap_or(Tls::None));
        if let Some(c) = &self.credentials {
            b = b
                .credentials(c.clone())
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        b.build()
    }

    /// The transport to send with: for a host name without `allow_private_networks`, pinned
    /// to a public address it resolves to now.
    async fn transport(&self) -> Result<Transport, SendError> {
        let addr = if self.public_only {
            Some(self.public_address().await?)
        } else {
            None
        };
        let mut slot = self
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(p) if p.addr == addr => Ok(p.transport.clone()),
            _ => {
                let transport = self.build_transport(addr);
                *slot = Some(Pinned {
                    addr,
                    transport: transport.clone(),
                });
                Ok(transport)
            }
        }
    }

    /// A public address of the host: the one in use when it still resolves to it.
    async fn public_address(&self) -> Result<IpAddr, SendError> {
        let resolved: Vec<SocketAddr> = tokio::time::timeout(
            self.timeout,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            SendError::retryable(format!(
                "cannot resolve the SMTP server `{}` within {:?}",
                self.host, self.timeout
            ))
        })?
        .map_err(|e| {
            SendError::retryable(format!(
                "cannot resolve the SMTP server `{}`: {e}",
                self.host
            ))
            .with_source(e)
        })?
        .collect();
        let public = keep_public(&self.host, resolved).map_err(refused)?;
        let current = self
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|p| p.addr);
        match current {
            Some(addr) if public.iter().any(|a| a.ip() == addr) => Ok(addr),
            _ => public.first().map(SocketAddr::ip).ok_or_else(|| {
                SendError::retryable(format!(
                    "the SMTP server `{}` resolves to no address",
                    self.host
                ))
            }),
        }
    }
}

#[async_trait::async_trait]
impl Destination for Smtp {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<SendOk, SendError> {
        if let Some(ssrf) = &self.refused {
            return Err(refused(ssrf.clone()));
        }
        let mail = self.letter.build(msg)?;
        let started = Instant::now();
        let attempt = async {
            let transport = self.transport().await?;
            transport
                .send(mail)
                .await
                .map_err(|e| classify(&describe(&e), &self.server, self.timeout).with_source(e))
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(SendError::retryable(format!(
                "the SMTP server {} did not take the message within {:?}",
                self.server, self.timeout
            ))),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(response) => {
                let code = u16::from(response.code());
                let reply = cut(&response.message().collect::<Vec<_>>().join(" "));
                tracing::debug!(dest_id = %self.id, server = %self.server, code, elapsed_ms, "e-mail sent");
                Ok(SendOk {
                    status_code: Some(code),
                    response_excerpt: (!reply.is_empty()).then_some(reply),
                })
            }
            Err(err) => {
                tracing::debug!(dest_id = %self.id, server = %self.server, code = ?err.status_code,
                    retryable = err.is_retryable(), elapsed_ms, error = %err, "e-mail failed");
                Err(err)
            }
        }
    }
}

/// What went wrong, read from lettre's error.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The server answered a 4xx or 5xx reply.
    Reply { code: u16, text: String },
    /// The TLS handshake (or certificate check) failed.
    Tls(String),
    /// No answer in time.
    Timeout,
    /// The client gave up before talking (STARTTLS not offered, no common AUTH mechanism).
    Client(String),
    /// The connection could not be made or broke.
    Connection(String),
}

fn describe(err: &SmtpError) -> Failure {
    if let Some(code) = err.status() {
        let text = err.source().map(ToString::to_string).unwrap_or_default();
        return Failure::Reply {
            code: u16::from(code),
            text: cut(text.trim()),
        };
    }
    if let Some(tls) = rustls_error(err) {
        return Failure::Tls(tls.to_string());
    }
    if err.is_tls() {
        return Failure::Tls(root_cause(err));
    }
    if err.is_timeout() {
        return Failure::Timeout;
    }
    if err.is_client() {
        return Failure::Client(root_cause(err));
    }
    Failure::Connection(root_cause(err))
}

/// The rustls error somewhere in the chain (tokio-rustls wraps it in an `io::Error`).
fn rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// `text` cut at [`REPLY_LIMIT`] bytes, on a character boundary.
fn cut(text: &str) -> String {
    let mut end = text.len().min(REPLY_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Retryable or final, with a message that names the server and says what to do.
fn classify(failure: &Failure, server: &str, timeout: Duration) -> SendError {
    match failure {
        Failure::Reply { code, text } => {
            let reply = format!("{code} {text}");
            let err = match code {
                400..=499 => SendError::retryable(format!(
                    "the SMTP server {server} answered {reply} (a temporary failure)"
                )),
                535 => SendError::final_error(format!(
                    "the SMTP server {server} refused the credentials (authentication failed: {reply}); check `username` and `password` (Gmail and Microsoft 365 want an app password)"
                )),
                534 | 538 => SendError::final_error(format!(
                    "the SMTP server {server} refused the authentication (authentication failed: {reply}); the account may need an app password or a stronger mechanism"
                )),
                530 => SendError::final_error(format!(
                    "the SMTP server {server} requires authentication or TLS first ({reply}); set `username`/`password`, or use `tls: starttls`"
                )),
                550 | 551 | 553 => SendError::final_error(format!(
                    "the SMTP server {server} refused an address (mailbox unavailable or not allowed): {reply}"
                )),
                552 => SendError::final_error(format!(
                    "the SMTP server {server} refused the message as too large or over quota: {reply}"
                )),
                _ => SendError::final_error(format!(
                    "the SMTP server {server} refused the message: {reply}"
                )),
            };
            err.with_status(*code).with_excerpt(Some(reply))
        }
        Failure::Tls(cause) => SendError::final_error(format!(
            "TLS with the SMTP server {server} failed ({cause}); check `tls` against the port (`tls: tls` is implicit TLS, usually 465; `tls: starttls` upgrades a plain connection, usually 587) and that the server's certificate is valid for its name"
        )),
        Failure::Timeout => SendError::retryable(format!(
            "no answer from the SMTP server {server} within {timeout:?}"
        )),
        Failure::Client(cause) if cause.contains("STARTTLS") => SendError::final_error(format!(
            "the SMTP server {server} does not offer STARTTLS ({cause}); use `tls: tls` if it speaks implicit TLS on this port, or another port"
        )),
        Failure::Client(cause) if cause.contains("authentication mechanism") => {
            SendError::final_error(format!(
                "the SMTP server {server} offers no authentication Estafeta can use (PLAIN or LOGIN): {cause}; some servers offer it only after STARTTLS"
            ))
        }
        Failure::Client(cause) => SendError::final_error(format!(
            "the e-mail cannot be sent to the SMTP server {server}: {cause}"
        )),
        Failure::Connection(cause) => {
            SendError::retryable(format!("cannot talk to the SMTP server {server}: {cause}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "smtp.example.org:587";
    const T: Duration = Duration::from_secs(30);

    fn reply(code: u16, text: &str) -> SendError {
        classify(
            &Failure::Reply {
                code,
                text: text.to_owned(),
            },
            S,
            T,
        )
    }

    #[test]
    fn transient_replies_are_retried_and_permanent_ones_are_final() {
        for code in [421, 450, 451, 452] {
            let e = reply(code, "4.3.0 try again later");
            assert!(e.is_retryable(), "{code}");
            assert_eq!(e.status_code, Some(code));
        }
        for code in [550, 552, 553, 554, 535, 530] {
            assert!(!reply(code, "x").is_retryable(), "{code}");
        }
    }

    #[test]
    fn refused_credentials_and_addresses_say_so() {
        let e = reply(535, "5.7.8 Username and Password not accepted");
        assert!(
            e.message.starts_with(
                "the SMTP server smtp.example.org:587 refused the credentials (authentication failed"
            ),
            "{}",
            e.message
        );
        assert!(e.message.contains("Username and Password not accepted"));
        let e = reply(550, "5.1.1 <gone@example.org>: Recipient address rejected");
        assert!(e.message.contains("refused an address"), "{}", e.message);
        assert!(
            e.message
                .contains("550 5.1.1 <gone@example.org>: Recipient address rejected")
        );
        let e = reply(553, "5.1.3 Mailbox name not allowed");
        assert!(e.message.contains("553 5.1.3 Mailbox name not allowed"));
        assert_eq!(
            e.response_excerpt.as_deref(),
            Some("553 5.1.3 Mailbox name not allowed")
        );
    }

    #[test]
    fn tls_and_client_failures_are_final_and_connections_retried() {
        let e = classify(
            &Failure::Tls("invalid peer certificate: UnknownIssuer".into()),
            S,
            T,
        );
        assert!(!e.is_retryable());
        assert!(
            e.message
                .starts_with("TLS with the SMTP server smtp.example.org:587 failed")
        );
        let e = classify(
            &Failure::Client("STARTTLS is not supported on this server".into()),
            S,
            T,
        );
        assert!(!e.is_retryable());
        assert!(
            e.message.contains("does not offer STARTTLS"),
            "{}",
            e.message
        );
        let e = classify(
            &Failure::Client("No compatible authentication mechanism was found".into()),
            S,
            T,
        );
        assert!(e.message.contains("PLAIN or LOGIN"), "{}", e.message);
        assert!(classify(&Failure::Timeout, S, T).is_retryable());
        let e = classify(
            &Failure::Connection("Connection refused (os error 111)".into()),
            S,
            T,
        );
        assert!(e.is_retryable());
        assert!(e.message.contains("smtp.example.org:587"));
    }

    #[test]
    fn long_replies_are_cut_on_a_character_boundary() {
        let text = "é".repeat(400);
        let c = cut(&text);
        assert!(c.len() <= REPLY_LIMIT);
        assert!(c.chars().all(|ch| ch == 'é'));
    }
}
