//! `estafeta bench`: drives the real server end to end — a Rust load generator POSTs
//! CloudEvents to a spawned `estafeta serve`, whose one route delivers them as signed
//! webhooks to a fast receiver inside this process — and reports accepted/s, delivered/s,
//! end-to-end latency percentiles and the server's memory and CPU, next to the receiver's
//! raw ceiling and the generator's own (see `docs/performance.md`).
//!
//! Files: `scenario` runs one scenario; `load` is the generator and the ceilings;
//! `receiver` the webhook receiver; `server` the child process; `probe` (over `procfs` and
//! `store_stats`) the server's memory, CPU, disk and commits; `report` the tables and JSON;
//! `clock` the shared clock; `enrich` the enrichment scenario over `lookup`, its slow
//! look-up API; `cdc` and `outbox` the database scenarios.

mod broker;
mod cdc;
mod clock;
mod enrich;
mod http1;
mod kafka;
mod load;
mod lookup;
mod nats;
mod outbox;
mod probe;
mod procfs;
mod receiver;
mod report;
mod scenario;
mod server;
mod store_stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use report::BenchReport;
use scenario::{Goal, Plan, Runner};

/// Options of `estafeta bench`.
///
/// By default the bench spawns its own server (this executable, `serve`) with a temporary
/// data directory and a config of one route (`bench.*`) to one signed webhook pointing at
/// the bench's receiver. With `--url` it targets a server you started instead: then route
/// `bench.*` to `http://<--receiver-listen>/hook` yourself; memory and CPU of the server
/// are not reported in that mode.
#[derive(Debug, Args)]
#[command(
    after_help = "Scenarios (the issue's targets, 2 cores, durability on):\n  \
    single            50,000 events, one per ingest request, as fast as possible (≥ 10,000/s)\n  \
    batch100          300,000 events, 100 per ingest request (≥ 30,000/s)\n  \
    batch100-batched  as batch100, and the webhook sends up to 100 events per request\n  \
    steady2k          60,000 events at a steady 2,000/s (p99 end-to-end ≤ 25 ms)\n  \
    idle              a started server's resident memory after 3 s (≤ 30 MB)\n  \
    all               idle, single, batch100, batch100-batched, steady2k\n  \
    enrich            30,000 events, 10 per request, three times through a route to the\n                    \
    receiver: without steps (the baseline), with an enrich step that asks a\n                    \
    look-up API answering in --lookup-delay for each event (≥ 2,000/s), and\n                    \
    with a cache over --lookup-documents repeating documents (not in `all`)\n\
    Every load scenario also checks the server's peak RSS (≤ 200 MB).\n\n\
    Server: by default the bench spawns this executable's `serve` with a temporary data \
    directory and one route (`bench.*`) to one signed webhook at its own receiver. With --url \
    it targets a server you run instead: route `bench.*` there to \
    http://<--receiver-listen>/hook yourself; the server's memory, CPU and disk writes are \
    then not reported."
)]
pub(crate) struct BenchArgs {
    /// Run a preset scenario (fixes --batch, --rate and --dest-batch; see below).
    #[arg(long, value_enum)]
    scenario: Option<ScenarioName>,
    /// Events to send [default: 50,000, or the preset's].
    #[arg(long)]
    events: Option<u64>,
    /// Events per ingest request (1 = a single CloudEvent, else a batch).
    #[arg(long, default_value_t = 1, conflicts_with = "scenario",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
    /// Concurrent generator connections (and tasks).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    connections: u16,
    /// Steady rate in events per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0, conflicts_with = "scenario")]
    rate: f64,
    /// Size of each event's `data` JSON in bytes.
    #[arg(long, default_value_t = 300)]
    payload_bytes: usize,
    /// The webhook destination's `concurrency` (the raw ceiling uses the same).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    dest_concurrency: u16,
    /// Events per webhook request (destination `batch.max_events`); 1 = no batching.
    #[arg(long, default_value_t = 1, conflicts_with = "scenario")]
    dest_batch: usize,
    /// The `estafeta` binary to spawn [default: this executable].
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Target an already running server instead of spawning one (see below).
    #[arg(long)]
    url: Option<String>,
    /// API token for --url (defaults to ESTAFETA_TOKEN, then ESTAFETA_ADMIN_TOKEN).
    #[arg(long, env = "ESTAFETA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where the bench's webhook receiver listens (a fixed port is needed with --url).
    #[arg(long, default_value = "127.0.0.1:0")]
    receiver_listen: SocketAddr,
    /// Seconds each ceiling measurement lasts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    ceiling_secs: u64,
    /// Longest ingest phase; nothing is sent after it.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    max_duration: Duration,
    /// Longest wait for the last deliveries once ingest is done.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Before each scenario, wait up to this long for other work on the machine to stop
    /// (busy below 0.3 cores); 0s = don't wait. A busy start is noted in the report.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    quiet_wait: Duration,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Print the tables as Markdown.
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
    /// Keep the spawned servers' data directories (their paths are printed).
    #[arg(long)]
    keep_data: bool,
    /// Exit with status 1 when a preset's target is missed.
    #[arg(long)]
    check_targets: bool,
    /// PostgreSQL for `--scenario cdc` (wal_level=logical; a user that may replicate and
    /// create tables; the bench creates and drops `estafeta_bench_cdc` and its slots).
    #[arg(
        long,
        env = "ESTAFETA_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
    /// NATS with JetStream for `--scenario nats` (the bench creates and deletes two
    /// streams named `BENCH_IN_…` and `BENCH_OUT_…`).
    #[arg(
        long,
        env = "ESTAFETA_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// Kafka brokers for `--scenario kafka` (the bench creates and deletes two topics named
    /// `bench-in-…` and `bench-out-…`).
    #[arg(
        long,
        env = "ESTAFETA_BENCH_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    kafka_brokers: String,
    /// `--scenario enrich`: how long the bench's look-up API waits before each answer.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    lookup_delay: Duration,
    /// `--scenario enrich`: distinct documents in the cached phase (events name them in turn).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    lookup_documents: u64,
    /// `--scenario enrich`: the enrich step's `concurrency` [default: the step's, 256].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    lookup_concurrency: Option<u64>,
}

