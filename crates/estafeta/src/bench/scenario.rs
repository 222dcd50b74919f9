//! Runs the bench's steps: the two ceilings, the idle-memory check and a load scenario
//! (receiver up → server up → generate → wait for every delivery → measure → stop).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::BenchArgs;
use super::clock::{between, now_ns};
use super::enrich;
use super::load::{self, Documents, LoadCounters, LoadPlan, Payload, per_sec};
use super::probe::{self, Probe};
use super::procfs::{self, Pid};
use super::receiver::{Counts, Receiver, Recorder};
use super::report::{IdleReport, Percentiles, ScenarioReport, Target, mb, thousands};
use super::server::{ServerProcess, ServerSpec};

/// How long an idle server settles before its memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// How long a loaded server settles before its idle memory is read.
const LOAD_SETTLE: Duration = Duration::from_secs(1);

/// What a preset promises.
#[derive(Debug, Clone, Copy)]
pub(super) enum Goal {
    None,
    DeliveredPerSec(f64),
    P99Ms(f64),
}

/// One load scenario.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) name: String,
    pub(super) events: u64,
    pub(super) batch: u64,
    pub(super) rate: f64,
    pub(super) dest_batch: Option<usize>,
    pub(super) goal: Goal,
    /// A phase of the enrichment scenario: the route looks events up first.
    pub(super) enrich: Option<enrich::Phase>,
}

/// Runs steps with the shared settings; remembers the generator ceilings it measured.
pub(super) struct Runner<'a> {
    args: &'a BenchArgs,
    binary: PathBuf,
    /// `(base URL, token)` of a server started by the user.
    external: Option<(String, String)>,
    token: String,
    ticks: u64,
    tag: String,
    generator_ceilings: HashMap<u64, f64>,
}

/// The server a scenario talks to.
enum Sut {
    Spawned(Box<ServerProcess>),
    External,
}

