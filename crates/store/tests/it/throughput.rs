//! A throughput check run by hand, not a timed test:
//!
//! ```text
//! cargo test -p estafeta-store --release --test it -- --ignored --nocapture throughput
//! ```
//!
//! 64 concurrent tasks append 200,000 events (~300 bytes of data, one delivery each), first
//! one event per call, then 100 events per call, and print events per second; after the
//! one-per-call run they record one attempt per delivery, one per call, and print attempts
//! per second. Each line also shows the bytes the process wrote to storage per item.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::Utc;
use estafeta_core::metric_names::{STORE_BATCH_SIZE, STORE_COMMIT_DURATION};
use estafeta_core::{Attempt, AttemptId, AttemptOutcome, DeliveryId, DeliveryStatus};
use estafeta_store::{AttemptRecord, NewEvent, SqliteOptions, SqliteStore, Store};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use serde_json::json;

use crate::suite::{delivery, event, new_event};

const TOTAL: usize = 200_000;
const TASKS: usize = 64;

fn sample(i: usize) -> NewEvent {
    let mut e = event("acme", "order.created");
    e.data = Some(json!({
        "order_id": format!("ord-{i:010}"),
        "customer": {"id": "cus-0042", "email": "someone@example.com", "tier": "gold"},
        "items": [{"sku": "SKU-1234", "qty": 2, "price": 19.99}, {"sku": "SKU-5678", "qty": 1, "price": 5.5}],
        "total": 45.48, "currency": "EUR", "note": "leave at the door, ring twice please",
        "created_at": "2026-01-01T12:00:00Z"
    }));
    let d = delivery(&e, "orders", "webhook", DeliveryStatus::Pending);
    let key = format!("tp-{}", e.id);
    new_event(e, &key, vec![d])
}

/// Sums of the store's two histograms, to print the mean batch size and commit time.
#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    commands: AtomicU64,
    commit_us: AtomicU64,
    max_commit_us: AtomicU64,
}

static STATS: Stats = Stats {
    batches: AtomicU64::new(0),
    commands: AtomicU64::new(0),
    commit_us: AtomicU64::new(0),
    max_commit_us: AtomicU64::new(0),
};

struct BatchSize;
struct CommitTime;

impl metrics::HistogramFn for BatchSize {
    fn record(&self, value: f64) {
        STATS.batches.fetch_add(1, Ordering::Relaxed);
        STATS.commands.fetch_add(value as u64, Ordering::Relaxed);
    }
}

impl metrics::HistogramFn for CommitTime {
    fn record(&self, value: f64) {
        let us = (value * 1e6) as u64;
        STATS.commit_us.fetch_add(us, Ordering::Relaxed);
        STATS.max_commit_us.fetch_max(us, Ordering::Relaxed);
    }
}

struct StatsRecorder;

impl Recorder for StatsRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match key.name() {
            STORE_BATCH_SIZE => Histogram::from_arc(Arc::new(BatchSize)),
            STORE_COMMIT_DURATION => Histogram::from_arc(Arc::new(CommitTime)),
            _ => Histogram::noop(),
        }
    }
}

fn take_stats() -> String {
    let batches = STATS.batches.swap(0, Ordering::Relaxed).max(1);
    let commands = STATS.commands.swap(0, Ordering::Relaxed);
    let commit_us = STATS.commit_us.swap(0, Ordering::Relaxed);
    let max = STATS.max_commit_us.swap(0, Ordering::Relaxed);
    format!(
        "{batches} commits, {:.1} commands/commit, {:.2} ms/commit (max {:.1} ms)",
        commands as f64 / batches as f64,
        commit_us as f64 / batches as f64 / 1000.0,
        max as f64 / 1000.0
    )
}

/// CPU seconds used so far by the store's writer thread, its checkpoint thread and the
/// whole process (Linux only; zero elsewhere). Assumes 100 clock ticks per second.
fn cpu_seconds() -> [f64; 3] {
    let ticks = |stat: &str| -> f64 {
        // Fields after the command name: state is field 3; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (n(14) + n(15)) / 100.0
    };
    let process = std::fs::read_to_string("/proc/self/stat").map_or(0.0, |s| ticks(&s));
    let (mut writer, mut checkpoint) = (0.0, 0.0);
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let cpu =
                || std::fs::read_to_string(task.path().join("stat")).map_or(0.0, |s| ticks(&s));
            match comm.trim() {
                "estafeta-writer" => writer += cpu(),
                "estafeta-ckpt" => checkpoint += cpu(),
                _ => {}
            }
        }
    }
    [writer, checkpoint, process]
}