/// The preset scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioName {
    /// One event per ingest request, as fast as possible.
    #[value(name = "single")]
    Single,
    /// 100 events per ingest request, as fast as possible.
    #[value(name = "batch100")]
    Batch100,
    /// 100 events per ingest request and up to 100 per webhook request.
    #[value(name = "batch100-batched")]
    Batch100Batched,
    /// A steady 2,000 events/s, one per request: the latency scenario.
    #[value(name = "steady2k")]
    Steady2k,
    /// An idle server's memory.
    #[value(name = "idle")]
    Idle,
    /// PostgreSQL change data capture: one transaction of --events rows (default 100,000)
    /// through a bare replication client, pg_recvlogical and Estafeta (needs --pg-url).
    #[value(name = "cdc")]
    Cdc,
    /// An outbox table of --events pending rows (default 50,000) in PostgreSQL, drained by
    /// a bare SQL loop and by Estafeta with status write-back (needs --pg-url).
    #[value(name = "outbox")]
    Outbox,
    /// A route that looks each event up in a slow HTTP API before delivering: baseline
    /// without the step, a document per event, repeating documents behind a cache.
    #[value(name = "enrich")]
    Enrich,
    /// NATS JetStream in, NATS JetStream out: the broker's own producer and consumer, then
    /// Estafeta's source → durable log → destination (--events, default 200,000; needs
    /// --nats-url).
    #[value(name = "nats")]
    Nats,
    /// Kafka in, Kafka out: librdkafka's own producer and consumer group, then Estafeta's
    /// source → durable log → destination (--events, default 500,000; needs
    /// --kafka-brokers).
    #[value(name = "kafka")]
    Kafka,
    /// All of the above.
    #[value(name = "all")]
    All,
}

/// Peak RSS allowed under load, in bytes (the 200 MB).
const PEAK_RSS_GOAL: u64 = 200_000_000;
/// Idle RSS allowed, in bytes (the 30 MB).
const IDLE_RSS_GOAL: u64 = 30_000_000;

enum Step {
    Idle,
    Load(Plan),
}

