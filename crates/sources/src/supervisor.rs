//! The loop every pulling source runs under: after a failure it reports the problem on the
//! status board and in the metrics, then tries again — with backoff (1 s doubling to 30 s)
//! for a lost connection, after a minute for a problem a person must fix, or never for one
//! that ended the source for good.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::status::{SourceState, StatusBoard};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const SETUP_RECHECK: Duration = Duration::from_secs(60);
/// A session that ran this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// How a session failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A lost connection, a failed query, the store unavailable: retried with backoff.
    Transient(String),
    /// The set-up needs a person (privileges, settings, a missing table): checked again
    /// every minute, in case it was fixed.
    Setup(String),
    /// The source cannot go on (e.g. its replication slot was dropped to protect the
    /// database); it stops until Estafeta is restarted.
    Fatal(String),
}

/// Runs the retry policy of one source.
pub(crate) struct Supervisor<'a> {
    id: &'a str,
    board: &'a StatusBoard,
    cancel: &'a CancellationToken,
    backoff: Duration,
    started: Instant,
    fatal: bool,
}

impl<'a> Supervisor<'a> {
    pub(crate) fn new(id: &'a str, board: &'a StatusBoard, cancel: &'a CancellationToken) -> Self {
        Self {
            id,
            board,
            cancel,
            backoff: FIRST_BACKOFF,
            started: Instant::now(),
            fatal: false,
        }
    }

    /// Whether to start (another) session.
    pub(crate) fn begin(&mut self) -> bool {
        self.started = Instant::now();
        !self.cancel.is_cancelled()
    }

    /// Reports a failed session and waits before the next one. `false`: stop for good
    /// (cancelled, or a fatal failure).
    pub(crate) async fn failed(&mut self, failure: Failure) -> bool {
        let wait = match failure {
            Failure::Fatal(message) => {
                tracing::error!(source_id = %self.id, error = %message, "source stopped; it needs a restart");
                self.board.update(self.id, |s| {
                    s.state = SourceState::Failed;
                    s.error = Some(message);
                });
                self.fatal = true;
                return false;
            }
            Failure::Setup(message) => {
                tracing::error!(source_id = %self.id, error = %message, "source cannot run; checking again in a minute");
                self.board.update(self.id, |s| {
                    s.state = SourceState::Failed;
                    s.error = Some(message);
                });
                SETUP_RECHECK
            }
            Failure::Transient(message) => {
                if self.started.elapsed() > HEALTHY_RUN {
                    self.backoff = FIRST_BACKOFF;
                }
                let wait = self.backoff;
                tracing::warn!(source_id = %self.id, error = %message, retry_in = ?wait, "source lost its connection; reconnecting");
                ::metrics::counter!(estafeta_core::metric_names::SOURCE_RECONNECTS, "source" => self.id.to_owned()).increment(1);
                self.board.update(self.id, |s| {
                    s.state = SourceState::Reconnecting;
                    s.error = Some(message);
                    s.reconnects += 1;
                });
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }

    /// The source is done (shut down, or finished its work); a fatal failure stays on the
    /// board as `failed`.
    pub(crate) fn stopped(&self) {
        if !self.fatal {
            self.board
                .update(self.id, |s| s.state = SourceState::Stopped);
        }
    }
}

/// Runs `session` again and again under the retry policy of source `id`: until a session
/// ends cleanly (cancelled, or its work done), the source is cancelled, or a failure is fatal.
pub(crate) async fn supervise<F, Fut>(
    id: &str,
    board: &StatusBoard,
    cancel: &CancellationToken,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let mut sup = Supervisor::new(id, board, cancel);
    while sup.begin() {
        match session().await {
            Ok(()) => break,
            Err(failure) => {
                if !sup.failed(failure).await {
                    break;
                }
            }
        }
    }
    sup.stopped();
}

/// An error with its causes, `outer: inner: …` (causes already in the text are skipped), for
/// logs and the status board.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}
