//! The bench's own webhook receiver: a bare hyper HTTP/1.1 server that answers `200` at once
//! and records, per delivered event, its arrival time and the send time the generator put
//! in its data — lock-free, so it costs as little CPU as possible.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::clock::now_ns;

/// Largest body the receiver reads (a destination batch of many events fits).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What the receiver learns from one delivered event: the generator's mark in `data`.
#[derive(Deserialize)]
struct Delivered {
    #[serde(default)]
    data: Option<Mark>,
}

#[derive(Deserialize)]
struct Mark {
    seq: Option<u64>,
    sent_at_ns: Option<u64>,
    /// The look-up's answer, which the enrichment scenario's template puts in the body.
    #[serde(default)]
    hits: Option<u64>,
    /// A captured row (`data.after`) carries the mark in its columns.
    #[serde(default)]
    after: Option<RowMark>,
}

#[derive(Deserialize)]
struct RowMark {
    seq: Option<u64>,
    sent_at_ns: Option<u64>,
}

/// Everything the receiver has counted. One slot per expected event: `0` until it is
/// delivered, then its end-to-end latency in nanoseconds plus one.
#[derive(Debug)]
pub(super) struct Recorder {
    slots: Vec<AtomicU64>,
    requests: AtomicU64,
    unique: AtomicU64,
    duplicates: AtomicU64,
    enriched: AtomicU64,
    unmarked: AtomicU64,
    bad_requests: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

/// A copy of the receiver's counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    /// HTTP requests answered.
    pub(super) requests: u64,
    /// Distinct marked events delivered.
    pub(super) unique: u64,
    /// Marked events delivered again.
    pub(super) duplicates: u64,
    /// Distinct events whose body carried a look-up's answer (`data.hits`).
    pub(super) enriched: u64,
    /// Events without a (known) mark: raw-ceiling traffic or stray requests.
    pub(super) unmarked: u64,
    /// Bodies that were not JSON.
    pub(super) bad_requests: u64,
    /// Clock (see `clock`) of the first and last marked arrival; `None` before any.
    pub(super) first_last_ns: Option<(u64, u64)>,
}

impl Recorder {
    /// A recorder expecting events numbered `0..capacity`.
    pub(super) fn new(capacity: u64) -> Self {
        let n = usize::try_from(capacity).unwrap_or(usize::MAX);
        Self {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            requests: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            enriched: AtomicU64::new(0),
            unmarked: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
        }
    }

    fn record(&self, mark: Option<Mark>, arrived_ns: u64) {
        let enriched = mark.as_ref().is_some_and(|m| m.hits.is_some());
        let (Some(seq), Some(sent)) = mark.map_or((None, None), |m| match m.after {
            Some(row) => (row.seq, row.sent_at_ns),
            None => (m.seq, m.sent_at_ns),
        }) else {
            self.unmarked.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(slot) = usize::try_from(seq).ok().and_then(|i| self.slots.get(i)) else {
            self.unmarked.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let latency = arrived_ns.saturating_sub(sent).saturating_add(1);
        if slot
            .compare_exchange(0, latency, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.unique.fetch_add(1, Ordering::Relaxed);
            if enriched {
                self.enriched.fetch_add(1, Ordering::Relaxed);
            }
            self.first_ns.fetch_min(arrived_ns, Ordering::Relaxed);
            self.last_ns.fetch_max(arrived_ns, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn handle_body(&self, body: &[u8]) {
        let arrived = now_ns();
        let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first == Some(b'[') {
            match serde_json::from_slice::<Vec<Delivered>>(body) {
                Ok(items) => items.into_iter().for_each(|d| self.record(d.data, arrived)),
                Err(_) => {
                    self.bad_requests.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            match serde_json::from_slice::<Delivered>(body) {
                Ok(d) => self.record(d.data, arrived),
                Err(_) => {
                    self.bad_requests.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(super) fn counts(&self) -> Counts {
        let first = self.first_ns.load(Ordering::Relaxed);
        let last = self.last_ns.load(Ordering::Relaxed);
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            unique: self.unique.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            enriched: self.enriched.load(Ordering::Relaxed),
            unmarked: self.unmarked.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            first_last_ns: (first != u64::MAX).then_some((first, last)),
        }
    }

    /// End-to-end latencies (nanoseconds) of the delivered events, in sequence order.
    pub(super) fn latencies_ns(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&v| v != 0)
            .map(|v| v - 1)
    }
}

/// A running receiver; stops accepting when dropped.
#[derive(Debug)]
pub(super) struct Receiver {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts listening on `listen` (e.g. `127.0.0.1:0`), expecting events `0..capacity`.
    pub(super) async fn start(listen: SocketAddr, capacity: u64) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("starting the bench receiver on {listen}"))?;
        let addr = listener
            .local_addr()
            .context("reading the receiver's address")?;
        let recorder = Arc::new(Recorder::new(capacity));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, Arc::clone(&recorder), stop.clone()));
        Ok(Self {
            addr,
            recorder,
            stop,
        })
    }

    /// The URL webhooks should be sent to.
    pub(super) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// What it has counted.
    pub(super) fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, recorder: Arc<Recorder>, stop: CancellationToken) {
    super::http1::serve(
        listener,
        stop,
        || {},
        move |req| {
            let recorder = Arc::clone(&recorder);
            async move { answer(req, &recorder).await }
        },
    )
    .await;
}

async fn answer(req: Request<Incoming>, recorder: &Recorder) -> Response<Body> {
    let status = match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
        Ok(bytes) => {
            recorder.handle_body(&bytes);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    };
    let mut resp = Response::new(Body::from(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_unique_duplicate_and_unmarked_events() {
        let r = Recorder::new(3);
        r.handle_body(br#"{"id":"a","data":{"seq":0,"sent_at_ns":0,"pad":"x"}}"#);
        r.handle_body(br#"[{"data":{"seq":1,"sent_at_ns":0}},{"data":{"seq":0,"sent_at_ns":0}}]"#);
        r.handle_body(br#"{"data":{"pad":"x"}}"#);
        r.handle_body(br#"{"data":{"seq":9,"sent_at_ns":0}}"#);
        r.handle_body(b"not json");
        r.handle_body(br#"{"data":{"seq":2,"sent_at_ns":0,"document":"d-2","hits":3}}"#);
        let c = r.counts();
        assert_eq!((c.requests, c.unique, c.duplicates), (6, 3, 1));
        assert_eq!(c.enriched, 1);
        assert_eq!((c.unmarked, c.bad_requests), (2, 1));
        assert_eq!(r.latencies_ns().count(), 3);
    }
}
