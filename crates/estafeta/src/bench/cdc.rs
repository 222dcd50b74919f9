//! `estafeta bench --scenario cdc`: PostgreSQL change data capture end to end. One
//! transaction of N rows is committed three times: read by a bare replication client that
//! only decodes (the ceiling), by `pg_recvlogical` (PostgreSQL's own client, writing to
//! /dev/null), and by Estafeta — stored durably in its log and delivered to the bench's
//! webhook receiver in batches. Rates are rows per second from the commit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use pg_walstream::{
    EventType, LogicalReplicationStream, PgReplicationConnection, ReplicationStreamConfig,
    StreamingMode,
};
use serde::Serialize;

use super::BenchArgs;
use super::procfs::{self};
use super::receiver::Receiver;
use super::server::{ServerProcess, ServerSpec};

const TABLE: &str = "estafeta_bench_cdc";
const PUBLICATION: &str = "estafeta_bench_cdc";
const BARE_SLOT: &str = "estafeta_bench_bare";
const RECV_SLOT: &str = "estafeta_bench_recvlogical";
const SOURCE_SLOT: &str = "estafeta_bench_source";
/// Targets from the issue.
const CAPTURE_SHARE_GOAL: f64 = 0.60;
const DELIVERED_GOAL: f64 = 30_000.0;

/// What one CDC run measured.
#[derive(Debug, Serialize)]
pub(super) struct CdcReport {
    rows: u64,
    payload_bytes: usize,
    /// Rows committed per second by the INSERT of the Estafeta phase.
    committed_per_sec: f64,
    /// The bare decode-only replication client.
    bare_client_rows_per_sec: f64,
    /// `pg_recvlogical` to /dev/null (`None` when the program is not installed).
    pg_recvlogical_rows_per_sec: Option<f64>,
    /// Estafeta with no route: rows durably in the log per second after the commit.
    captured_per_sec: f64,
    /// Estafeta while also delivering every row: rows durably in the log per second.
    captured_while_delivering_per_sec: f64,
    /// Estafeta: rows delivered to the webhook per second after the commit.
    delivered_per_sec: f64,
    delivered: u64,
    duplicates: u64,
    webhook_requests: u64,
    server_peak_rss_bytes: Option<u64>,
    server_cpu_seconds: Option<f64>,
    capture_only_cpu_seconds: Option<f64>,
    capture_share_of_bare: f64,
    capture_target_met: bool,
    delivered_target_met: bool,
}

pub(super) struct Sql {
    conn: PgReplicationConnection,
}

impl Sql {
    pub(super) async fn connect(url: &str) -> anyhow::Result<Self> {
        let conn = PgReplicationConnection::connect_async(url)
            .await
            .with_context(|| format!("connecting to {}", redact(url)))?;
        Ok(Self { conn })
    }

    pub(super) async fn exec(&mut self, sql: &str) -> anyhow::Result<Option<String>> {
        let r = self
            .conn
            .exec_async(sql)
            .await
            .with_context(|| format!("running `{sql}`"))?;
        Ok(if r.ntuples() > 0 {
            r.get_value(0, 0)
        } else {
            None
        })
    }

