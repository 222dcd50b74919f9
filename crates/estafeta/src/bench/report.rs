//! What a bench run found, and how it is shown: one table per scenario (metric, value,
//! ratio to the receiver's raw ceiling), a summary against the targets, or JSON.

use comfy_table::{Table, presets};
use serde::Serialize;

use super::enrich::{self, EnrichmentReport};
use super::probe::Usage;
use super::store_stats::StoreActivity;

/// The whole run.
#[derive(Debug, Serialize)]
pub(super) struct BenchReport {
    /// Estafeta version of the bench binary.
    pub(super) version: &'static str,
    /// Logical CPUs of the machine.
    pub(super) cpus: usize,
    /// Successful webhook-like POSTs per second to the bench receiver, with the webhook
    /// destination's client settings and concurrency; `None` when not measured.
    pub(super) raw_ceiling_req_per_sec: Option<f64>,
    /// Resident memory of an idle server (the `idle` scenario).
    pub(super) idle: Option<IdleReport>,
    /// The load scenarios, in run order.
    pub(super) scenarios: Vec<ScenarioReport>,
}

/// Memory of a freshly started server with nothing to do.
#[derive(Debug, Serialize)]
pub(super) struct IdleReport {
    /// Seconds waited after the "listening" line.
    pub(super) settle_secs: u64,
    /// VmRSS then.
    pub(super) rss_bytes: Option<u64>,
    /// Whether it is within the target.
    pub(super) target: Option<Target>,
}

/// One load scenario's settings and results.
#[derive(Debug, Serialize)]
pub(super) struct ScenarioReport {
    pub(super) name: String,
    pub(super) events: u64,
    pub(super) batch: u64,
    pub(super) connections: usize,
    /// Events per second asked for; 0 = as fast as possible.
    pub(super) rate: f64,
    pub(super) payload_bytes: usize,
    pub(super) dest_concurrency: usize,
    pub(super) dest_batch: Option<usize>,
    /// Events per second the generator posts to the bench receiver (same batch size and
    /// connections): its own ceiling.
    pub(super) generator_ceiling_events_per_sec: f64,
    pub(super) accepted: u64,
    pub(super) failed: u64,
    pub(super) ingest_duplicates: u64,
    pub(super) ingest_retries: u64,
    pub(super) accepted_per_sec: f64,
    /// Distinct events the receiver got.
    pub(super) delivered: u64,
    pub(super) duplicate_deliveries: u64,
    pub(super) webhook_requests: u64,
    /// Delivered events per second, from the first ingest request to the last delivery.
    pub(super) delivered_per_sec: f64,
    /// Send (generator) → arrival (receiver), milliseconds.
    pub(super) e2e_ms: Percentiles,
    /// Ingest request → 202 answer, milliseconds.
    pub(super) ingest_ms: Percentiles,
    pub(super) idle_rss_bytes: Option<u64>,
    /// VmHWM of the server at the end.
    pub(super) peak_rss_bytes: Option<u64>,
    /// CPU, disk and store use while the scenario ran.
    pub(super) usage: Usage,
    pub(super) wall_secs: f64,
    /// Every accepted event was delivered in time.
    pub(super) complete: bool,
    pub(super) targets: Vec<Target>,
    pub(super) notes: Vec<String>,
    /// The look-up side of an enrichment phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) enrichment: Option<EnrichmentReport>,
}

/// p50 / p95 / p99 / max in milliseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(super) struct Percentiles {
    pub(super) p50: f64,
    pub(super) p95: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
}

/// One target from the issue and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Target {
    pub(super) what: String,
    pub(super) goal: String,
    pub(super) measured: String,
    pub(super) met: bool,
}

