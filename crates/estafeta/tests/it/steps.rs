//! Route steps through the real binary, as a receiver and an operator see them: enrichment
//! bound into templates, transforms, `on_error: continue`, a failed look-up retried on the
//! destination's schedule, and filtered deliveries that never wait for a slow destination.

use std::time::Duration;

use estafeta_testkit::WebhookReceiver;
use estafeta_testkit::lookup_api::{LookupApi, LookupRecord};
use serde_json::{Value, json};

use crate::server::{Server, event, webhook};

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "tok-e2e-steps";

async fn records() -> LookupApi {
    LookupApi::builder(TOKEN)
        .record("111", LookupRecord::new("TJSP", "0001", "criminal"))
        .record("111", LookupRecord::new("TRF3", "0002", "civil"))
        .start()
        .await
}

fn enrich(api: &LookupApi, extra: &str) -> String {
    format!(
        "      - enrich:\n          as: court\n          http:\n            url: \"{}/v1/records/{{{{ data.document }}}}\"\n            headers: {{ Authorization: \"Bearer ${{secret:lookup}}\" }}\n            allow_private_networks: true\n            timeout: 2s\n            retry: {{ attempts: 1 }}\n{extra}",
        api.base_url()
    )
}

async fn start(dir: &std::path::Path, cfg: &str) -> Server {
    let path = dir.join("estafeta.yaml");
    std::fs::write(
        &path,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  shutdown_grace: 5s\nstorage: sqlite://{}/estafeta.db\n{cfg}",
            dir.display()
        ),
    )
    .unwrap();
    Server::start_with_args(dir, &path, &[], &[("ESTAFETA_SECRET_LOOKUP", TOKEN)]).await
}

async fn delivery_of(s: &Server, status: &str, n: usize) -> Vec<Value> {
    let v = s
        .wait_json(&format!("/v1/deliveries?status={status}"), T, |v| {
            v["items"].as_array().is_some_and(|a| a.len() >= n)
        })
        .await;
    v["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn enrichment_and_transforms_shape_what_the_destination_receives() {
    let api = records().await;
    let rx = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "routes:\n  - id: visitors\n    steps:\n{}      - transform:\n          set:\n            data.level: \"court.hits > 1 ? 'high' : 'low'\"\n            data.courts: \"court.records.map(r, r.court)\"\n            headline: {{ template: \"{{{{ data.name }}}} ({{{{ court.hits }}}})\" }}\n          remove: [data.internal_note]\n    to:\n      - destination: plain\n      - destination: shaped\n        template: '{{\"headline\": {{{{ headline | tojson }}}}, \"level\": \"{{{{ data.level }}}}\"}}'\ndestinations:\n{}{}",
        enrich(&api, ""),
        webhook("plain", &rx.url(), ""),
        webhook("shaped", &rx.url(), ""),
    );
    let s = start(dir.path(), &cfg).await;
    let ev = event(
        "v-1",
        "visitor.created",
        json!({"name": "Ana Souza", "document": "111", "internal_note": "vip"}),
    );
    assert_eq!(s.post_event(&ev).await.status(), 202);
    assert!(rx.wait_for_count(2, T).await, "got {}", rx.count());
    let bodies: Vec<Value> = rx.requests().iter().filter_map(|r| r.json()).collect();
    let shaped = bodies.iter().find(|b| b.get("headline").is_some()).unwrap();
    assert_eq!(
        shaped,
        &json!({"headline": "Ana Souza (2)", "level": "high"})
    );
    // Without a template the destination gets the transformed event; the log keeps the
    // original.
    let plain = bodies
        .iter()
        .find(|b| b.get("specversion").is_some())
        .unwrap();
    assert_eq!(
        plain["data"],
        json!({"name": "Ana Souza", "document": "111", "level": "high", "courts": ["TJSP", "TRF3"]})
    );
    let events = s.get_json("/v1/events").await;
    assert_eq!(events["items"][0]["data"]["internal_note"], "vip");
    // Each delivery's attempt tells what the steps did.
    let delivered = delivery_of(&s, "delivered", 2).await;
    let id = delivered[0]["id"].as_str().unwrap();
    let d = s.get_json(&format!("/v1/deliveries/{id}")).await;
    let steps = &d["history"][0]["steps"];
    assert_eq!(steps[0]["step"], "enrich");
    assert_eq!(steps[0]["name"], "court");
    assert!(
        steps[0]["output"].as_str().unwrap().contains("\"hits\":2"),
        "{steps}"
    );
    assert!(
        steps[0]["answered_by"]
            .as_str()
            .unwrap()
            .contains(&api.addr().to_string())
    );
    assert_eq!(steps[1]["step"], "transform");
    assert!(
        steps[1]["output"]
            .as_str()
            .unwrap()
            .contains("removed data.internal_note")
    );
}

