//! Retention end to end: the real binary with a short event retention period deletes old
//! events on a background pass, keeps new ones, records the pass in the audit log (actor
//! `retention`) and counts the deletions in `/metrics`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{Server, event};

const CONFIG: &str = "retention:
  interval: 300ms
  events:
    older_than: 2s
";

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_pass_deletes_old_events_and_records_an_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), CONFIG).await;
    let old: Value = s
        .post_event(&event("old-1", "visit.created", json!({"cpf": "123"})))
        .await
        .json()
        .await
        .unwrap();
    let old_id = old["ids"][0].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let new: Value = s
        .post_event(&event("new-1", "visit.created", json!({"cpf": "456"})))
        .await
        .json()
        .await
        .unwrap();
    let new_id = new["ids"][0].as_str().unwrap().to_owned();

    let list = s
        .wait_json("/v1/events?limit=10", Duration::from_secs(10), |v| {
            !ids(v).contains(&old_id)
        })
        .await;
    assert_eq!(ids(&list), vec![new_id], "the new event stays");

    let audit = s
        .wait_json("/v1/audit?limit=1000", Duration::from_secs(5), |v| {
            v["items"].as_array().unwrap().iter().any(|e| {
                e["actor"] == "retention" && e["kind"] == "events" && e["counts"]["events"] == 1
            })
        })
        .await;
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["counts"]["events"] == 1)
        .unwrap();
    assert_eq!(entry["dry_run"], false);
    assert_eq!(entry["scope"]["policies"][0]["policy"], "global");

    let metrics = s
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("estafeta_retention_deleted_total{kind=\"events\",trigger=\"retention\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("estafeta_retention_passes_total{status=\"ok\"}"));
}

async fn cli(s: &Server, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args(args)
        .args(["--url", &s.url, "--token", crate::server::TOKEN])
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_cli_purges_after_a_dry_run_and_shows_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    for id in ["p-1", "p-2"] {
        s.post_event(&event(
            id,
            "lead.created",
            json!({"email": "a@example.com"}),
        ))
        .await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = chrono::Utc::now().to_rfc3339();

    let (ok, text) = cli(
        &s,
        &[
            "purge",
            "events",
            "--before",
            &before,
            "--type",
            "lead.created",
            "--dry-run",
        ],
    )
    .await;
    assert!(ok && text.contains("would delete 2 events"), "{text}");
    assert_eq!(ids(&s.get_json("/v1/events").await).len(), 2);

    let (ok, text) = cli(&s, &["purge", "events", "--before", &before]).await;
    assert!(ok && text.contains("deleted 2 events"), "{text}");
    assert!(ids(&s.get_json("/v1/events").await).is_empty());

    let (ok, text) = cli(&s, &["audit", "--json"]).await;
    assert!(ok, "{text}");
    let audit: Value = serde_json::from_str(&text).unwrap();
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["actor"], "admin");
    assert_eq!(items[0]["dry_run"], false);
    assert_eq!(items[1]["dry_run"], true);

    let (ok, text) = cli(
        &s,
        &[
            "purge",
            "objects",
            "--destination",
            "nowhere",
            "--older-than",
            "1d",
        ],
    )
    .await;
    assert!(!ok && text.contains("404"), "{text}");
}
