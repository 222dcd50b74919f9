//! The load generator: many concurrent tasks over one pooled reqwest client POSTing
//! CloudEvents (one or a batch per request), as fast as possible or paced to a rate, plus
//! the two ceilings it is compared with (its own, and the receiver's raw ceiling with the
//! webhook destination's client settings).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::clock::now_ns;

const SINGLE_CT: &str = "application/cloudevents+json";
const BATCH_CT: &str = "application/cloudevents-batch+json";
/// Attempts per request before its events count as failed.
const MAX_ATTEMPTS: u32 = 5;

/// Builds the generator's events: a CloudEvent whose `data` is `payload_bytes` of JSON
/// carrying the event's sequence number and send time (and, for the enrichment scenario, a
/// `document` to look up).
#[derive(Debug, Clone)]
pub(super) struct Payload {
    /// Makes event ids unique per run, so a reused server never sees duplicates.
    tag: String,
    payload_bytes: usize,
    documents: Documents,
}

/// Which `document` each event's `data` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Documents {
    /// No `document` field.
    None,
    /// `d-<seq>`: every event its own.
    Unique,
    /// `d-<seq mod n>`: `n` documents, repeated in turn.
    Cycle(u64),
}

impl Payload {
    pub(super) fn new(tag: String, payload_bytes: usize) -> Self {
        Self {
            tag,
            payload_bytes,
            documents: Documents::None,
        }
    }

    /// The same events, each naming a document.
    pub(super) fn with_documents(mut self, documents: Documents) -> Self {
        self.documents = documents;
        self
    }

    fn push_event(&self, out: &mut String, seq: u64, sent_ns: u64) {
        let document = match self.documents {
            Documents::None => String::new(),
            Documents::Unique => format!("\"document\":\"d-{seq}\","),
            Documents::Cycle(n) => format!("\"document\":\"d-{}\",", seq % n.max(1)),
        };
        let head = format!("{{\"seq\":{seq},\"sent_at_ns\":{sent_ns},{document}\"pad\":\"");
        let pad = self.payload_bytes.saturating_sub(head.len() + 2);
        let _ = write!(
            out,
            "{{\"specversion\":\"1.0\",\"id\":\"{}-{seq}\",\"source\":\"estafeta-bench\",\
             \"type\":\"bench.event\",\"datacontenttype\":\"application/json\",\"data\":{head}",
            self.tag
        );
        out.extend(std::iter::repeat_n('x', pad));
        out.push_str("\"}}");
    }

    /// The body and content type of one ingest request for events `first..first + count`.
    pub(super) fn request(&self, first: u64, count: u64, sent_ns: u64) -> (Bytes, &'static str) {
        let mut out = String::with_capacity(
            usize::try_from(count).unwrap_or(1) * (self.payload_bytes + 160) + 2,
        );
        if count == 1 {
            self.push_event(&mut out, first, sent_ns);
            return (Bytes::from(out), SINGLE_CT);
        }
        out.push('[');
        for seq in first..first + count {
            if seq > first {
                out.push(',');
            }
            self.push_event(&mut out, seq, sent_ns);
        }
        out.push(']');
        (Bytes::from(out), BATCH_CT)
    }

    /// A body shaped like one delivered webhook (a structured CloudEvent with a
    /// `payload_bytes` data object, but no mark), for the raw ceiling.
    pub(super) fn delivery_like(&self) -> Bytes {
        let pad = self.payload_bytes.saturating_sub(10);
        Bytes::from(format!(
            "{{\"specversion\":\"1.0\",\"id\":\"evt_01JBENCHBENCHBENCHBENCHBENC\",\
             \"source\":\"estafeta-bench\",\"type\":\"bench.event\",\
             \"time\":\"2026-01-01T00:00:00.000000Z\",\"datacontenttype\":\"application/json\",\
             \"data\":{{\"pad\":\"{}\"}}}}",
            "x".repeat(pad)
        ))
    }
}

/// A pooled client for the generator: `connections` keep-alive connections, no proxy,
/// `TCP_NODELAY`.
pub(super) fn generator_client(connections: usize) -> anyhow::Result<reqwest::Client> {
    estafeta_destinations::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections.max(1))
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the generator's HTTP client")
}

/// A client built like a webhook destination's (see `estafeta-destinations`'
/// `HttpClients`): same user agent, no redirects, no proxy, pool sized to the concurrency,
/// `TCP_NODELAY`.
pub(super) fn destination_like_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    estafeta_destinations::install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(estafeta_destinations::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(concurrency.max(1))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .context("building the raw-ceiling HTTP client")
}