    async fn drop_slot(&mut self, slot: &str) -> anyhow::Result<()> {
        self.exec(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}' AND NOT active"
        ))
        .await
        .map(|_| ())
    }

    /// Inserts `rows` rows numbered from `first` in one transaction; returns its duration.
    async fn insert(&mut self, first: u64, rows: u64, payload: usize) -> anyhow::Result<Duration> {
        let t = Instant::now();
        self.exec(&format!(
            "INSERT INTO {TABLE} SELECT g, 0, repeat('x', {payload}) FROM generate_series({first}, {}) g",
            first + rows - 1
        ))
        .await?;
        Ok(t.elapsed())
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn with_param(url: &str, kv: &str) -> String {
    format!("{url}{}{kv}", if url.contains('?') { '&' } else { '?' })
}

pub(super) async fn run(args: &BenchArgs, binary: PathBuf) -> anyhow::Result<ExitCode> {
    estafeta_destinations::install_crypto_provider();
    super::probe::wait_quiet(args.quiet_wait, procfs::ticks_per_sec()).await;
    let rows = args.events.unwrap_or(100_000);
    let url = args.pg_url.clone();
    let payload = args.payload_bytes;
    let mut sql = Sql::connect(&url).await?;
    if sql.exec("SHOW wal_level").await?.as_deref() != Some("logical") {
        bail!("the bench's PostgreSQL needs wal_level=logical (see docs/sources/postgres.md)");
    }
    for slot in [BARE_SLOT, RECV_SLOT, SOURCE_SLOT] {
        sql.drop_slot(slot).await?;
    }
    sql.exec(&format!("DROP TABLE IF EXISTS {TABLE}")).await?;
    sql.exec(&format!(
        "CREATE TABLE {TABLE} (seq bigint PRIMARY KEY, sent_at_ns bigint, payload text)"
    ))
    .await?;
    sql.exec(&format!("DROP PUBLICATION IF EXISTS {PUBLICATION}"))
        .await?;
    sql.exec(&format!(
        "CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}"
    ))
    .await?;

    eprintln!("cdc: {rows} rows of {payload} B per phase; measuring the bare replication client…");
    let bare = bare_client(&url, &mut sql, rows, payload).await?;
    eprintln!("cdc: bare client {bare:.0} rows/s; measuring pg_recvlogical…");
    let recv = pg_recvlogical(&url, &mut sql, rows, payload).await?;
    eprintln!("cdc: running Estafeta…");
    let result = estafeta(args, binary, &url, &mut sql, rows, payload, bare, recv).await;
    for slot in [BARE_SLOT, RECV_SLOT, SOURCE_SLOT] {
        let _ = sql.drop_slot(slot).await;
    }
    let _ = sql
        .exec(&format!("DROP PUBLICATION IF EXISTS {PUBLICATION}"))
        .await;
    let _ = sql.exec(&format!("DROP TABLE IF EXISTS {TABLE}")).await;
    let report = result?;
    super::emit(args, &report, || render(&report, args.markdown))?;
    Ok(super::outcome(
        args,
        report.delivered >= report.rows,
        report.capture_target_met && report.delivered_target_met,
    ))
}

/// Rows per second a replication client that only decodes reads one committed transaction.
async fn bare_client(url: &str, sql: &mut Sql, rows: u64, payload: usize) -> anyhow::Result<f64> {
    let config = ReplicationStreamConfig::builder(BARE_SLOT, PUBLICATION)
        .with_protocol_version(1)
        .with_streaming_mode(StreamingMode::Off);
    let mut stream =
        LogicalReplicationStream::new(&with_param(url, "replication=database"), config)
            .await
            .context("opening a replication connection")?;
    stream
        .ensure_replication_slot()
        .await
        .context("creating the bench slot")?;
    sql.insert(rows, rows, payload).await?;
    let start = Instant::now();
    stream.start(None).await.context("starting replication")?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut events = stream.into_stream(cancel.clone());
    let mut seen = 0_u64;
    let deadline = start + Duration::from_secs(600);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(60), events.next()).await {
            Ok(Some(Ok(ev))) => match ev.event_type {
                EventType::Insert { .. } => seen += 1,
                EventType::Commit { .. } if seen >= rows => break,
                _ => {}
            },
            Ok(Some(Err(e))) => return Err(e).context("reading the replication stream"),
            Ok(None) | Err(_) => bail!("the bare replication client stopped after {seen} rows"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = events.shutdown().await;
    cancel.cancel();
    drop(events);
    drop_when_free(sql, BARE_SLOT).await;
    Ok(rate(rows, secs))
}

async fn drop_when_free(sql: &mut Sql, slot: &str) {
    for _ in 0..50 {
        let active = sql
            .exec(&format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"
            ))
            .await
            .ok()
            .flatten();
        if active.as_deref() == Some("0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = sql.drop_slot(slot).await;
}

/// The same with `pg_recvlogical` writing to /dev/null; `None` when it is not installed.
async fn pg_recvlogical(
    url: &str,
    sql: &mut Sql,
    rows: u64,
    payload: usize,
) -> anyhow::Result<Option<f64>> {
    let Some(program) = find_pg_program("pg_recvlogical") else {
        eprintln!("cdc: pg_recvlogical not found; its ceiling is skipped");
        return Ok(None);
    };
    let status = tokio::process::Command::new(&program)
        .args([
            "-d",
            url,
            "--slot",
            RECV_SLOT,
            "--create-slot",
            "-P",
            "pgoutput",
        ])
        .status()
        .await
        .context("creating a slot with pg_recvlogical")?;
    if !status.success() {
        bail!("pg_recvlogical --create-slot failed");
    }
    sql.insert(2 * rows, rows, payload).await?;
    let end = sql
        .exec("SELECT pg_current_wal_lsn()::text")
        .await?
        .context("reading the WAL position")?;
    let start = Instant::now();
    let status = tokio::process::Command::new(&program)
        .args([
            "-d",
            url,
            "--slot",
            RECV_SLOT,
            "--start",
            "-E",
            &end,
            "-f",
            "/dev/null",
        ])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            &format!("publication_names={PUBLICATION}"),
        ])
        .status()
        .await
        .context("running pg_recvlogical")?;
    let secs = start.elapsed().as_secs_f64();
    drop_when_free(sql, RECV_SLOT).await;
    if !status.success() {
        bail!("pg_recvlogical --start failed");
    }
    Ok(Some(rate(rows, secs)))
}

fn find_pg_program(name: &str) -> Option<PathBuf> {
    let bindir = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidates = bindir
        .into_iter()
        .chain(
            std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin")),
        )
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()),
        );
    candidates.map(|d| d.join(name)).find(|p| p.exists())
}

