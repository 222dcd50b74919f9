//! The configurations in `examples/` run as documented.

use std::path::Path;
use std::time::Duration;

use estafeta_testkit::WebhookReceiver;
use serde_json::json;

use crate::server::{Server, WHSEC, event};

#[tokio::test]
async fn quickstart_delivers_orders_and_big_orders() {
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.yaml");
    let storage = format!("sqlite://{}/estafeta.db", dir.path().display());
    let s = Server::start_with_args(
        dir.path(),
        &cfg,
        &["--listen", "127.0.0.1:0", "--storage", &storage],
        &[
            ("HOOK_URL", rx.url().as_str()),
            ("ESTAFETA_SECRET_SHOP_WHSEC", WHSEC),
        ],
    )
    .await;
    s.post_event(&event("o-1", "order.created", json!({"total": 42})))
        .await;
    s.post_event(&event("o-2", "order.created", json!({"total": 420})))
        .await;
    s.post_event(&event("u-1", "user.created", json!({}))).await;
    // Two orders through `orders`, one big order through `big-orders`.
    assert!(rx.wait_for_count(3, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 3);
    assert_eq!(rx.bad_signatures(), 0);
    let texts: Vec<String> = rx
        .requests()
        .iter()
        .filter_map(|r| r.json())
        .filter_map(|j| j["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(texts, vec!["Big order o-2: 420".to_owned()]);
}

/// `estafeta bench` runs end to end (a small load, to keep it working; the figures come from
/// release builds, see docs/performance.md).
#[tokio::test]
async fn bench_runs_a_small_load_and_reports_json() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args([
            "bench",
            "--events",
            "400",
            "--batch",
            "10",
            "--connections",
            "4",
            "--ceiling-secs",
            "1",
            "--json",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let text = v.to_string();
    assert!(text.contains("400"), "{text}");
}