/// `1234567` → `1,234,567`.
pub(super) fn thousands(n: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let digits = (n.max(0.0).round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MB (10^6 bytes) with one decimal.
#[allow(clippy::cast_precision_loss)]
pub(super) fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub(super) fn opt_mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".to_owned(), mb)
}

fn ratio(value: f64, ceiling: Option<f64>) -> String {
    match ceiling {
        Some(c) if c > 0.0 => format!("{:.2}×", value / c),
        _ => String::new(),
    }
}

pub(super) fn new_table(markdown: bool) -> Table {
    let mut t = Table::new();
    if markdown {
        t.load_preset(presets::ASCII_MARKDOWN);
    }
    t
}

impl BenchReport {
    /// Human-readable tables (markdown when asked).
    pub(super) fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        for s in &self.scenarios {
            out.push_str(&s.render(self.raw_ceiling_req_per_sec, markdown));
            out.push('\n');
        }
        out.push_str(&enrich::summary(&self.scenarios, markdown));
        let summary = self.summary(markdown);
        if !summary.is_empty() {
            out.push_str(&summary);
        }
        out
    }

    fn summary(&self, markdown: bool) -> String {
        let mut t = new_table(markdown);
        t.set_header(["target", "goal", "measured", "met"]);
        let mut any = false;
        let idle = self.idle.iter().filter_map(|i| i.target.as_ref());
        for target in idle.chain(self.scenarios.iter().flat_map(|s| &s.targets)) {
            any = true;
            let met = if target.met { "yes" } else { "NO" };
            t.add_row([target.what.as_str(), &target.goal, &target.measured, met]);
        }
        if !any {
            if let Some(i) = &self.idle {
                return format!(
                    "Idle RSS after {} s: {}\n",
                    i.settle_secs,
                    opt_mb(i.rss_bytes)
                );
            }
            return String::new();
        }
        format!("Targets\n{t}\n")
    }
}

