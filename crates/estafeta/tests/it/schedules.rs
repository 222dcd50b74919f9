//! Schedules end to end: an `every: 1s` schedule delivers its events to a webhook; the CLI
//! and the API show the runs; `kill -9` and a restart give at most one catch-up run, never
//! a burst; two server processes on one data directory still fire each tick once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use estafeta_testkit::WebhookReceiver;
use serde_json::Value;

use crate::server::{Server, TOKEN, one_route};

const T: Duration = Duration::from_secs(60);

fn config(rx: &WebhookReceiver) -> String {
    format!(
        "sources:\n  - id: heartbeat\n    kind: schedule\n    every: 1s\n    type: heartbeat.tick\n    data: {{service: billing}}\n{}",
        one_route(&rx.url(), "")
    )
}

/// Each CloudEvents id reached the receiver through one delivery (`webhook-id`), however
/// often that delivery was sent.
fn assert_one_delivery_per_event(rx: &WebhookReceiver) {
    let mut seen = std::collections::HashMap::<String, HashSet<String>>::new();
    for r in rx.requests() {
        let (Some(body), Some(delivery)) = (r.json(), r.delivery_id()) else {
            continue;
        };
        if let Some(id) = body["id"].as_str() {
            seen.entry(id.to_owned())
                .or_default()
                .insert(delivery.to_owned());
        }
    }
    assert!(seen.values().all(|d| d.len() == 1), "{seen:?}");
}

async fn runs(s: &Server) -> Vec<Value> {
    let v = s.get_json("/v1/schedules/heartbeat/runs?limit=1000").await;
    v["items"].as_array().cloned().unwrap_or_default()
}

fn at(run: &Value, field: &str) -> Option<DateTime<Utc>> {
    run[field]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

async fn cli(s: &Server, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args(args)
        .args(["--json", "--url", &s.url, "--token", TOKEN])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_schedule_delivers_and_a_kill_9_restart_catches_up_once() {
    let rx = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &config(&rx)).await;
    assert!(rx.wait_for_count(3, T).await, "no ticks delivered");
    let body = rx.requests()[0].json().unwrap();
    assert_eq!(body["type"], "heartbeat.tick");
    assert_eq!(body["source"], "/estafeta/schedule/heartbeat");
    assert_eq!(body["data"]["service"], "billing");
    assert!(
        body["scheduledtime"].is_string() && body["runid"].is_string(),
        "{body}"
    );

    // The API and the CLI show the schedule and its runs.
    let list = cli(&s, &["schedules", "list"]).await;
    assert_eq!(list["items"][0]["id"], "heartbeat");
    assert_eq!(list["items"][0]["spec"], "1s");
    let history = cli(&s, &["schedules", "history", "heartbeat"]).await;
    let first = &history["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(first["trigger"], "tick");
    let manual = cli(&s, &["schedules", "run", "heartbeat"]).await;
    assert_eq!(manual["manual"], true);

    // Pull the plug, stay down for a few ticks, start again.
    s.kill9().await;
    let killed_at = Utc::now();
    while Utc::now() < killed_at + chrono::TimeDelta::seconds(4) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restarted_at = Utc::now();
    let s = Server::start_with_file(dir.path(), &dir.path().join("estafeta.yaml")).await;
    let start = Instant::now();
    let after = loop {
        let all = runs(&s).await;
        let regular = all
            .iter()
            .filter(|r| r["trigger"] == "tick" && r["status"] == "succeeded")
            .filter(|r| at(r, "scheduled_at").is_some_and(|t| t > restarted_at))
            .count();
        if regular >= 2 {
            break all;
        }
        assert!(
            start.elapsed() < T,
            "no regular ticks after the restart: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The last tick the killed process claimed, and the ticks after it up to the restart:
    // they gave exactly one run, a catch-up for the latest of them.
    let scheduled = |r: &Value| at(r, "scheduled_at");
    let last_before = after
        .iter()
        .filter(|r| r["trigger"] != "manual")
        .filter(|r| at(r, "claimed_at").is_some_and(|t| t < restarted_at))
        .filter_map(scheduled)
        .max()
        .unwrap();
    let in_gap: Vec<&Value> = after
        .iter()
        .filter(|r| r["trigger"] != "manual")
        .filter(|r| scheduled(r).is_some_and(|t| t > last_before && t <= restarted_at))
        .collect();
    assert_eq!(in_gap.len(), 1, "missed ticks gave {in_gap:?}");
    assert_eq!(in_gap[0]["trigger"], "catch_up");
    assert_eq!(in_gap[0]["status"], "succeeded");
    // No tick was claimed twice, and each event is in the log once: a delivery the kill cut
    // short may be sent again (at least once, with the same delivery id), but never as a
    // second delivery.
    let ticks: Vec<_> = after
        .iter()
        .filter(|r| r["trigger"] != "manual")
        .filter_map(|r| at(r, "scheduled_at"))
        .collect();
    assert_eq!(ticks.iter().collect::<HashSet<_>>().len(), ticks.len());
    assert_one_delivery_per_event(&rx);
    let events = s.get_json("/v1/events?source=heartbeat&limit=1000").await;
    let ce_ids: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["ce_id"].as_str())
        .collect();
    assert_eq!(
        ce_ids.iter().collect::<HashSet<_>>().len(),
        ce_ids.len(),
        "{ce_ids:?}"
    );
    // Runs the kill interrupted are recorded as such, not left running.
    assert!(
        after
            .iter()
            .filter(|r| at(r, "claimed_at").is_some_and(|t| t < restarted_at))
            .all(|r| r["status"] != "running" && r["status"] != "queued"),
        "{after:?}"
    );
    let sched = s.get_json("/v1/schedules").await;
    assert!(sched["items"][0]["last_run"]["id"].is_string(), "{sched}");
    let metrics = s
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "estafeta_schedule_runs_total",
        "estafeta_schedule_fire_delay_seconds",
        "estafeta_schedule_misfires_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

/// Two server processes on one data directory. SQLite lets one process write at a time, so
/// this is not a supported deployment for deliveries (each process recovers unfinished
/// deliveries at start); it shows only that the claim holds across processes: every tick
/// runs once, and its event is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_store_fire_each_tick_once() {
    let rx = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(dir.path(), &config(&rx)).await;
    let b = Server::start_with_file(dir.path(), &dir.path().join("estafeta.yaml")).await;
    assert!(rx.wait_for_count(6, T).await, "no ticks delivered");
    let all = runs(&a).await;
    let ticks: Vec<_> = all.iter().filter_map(|r| at(r, "scheduled_at")).collect();
    assert_eq!(
        ticks.iter().collect::<HashSet<_>>().len(),
        ticks.len(),
        "a tick ran twice: {all:?}"
    );
    assert_one_delivery_per_event(&rx);
    b.terminate().await;
    a.terminate().await;
}
