//! `estafeta bench --scenario outbox`: an outbox table of N pending rows in PostgreSQL,
//! drained twice — by a bare SQL loop that claims and marks batches (the database's own
//! ceiling for this pattern) and by Estafeta's `kind: outbox` source, which also stores each
//! row durably in its log and delivers it to the bench's webhook receiver.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::BenchArgs;
use super::cdc::{Sql, rate};
use super::procfs::{self};
use super::receiver::Receiver;
use super::server::{ServerProcess, ServerSpec};

const TABLE: &str = "estafeta_bench_outbox";
const BATCH: u64 = 500;
/// The target: rows per second with status write-back.
const GOAL: f64 = 5_000.0;

#[derive(Debug, Serialize)]
pub(super) struct OutboxReport {
    rows: u64,
    payload_bytes: usize,
    /// Claim + mark in batches of 500 with plain SQL, nothing else.
    bare_sql_rows_per_sec: f64,
    /// Estafeta: rows stored in the log and marked PROCESSED per second.
    processed_per_sec: f64,
    /// Estafeta: rows delivered to the webhook per second.
    delivered_per_sec: f64,
    delivered: u64,
    duplicates: u64,
    server_cpu_seconds: Option<f64>,
    server_peak_rss_bytes: Option<u64>,
    target_met: bool,
}

async fn fill(sql: &mut Sql, rows: u64, payload: usize) -> anyhow::Result<()> {
    sql.exec(&format!("DROP TABLE IF EXISTS {TABLE}")).await?;
    sql.exec(&format!(
        "CREATE TABLE {TABLE} (id bigint PRIMARY KEY, event_type text NOT NULL, payload jsonb NOT NULL, \
         status varchar(12) NOT NULL DEFAULT 'PENDING', processed_at timestamptz)"
    ))
    .await?;
    // As the docs recommend: pending rows found through a partial index.
    sql.exec(&format!(
        "CREATE INDEX {TABLE}_pending ON {TABLE} (id) WHERE status = 'PENDING'"
    ))
    .await?;
    sql.exec(&format!(
        "INSERT INTO {TABLE} (id, event_type, payload) SELECT g, 'bench.outbox', \
         jsonb_build_object('seq', g - 1, 'sent_at_ns', 0, 'pad', repeat('x', {payload})) \
         FROM generate_series(1, {rows}) g"
    ))
    .await?;
    sql.exec(&format!("VACUUM ANALYZE {TABLE}")).await?;
    Ok(())
}