/// What one Estafeta phase measured.
struct Phase {
    committed_per_sec: f64,
    stored: Option<Duration>,
    delivered: Option<Duration>,
    counts: super::receiver::Counts,
    cpu: Option<Duration>,
    peak: Option<u64>,
}

/// Spawns a server whose `kind: postgres` source captures the bench table, commits `rows`
/// rows from `first`, and times storing (and, with `deliver`, delivering) them.
#[allow(clippy::too_many_arguments)]
async fn phase(
    args: &BenchArgs,
    binary: PathBuf,
    url: &str,
    sql: &mut Sql,
    first: u64,
    rows: u64,
    payload: usize,
    deliver: bool,
) -> anyhow::Result<Phase> {
    let receiver = Receiver::start(args.receiver_listen, rows).await?;
    let token = format!("bench-{}", rand::random::<u64>());
    let source_yaml = format!(
        "  - id: pg\n    kind: postgres\n    url: {}\n    tables: [public.{TABLE}]\n    slot: {SOURCE_SLOT}\n    publication: {PUBLICATION}\n    manage_publication: false\n    snapshot: never\n",
        serde_json::to_string(url).context("quoting the URL")?
    );
    let spec = ServerSpec::with_source(
        args,
        binary,
        token.clone(),
        receiver.url(),
        source_yaml,
        deliver,
    );
    let server = ServerProcess::spawn(&spec).await?;
    let http = reqwest::Client::new();
    let status_url = format!("{}/v1/sources/pg", server.base_url());
    let events_stored = || async {
        let v: serde_json::Value = http
            .get(&status_url)
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some((
            v["state"].as_str().unwrap_or_default().to_owned(),
            v["events"].as_u64().unwrap_or(0),
        ))
    };
    let ready = Instant::now();
    loop {
        match events_stored().await {
            Some((state, _)) if state == "running" => break,
            Some((state, _)) if state == "failed" => bail!("the PostgreSQL source failed to start"),
            _ if ready.elapsed() > Duration::from_secs(60) => {
                bail!("the PostgreSQL source did not start")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let cpu_before = server.cpu_time();
    let insert = sql.insert(first, rows, payload).await?;
    let committed = Instant::now();
    let deadline = committed + Duration::from_secs(600);
    let mut stored = None;
    let mut delivered = None;
    while (stored.is_none() || (deliver && delivered.is_none())) && Instant::now() < deadline {
        if stored.is_none() && events_stored().await.is_some_and(|(_, n)| n >= rows) {
            stored = Some(committed.elapsed());
        }
        if delivered.is_none() && receiver.recorder().counts().unique >= rows {
            delivered = Some(committed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counts = receiver.recorder().counts();
    let cpu = cpu_before.and_then(|b| server.cpu_time().map(|a| a.saturating_sub(b)));
    let peak = server.peak_rss();
    server.stop().await?;
    drop_when_free(sql, SOURCE_SLOT).await;
    Ok(Phase {
        committed_per_sec: rate(rows, insert.as_secs_f64()),
        stored,
        delivered,
        counts,
        cpu,
        peak,
    })
}

#[allow(clippy::too_many_arguments)]
async fn estafeta(
    args: &BenchArgs,
    binary: PathBuf,
    url: &str,
    sql: &mut Sql,
    rows: u64,
    payload: usize,
    bare: f64,
    recv: Option<f64>,
) -> anyhow::Result<CdcReport> {
    eprintln!("cdc: Estafeta capturing into its log only (no route)…");
    let capture = phase(
        args,
        binary.clone(),
        url,
        sql,
        3 * rows,
        rows,
        payload,
        false,
    )
    .await?;
    eprintln!("cdc: Estafeta capturing and delivering…");
    let full = phase(args, binary, url, sql, 0, rows, payload, true).await?;
    let secs = |d: Option<Duration>| d.map_or(f64::INFINITY, |d| d.as_secs_f64());
    let captured = rate(rows, secs(capture.stored));
    let captured_while_delivering = rate(rows, secs(full.stored));
    let delivered = rate(full.counts.unique, secs(full.delivered));
    let share = if bare > 0.0 { captured / bare } else { 0.0 };
    Ok(CdcReport {
        rows,
        payload_bytes: payload,
        committed_per_sec: full.committed_per_sec,
        bare_client_rows_per_sec: bare,
        pg_recvlogical_rows_per_sec: recv,
        captured_per_sec: captured,
        captured_while_delivering_per_sec: captured_while_delivering,
        delivered_per_sec: delivered,
        delivered: full.counts.unique,
        duplicates: full.counts.duplicates,
        webhook_requests: full.counts.requests,
        server_peak_rss_bytes: full.peak,
        server_cpu_seconds: full.cpu.map(|d| d.as_secs_f64()),
        capture_only_cpu_seconds: capture.cpu.map(|d| d.as_secs_f64()),
        capture_share_of_bare: share,
        capture_target_met: share >= CAPTURE_SHARE_GOAL,
        delivered_target_met: delivered >= DELIVERED_GOAL,
    })
}

#[allow(clippy::cast_precision_loss)]
pub(super) fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 && secs.is_finite() {
        n as f64 / secs
    } else {
        0.0
    }
}

fn render(r: &CdcReport, markdown: bool) -> String {
    let mut t = comfy_table::Table::new();
    if markdown {
        t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    }
    t.set_header(["CDC: one transaction", "rows/s", "vs bare client", "target"]);
    let ratio = |v: f64| {
        if r.bare_client_rows_per_sec > 0.0 {
            format!("{:.2}×", v / r.bare_client_rows_per_sec)
        } else {
            String::new()
        }
    };
    let n = |v: f64| format!("{v:.0}");
    t.add_row([
        "committed by the INSERT".to_owned(),
        n(r.committed_per_sec),
        ratio(r.committed_per_sec),
        String::new(),
    ]);
    t.add_row([
        "bare replication client (decode only)".to_owned(),
        n(r.bare_client_rows_per_sec),
        "1.00×".to_owned(),
        String::new(),
    ]);
    t.add_row([
        "pg_recvlogical → /dev/null".to_owned(),
        r.pg_recvlogical_rows_per_sec.map_or("n/a".to_owned(), n),
        r.pg_recvlogical_rows_per_sec.map_or(String::new(), ratio),
        String::new(),
    ]);
    t.add_row([
        "Estafeta: durably in the log (no route)".to_owned(),
        n(r.captured_per_sec),
        ratio(r.captured_per_sec),
        format!(
            "≥ 0.60× ({})",
            if r.capture_target_met {
                "met"
            } else {
                "missed"
            }
        ),
    ]);
    t.add_row([
        "Estafeta: durably in the log, while delivering".to_owned(),
        n(r.captured_while_delivering_per_sec),
        ratio(r.captured_while_delivering_per_sec),
        String::new(),
    ]);
    t.add_row([
        "Estafeta: delivered (webhook batches)".to_owned(),
        n(r.delivered_per_sec),
        ratio(r.delivered_per_sec),
        format!(
            "≥ 30,000/s ({})",
            if r.delivered_target_met {
                "met"
            } else {
                "missed"
            }
        ),
    ]);
    format!(
        "Scenario `cdc`: {} rows × {} B in one transaction; {} delivered, {} duplicates, {} webhook requests; server peak RSS {}, CPU {}\n{t}\n",
        r.rows,
        r.payload_bytes,
        r.delivered,
        r.duplicates,
        r.webhook_requests,
        r.server_peak_rss_bytes
            .map_or("n/a".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6)),
        r.server_cpu_seconds
            .map_or("n/a".to_owned(), |s| format!("{s:.1} s")),
    )
}
