//! The enrichment scenario's look-up API: a bare hyper HTTP/1.1 server inside the bench
//! process that answers `GET /records/{document}` after a fixed delay (a tokio sleep, so a
//! waiting request holds no thread) with `{"document": …, "hits": n}`, and counts the
//! requests, the connections and the most requests it held at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The path prefix of the one resource.
const RECORDS: &str = "/records/";

/// What the look-up API has counted.
#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    connections: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    not_found: AtomicU64,
}

/// A copy of the look-up API's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct LookupCounts {
    /// `GET /records/…` requests answered (or cut off by a closed connection).
    pub(super) requests: u64,
    /// TCP connections accepted: far fewer than requests when the client reuses them.
    pub(super) connections: u64,
    /// The most requests waiting at once.
    pub(super) max_in_flight: u64,
    /// Requests for anything else (answered 404).
    pub(super) not_found: u64,
}

/// Counts a request as in flight until dropped (also when the connection closes mid-wait).
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a Stats) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running look-up API; stops accepting when dropped.
#[derive(Debug)]
pub(super) struct LookupServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

impl LookupServer {
    /// Starts on a free loopback port; every answer waits `delay` first.
    pub(super) async fn start(delay: Duration) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("starting the bench's look-up API on 127.0.0.1")?;
        let addr = listener
            .local_addr()
            .context("reading the look-up API's address")?;
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            Arc::clone(&stats),
            delay,
            stop.clone(),
        ));
        Ok(Self { addr, stats, stop })
    }

    /// The enrich step's URL template: the document each event's `data` names.
    pub(super) fn url_template(&self) -> String {
        format!("http://{}{RECORDS}{{{{ data.document }}}}", self.addr)
    }

    /// The counters now.
    pub(super) fn counts(&self) -> LookupCounts {
        let s = &self.stats;
        LookupCounts {
            requests: s.requests.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
            max_in_flight: s.max_in_flight.load(Ordering::Relaxed),
            not_found: s.not_found.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LookupServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    stats: Arc<Stats>,
    delay: Duration,
    stop: CancellationToken,
) {
    let counted = Arc::clone(&stats);
    super::http1::serve(
        listener,
        stop,
        move || {
            counted.connections.fetch_add(1, Ordering::Relaxed);
        },
        move |req| {
            let stats = Arc::clone(&stats);
            async move { answer(&req, &stats, delay).await }
        },
    )
    .await;
}

async fn answer(req: &Request<Incoming>, stats: &Stats, delay: Duration) -> Response<Body> {
    let document = req
        .uri()
        .path()
        .strip_prefix(RECORDS)
        .filter(|d| !d.is_empty() && !d.contains('/'));
    let (Some(document), &Method::GET) = (document, req.method()) else {
        stats.not_found.fetch_add(1, Ordering::Relaxed);
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight::enter(stats);
    tokio::time::sleep(delay).await;
    let mut resp = Response::new(Body::from(record_json(document)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The answer for one document: the document and a small number derived from it.
fn record_json(document: &str) -> String {
    let hits = document
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % 4;
    let quoted = serde_json::Value::from(document).to_string();
    format!("{{\"document\":{quoted},\"hits\":{hits}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_records_after_the_delay_and_counts() {
        let server = LookupServer::start(Duration::from_millis(20))
            .await
            .expect("start");
        let base = format!("http://{}", server.addr);
        let client = super::super::load::generator_client(1).expect("client");
        let started = std::time::Instant::now();
        let resp = client
            .get(format!("{base}/records/d-7"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(v["document"], "d-7");
        assert!(v["hits"].as_u64().is_some_and(|h| h < 4));
        let resp = client
            .get(format!("{base}/other"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404);
        let c = server.counts();
        assert_eq!((c.requests, c.not_found, c.max_in_flight), (1, 1, 1));
        assert_eq!(c.connections, 1, "the client reuses its connection");
        assert!(
            server
                .url_template()
                .ends_with("/records/{{ data.document }}")
        );
    }
}
