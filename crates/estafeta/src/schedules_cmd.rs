//! `estafeta schedules list|run|history`: the schedules of a running server with their next
//! tick and last run, running one now, and a schedule's run history.

use std::process::ExitCode;

use clap::Subcommand;
use comfy_table::Table;
use serde_json::Value;

use crate::cli::ClientArgs;
use crate::client::{Client, s};

#[derive(Debug, Subcommand)]
pub(crate) enum SchedulesCommand {
    /// List schedules: timing, time zone, next tick, last run.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a schedule now (recorded as a manual run).
    Run {
        #[command(flatten)]
        client: ClientArgs,
        /// Schedule id.
        id: String,
    },
    /// Show a schedule's runs, newest first.
    History {
        #[command(flatten)]
        client: ClientArgs,
        /// Schedule id.
        id: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

pub(crate) async fn run(cmd: SchedulesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchedulesCommand::List { client } => {
            let c = Client::new(&client)?;
            let v = c
                .call(reqwest::Method::GET, "/v1/schedules", None, &[])
                .await?;
            c.print(&v, list_table);
        }
        SchedulesCommand::Run { client, id } => {
            let c = Client::new(&client)?;
            let path = format!("/v1/schedules/{}/run", encode(&id));
            let v = c.call(reqwest::Method::POST, &path, None, &[]).await?;
            if c.json {
                c.print(&v, |_| Table::new());
            } else {
                println!("{} {}: {}", s(&v, "id"), s(&v, "status"), id);
            }
        }
        SchedulesCommand::History { client, id, limit } => {
            let c = Client::new(&client)?;
            let path = format!("/v1/schedules/{}/runs?limit={limit}", encode(&id));
            let v = c.call(reqwest::Method::GET, &path, None, &[]).await?;
            c.print(&v, runs_table);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Schedule ids are `[A-Za-z0-9._-]`; anything else is percent-encoded.
fn encode(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn list_table(v: &Value) -> Table {
    let mut t = Table::new();
    t.set_header([
        "id", "timing", "zone", "runs", "priority", "next", "last run", "status",
    ]);
    for sc in v["items"].as_array().into_iter().flatten() {
        let last = &sc["last_run"];
        t.add_row([
            s(sc, "id"),
            format!("{} {}", s(sc, "spec_kind"), s(sc, "spec")),
            s(sc, "timezone"),
            job(&sc["job"]),
            s(sc, "priority"),
            s(sc, "next_fire_at"),
            s(last, "scheduled_at"),
            s(last, "status"),
        ]);
    }
    t
}

/// What a schedule runs: `emit <event type>` or `provider <kind>`.
fn job(j: &Value) -> String {
    match j["kind"].as_str() {
        Some("emit") => format!("emit {}", s(j, "event_type")),
        Some("provider") => format!("provider {}", s(j, "provider")),
        Some(other) => other.to_owned(),
        None => String::new(),
    }
}

fn runs_table(v: &Value) -> Table {
    let mut t = Table::new();
    t.set_header([
        "run", "tick", "trigger", "status", "started", "finished", "records", "error",
    ]);
    for r in v["items"].as_array().into_iter().flatten() {
        t.add_row([
            s(r, "id"),
            s(r, "scheduled_at"),
            s(r, "trigger"),
            s(r, "status"),
            s(r, "started_at"),
            s(r, "finished_at"),
            s(r, "records"),
            s(r, "error"),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::job;

    #[test]
    fn the_runs_column_names_the_event_type_or_the_provider() {
        assert_eq!(
            job(&json!({"kind": "emit", "event_type": "report.due"})),
            "emit report.due"
        );
        assert_eq!(
            job(&json!({"kind": "provider", "provider": "http"})),
            "provider http"
        );
        assert_eq!(job(&json!(null)), "");
    }
}