impl<'a> Runner<'a> {
    pub(super) fn new(
        args: &'a BenchArgs,
        binary: PathBuf,
        external: Option<(String, String)>,
    ) -> Self {
        let mut key = [0u8; 16];
        rand::fill(&mut key);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            args,
            binary,
            external,
            token: format!("bench_{hex}"),
            ticks: procfs::ticks_per_sec(),
            tag: format!("bench-{}", &hex[..12]),
            generator_ceilings: HashMap::new(),
        }
    }

    fn payload(&self, scenario: &str) -> Payload {
        Payload::new(format!("{}-{scenario}", self.tag), self.args.payload_bytes)
    }

    fn ceiling_time(&self) -> Duration {
        Duration::from_secs(self.args.ceiling_secs)
    }

    /// Webhook-like POSTs per second to a fresh receiver, with the destination's client
    /// settings and concurrency.
    pub(super) async fn raw_ceiling(&mut self) -> anyhow::Result<f64> {
        let conc = usize::from(self.args.dest_concurrency);
        eprintln!(
            "measuring the receiver's raw ceiling ({conc} connections, {}s)…",
            self.args.ceiling_secs
        );
        self.settle().await;
        let receiver = Receiver::start(loopback_any(), 0).await?;
        let client = load::destination_like_client(conc)?;
        let body = self.payload("ceiling").delivery_like();
        let c = load::raw_ceiling(client, &receiver.url(), body, conc, self.ceiling_time()).await?;
        if c.requests == 0 {
            anyhow::bail!(
                "the raw-ceiling run got no successful answer ({} errors)",
                c.errors
            );
        }
        eprintln!("  raw ceiling: {} req/s", thousands(c.per_sec()));
        Ok(c.per_sec())
    }

    /// Events per second the generator posts to a receiver with `batch` per request.
    async fn generator_ceiling(&mut self, batch: u64) -> anyhow::Result<f64> {
        if let Some(v) = self.generator_ceilings.get(&batch) {
            return Ok(*v);
        }
        let conns = usize::from(self.args.connections);
        eprintln!("measuring the generator's ceiling ({conns} connections, batch {batch})…");
        self.settle().await;
        let receiver = Receiver::start(loopback_any(), 0).await?;
        let plan = LoadPlan {
            url: reqwest::Url::parse(&receiver.url()).context("the receiver URL")?,
            token: None,
            events: u64::MAX,
            batch,
            connections: conns,
            rate: 0.0,
            payload: self.payload("ceiling"),
            max_duration: self.ceiling_time(),
        };
        let counters = Arc::new(LoadCounters::default());
        let client = load::generator_client(conns)?;
        let out = load::generate(client, plan, Arc::clone(&counters)).await?;
        let v = per_sec(
            counters.accepted.load(Ordering::Relaxed),
            between(out.start_ns, out.end_ns),
        );
        eprintln!("  generator ceiling: {} events/s", thousands(v));
        self.generator_ceilings.insert(batch, v);
        Ok(v)
    }

    /// Waits for a quiet machine when asked to (`--quiet-wait`).
    async fn settle(&self) -> Option<f64> {
        if self.args.quiet_wait.is_zero() {
            return None;
        }
        probe::wait_quiet(self.args.quiet_wait, self.ticks).await
    }

    fn spec(&self, receiver_url: String, dest_batch: Option<usize>) -> ServerSpec {
        ServerSpec {
            binary: self.binary.clone(),
            token: self.token.clone(),
            receiver_url,
            dest_concurrency: usize::from(self.args.dest_concurrency),
            dest_batch,
            keep_data: self.args.keep_data,
            source_yaml: None,
            deliver: true,
            route_steps: None,
            route_template: None,
            destination_yaml: None,
        }
    }

    /// Starts a server and reads its memory after `IDLE_SETTLE`.
    pub(super) async fn idle(&mut self, goal: u64) -> anyhow::Result<IdleReport> {
        if self.external.is_some() {
            eprintln!("idle: skipped (the server is not ours to measure with --url)");
            return Ok(IdleReport {
                settle_secs: 0,
                rss_bytes: None,
                target: None,
            });
        }
        eprintln!(
            "idle: starting a server and waiting {}s…",
            IDLE_SETTLE.as_secs()
        );
        let receiver = Receiver::start(loopback_any(), 0).await?;
        let server = ServerProcess::spawn(&self.spec(receiver.url(), None)).await?;
        tokio::time::sleep(IDLE_SETTLE).await;
        let rss = procfs::memory(Pid::Other(server.pid())).map(|m| m.rss);
        server.stop().await?;
        let target = rss.map(|r| Target {
            what: "idle RSS".into(),
            goal: format!("≤ {}", mb(goal)),
            measured: mb(r),
            met: r <= goal,
        });
        Ok(IdleReport {
            settle_secs: IDLE_SETTLE.as_secs(),
            rss_bytes: rss,
            target,
        })
    }

    /// Runs one load scenario end to end.
    pub(super) async fn load(
        &mut self,
        plan: &Plan,
        rss_goal: u64,
    ) -> anyhow::Result<ScenarioReport> {
        let args = self.args;
        let generator_ceiling = self.generator_ceiling(plan.batch).await?;
        eprintln!(
            "scenario {}: {} events, batch {}, rate {}…",
            plan.name,
            thousands_u(plan.events),
            plan.batch,
            if plan.rate > 0.0 {
                format!("{}/s", thousands(plan.rate))
            } else {
                "max".into()
            }
        );
        let busy_at_start = self.settle().await;
        let listen = if self.external.is_some() {
            args.receiver_listen
        } else {
            loopback_any()
        };
        let receiver = Receiver::start(listen, plan.events).await?;
        let mut lookup = None;
        let (target, base_url, token) = match &self.external {
            Some((url, token)) => {
                eprintln!("  the server must route `bench.*` to {}", receiver.url());
                (Sut::External, url.clone(), token.clone())
            }
            None => {
                let mut spec = self.spec(receiver.url(), plan.dest_batch);
                if let Some(phase) = plan.enrich {
                    lookup = Some(phase.prepare(args, &mut spec).await?);
                }
                let server = ServerProcess::spawn(&spec).await?;
                if let Some(dir) = server.kept_dir() {
                    eprintln!("  data directory (kept): {}", dir.display());
                }
                let url = server.base_url().to_owned();
                (Sut::Spawned(Box::new(server)), url, self.token.clone())
            }
        };
        let pid = match &target {
            Sut::Spawned(s) => Some(s.pid()),
            Sut::External => None,
        };
        tokio::time::sleep(LOAD_SETTLE).await;
        let idle_rss = pid
            .and_then(|p| procfs::memory(Pid::Other(p)))
            .map(|m| m.rss);

        let probe = Probe {
            pid,
            ticks_per_sec: self.ticks,
            base_url: base_url.clone(),
            token: token.clone(),
            client: load::generator_client(1)?,
        };
        let before = probe.snapshot().await;

        let counters = Arc::new(LoadCounters::default());
        let stop_progress = CancellationToken::new();
        let progress = tokio::spawn(show_progress(
            plan.events,
            Arc::clone(&counters),
            Arc::clone(receiver.recorder()),
            stop_progress.clone(),
        ));
        let conns = usize::from(args.connections);
        let load_plan = LoadPlan {
            url: reqwest::Url::parse(&format!("{base_url}/v1/events")).context("the server URL")?,
            token: Some(token),
            events: plan.events,
            batch: plan.batch,
            connections: conns,
            rate: plan.rate,
            payload: self
                .payload(&plan.name)
                .with_documents(plan.enrich.map_or(Documents::None, |p| p.documents(args))),
            max_duration: args.max_duration,
        };
        let outcome = load::generate(
            load::generator_client(conns)?,
            load_plan,
            Arc::clone(&counters),
        )
        .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                stop_progress.cancel();
                stop_target(target).await;
                return Err(e);
            }
        };
        let accepted = counters.accepted.load(Ordering::Relaxed);
        let recorder = Arc::clone(receiver.recorder());
        let mut target = target;
        let complete = wait_delivered(&recorder, accepted, args.drain_timeout, &mut target).await;
        let end_ns = recorder
            .counts()
            .first_last_ns
            .map_or_else(now_ns, |(_, last)| last);
        stop_progress.cancel();
        let _ = progress.await;

        let after = probe.snapshot().await;
        let memory = pid.and_then(|p| procfs::memory(Pid::Other(p)));
        stop_target_checked(target).await?;

        let wall = between(outcome.start_ns, end_ns);
        let counts = recorder.counts();
        let e2e = percentiles_ms(recorder.latencies_ns().map(|ns| ns / 1000))?;
        let ingest = percentiles_ms_hist(&outcome.request_us);
        let last_ok = counters.last_ok_ns.load(Ordering::Relaxed);
        let mut report = ScenarioReport {
            name: plan.name.clone(),
            events: plan.events,
            batch: plan.batch,
            connections: conns,
            rate: plan.rate,
            payload_bytes: args.payload_bytes,
            dest_concurrency: usize::from(args.dest_concurrency),
            dest_batch: plan.dest_batch,
            generator_ceiling_events_per_sec: generator_ceiling,
            accepted,
            failed: counters.failed.load(Ordering::Relaxed),
            ingest_duplicates: counters.duplicates.load(Ordering::Relaxed),
            ingest_retries: counters.retries.load(Ordering::Relaxed),
            accepted_per_sec: per_sec(accepted, between(outcome.start_ns, last_ok)),
            delivered: counts.unique,
            duplicate_deliveries: counts.duplicates,
            webhook_requests: counts.requests,
            delivered_per_sec: per_sec(counts.unique, wall),
            e2e_ms: e2e,
            ingest_ms: ingest,
            idle_rss_bytes: idle_rss,
            peak_rss_bytes: memory.map(|m| m.peak),
            usage: probe.usage(&before, &after),
            wall_secs: wall.as_secs_f64(),
            complete,
            targets: Vec::new(),
            notes: Vec::new(),
            enrichment: plan
                .enrich
                .zip(lookup.as_ref())
                .map(|(phase, l)| phase.report(args, l.counts(), counts, wall)),
        };
        if let Some(busy) = busy_at_start.filter(|b| *b >= 0.3) {
            report.notes.push(format!(
                "the machine was busy ({busy:.2} cores) with other work when the scenario started"
            ));
        }
        add_targets_and_notes(
            &mut report,
            plan,
            rss_goal,
            &counters,
            outcome.cut_short,
            counts,
        );
        Ok(report)
    }
}

