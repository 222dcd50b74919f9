//! Client commands against a running server: `events`, `deliveries`, `replay`. Tables for
//! people, `--json` for scripts.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use comfy_table::Table;
use estafeta_core::DeliveryStatus;
use serde_json::{Value, json};

use crate::cli::ClientArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Send one event (or a JSON file holding an event or an array of events).
    Send {
        #[command(flatten)]
        client: ClientArgs,
        /// Event type, e.g. `order.created`.
        #[arg(long = "type", short = 't')]
        ty: Option<String>,
        /// CloudEvents source (default `estafeta-cli`).
        #[arg(long, default_value = "estafeta-cli")]
        source: String,
        /// Event id (default: a fresh one).
        #[arg(long)]
        id: Option<String>,
        /// Subject.
        #[arg(long)]
        subject: Option<String>,
        /// JSON data.
        #[arg(long, short)]
        data: Option<String>,
        /// A file with a CloudEvent or an array of CloudEvents (`-` for standard input).
        #[arg(long, short, conflicts_with_all = ["ty", "data"])]
        file: Option<String>,
        /// Idempotency-Key header.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Show one event and its deliveries.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// Event id (`evt_…`).
        id: String,
    },
    /// List recent events.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this type.
        #[arg(long = "type")]
        ty: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print events as they arrive (polls the server).
    Tail {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this type.
        #[arg(long = "type")]
        ty: Option<String>,
        /// Poll interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        every: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only deliveries in this state (`filtered`: a route's `filter` step said no).
        #[arg(
            long,
            value_parser = PossibleValuesParser::new(DeliveryStatus::ALL.map(DeliveryStatus::as_str))
        )]
        status: Option<String>,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only this destination.
        #[arg(long)]
        destination: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one delivery's attempts and what the route's steps did in each.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// Delivery id (`dlv_…`).
        id: String,
    },
    /// Retry deliveries now: the ids given, or every dead one with `--all-dead`.
    Retry {
        #[command(flatten)]
        client: ClientArgs,
        /// Delivery ids.
        ids: Vec<String>,
        /// Retry every dead delivery (optionally of one destination).
        #[arg(long)]
        all_dead: bool,
        /// With `--all-dead`: only this destination.
        #[arg(long)]
        destination: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The route to replay.
    #[arg(long)]
    route: String,
    /// Replay events received at or after this RFC 3339 time.
    #[arg(
        long,
        conflicts_with = "after_event",
        required_unless_present = "after_event"
    )]
    from: Option<String>,
    /// Replay events after this event id.
    #[arg(long)]
    after_event: Option<String>,
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    pub(crate) json: bool,
}

impl Client {
    pub(crate) fn new(a: &ClientArgs) -> anyhow::Result<Self> {
        estafeta_destinations::install_crypto_provider();
        let token = a
            .token
            .clone()
            .or_else(|| std::env::var("ESTAFETA_ADMIN_TOKEN").ok());
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            base: a.url.trim_end_matches('/').to_owned(),
            token,
            json: a.json,
        })
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let detail = value.get("detail").and_then(Value::as_str).unwrap_or("");
            let title = value
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("request failed");
            let field = value
                .get("field")
                .and_then(Value::as_str)
                .map(|f| format!(" (field `{f}`)"))
                .unwrap_or_default();
            bail!("{status}: {title}: {detail}{field}");
        }
        Ok(value)
    }

    pub(crate) fn print(&self, v: &Value, table: impl FnOnce(&Value) -> Table) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            println!("{}", table(v));
        }
    }
}

pub(crate) fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn events_table(v: &Value) -> Table {
    let mut t = Table::new();
    t.set_header(["id", "type", "source", "subject", "received"]);
    for e in v["items"].as_array().into_iter().flatten() {
        t.add_row([
            s(e, "id"),
            s(e, "type"),
            s(e, "ce_source"),
            s(e, "subject"),
            s(e, "received_at"),
        ]);
    }
    t
}

fn deliveries_table(v: &Value) -> Table {
    let mut t = Table::new();
    t.set_header([
        "id",
        "event",
        "route",
        "destination",
        "status",
        "attempts",
        "next",
        "last error",
    ]);
    for d in v["items"].as_array().into_iter().flatten() {
        t.add_row([
            s(d, "id"),
            s(d, "event_id"),
            s(d, "route_id"),
            s(d, "destination_id"),
            s(d, "status"),
            s(d, "attempts"),
            s(d, "next_at"),
            s(d, "last_error"),
        ]);
    }
    t
}