/// Bytes this process has made the kernel write to storage so far (Linux only).
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A successful attempt of `delivery`.
fn attempt(delivery: DeliveryId) -> AttemptRecord {
    AttemptRecord {
        attempt: Attempt {
            id: AttemptId::new(),
            delivery_id: delivery,
            started_at: Utc::now(),
            duration_ms: 3,
            outcome: AttemptOutcome::Delivered,
            status_code: Some(200),
            error: None,
            response_excerpt: Some("ok".to_owned()),
            steps: Vec::new(),
        },
        status: DeliveryStatus::Delivered,
        attempts: 1,
        next_at: None,
        last_error: None,
    }
}

/// Records one attempt per delivery, one per call, from `TASKS` tasks.
async fn record(store: &Arc<dyn Store>, deliveries: Vec<DeliveryId>) {
    take_stats();
    let [writer_before, _, process_before] = cpu_seconds();
    let written_before = written_bytes();
    let started = Instant::now();
    let deliveries = Arc::new(deliveries);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(store);
        let deliveries = Arc::clone(&deliveries);
        tasks.spawn(async move {
            for i in (t..deliveries.len()).step_by(TASKS) {
                store
                    .record_attempts(vec![attempt(deliveries[i])])
                    .await
                    .expect("record");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = deliveries.len() as f64;
    let [writer_cpu, _, process_after] = cpu_seconds();
    println!(
        "  1 attempt per call:  {n} attempts in {elapsed:.2} s = {:.0} attempts/s \
         ({}; written {:.0} B/attempt; CPU per attempt: writer {:.1} µs, process {:.1} µs)",
        n / elapsed,
        take_stats(),
        (written_bytes() - written_before) as f64 / n,
        (writer_cpu - writer_before) / n * 1e6,
        (process_after - process_before) / n * 1e6,
    );
}

async fn run(per_call: usize, attempts: bool) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::new(dir.path().join("tp.db")))
            .await
            .expect("open"),
    );
    let calls = TOTAL / per_call;
    take_stats();
    let [_, _, process_before] = cpu_seconds();
    let written_before = written_bytes();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut deliveries = Vec::new();
            // Task t makes calls t, t + TASKS, t + 2 * TASKS, …: `calls` in all.
            for call in (t..calls).step_by(TASKS) {
                let batch: Vec<NewEvent> =
                    (0..per_call).map(|i| sample(call * per_call + i)).collect();
                deliveries.extend(batch.iter().flat_map(|e| e.deliveries.iter().map(|d| d.id)));
                store.append(batch).await.expect("append");
            }
            deliveries
        });
    }
    let mut deliveries = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        deliveries.extend(joined.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = (calls * per_call) as f64;
    let [writer_cpu, checkpoint_cpu, process_after] = cpu_seconds();
    let mib = |name: &str| {
        std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len()) / (1024 * 1024)
    };
    let wal = mib("tp.db-wal");
    let written = written_bytes() - written_before;
    println!(
        "{per_call:>3} event(s) per call: {events} events in {elapsed:.2} s = {:.0} events/s \
         (db {} MiB, WAL {wal} MiB; {}; written {:.0} B/event; CPU per event: writer {:.1} µs, \
         checkpoints {:.1} µs, process {:.1} µs)",
        events / elapsed,
        mib("tp.db"),
        take_stats(),
        written as f64 / events,
        writer_cpu / events * 1e6,
        checkpoint_cpu / events * 1e6,
        (process_after - process_before) / events * 1e6,
    );
    if attempts {
        deliveries.sort_unstable();
        record(&store, deliveries).await;
    }
    store.close().await;
    events / elapsed
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "throughput check, run by hand in release mode"]
async fn throughput() {
    // Fails only if another test installed a recorder first; the numbers are then zero.
    let _ = metrics::set_global_recorder(StatsRecorder);
    run(1, true).await;
    run(100, false).await;
}