fn add_targets_and_notes(
    r: &mut ScenarioReport,
    plan: &Plan,
    rss_goal: u64,
    counters: &LoadCounters,
    cut_short: bool,
    counts: Counts,
) {
    let n = &plan.name;
    match plan.goal {
        Goal::None => {}
        Goal::DeliveredPerSec(goal) => r.targets.push(Target {
            what: format!("{n}: delivered/s"),
            goal: format!("≥ {}", thousands(goal)),
            measured: thousands(r.delivered_per_sec),
            met: r.complete && r.delivered_per_sec >= goal,
        }),
        Goal::P99Ms(goal) => r.targets.push(Target {
            what: format!("{n}: e2e p99"),
            goal: format!("≤ {goal} ms"),
            measured: format!("{:.1} ms", r.e2e_ms.p99),
            met: r.complete && r.e2e_ms.p99 <= goal,
        }),
    }
    if !matches!(plan.goal, Goal::None)
        && let Some(peak) = r.peak_rss_bytes
    {
        r.targets.push(Target {
            what: format!("{n}: peak RSS"),
            goal: format!("≤ {}", mb(rss_goal)),
            measured: mb(peak),
            met: peak <= rss_goal,
        });
    }
    if let Some(other) = r.usage.other_cpu_cores.filter(|c| *c >= 0.3) {
        r.notes.push(format!(
            "other work (other processes, kernel network processing) used {other:.2} cores during \
             the run: the results are pessimistic"
        ));
    }
    if !r.complete {
        r.notes.push(format!(
            "only {} of {} accepted events were delivered within the drain timeout",
            thousands_u(r.delivered),
            thousands_u(r.accepted)
        ));
    }
    if r.failed > 0 || r.ingest_retries > 0 {
        let first = counters.first_error().unwrap_or_default();
        r.notes.push(format!(
            "{} events failed at ingest, {} requests retried; first error: {first}",
            thousands_u(r.failed),
            thousands_u(r.ingest_retries)
        ));
    }
    if cut_short {
        r.notes
            .push("the ingest phase hit --max-duration; not every event was sent".into());
    }
    if counts.bad_requests > 0 || counts.unmarked > 0 {
        r.notes.push(format!(
            "the receiver got {} bodies that were not JSON and {} events without a known mark",
            counts.bad_requests, counts.unmarked
        ));
    }
    if plan.rate <= 0.0 && r.generator_ceiling_events_per_sec < 1.5 * r.accepted_per_sec {
        r.notes.push(
            "the generator's ceiling is within 1.5× of the accepted rate: it may be a limit".into(),
        );
    }
    if plan.rate > 0.0 && r.accepted_per_sec < 0.95 * plan.rate {
        r.notes.push(format!(
            "the steady rate was not held: {} accepted/s for {} asked",
            thousands(r.accepted_per_sec),
            thousands(plan.rate)
        ));
    }
}

