//! `FakeSmtp`: a local SMTP server (RFC 5321) on tokio. It greets, answers `EHLO`/`HELO`,
//! authenticates with `AUTH PLAIN` and `AUTH LOGIN` against configured users (535 on bad
//! credentials), takes `MAIL FROM`, `RCPT TO` (scripted refusals per address), `DATA` with
//! dot-unstuffing, `RSET`, `NOOP`, `VRFY` and `QUIT`; answers scripted transient or
//! permanent failures at the end of `DATA`; and records what it accepted, with a parsed
//! view ([`ParsedMail`]).
//!
//! Where it knowingly differs from a real server:
//! - No `STARTTLS`: it is not advertised and answered 454, so clients must use plain SMTP
//!   (which Estafeta allows to a loopback host).
//! - No `PIPELINING`, `CHUNKING` or `DSN`; `SIZE` is advertised and enforced (552).
//! - Addresses are compared case-insensitively as a whole; nothing is delivered anywhere.

mod mime;
mod session;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::local::lock;

pub use mime::ParsedMail;

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), without the angle brackets; empty for `<>`.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub recipients: Vec<String>,
    /// The message as transferred, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
    /// The user that authenticated on the connection, if any.
    pub auth: Option<String>,
    /// The name the client gave in `EHLO`/`HELO`.
    pub helo: String,
}

impl ReceivedMail {
    /// The message parsed into headers and (decoded) bodies.
    #[must_use]
    pub fn parsed(&self) -> ParsedMail {
        ParsedMail::parse(&self.data)
    }
}

/// One authentication attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: String,
    /// The user name given.
    pub username: String,
    /// Whether the credentials were accepted.
    pub ok: bool,
}

#[derive(Debug, Default)]
struct Book {
    messages: Vec<ReceivedMail>,
    /// Messages transferred and then refused by a scripted failure.
    refused: Vec<ReceivedMail>,
    auth_attempts: Vec<AuthAttempt>,
    connections: usize,
    /// Reply codes for the next transactions' end of `DATA`.
    faults: VecDeque<u16>,
    /// Reply codes for `RCPT TO` by lower-cased address.
    refused_recipients: HashMap<String, u16>,
}

#[derive(Debug)]
struct Shared {
    users: Vec<(String, String)>,
    book: Mutex<Book>,
    accepted: watch::Sender<usize>,
}

/// How to start a [`FakeSmtp`].
#[derive(Debug, Clone, Default)]
pub struct SmtpBuilder {
    users: Vec<(String, String)>,
}

impl SmtpBuilder {
    /// Adds a user. With at least one user the server advertises `AUTH PLAIN LOGIN` and
    /// requires authentication before `MAIL FROM` (530 otherwise); without users it offers
    /// no `AUTH` and takes mail from anyone, like an open relay on a trusted network.
    #[must_use]
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(self) -> FakeSmtp {
        let shared = Arc::new(Shared {
            users: self.users,
            book: Mutex::new(Book::default()),
            accepted: watch::Sender::new(0),
        });
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of a bound listener");
        let state = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            // Dropping the set (when the server task is aborted) ends every session.
            let mut sessions = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        lock(&state.book).connections += 1;
                        sessions.spawn(session::session(stream, Arc::clone(&state)));
                    }
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                }
            }
        });
        FakeSmtp {
            addr,
            shared,
            server,
        }
    }
}

/// A local SMTP server on `127.0.0.1:<free port>`. Stops when dropped.
#[derive(Debug)]
pub struct FakeSmtp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeSmtp {
    /// Options: users.
    #[must_use]
    pub fn builder() -> SmtpBuilder {
        SmtpBuilder::default()
    }

    /// A server without authentication.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A server that requires one of these users (name, password).
    pub async fn start_with_users(users: &[(&str, &str)]) -> Self {
        let mut b = Self::builder();
        for (name, password) in users {
            b = b.user(name, password);
        }
        b.start().await
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1`.
    #[must_use]
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The messages accepted so far, in order.
    #[must_use]
    pub fn messages(&self) -> Vec<ReceivedMail> {
        lock(&self.shared.book).messages.clone()
    }

    /// The messages transferred but refused at the end of `DATA` by
    /// [`fail_next`](Self::fail_next), in order: what a retry must repeat.
    #[must_use]
    pub fn refused_messages(&self) -> Vec<ReceivedMail> {
        lock(&self.shared.book).refused.clone()
    }

    /// Every authentication attempt so far, in order (passwords are not kept).
    #[must_use]
    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        lock(&self.shared.book).auth_attempts.clone()
    }

    /// How many connections were accepted so far.
    #[must_use]
    pub fn connections(&self) -> usize {
        lock(&self.shared.book).connections
    }

    /// Waits until at least `n` messages were accepted; false when `timeout` passes first.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> bool {
        crate::local::wait_for_count(&self.shared.accepted, n, timeout).await
    }

    /// The next `n` transactions (after failures queued earlier) are refused with `code` at
    /// the end of `DATA`, the message not kept: 4xx codes are transient (`451` is "try again
    /// later"), 5xx permanent. `421` also closes the connection, as a server shutting down
    /// does.
    ///
    /// # Panics
    /// When `code` is not a 4xx or 5xx reply code.
    pub fn fail_next(&self, n: usize, code: u16) {
        assert!((400..600).contains(&code), "{code} is not a failure code");
        lock(&self.shared.book)
            .faults
            .extend(std::iter::repeat_n(code, n));
    }

    /// From now on `RCPT TO` this address is answered with `code` (e.g. 550 "mailbox
    /// unavailable", 553 "mailbox name not allowed", 450 "mailbox busy").
    ///
    /// # Panics
    /// When `code` is not a 4xx or 5xx reply code.
    pub fn refuse_recipient(&self, address: &str, code: u16) {
        assert!((400..600).contains(&code), "{code} is not a failure code");
        lock(&self.shared.book)
            .refused_recipients
            .insert(address.to_ascii_lowercase(), code);
    }
}