impl ScenarioReport {
    fn render(&self, raw: Option<f64>, markdown: bool) -> String {
        let mut t = new_table(markdown);
        t.set_header(["metric", "value", "vs raw ceiling"]);
        let u = &self.usage;
        let rate = if self.rate > 0.0 {
            format!("{}/s", thousands(self.rate))
        } else {
            "max".into()
        };
        let dest_batch = self
            .dest_batch
            .map_or_else(|| "1".to_owned(), |b| format!("≤{b}"));
        let rows: Vec<[String; 3]> = vec![
            [
                "raw ceiling (webhook client → receiver)".into(),
                raw.map_or_else(|| "n/a".into(), |r| format!("{} req/s", thousands(r))),
                raw.map_or_else(String::new, |_| "1.00×".into()),
            ],
            [
                "generator ceiling (generator → receiver)".into(),
                format!(
                    "{} events/s",
                    thousands(self.generator_ceiling_events_per_sec)
                ),
                ratio(self.generator_ceiling_events_per_sec, raw),
            ],
            [
                "events accepted / failed".into(),
                format!(
                    "{} / {}",
                    thousands_u(self.accepted),
                    thousands_u(self.failed)
                ),
                String::new(),
            ],
            [
                "accepted/s (ingest, fsync'd)".into(),
                thousands(self.accepted_per_sec),
                ratio(self.accepted_per_sec, raw),
            ],
            [
                "delivered/s (end to end)".into(),
                thousands(self.delivered_per_sec),
                ratio(self.delivered_per_sec, raw),
            ],
            [
                "delivered / duplicates / webhook requests".into(),
                format!(
                    "{} / {} / {}",
                    thousands_u(self.delivered),
                    thousands_u(self.duplicate_deliveries),
                    thousands_u(self.webhook_requests)
                ),
                String::new(),
            ],
            [
                "e2e latency p50 / p95 / p99 / max".into(),
                ms4(self.e2e_ms),
                String::new(),
            ],
            [
                "ingest 202 latency p50 / p95 / p99 / max".into(),
                ms4(self.ingest_ms),
                String::new(),
            ],
            [
                "server RSS idle / peak".into(),
                format!(
                    "{} / {}",
                    opt_mb(self.idle_rss_bytes),
                    opt_mb(self.peak_rss_bytes)
                ),
                String::new(),
            ],
            [
                "CPU cores: server / bench / other (machine busy)".into(),
                format!(
                    "{} / {} / {} ({})",
                    cores(u.server_cpu_cores),
                    cores(u.bench_cpu_cores),
                    cores(u.other_cpu_cores),
                    cores(u.machine_busy_cores)
                ),
                String::new(),
            ],
            [
                "server CPU by thread (cores)".into(),
                self.threads_text(),
                String::new(),
            ],
            [
                "store group commits".into(),
                store_text(u.store.as_ref()),
                String::new(),
            ],
            ["server disk writes".into(), self.disk_text(), String::new()],
        ];
        let rows = rows.into_iter().chain(self.enrichment_rows());
        for row in rows {
            t.add_row(row);
        }
        let mut out = format!(
            "Scenario `{}`: {} events × {} B, {} per ingest request, {} connections, rate {}, \
             webhook concurrency {}, {} event(s) per webhook; {:.1} s\n{t}\n",
            self.name,
            thousands_u(self.events),
            self.payload_bytes,
            self.batch,
            self.connections,
            rate,
            self.dest_concurrency,
            dest_batch,
            self.wall_secs,
        );
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    /// The look-up rows of an enrichment phase.
    fn enrichment_rows(&self) -> Vec<[String; 3]> {
        let Some(e) = &self.enrichment else {
            return Vec::new();
        };
        let step = match (e.step, e.cache_ttl, e.documents) {
            (false, _, _) => "none (baseline)".to_owned(),
            (true, Some(ttl), Some(n)) => format!("enrich, cache {ttl}, {n} documents"),
            (true, _, _) => "enrich, no cache, a document per event".to_owned(),
        };
        let mut rows = vec![[
            "route step".into(),
            format!("{step}; look-up API answers in {:.0} ms", e.lookup_delay_ms),
            String::new(),
        ]];
        if let Some(b) = e.baseline_delivered_per_sec {
            rows.push([
                "delivered/s vs the baseline (same run)".into(),
                format!("{} / {}", thousands(self.delivered_per_sec), thousands(b)),
                e.vs_baseline
                    .map_or_else(String::new, |r| format!("{r:.2}× baseline")),
            ]);
        }
        rows.push([
            "look-up requests / connections (per event)".into(),
            format!(
                "{} / {} ({:.3})",
                thousands_u(e.lookup_requests),
                thousands_u(e.lookup_connections),
                e.lookups_per_event
            ),
            String::new(),
        ]);
        rows.push([
            "look-ups in flight: mean / max / step concurrency".into(),
            format!(
                "{:.0} / {} / {}",
                e.mean_lookups_in_flight,
                e.lookup_max_in_flight,
                e.lookup_concurrency
                    .map_or_else(|| "-".to_owned(), |c| c.to_string())
            ),
            e.concurrency_ceiling_per_sec.map_or_else(String::new, |c| {
                format!("≤ {} events/s at this delay", thousands(c))
            }),
        ]);
        rows.push([
            "deliveries carrying the answer".into(),
            thousands_u(e.enriched_deliveries),
            String::new(),
        ]);
        rows
    }

    fn disk_text(&self) -> String {
        match self.usage.server_disk_write_bytes {
            #[allow(clippy::cast_precision_loss)]
            Some(b) if self.delivered > 0 => {
                format!(
                    "{} ({:.1} KB per event)",
                    mb(b),
                    b as f64 / self.delivered as f64 / 1000.0
                )
            }
            Some(b) => mb(b),
            None => "n/a".to_owned(),
        }
    }

    fn threads_text(&self) -> String {
        if self.usage.server_threads.is_empty() {
            return "n/a".to_owned();
        }
        self.usage
            .server_threads
            .iter()
            .take(5)
            .map(|(name, c)| format!("{name} {c:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[allow(clippy::cast_precision_loss)]
fn thousands_u(n: u64) -> String {
    thousands(n as f64)
}

fn ms4(p: Percentiles) -> String {
    format!(
        "{:.1} / {:.1} / {:.1} / {:.1} ms",
        p.p50, p.p95, p.p99, p.max
    )
}

fn store_text(s: Option<&StoreActivity>) -> String {
    s.map_or_else(
        || "n/a".to_owned(),
        |s| {
            format!(
                "{} commits, {:.0} commands each, {:.2} ms each, {:.1} s busy",
                thousands_u(s.commits),
                s.mean_batch,
                s.mean_commit_ms,
                s.busy_secs
            )
        },
    )
}

fn cores(c: Option<f64>) -> String {
    c.map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(mb(31_457_280), "31.5 MB");
        assert_eq!(ratio(5.0, Some(10.0)), "0.50×");
    }
}