async fn wait_delivered(
    recorder: &Recorder,
    expected: u64,
    timeout: Duration,
    target: &mut Sut,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut checks = 0u64;
    loop {
        if recorder.counts().unique >= expected {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        checks += 1;
        if checks.is_multiple_of(50)
            && let Sut::Spawned(s) = target
            && let Some(status) = s.exited()
        {
            eprintln!(
                "the server exited ({status}) before delivering everything:\n{}",
                s.stderr_tail()
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn stop_target(target: Sut) {
    if let Err(e) = stop_target_checked(target).await {
        eprintln!("warning: {e:#}");
    }
}

async fn stop_target_checked(target: Sut) -> anyhow::Result<()> {
    match target {
        Sut::Spawned(server) => server.stop().await,
        Sut::External => Ok(()),
    }
}

async fn show_progress(
    total: u64,
    counters: Arc<LoadCounters>,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("  [{elapsed_precise}] {bar:30} {pos}/{len} delivered, {msg}")
    {
        bar.set_style(style);
    }
    loop {
        bar.set_position(recorder.counts().unique);
        bar.set_message(format!(
            "{} accepted",
            counters.accepted.load(Ordering::Relaxed)
        ));
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    bar.finish_and_clear();
}

fn percentiles_ms(values_us: impl Iterator<Item = u64>) -> anyhow::Result<Percentiles> {
    let mut h =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("creating a histogram")?;
    for v in values_us {
        h.saturating_record(v.max(1));
    }
    Ok(percentiles_ms_hist(&h))
}

#[allow(clippy::cast_precision_loss)]
fn percentiles_ms_hist(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        p50: ms(0.50),
        p95: ms(0.95),
        p99: ms(0.99),
        max: h.max() as f64 / 1000.0,
    }
}

#[allow(clippy::cast_precision_loss)]
fn thousands_u(n: u64) -> String {
    thousands(n as f64)
}

fn loopback_any() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}
