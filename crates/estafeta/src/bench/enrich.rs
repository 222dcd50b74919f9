//! `estafeta bench --scenario enrich`: the same load three times through a server whose
//! route looks each event's document up in the bench's own slow look-up API (`lookup`)
//! before delivering — without the step (the baseline of the same run), with a distinct
//! document per event, and with documents repeating from a small set behind a cache — and
//! the look-up side of the report: requests, connections, look-ups in flight, the ratio to
//! the baseline.

use std::time::Duration;

use serde::Serialize;

use super::BenchArgs;
use super::load::Documents;
use super::lookup::{LookupCounts, LookupServer};
use super::receiver::Counts;
use super::report::{ScenarioReport, new_table, thousands};
use super::scenario::{Goal, Plan};
use super::server::ServerSpec;

/// Events per phase unless `--events` says otherwise: 15 s at the 2,000/s target.
const EVENTS: u64 = 30_000;
/// Events per ingest request: ingest stays far ahead of the route, so the route is measured.
const BATCH: u64 = 10;
/// The issue's target for distinct look-ups answered in 50 ms.
const GOAL: f64 = 2_000.0;
/// The step's own default `concurrency` (see `estafeta_config::route_steps`).
const STEP_DEFAULT_CONCURRENCY: usize = 256;
/// How long the cached phase keeps answers.
const CACHE_TTL: &str = "5m";
/// The route target's template: the generator's mark, the document and the look-up's
/// answer, so the receiver sees that each delivery carries it.
const TEMPLATE_ENRICHED: &str = r#"{"data":{"seq":{{ data.seq }},"sent_at_ns":{{ data.sent_at_ns }},"document":{{ data.document | tojson }},"hits":{{ lookup.hits }}}}"#;
/// The same without the look-up, for the baseline.
const TEMPLATE_PLAIN: &str = r#"{"data":{"seq":{{ data.seq }},"sent_at_ns":{{ data.sent_at_ns }},"document":{{ data.document | tojson }}}}"#;

/// One phase of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// No step: the same load and template without the look-up.
    Baseline,
    /// A look-up per event, every document distinct, no cache.
    Unique,
    /// Documents repeat from `--lookup-documents`; the step caches answers.
    Cached,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "enrich-baseline",
            Self::Unique => "enrich-unique",
            Self::Cached => "enrich-cached",
        }
    }

    fn has_step(self) -> bool {
        self != Self::Baseline
    }

    /// The documents the generator puts in the events.
    pub(super) fn documents(self, args: &BenchArgs) -> Documents {
        match self {
            Self::Baseline | Self::Unique => Documents::Unique,
            Self::Cached => Documents::Cycle(args.lookup_documents),
        }
    }

    /// Starts the look-up API and writes the route's step and template into `spec`.
    pub(super) async fn prepare(
        self,
        args: &BenchArgs,
        spec: &mut ServerSpec,
    ) -> anyhow::Result<LookupServer> {
        let server = LookupServer::start(args.lookup_delay).await?;
        spec.route_steps = self
            .has_step()
            .then(|| step_yaml(&server.url_template(), self, step_concurrency(args)));
        spec.route_template = Some(
            if self.has_step() {
                TEMPLATE_ENRICHED
            } else {
                TEMPLATE_PLAIN
            }
            .to_owned(),
        );
        Ok(server)
    }

    /// The look-up side of this phase's report.
    pub(super) fn report(
        self,
        args: &BenchArgs,
        lookup: LookupCounts,
        delivered: Counts,
        wall: Duration,
    ) -> EnrichmentReport {
        let concurrency = step_concurrency(args).unwrap_or(STEP_DEFAULT_CONCURRENCY);
        let delay = args.lookup_delay.as_secs_f64();
        let secs = wall.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let (per_event, in_flight) = (
            ratio(lookup.requests as f64, delivered.unique as f64),
            ratio(lookup.requests as f64 * delay, secs),
        );
        #[allow(clippy::cast_precision_loss)]
        let ceiling = (self.has_step() && delay > 0.0).then(|| concurrency as f64 / delay);
        EnrichmentReport {
            phase: self.name(),
            step: self.has_step(),
            cache_ttl: (self == Self::Cached).then_some(CACHE_TTL),
            documents: match self.documents(args) {
                Documents::Cycle(n) => Some(n),
                Documents::Unique | Documents::None => None,
            },
            lookup_delay_ms: delay * 1000.0,
            lookup_concurrency: self.has_step().then_some(concurrency),
            lookup_requests: lookup.requests,
            lookup_connections: lookup.connections,
            lookup_max_in_flight: lookup.max_in_flight,
            lookup_stray_requests: lookup.not_found,
            lookups_per_event: per_event,
            mean_lookups_in_flight: in_flight,
            concurrency_ceiling_per_sec: ceiling,
            enriched_deliveries: delivered.enriched,
            baseline_delivered_per_sec: None,
            vs_baseline: None,
        }
    }
}