#[tokio::test]
async fn a_failed_look_up_is_retried_later_or_continues_with_null() {
    let api = records().await;
    api.set_down(true);
    let rx = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "routes:\n  - id: strict\n    steps:\n{}    to:\n      - destination: hook\n        template: '{{\"route\": \"strict\", \"hits\": {{{{ court.hits }}}}}}'\n  - id: lenient\n    steps:\n{}    to:\n      - destination: hook\n        template: '{{\"route\": \"lenient\", \"court\": {{{{ court | tojson }}}}}}'\ndestinations:\n{}    retry: {{ schedule: [0s, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms] }}\n",
        enrich(&api, ""),
        enrich(&api, "          on_error: continue\n"),
        webhook("hook", &rx.url(), ""),
    );
    let s = start(dir.path(), &cfg).await;
    let ev = event(
        "v-2",
        "visitor.created",
        json!({"name": "Bruno", "document": "111"}),
    );
    assert_eq!(s.post_event(&ev).await.status(), 202);
    // The lenient route goes on with `court` = null right away.
    assert!(rx.wait_for_count(1, T).await);
    assert_eq!(
        rx.requests()[0].json().unwrap(),
        json!({"route": "lenient", "court": null})
    );
    // The strict one is retrying, with the reason and the failed step in its record.
    let retrying = delivery_of(&s, "retrying", 1).await;
    let err = retrying[0]["last_error"].as_str().unwrap();
    assert!(
        err.contains("enrichment `court`") && err.contains("HTTP 503"),
        "{err}"
    );
    // The API comes back: the next attempt delivers.
    api.set_down(false);
    assert!(rx.wait_for_count(2, T).await, "got {}", rx.count());
    assert_eq!(
        rx.requests()[1].json().unwrap(),
        json!({"route": "strict", "hits": 2})
    );
    let delivered = delivery_of(&s, "delivered", 2).await;
    let strict = delivered
        .iter()
        .find(|d| d["route_id"] == "strict")
        .unwrap();
    let d = s
        .get_json(&format!(
            "/v1/deliveries/{}",
            strict["id"].as_str().unwrap()
        ))
        .await;
    let attempts = d["history"].as_array().unwrap();
    assert!(attempts.len() >= 2);
    assert_eq!(attempts[0]["steps"][0]["outcome"], "failed");
    assert_eq!(attempts.last().unwrap()["steps"][0]["outcome"], "ok");
}

#[tokio::test]
async fn filtered_deliveries_do_not_wait_for_a_rate_limited_destination() {
    let api = records().await;
    let rx = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // One message per second at most; 40 visitors, one with records.
    let cfg = format!(
        "routes:\n  - id: alerts\n    steps:\n{}      - filter: court.hits > 0\n    to: [{{destination: slow}}]\ndestinations:\n{}    concurrency: 1\n    rate_limit: 1/s\n",
        enrich(&api, "          cache: { ttl: 1m }\n"),
        webhook("slow", &rx.url(), ""),
    );
    let s = start(dir.path(), &cfg).await;
    let mut batch: Vec<Value> = (0..40)
        .map(|i| {
            event(
                &format!("n-{i}"),
                "visitor.created",
                json!({"document": format!("9{i}")}),
            )
        })
        .collect();
    batch.push(event("hit", "visitor.created", json!({"document": "111"})));
    assert!(s.post_batch(&batch).await.status().is_success());
    // The 40 filtered ones finish well before 40 s of rate limit would allow.
    let filtered = delivery_of(&s, "filtered", 40).await;
    assert_eq!(filtered.len(), 40);
    assert!(rx.wait_for_count(1, T).await);
    assert_eq!(rx.count(), 1);
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
            .lines()
            .any(|l| l.starts_with("estafeta_deliveries_filtered_total{destination=\"slow\"} 40")),
        "{metrics}"
    );
}
