//! What the broker scenarios (`nats`, `kafka`) share: the report — the broker's own
//! producer and consumer rates measured in the same run as the baseline, then Estafeta
//! reading the input with its source, storing every message durably in its log and
//! publishing it to an output the broker acknowledges — and its rendering.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::BenchArgs;
use super::cdc::rate;
use super::server::{ServerProcess, ServerSpec};

/// One broker scenario's figures.
#[derive(Debug, Serialize)]
pub(super) struct BrokerReport {
    pub(super) broker: &'static str,
    pub(super) messages: u64,
    pub(super) payload_bytes: usize,
    /// The broker's own client publishing the input, acknowledged (messages/s).
    pub(super) producer_per_sec: f64,
    /// The broker's own client reading the input back and acknowledging (messages/s).
    pub(super) consumer_per_sec: f64,
    /// Estafeta: source → durable log → destination, until the output holds every
    /// message (messages/s, from the server's start).
    pub(super) estafeta_per_sec: f64,
    /// Messages found in the output (duplicates included).
    pub(super) output_messages: u64,
    pub(super) server_cpu_seconds: Option<f64>,
    pub(super) server_peak_rss_bytes: Option<u64>,
    pub(super) goal_per_sec: f64,
    pub(super) target_met: bool,
}

pub(super) fn render(r: &BrokerReport, markdown: bool) -> String {
    let mut t = comfy_table::Table::new();
    if markdown {
        t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    }
    t.set_header([
        format!("{}: {} messages", r.broker, r.messages),
        "messages/s".to_owned(),
        "vs consumer".to_owned(),
        "target".to_owned(),
    ]);
    let ratio = |v: f64| {
        if r.consumer_per_sec > 0.0 {
            format!("{:.2}×", v / r.consumer_per_sec)
        } else {
            String::new()
        }
    };
    t.add_row([
        format!("{} producer, acknowledged", r.broker),
        format!("{:.0}", r.producer_per_sec),
        ratio(r.producer_per_sec),
        String::new(),
    ]);
    t.add_row([
        format!("{} consumer, acknowledging", r.broker),
        format!("{:.0}", r.consumer_per_sec),
        "1.00×".to_owned(),
        String::new(),
    ]);
    t.add_row([
        format!("Estafeta: {0} → log (fsync) → {0}", r.broker),
        format!("{:.0}", r.estafeta_per_sec),
        ratio(r.estafeta_per_sec),
        format!(
            "≥ {:.0}/s ({})",
            r.goal_per_sec,
            if r.target_met { "met" } else { "missed" }
        ),
    ]);
    #[allow(clippy::cast_precision_loss)]
    let rss = r
        .server_peak_rss_bytes
        .map_or("n/a".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6));
    format!(
        "Scenario `{}`: {} messages × {} B; {} in the output; server peak RSS {rss}, CPU {}\n{t}\n",
        r.broker,
        r.messages,
        r.payload_bytes,
        r.output_messages,
        r.server_cpu_seconds
            .map_or("n/a".to_owned(), |s| format!("{s:.1} s")),
    )
}

/// A JSON message of about `pad` bytes carrying its sequence number.
pub(super) fn payload(seq: u64, pad: &str) -> Vec<u8> {
    format!("{{\"seq\":{seq},\"pad\":\"{pad}\"}}").into_bytes()
}

/// How long the output may stay the same before the run is given up.
const STALL: Duration = Duration::from_secs(60);

/// The baseline rates measured with the broker's own clients.
pub(super) struct Baseline {
    pub(super) broker: &'static str,
    pub(super) messages: u64,
    pub(super) producer_per_sec: f64,
    pub(super) consumer_per_sec: f64,
    pub(super) goal_per_sec: f64,
    /// Measure from the first message in the output, not from the server's start (Kafka
    /// brokers that make a new consumer group wait before the first fetch).
    pub(super) from_first_output: bool,
}

/// Starts Estafeta with `source_yaml` (id `pg`) routed to `destination_yaml` (id
/// `bench-receiver`), waits until `output()` counts every message (10 minutes at most), and
/// reports against `base`.
pub(super) async fn run_estafeta<F, Fut>(
    args: &BenchArgs,
    binary: PathBuf,
    source_yaml: String,
    destination_yaml: String,
    base: Baseline,
    mut output: F,
) -> anyhow::Result<BrokerReport>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let mut spec = ServerSpec::with_source(
        args,
        binary,
        format!("bench-{}", rand::random::<u64>()),
        String::new(),
        source_yaml,
        true,
    );
    spec.destination_yaml = Some(destination_yaml);
    let server = ServerProcess::spawn(&spec).await?;
    let start = Instant::now();
    let cpu_before = server.cpu_time();
    let deadline = start + Duration::from_secs(600);
    let mut done = None;
    let mut seen = 0;
    let mut progress = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    // Ends early when the output stops growing for a minute (something is stuck).
    while Instant::now() < deadline && progress.elapsed() < STALL {
        let now = output().await?;
        if now > seen {
            progress = Instant::now();
        }
        seen = now;
        if first.is_none() && seen > 0 && base.from_first_output {
            first = Some((Instant::now(), seen));
        }
        if seen >= base.messages {
            done = Some(first.map_or(start, |(at, _)| at).elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu_before.and_then(|b| server.cpu_time().map(|a| a.saturating_sub(b)));
    let peak = server.peak_rss();
    server.stop().await?;
    let Some(elapsed) = done else {
        bail!(
            "the output held {seen} of {} messages after {:.0} s (it stopped growing, or 10 minutes passed)",
            base.messages,
            start.elapsed().as_secs_f64()
        );
    };
    let counted = base.messages - first.map_or(0, |(_, already)| already);
    let estafeta = rate(counted, elapsed.as_secs_f64());
    Ok(BrokerReport {
        broker: base.broker,
        messages: base.messages,
        payload_bytes: args.payload_bytes,
        producer_per_sec: base.producer_per_sec,
        consumer_per_sec: base.consumer_per_sec,
        estafeta_per_sec: estafeta,
        output_messages: seen,
        server_cpu_seconds: cpu.map(|d| d.as_secs_f64()),
        server_peak_rss_bytes: peak,
        goal_per_sec: base.goal_per_sec,
        target_met: estafeta >= base.goal_per_sec,
    })
}