fn attempts_table(v: &Value) -> Table {
    let mut t = Table::new();
    t.set_header([
        "attempt", "started", "ms", "outcome", "status", "error", "response",
    ]);
    for a in v["history"].as_array().into_iter().flatten() {
        t.add_row([
            s(a, "id"),
            s(a, "started_at"),
            s(a, "duration_ms"),
            s(a, "outcome"),
            s(a, "status_code"),
            s(a, "error"),
            s(a, "response_excerpt"),
        ]);
    }
    t
}

/// One row per route step of each attempt, in order; `None` when no attempt ran a step.
fn steps_table(v: &Value) -> Option<Table> {
    let mut t = Table::new();
    t.set_header(["attempt", "step", "name", "outcome", "ms", "via", "detail"]);
    for a in v["history"].as_array().into_iter().flatten() {
        for step in a["steps"].as_array().into_iter().flatten() {
            t.add_row([
                s(a, "id"),
                s(step, "step"),
                s(step, "name"),
                s(step, "outcome"),
                s(step, "duration_ms"),
                s(step, "answered_by"),
                s(step, "detail"),
            ]);
        }
    }
    (!t.is_empty()).then_some(t)
}

pub(crate) async fn events(cmd: EventsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EventsCommand::Send {
            client,
            ty,
            source,
            id,
            subject,
            data,
            file,
            idempotency_key,
        } => {
            let c = Client::new(&client)?;
            let body: Value = if let Some(f) = file {
                let text = if f == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&f).with_context(|| format!("reading {f}"))?
                };
                serde_json::from_str(&text).with_context(|| format!("{f} is not valid JSON"))?
            } else {
                let ty = ty.context("give --type (or --file)")?;
                let data: Value = match data {
                    Some(d) => serde_json::from_str(&d).context("--data is not valid JSON")?,
                    None => Value::Null,
                };
                let mut ev = json!({"specversion": "1.0", "id": id.unwrap_or_else(fresh_id),
                    "source": source, "type": ty, "datacontenttype": "application/json", "data": data});
                if let Some(sub) = subject {
                    ev["subject"] = json!(sub);
                }
                ev
            };
            let ct = if body.is_array() {
                "application/cloudevents-batch+json"
            } else {
                "application/cloudevents+json"
            };
            let extra: Vec<(&str, String)> = idempotency_key
                .into_iter()
                .map(|k| ("idempotency-key", k))
                .collect();
            let v = c
                .call(
                    reqwest::Method::POST,
                    "/v1/events",
                    Some((ct, serde_json::to_vec(&body)?)),
                    &extra,
                )
                .await?;
            if c.json {
                println!("{v}");
            } else {
                for id in v["ids"].as_array().into_iter().flatten() {
                    println!("{}", id.as_str().unwrap_or_default());
                }
                let dups = v["duplicates"].as_u64().unwrap_or(0);
                if dups > 0 {
                    eprintln!("{dups} duplicate(s): already stored, not sent again");
                }
            }
        }
        EventsCommand::Get { client, id } => {
            let c = Client::new(&client)?;
            let v = c
                .call(reqwest::Method::GET, &format!("/v1/events/{id}"), None, &[])
                .await?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut shown = v.clone();
                let deliveries = shown
                    .as_object_mut()
                    .and_then(|o| o.remove("deliveries"))
                    .unwrap_or(Value::Null);
                println!("{}", serde_json::to_string_pretty(&shown)?);
                println!("{}", deliveries_table(&json!({"items": deliveries})));
            }
        }
        EventsCommand::List { client, ty, limit } => {
            let c = Client::new(&client)?;
            let mut path = format!("/v1/events?limit={limit}");
            if let Some(t) = ty {
                path.push_str(&format!("&type={}", urlencode(&t)));
            }
            let v = c.call(reqwest::Method::GET, &path, None, &[]).await?;
            c.print(&v, events_table);
        }
        EventsCommand::Tail { client, ty, every } => {
            let c = Client::new(&client)?;
            let mut since = chrono::Utc::now().to_rfc3339();
            let mut seen = std::collections::HashSet::new();
            loop {
                let mut path = format!("/v1/events?limit=1000&since={}", urlencode(&since));
                if let Some(t) = &ty {
                    path.push_str(&format!("&type={}", urlencode(t)));
                }
                let v = c.call(reqwest::Method::GET, &path, None, &[]).await?;
                let mut items: Vec<Value> = v["items"].as_array().cloned().unwrap_or_default();
                items.reverse(); // oldest first
                for e in items {
                    let id = s(&e, "id");
                    if seen.insert(id.clone()) {
                        if c.json {
                            println!("{e}");
                        } else {
                            println!(
                                "{}  {}  {}  {}",
                                s(&e, "received_at"),
                                id,
                                s(&e, "type"),
                                s(&e, "subject")
                            );
                        }
                        since = s(&e, "received_at");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn deliveries(cmd: DeliveriesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeliveriesCommand::List {
            client,
            status,
            route,
            destination,
            limit,
        } => {
            let c = Client::new(&client)?;
            let mut path = format!("/v1/deliveries?limit={limit}");
            for (k, v) in [
                ("status", status),
                ("route", route),
                ("destination", destination),
            ] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", urlencode(&v)));
                }
            }
            let v = c.call(reqwest::Method::GET, &path, None, &[]).await?;
            c.print(&v, deliveries_table);
        }
        DeliveriesCommand::Get { client, id } => {
            let c = Client::new(&client)?;
            let v = c
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/deliveries/{id}"),
                    None,
                    &[],
                )
                .await?;
            c.print(&v, attempts_table);
            if let (false, Some(steps)) = (c.json, steps_table(&v)) {
                println!("{steps}");
            }
        }
        DeliveriesCommand::Retry {
            client,
            ids,
            all_dead,
            destination,
        } => {
            let c = Client::new(&client)?;
            let mut ids = ids;
            if all_dead {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_message("finding dead deliveries");
                let mut cursor: Option<String> = None;
                loop {
                    let mut path = "/v1/deliveries?status=dead&limit=1000".to_owned();
                    if let Some(d) = &destination {
                        path.push_str(&format!("&destination={}", urlencode(d)));
                    }
                    if let Some(cur) = &cursor {
                        path.push_str(&format!("&cursor={}", urlencode(cur)));
                    }
                    let v = c.call(reqwest::Method::GET, &path, None, &[]).await?;
                    ids.extend(
                        v["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|d| s(d, "id")),
                    );
                    bar.tick();
                    match v.get("next").and_then(Value::as_str) {
                        Some(n) => cursor = Some(n.to_owned()),
                        None => break,
                    }
                }
                bar.finish_and_clear();
            }
            if ids.is_empty() {
                bail!("nothing to retry: give delivery ids or --all-dead");
            }
            let bar = indicatif::ProgressBar::new(ids.len() as u64);
            let mut failed = 0;
            for id in &ids {
                if let Err(e) = c
                    .call(
                        reqwest::Method::POST,
                        &format!("/v1/deliveries/{id}/retry"),
                        None,
                        &[],
                    )
                    .await
                {
                    bar.suspend(|| eprintln!("{id}: {e:#}"));
                    failed += 1;
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            println!("{} retried, {failed} failed", ids.len() - failed);
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(&a.client)?;
    let body = match (a.from, a.after_event) {
        (Some(f), _) => json!({"from": f}),
        (None, Some(e)) => json!({"after_event": e}),
        (None, None) => bail!("give --from or --after-event"),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("replaying route {}", a.route));
    bar.enable_steady_tick(Duration::from_millis(120));
    let v = c
        .call(
            reqwest::Method::POST,
            &format!("/v1/routes/{}/replay", urlencode(&a.route)),
            Some(("application/json", serde_json::to_vec(&body)?)),
            &[],
        )
        .await;
    bar.finish_and_clear();
    let v = v?;
    if c.json {
        println!("{v}");
    } else {
        println!(
            "scanned {} events, {} matched, {} deliveries created",
            s(&v, "scanned"),
            s(&v, "matched"),
            s(&v, "deliveries")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn fresh_id() -> String {
    format!(
        "cli-{}-{}",
        chrono::Utc::now().timestamp_millis(),
        rand::random::<u32>()
    )
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_listed_per_attempt_and_absent_without_steps() {
        assert!(steps_table(&json!({"history": [{"id": "att_1"}]})).is_none());
        let v = json!({"history": [{"id": "att_2", "outcome": "filtered", "steps": [
            {"step": "enrich", "name": "customer", "outcome": "cached", "duration_ms": 0,
             "answered_by": "crm:443 200"},
            {"step": "filter", "name": "data.total > 100", "outcome": "filtered",
             "duration_ms": 1, "detail": "false"}]}]});
        let text = steps_table(&v).map(|t| t.to_string()).unwrap_or_default();
        assert!(text.contains("crm:443 200"), "{text}");
        assert_eq!(text.matches("att_2").count(), 2, "{text}");
    }
}