pub(super) async fn run(args: &BenchArgs, binary: PathBuf) -> anyhow::Result<ExitCode> {
    estafeta_destinations::install_crypto_provider();
    super::probe::wait_quiet(args.quiet_wait, procfs::ticks_per_sec()).await;
    let rows = args.events.unwrap_or(50_000);
    let payload = args.payload_bytes;
    let url = args.pg_url.clone();
    let mut sql = Sql::connect(&url).await?;

    eprintln!("outbox: {rows} pending rows of {payload} B; the bare SQL loop…");
    fill(&mut sql, rows, payload).await?;
    let start = Instant::now();
    loop {
        let n: u64 = sql
            .exec(&format!(
                "WITH c AS (SELECT id FROM {TABLE} WHERE status = 'PENDING' ORDER BY id LIMIT {BATCH} FOR UPDATE SKIP LOCKED), \
                 u AS (UPDATE {TABLE} t SET status = 'PROCESSED', processed_at = now() FROM c WHERE t.id = c.id RETURNING t.payload) \
                 SELECT count(*) FROM u"
            ))
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    let bare = rate(rows, start.elapsed().as_secs_f64());

    eprintln!("outbox: bare SQL {bare:.0} rows/s; running Estafeta…");
    fill(&mut sql, rows, payload).await?;
    let receiver = Receiver::start(args.receiver_listen, rows).await?;
    let token = format!("bench-{}", rand::random::<u64>());
    let source_yaml = format!(
        "  - id: pg\n    kind: outbox\n    url: {}\n    table: public.{TABLE}\n    payload_column: payload\n    type_column: event_type\n    processed_at_column: processed_at\n    batch_size: {BATCH}\n    poll_interval: 50ms\n",
        serde_json::to_string(&url).context("quoting the URL")?
    );
    let spec = ServerSpec::with_source(args, binary, token, receiver.url(), source_yaml, true);
    let server = ServerProcess::spawn(&spec).await?;
    // From the moment the server listens: the source connects, claims, stores and marks.
    let start = Instant::now();
    let cpu_before = server.cpu_time();
    let deadline = start + Duration::from_secs(600);
    let mut processed_at = None;
    let mut delivered_at = None;
    while (processed_at.is_none() || delivered_at.is_none()) && Instant::now() < deadline {
        if processed_at.is_none() {
            let left: u64 = sql
                .exec(&format!(
                    "SELECT count(*) FROM {TABLE} WHERE status <> 'PROCESSED'"
                ))
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX);
            if left == 0 {
                processed_at = Some(start.elapsed());
            }
        }
        if delivered_at.is_none() && receiver.recorder().counts().unique >= rows {
            delivered_at = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = receiver.recorder().counts();
    let cpu = cpu_before.and_then(|b| server.cpu_time().map(|a| a.saturating_sub(b)));
    let peak = server.peak_rss();
    server.stop().await?;
    let _ = sql.exec(&format!("DROP TABLE IF EXISTS {TABLE}")).await;
    let Some(processed) = processed_at else {
        bail!("not every outbox row was marked PROCESSED within 10 minutes");
    };
    let processed_rate = rate(rows, processed.as_secs_f64());
    let report = OutboxReport {
        rows,
        payload_bytes: payload,
        bare_sql_rows_per_sec: bare,
        processed_per_sec: processed_rate,
        delivered_per_sec: rate(
            counts.unique,
            delivered_at.map_or(600.0, |d| d.as_secs_f64()),
        ),
        delivered: counts.unique,
        duplicates: counts.duplicates,
        server_cpu_seconds: cpu.map(|d| d.as_secs_f64()),
        server_peak_rss_bytes: peak,
        target_met: processed_rate >= GOAL,
    };
    super::emit(args, &report, || render(&report, args.markdown))?;
    Ok(super::outcome(
        args,
        report.delivered >= rows,
        report.target_met,
    ))
}

fn render(r: &OutboxReport, markdown: bool) -> String {
    let mut t = comfy_table::Table::new();
    if markdown {
        t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    }
    t.set_header(["outbox: drain the table", "rows/s", "vs bare SQL", "target"]);
    let ratio = |v: f64| {
        if r.bare_sql_rows_per_sec > 0.0 {
            format!("{:.2}×", v / r.bare_sql_rows_per_sec)
        } else {
            String::new()
        }
    };
    t.add_row([
        format!("bare SQL: claim + mark {BATCH} at a time"),
        format!("{:.0}", r.bare_sql_rows_per_sec),
        "1.00×".to_owned(),
        String::new(),
    ]);
    t.add_row([
        "Estafeta: stored and marked PROCESSED".to_owned(),
        format!("{:.0}", r.processed_per_sec),
        ratio(r.processed_per_sec),
        format!(
            "≥ 5,000/s ({})",
            if r.target_met { "met" } else { "missed" }
        ),
    ]);
    t.add_row([
        "Estafeta: delivered (webhook batches)".to_owned(),
        format!("{:.0}", r.delivered_per_sec),
        ratio(r.delivered_per_sec),
        String::new(),
    ]);
    #[allow(clippy::cast_precision_loss)]
    let rss = r
        .server_peak_rss_bytes
        .map_or("n/a".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6));
    format!(
        "Scenario `outbox`: {} rows × {} B; {} delivered, {} duplicates; server peak RSS {rss}, CPU {}\n{t}\n",
        r.rows,
        r.payload_bytes,
        r.delivered,
        r.duplicates,
        r.server_cpu_seconds
            .map_or("n/a".to_owned(), |s| format!("{s:.1} s")),
    )
}