/// What to send, where, and how fast.
#[derive(Debug, Clone)]
pub(super) struct LoadPlan {
    pub(super) url: reqwest::Url,
    pub(super) token: Option<String>,
    /// Events to send; `u64::MAX` with a deadline measures a ceiling.
    pub(super) events: u64,
    pub(super) batch: u64,
    pub(super) connections: usize,
    /// Events per second; `0` = as fast as possible.
    pub(super) rate: f64,
    pub(super) payload: Payload,
    /// Nothing is sent after this long.
    pub(super) max_duration: Duration,
}

/// Live counters, read by the progress bar.
#[derive(Debug, Default)]
pub(super) struct LoadCounters {
    /// Events answered with 2xx.
    pub(super) accepted: AtomicU64,
    /// Events given up on after `MAX_ATTEMPTS` or a final error.
    pub(super) failed: AtomicU64,
    /// Events the server reported as already stored.
    pub(super) duplicates: AtomicU64,
    /// Requests sent again after a retryable answer.
    pub(super) retries: AtomicU64,
    /// Clock reading of the last 2xx.
    pub(super) last_ok_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl LoadCounters {
    fn note_error(&self, message: String) {
        let mut slot = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(message);
    }

    /// The first error seen, if any.
    pub(super) fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The result of one generator run.
#[derive(Debug)]
pub(super) struct LoadOutcome {
    /// Clock reading when the first request was started.
    pub(super) start_ns: u64,
    /// Clock reading when the last task finished.
    pub(super) end_ns: u64,
    /// Request latency (start → 2xx answer) in microseconds.
    pub(super) request_us: Histogram<u64>,
    /// Whether `max_duration` cut the run short.
    pub(super) cut_short: bool,
}

/// Runs the plan; `counters` is updated live.
pub(super) async fn generate(
    client: reqwest::Client,
    plan: LoadPlan,
    counters: Arc<LoadCounters>,
) -> anyhow::Result<LoadOutcome> {
    let plan = Arc::new(plan);
    let auth = plan
        .token
        .as_ref()
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
        .transpose()
        .context("the token is not a valid header value")?;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let start_ns = now_ns();
    let deadline = start + plan.max_duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.connections.max(1) {
        let worker = Worker {
            client: client.clone(),
            plan: Arc::clone(&plan),
            auth: auth.clone(),
            next: Arc::clone(&next),
            counters: Arc::clone(&counters),
            start,
            deadline,
        };
        tasks.spawn(worker.run(new_histogram()?));
    }
    let mut request_us = new_histogram()?;
    let mut cut_short = false;
    while let Some(joined) = tasks.join_next().await {
        let report = joined.context("a generator task failed")?;
        request_us
            .add(&report.request_us)
            .context("merging latency histograms")?;
        cut_short |= report.cut_short;
    }
    Ok(LoadOutcome {
        start_ns,
        end_ns: now_ns(),
        request_us,
        cut_short,
    })
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating a latency histogram")
}

struct Worker {
    client: reqwest::Client,
    plan: Arc<LoadPlan>,
    auth: Option<HeaderValue>,
    next: Arc<AtomicU64>,
    counters: Arc<LoadCounters>,
    start: Instant,
    deadline: Instant,
}

struct WorkerReport {
    request_us: Histogram<u64>,
    cut_short: bool,
}

#[derive(Deserialize)]
struct AcceptedBody {
    #[serde(default)]
    duplicates: u64,
}

enum Sent {
    Ok { duplicates: u64 },
    Retry(String),
    Final(String),
}

impl Worker {
    async fn run(self, request_us: Histogram<u64>) -> WorkerReport {
        let plan = Arc::clone(&self.plan);
        let mut report = WorkerReport {
            request_us,
            cut_short: false,
        };
        let batch = plan.batch.max(1);
        loop {
            let first = self
                .next
                .fetch_add(1, Ordering::Relaxed)
                .saturating_mul(batch);
            if first >= plan.events {
                break;
            }
            let count = batch.min(plan.events - first);
            if plan.rate > 0.0 {
                // Open-loop schedule: event `first` is due at start + first / rate.
                #[allow(clippy::cast_precision_loss)]
                let due = self.start + Duration::from_secs_f64(first as f64 / plan.rate);
                if due >= self.deadline {
                    report.cut_short = true;
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
            }
            if Instant::now() >= self.deadline {
                report.cut_short = true;
                break;
            }
            self.send(first, count, &mut report).await;
        }
        report
    }

    async fn send(&self, first: u64, count: u64, report: &mut WorkerReport) {
        let c = &*self.counters;
        for attempt in 1..=MAX_ATTEMPTS {
            let sent_ns = now_ns();
            let started = Instant::now();
            match self.post(first, count, sent_ns).await {
                Sent::Ok { duplicates } => {
                    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    report.request_us.saturating_record(us.max(1));
                    c.accepted.fetch_add(count, Ordering::Relaxed);
                    c.duplicates.fetch_add(duplicates, Ordering::Relaxed);
                    c.last_ok_ns.fetch_max(now_ns(), Ordering::Relaxed);
                    return;
                }
                Sent::Retry(msg) if attempt < MAX_ATTEMPTS && Instant::now() < self.deadline => {
                    c.note_error(msg);
                    c.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
                Sent::Retry(msg) | Sent::Final(msg) => {
                    c.note_error(msg);
                    c.failed.fetch_add(count, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    async fn post(&self, first: u64, count: u64, sent_ns: u64) -> Sent {
        let (body, content_type) = self.plan.payload.request(first, count, sent_ns);
        let mut req = self
            .client
            .post(self.plan.url.clone())
            .header(CONTENT_TYPE, content_type)
            .body(body);
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Sent::Retry(format!("request failed: {e}")),
        };
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        if status.is_success() {
            let duplicates =
                serde_json::from_slice::<AcceptedBody>(&body).map_or(0, |b| b.duplicates);
            return Sent::Ok { duplicates };
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let msg = format!("HTTP {status}: {text}");
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Sent::Retry(msg)
        } else {
            Sent::Final(msg)
        }
    }
}

/// One ceiling measurement.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ceiling {
    /// Requests answered with 2xx.
    pub(super) requests: u64,
    /// Failed requests.
    pub(super) errors: u64,
    /// Measured span.
    pub(super) elapsed: Duration,
}

impl Ceiling {
    /// Successful requests per second.
    pub(super) fn per_sec(&self) -> f64 {
        per_sec(self.requests, self.elapsed)
    }
}

/// `n` per second over `d` (0 for an empty span).
#[allow(clippy::cast_precision_loss)]
pub(super) fn per_sec(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// POSTs `body` to `url` from `concurrency` tasks for `duration`, with webhook-like headers.
pub(super) async fn raw_ceiling(
    client: reqwest::Client,
    url: &str,
    body: Bytes,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Ceiling> {
    let url = reqwest::Url::parse(url).context("the receiver URL")?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "webhook-id",
        HeaderValue::from_static("dlv_01JBENCHBENCHBENCHBENCHBENC"),
    );
    headers.insert("webhook-timestamp", HeaderValue::from_static("1767225600"));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_static("v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="),
    );
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, headers, body) =
            (client.clone(), url.clone(), headers.clone(), body.clone());
        let (ok, errors) = (Arc::clone(&ok), Arc::clone(&errors));
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let sent = client
                    .post(url.clone())
                    .headers(headers.clone())
                    .body(body.clone())
                    .send();
                match sent.await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a ceiling task failed")?;
    }
    Ok(Ceiling {
        requests: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_exactly_the_payload_size_and_events_parse() {
        let p = Payload::new("t".into(), 300);
        let (body, ct) = p.request(7, 1, 123_456_789);
        assert_eq!(ct, SINGLE_CT);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(serde_json::to_string(&v["data"]).expect("data").len(), 300);
        assert_eq!(v["data"]["seq"], 7);
        let (body, ct) = p.request(10, 3, 1);
        assert_eq!(ct, BATCH_CT);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(3));
        assert_eq!(v[2]["id"], "t-12");
        let v: serde_json::Value = serde_json::from_slice(&p.delivery_like()).expect("json");
        assert_eq!(serde_json::to_string(&v["data"]).expect("data").len(), 300);
    }

    #[test]
    fn documents_are_unique_or_cycle() {
        let p = Payload::new("t".into(), 300).with_documents(Documents::Cycle(5));
        let (body, _) = p.request(12, 1, 1);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["data"]["document"], "d-2");
        assert_eq!(serde_json::to_string(&v["data"]).expect("data").len(), 300);
        let p = p.with_documents(Documents::Unique);
        let (body, _) = p.request(12, 1, 1);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["data"]["document"], "d-12");
    }
}