/// What the look-up API saw during one phase, and how the phase compares with the baseline.
#[derive(Debug, Clone, Serialize)]
pub(super) struct EnrichmentReport {
    /// `enrich-baseline`, `enrich-unique` or `enrich-cached`.
    pub(super) phase: &'static str,
    /// Whether the route had the enrich step.
    pub(super) step: bool,
    /// The step's cache TTL, when it caches.
    pub(super) cache_ttl: Option<&'static str>,
    /// Distinct documents the events name (`None`: one per event).
    pub(super) documents: Option<u64>,
    /// How long the look-up API waits before each answer.
    pub(super) lookup_delay_ms: f64,
    /// The step's `concurrency` (look-ups in flight at once).
    pub(super) lookup_concurrency: Option<usize>,
    /// Look-up requests the API got.
    pub(super) lookup_requests: u64,
    /// TCP connections the API accepted (connection reuse: far fewer than requests).
    pub(super) lookup_connections: u64,
    /// The most look-ups the API held at once.
    pub(super) lookup_max_in_flight: u64,
    /// Requests to anything but `GET /records/…`.
    pub(super) lookup_stray_requests: u64,
    /// Look-up requests per delivered event.
    pub(super) lookups_per_event: f64,
    /// Look-ups in flight on average over the phase: requests × delay ÷ wall time.
    pub(super) mean_lookups_in_flight: f64,
    /// The most events per second the step's concurrency allows at this delay when every
    /// event needs its own look-up: concurrency ÷ delay.
    pub(super) concurrency_ceiling_per_sec: Option<f64>,
    /// Delivered events whose body carried the look-up's answer.
    pub(super) enriched_deliveries: u64,
    /// Delivered/s of `enrich-baseline` in the same run.
    pub(super) baseline_delivered_per_sec: Option<f64>,
    /// This phase's delivered/s ÷ the baseline's.
    pub(super) vs_baseline: Option<f64>,
}

