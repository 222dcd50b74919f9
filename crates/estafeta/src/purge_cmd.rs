//! `estafeta purge events|objects` (delete on demand through `POST /v1/purge`, with
//! `--dry-run` to see what would go) and `estafeta audit` (the audit log of deletions).
//! Both need the admin token.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use comfy_table::Table;
use serde_json::{Value, json};

use crate::cli::ClientArgs;
use crate::client::{Client, s};

#[derive(Debug, Subcommand)]
pub(crate) enum PurgeCommand {
    /// Delete events received before a time (with their deliveries and attempts); events
    /// with unfinished deliveries are kept.
    Events {
        #[command(flatten)]
        client: ClientArgs,
        /// Events received strictly before this RFC 3339 time.
        #[arg(long)]
        before: String,
        /// Only events of this source.
        #[arg(long)]
        source: Option<String>,
        /// Only events of this type.
        #[arg(long = "type")]
        ty: Option<String>,
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete objects under a prefix of an `s3` or `file` destination.
    Objects {
        #[command(flatten)]
        client: ClientArgs,
        /// The destination id.
        #[arg(long)]
        destination: String,
        /// Key prefix from the root (default: everything).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Objects last modified longer ago than this (e.g. `30d`).
        #[arg(long, conflicts_with = "before", required_unless_present = "before")]
        older_than: Option<String>,
        /// Objects last modified before this RFC 3339 time.
        #[arg(long)]
        before: Option<String>,
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `estafeta audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// How many entries, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

pub(crate) async fn purge(cmd: PurgeCommand) -> anyhow::Result<ExitCode> {
    let (client, body) = match cmd {
        PurgeCommand::Events {
            client,
            before,
            source,
            ty,
            dry_run,
        } => {
            let mut events = json!({ "before": before });
            if let Some(source) = source {
                events["source"] = json!(source);
            }
            if let Some(ty) = ty {
                events["type"] = json!(ty);
            }
            (client, json!({ "events": events, "dry_run": dry_run }))
        }
        PurgeCommand::Objects {
            client,
            destination,
            prefix,
            older_than,
            before,
            dry_run,
        } => {
            let mut objects = json!({ "destination": destination, "prefix": prefix });
            if let Some(d) = older_than {
                objects["older_than"] = json!(d);
            }
            if let Some(b) = before {
                objects["before"] = json!(b);
            }
            (client, json!({ "objects": objects, "dry_run": dry_run }))
        }
    };
    let c = Client::new(&client)?;
    let body = serde_json::to_vec(&body)?;
    let v = c
        .call(
            reqwest::Method::POST,
            "/v1/purge",
            Some(("application/json", body)),
            &[],
        )
        .await?;
    if c.json {
        c.print(&v, |_| Table::new());
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if v["dry_run"] == true {
        "would delete"
    } else {
        "deleted"
    };
    if let Some(e) = v.get("events") {
        let counts = &e["counts"];
        println!(
            "{verb} {} events, {} deliveries, {} attempts",
            s(counts, "events"),
            s(counts, "deliveries"),
            s(counts, "attempts")
        );
        if e["kept_unfinished"].as_u64().unwrap_or(0) > 0 {
            println!(
                "kept {} events whose deliveries are unfinished",
                s(e, "kept_unfinished")
            );
        }
        for id in e["sample"].as_array().into_iter().flatten() {
            println!("  {}", id.as_str().unwrap_or_default());
        }
    } else if let Some(o) = v.get("objects") {
        let n = if v["dry_run"] == true {
            s(o, "matched")
        } else {
            s(o, "deleted")
        };
        println!("{verb} {n} objects ({} bytes)", s(o, "bytes"));
        for key in o["sample"].as_array().into_iter().flatten() {
            println!("  {}", key.as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.client)?;
    let path = format!("/v1/audit?limit={}", a.limit);
    let v = c.call(reqwest::Method::GET, &path, None, &[]).await?;
    c.print(&v, audit_table);
    Ok(ExitCode::SUCCESS)
}

fn audit_table(v: &Value) -> Table {
    let mut t = Table::new();
    t.set_header(["at", "actor", "kind", "dry run", "counts", "error"]);
    for e in v["items"].as_array().into_iter().flatten() {
        t.add_row([
            s(e, "at"),
            s(e, "actor"),
            s(e, "kind"),
            s(e, "dry_run"),
            s(e, "counts"),
            s(e, "error"),
        ]);
    }
    t
}
