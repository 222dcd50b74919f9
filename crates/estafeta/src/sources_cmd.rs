//! `estafeta sources list|get`: the state of each source on a running server, with initial
//! snapshot progress and replication-slot health; `get --watch` follows a snapshot with
//! progress bars until it finishes.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use comfy_table::Table;
use serde_json::Value;

use crate::cli::ClientArgs;
use crate::client::{Client, s};

#[derive(Debug, Subcommand)]
pub(crate) enum SourcesCommand {
    /// List sources with their state, events taken in and position.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one source: snapshot progress per table and slot health.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// Source id.
        id: String,
        /// Follow the initial snapshot with progress bars until it finishes.
        #[arg(long)]
        watch: bool,
    },
}

pub(crate) async fn run(cmd: SourcesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SourcesCommand::List { client } => {
            let c = Client::new(&client)?;
            let v = c
                .call(reqwest::Method::GET, "/v1/sources", None, &[])
                .await?;
            c.print(&v, list_table);
        }
        SourcesCommand::Get { client, id, watch } => {
            let c = Client::new(&client)?;
            let path = format!("/v1/sources/{id}");
            if watch && !c.json {
                return follow(&c, &path).await;
            }
            let v = c.call(reqwest::Method::GET, &path, None, &[]).await?;
            c.print(&v, detail_table);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_table(v: &Value) -> Table {
    let mut t = Table::new();
    t.set_header([
        "id", "kind", "state", "events", "position", "slot lag", "note",
    ]);
    for src in v["items"].as_array().into_iter().flatten() {
        let note = [s(src, "error"), s(src, "warning")]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        t.add_row([
            s(src, "id"),
            s(src, "kind"),
            s(src, "state"),
            s(src, "events"),
            s(src, "position"),
            src["slot"]["lag_bytes"]
                .as_u64()
                .map(bytes)
                .unwrap_or_default(),
            note,
        ]);
    }
    t
}

fn detail_table(v: &Value) -> Table {
    let mut t = Table::new();
    t.set_header(["", ""]);
    for k in [
        "id",
        "kind",
        "state",
        "events",
        "last_event_at",
        "position",
        "reconnects",
        "error",
        "warning",
    ] {
        let val = s(v, k);
        if !val.is_empty() {
            t.add_row([k.to_owned(), val]);
        }
    }
    let slot = &v["slot"];
    if slot.is_object() {
        t.add_row(["slot".to_owned(), s(slot, "slot")]);
        t.add_row([
            "retained WAL".to_owned(),
            slot["retained_wal_bytes"]
                .as_u64()
                .map(bytes)
                .unwrap_or_default(),
        ]);
        t.add_row([
            "lag".to_owned(),
            slot["lag_bytes"].as_u64().map(bytes).unwrap_or_default(),
        ]);
        t.add_row(["wal status".to_owned(), s(slot, "wal_status")]);
    }
    for table in v["snapshot"]["tables"].as_array().into_iter().flatten() {
        t.add_row([
            format!("snapshot {}", s(table, "table")),
            format!(
                "{} of ~{} rows{}",
                s(table, "rows_copied"),
                s(table, "rows_estimated"),
                if table["done"] == true { " (done)" } else { "" }
            ),
        ]);
    }
    t
}

/// Progress bars per table until the snapshot finishes (or the source fails).
async fn follow(c: &Client, path: &str) -> anyhow::Result<ExitCode> {
    let multi = indicatif::MultiProgress::new();
    let style =
        indicatif::ProgressStyle::with_template("{prefix:30} {bar:40} {pos}/{len} rows {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let mut bars: Vec<indicatif::ProgressBar> = Vec::new();
    loop {
        let v = c.call(reqwest::Method::GET, path, None, &[]).await?;
        let tables = v["snapshot"]["tables"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, table) in tables.iter().enumerate() {
            if bars.len() <= i {
                let b = multi.add(indicatif::ProgressBar::new(0));
                b.set_style(style.clone());
                b.set_prefix(s(table, "table"));
                bars.push(b);
            }
            let copied = table["rows_copied"].as_u64().unwrap_or(0);
            let estimated = table["rows_estimated"].as_u64().unwrap_or(0).max(copied);
            bars[i].set_length(estimated);
            bars[i].set_position(copied);
            if table["done"] == true {
                bars[i].finish_with_message("done");
            }
        }
        let state = s(&v, "state");
        if v["snapshot"]["finished_at"].is_string()
            || (v["snapshot"].is_null() && state == "running")
        {
            println!("{}: {state}", s(&v, "id"));
            return Ok(ExitCode::SUCCESS);
        }
        if state == "failed" {
            eprintln!("{}: failed: {}", s(&v, "id"), s(&v, "error"));
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[allow(clippy::cast_precision_loss)]
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