/// `--lookup-concurrency`, when given.
fn step_concurrency(args: &BenchArgs) -> Option<usize> {
    args.lookup_concurrency
        .map(|c| usize::try_from(c).unwrap_or(STEP_DEFAULT_CONCURRENCY))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The three phases, in run order (the baseline first).
pub(super) fn plans(args: &BenchArgs) -> Vec<Plan> {
    [Phase::Baseline, Phase::Unique, Phase::Cached]
        .into_iter()
        .map(|phase| Plan {
            name: phase.name().to_owned(),
            events: args.events.unwrap_or(EVENTS),
            batch: BATCH,
            rate: 0.0,
            dest_batch: None,
            goal: if phase == Phase::Unique {
                Goal::DeliveredPerSec(GOAL)
            } else {
                Goal::None
            },
            enrich: Some(phase),
        })
        .collect()
}

/// The route's `steps:` block: one enrich step bound to `lookup`.
fn step_yaml(url: &str, phase: Phase, concurrency: Option<usize>) -> String {
    let mut y = format!(
        "    steps:\n      - enrich:\n          as: lookup\n          http:\n            \
         url: \"{url}\"\n            allow_private_networks: true\n"
    );
    if let Some(c) = concurrency {
        y.push_str(&format!("            concurrency: {c}\n"));
    }
    if phase == Phase::Cached {
        y.push_str(&format!("          cache: {{ ttl: {CACHE_TTL} }}\n"));
    }
    y
}

/// Fills in each enrichment phase's ratio to the baseline of the same run, and notes
/// deliveries that lacked the look-up's answer or look-ups made where none were expected.
pub(super) fn compare_with_baseline(scenarios: &mut [ScenarioReport]) {
    let baseline = scenarios
        .iter()
        .find(|s| {
            s.enrichment
                .as_ref()
                .is_some_and(|e| e.phase == Phase::Baseline.name())
        })
        .map(|s| s.delivered_per_sec);
    for s in scenarios.iter_mut() {
        let delivered_per_sec = s.delivered_per_sec;
        let delivered = s.delivered;
        let Some(e) = s.enrichment.as_mut() else {
            continue;
        };
        if let Some(b) = baseline.filter(|b| *b > 0.0) {
            e.baseline_delivered_per_sec = Some(b);
            e.vs_baseline = Some(delivered_per_sec / b);
        }
        let mut notes = Vec::new();
        if e.step && e.enriched_deliveries < delivered {
            notes.push(format!(
                "{} of {} delivered events lacked the look-up's answer",
                delivered - e.enriched_deliveries,
                delivered
            ));
        }
        if !e.step && e.lookup_requests > 0 {
            notes.push(format!(
                "the look-up API got {} requests in a phase without the step",
                e.lookup_requests
            ));
        }
        if e.lookup_stray_requests > 0 {
            notes.push(format!(
                "the look-up API got {} requests for other paths",
                e.lookup_stray_requests
            ));
        }
        s.notes.extend(notes);
    }
}

/// The phases side by side, when the run had them.
pub(super) fn summary(scenarios: &[ScenarioReport], markdown: bool) -> String {
    let mut t = new_table(markdown);
    t.set_header([
        "phase",
        "delivered/s",
        "vs baseline",
        "look-ups / events",
        "connections",
        "in flight: mean / max",
        "e2e p50 / p99",
    ]);
    let mut any = false;
    for s in scenarios {
        let Some(e) = &s.enrichment else { continue };
        any = true;
        t.add_row([
            e.phase.to_owned(),
            thousands(s.delivered_per_sec),
            e.vs_baseline
                .map_or_else(String::new, |r| format!("{r:.2}×")),
            format!(
                "{} / {}",
                thousands_u(e.lookup_requests),
                thousands_u(s.delivered)
            ),
            thousands_u(e.lookup_connections),
            format!(
                "{:.0} / {}",
                e.mean_lookups_in_flight, e.lookup_max_in_flight
            ),
            format!("{:.1} / {:.1} ms", s.e2e_ms.p50, s.e2e_ms.p99),
        ]);
    }
    if !any {
        return String::new();
    }
    let delay = scenarios
        .iter()
        .find_map(|s| s.enrichment.as_ref())
        .map_or(0.0, |e| e.lookup_delay_ms);
    format!("Enrichment (look-up API answering in {delay:.0} ms)\n{t}\n")
}

#[allow(clippy::cast_precision_loss)]
fn thousands_u(n: u64) -> String {
    thousands(n as f64)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::bench::server::check_config;

    fn spec(steps: Option<String>, template: &str) -> ServerSpec {
        ServerSpec {
            binary: PathBuf::from("estafeta"),
            token: "t".repeat(20),
            receiver_url: "http://127.0.0.1:9/hook".to_owned(),
            dest_concurrency: 64,
            dest_batch: None,
            keep_data: false,
            source_yaml: None,
            deliver: true,
            route_steps: steps,
            route_template: Some(template.to_owned()),
            destination_yaml: None,
        }
    }

    #[test]
    fn every_phase_writes_a_valid_config() {
        let url = "http://127.0.0.1:9/records/{{ data.document }}";
        for (phase, conc) in [(Phase::Unique, None), (Phase::Cached, Some(512))] {
            let steps = step_yaml(url, phase, conc);
            assert_eq!(steps.contains("cache:"), phase == Phase::Cached);
            check_config(&spec(Some(steps), TEMPLATE_ENRICHED)).expect("valid");
        }
        check_config(&spec(None, TEMPLATE_PLAIN)).expect("valid");
    }
}