fn steps(args: &BenchArgs) -> Vec<Step> {
    let load = |name: &str, events: u64, batch: u64, rate: f64, dest_batch: Option<usize>, goal| {
        Step::Load(Plan {
            name: name.to_owned(),
            events: args.events.unwrap_or(events),
            batch,
            rate,
            dest_batch,
            goal,
            enrich: None,
        })
    };
    let single = || {
        load(
            "single",
            50_000,
            1,
            0.0,
            None,
            Goal::DeliveredPerSec(10_000.0),
        )
    };
    let batch100 = || {
        load(
            "batch100",
            300_000,
            100,
            0.0,
            None,
            Goal::DeliveredPerSec(30_000.0),
        )
    };
    let batched = || {
        load(
            "batch100-batched",
            300_000,
            100,
            0.0,
            Some(100),
            Goal::DeliveredPerSec(30_000.0),
        )
    };
    let steady = || load("steady2k", 60_000, 1, 2_000.0, None, Goal::P99Ms(25.0));
    match args.scenario {
        None => vec![load(
            "custom",
            50_000,
            args.batch,
            args.rate.max(0.0),
            (args.dest_batch > 1).then_some(args.dest_batch),
            Goal::None,
        )],
        Some(ScenarioName::Single) => vec![single()],
        Some(ScenarioName::Batch100) => vec![batch100()],
        Some(ScenarioName::Batch100Batched) => vec![batched()],
        Some(ScenarioName::Steady2k) => vec![steady()],
        Some(ScenarioName::Idle) => vec![Step::Idle],
        Some(
            ScenarioName::Cdc | ScenarioName::Outbox | ScenarioName::Nats | ScenarioName::Kafka,
        ) => Vec::new(),
        Some(ScenarioName::Enrich) => enrich::plans(args).into_iter().map(Step::Load).collect(),
        Some(ScenarioName::All) => vec![Step::Idle, single(), batch100(), batched(), steady()],
    }
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    clock::now_ns();
    let external = match &args.url {
        Some(_) if args.scenario == Some(ScenarioName::Enrich) => {
            bail!(
                "--scenario enrich configures the route's look-up step itself: it spawns its \
                 own server and cannot be used with --url"
            );
        }
        Some(url) => {
            if args.receiver_listen.port() == 0 {
                bail!(
                    "with --url, give --receiver-listen a fixed address (e.g. 127.0.0.1:9100) and \
                     route `bench.*` on that server to http://ADDR/hook"
                );
            }
            let token = args
                .token
                .clone()
                .or_else(|| std::env::var("ESTAFETA_ADMIN_TOKEN").ok())
                .context("--url needs a token: --token, ESTAFETA_TOKEN or ESTAFETA_ADMIN_TOKEN")?;
            Some((url.trim_end_matches('/').to_owned(), token))
        }
        None => None,
    };
    let binary = match &args.server_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    match args.scenario {
        Some(ScenarioName::Cdc) => return cdc::run(&args, binary).await,
        Some(ScenarioName::Outbox) => return outbox::run(&args, binary).await,
        Some(ScenarioName::Nats) => return nats::run(&args, binary).await,
        Some(ScenarioName::Kafka) => return kafka::run(&args, binary).await,
        _ => {}
    }
    let steps = steps(&args);
    let mut runner = Runner::new(&args, binary, external);
    let mut report = BenchReport {
        version: env!("CARGO_PKG_VERSION"),
        cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        raw_ceiling_req_per_sec: None,
        idle: None,
        scenarios: Vec::new(),
    };
    if steps.iter().any(|s| matches!(s, Step::Load(_))) {
        report.raw_ceiling_req_per_sec = Some(runner.raw_ceiling().await?);
    }
    for step in &steps {
        match step {
            Step::Idle => report.idle = Some(runner.idle(IDLE_RSS_GOAL).await?),
            Step::Load(plan) => report
                .scenarios
                .push(runner.load(plan, PEAK_RSS_GOAL).await?),
        }
    }
    enrich::compare_with_baseline(&mut report.scenarios);
    emit(&args, &report, || report.render(args.markdown))?;
    let lost = report.scenarios.iter().any(|s| !s.complete || s.failed > 0);
    let missed = report
        .scenarios
        .iter()
        .flat_map(|s| &s.targets)
        .chain(report.idle.iter().filter_map(|i| i.target.as_ref()))
        .any(|t| !t.met);
    if lost {
        eprintln!("error: some events were not accepted or not delivered (see the notes above)");
        return Ok(ExitCode::FAILURE);
    }
    if missed && args.check_targets {
        eprintln!("error: a target was missed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a report: JSON to `--json-out` if given, and JSON or the text on stdout.
fn emit<R: serde::Serialize>(
    args: &BenchArgs,
    report: &R,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("rendering JSON")?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", text());
    }
    Ok(())
}

/// Exit status of the database scenarios: every row delivered, and the targets met when
/// `--check-targets` asks for them.
fn outcome(args: &BenchArgs, complete: bool, targets_met: bool) -> ExitCode {
    if !complete {
        eprintln!("error: not every row was delivered");
        return ExitCode::FAILURE;
    }
    if args.check_targets && !targets_met {
        eprintln!("error: a target was missed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
