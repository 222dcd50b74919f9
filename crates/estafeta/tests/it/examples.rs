//! The configurations in `examples/` run as documented.

use std::path::Path;
use std::time::Duration;

use estafeta_testkit::WebhookReceiver;
use serde_json::json;

use crate::server::{Server, WHSEC, event};

/// An example file's text.
fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name),
    )
    .unwrap()
}

/// Starts the server on an example config (as text, adapted by the test) with its own
/// storage and a free port.
async fn start_example(dir: &Path, config: &str, envs: &[(&str, &str)]) -> Server {
    let cfg = dir.join("example.yaml");
    std::fs::write(&cfg, config).unwrap();
    let storage = format!("sqlite://{}/estafeta.db", dir.display());
    Server::start_with_args(
        dir,
        &cfg,
        &["--listen", "127.0.0.1:0", "--storage", &storage],
        envs,
    )
    .await
}

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

/// `examples/postgres-webhook.yaml` on its SQL: new visitors and order status changes reach
/// their webhooks; an update that keeps the status does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_webhook_example_sends_visitors_and_status_changes() {
    let db = estafeta_testkit::postgres::TestDb::create();
    db.sql(&example("postgres-webhook.sql"));
    db.sql("INSERT INTO service_orders (customer, total) VALUES ('ACME', 100)");
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    let dir = tempfile::tempdir().unwrap();
    // The example refuses private addresses; the receivers here are on loopback.
    let config = example("postgres-webhook.yaml")
        .replace(
            "allow_private_networks: false",
            "allow_private_networks: true",
        )
        .replace(
            "id: access-db\n",
            &format!(
                "id: access-db\n    slot: {0}\n    publication: {0}_pub\n",
                db.name()
            ),
        );
    let s = start_example(
        dir.path(),
        &config,
        &[
            ("PG_URL", db.url().as_str()),
            ("VISITORS_HOOK", format!("{}/visitors", rx.url()).as_str()),
            ("ORDERS_HOOK", format!("{}/orders", rx.url()).as_str()),
            ("ESTAFETA_SECRET_HOOKS_WHSEC", WHSEC),
        ],
    )
    .await;
    s.wait_json("/v1/sources/access-db", Duration::from_secs(60), |v| {
        v["state"] == "running"
    })
    .await;
    db.sql("INSERT INTO visitors (name, document, gate) VALUES ('Ana Souza', '123.456.789-00', 'north')");
    db.sql("UPDATE service_orders SET total = 120 WHERE customer = 'ACME'");
    db.sql("UPDATE service_orders SET status = 'in_progress' WHERE customer = 'ACME'");
    assert!(rx.wait_for_count(2, Duration::from_secs(60)).await);
    // Everything before the status change has been routed by now: nothing else arrives.
    s.wait_json("/v1/events?limit=10", Duration::from_secs(30), |v| {
        v["items"].as_array().unwrap().len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(rx.bad_signatures(), 0);
    let bodies: Vec<String> = reqs
        .iter()
        .map(|r| format!("{} {}", r.uri, String::from_utf8_lossy(&r.body)))
        .collect();
    let find = |suffix: &str| {
        reqs.iter()
            .find(|r| r.uri.path().ends_with(suffix))
            .and_then(|r| r.json())
            .unwrap_or_else(|| panic!("no JSON request to {suffix}: {bodies:?}"))
    };
    let visitor = find("/visitors");
    assert_eq!(visitor["type"], "visitors.insert");
    assert_eq!(visitor["data"]["after"]["name"], "Ana Souza");
    let order = find("/orders");
    assert_eq!(
        order,
        json!({"order": 1, "customer": "ACME", "from": "open", "to": "in_progress"})
    );
}

/// `examples/outbox-webhook.yaml` on its SQL: orders written by the application reach the CRM
/// webhook through the outbox, and each outbox row is marked PROCESSED after delivery — or
/// FAILED with the error when the webhook keeps refusing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_webhook_example_marks_rows_after_delivery() {
    let db = estafeta_testkit::postgres::TestDb::create();
    db.sql(&example("outbox-webhook.sql"));
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    let dir = tempfile::tempdir().unwrap();
    let config = example("outbox-webhook.yaml")
        .replace(
            "allow_private_networks: false",
            "allow_private_networks: true",
        )
        .replace(
            "postgres://estafeta:${secret:outbox_db_password}@localhost:5432/shop",
            &db.url(),
        )
        // Keep the test short: retry quickly before the delivery is dead.
        .replace("[0s, 5s, 1m, 10m]", "[0s, 100ms]");
    let s = start_example(
        dir.path(),
        &config,
        &[
            ("CRM_HOOK", rx.url().as_str()),
            ("ESTAFETA_SECRET_CRM_WHSEC", WHSEC),
        ],
    )
    .await;
    s.wait_json("/v1/sources/shop-outbox", Duration::from_secs(60), |v| {
        v["state"] == "running"
    })
    .await;
    db.sql("INSERT INTO orders (customer, total) VALUES ('ACME', 120.50)");
    assert!(rx.wait_for_count(1, Duration::from_secs(30)).await);
    let first = rx.requests()[0].json().unwrap();
    assert_eq!(first["type"], "order.created");
    assert_eq!(first["data"]["customer"], "ACME");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db.sql("SELECT status FROM outbox WHERE id = 1") != "PROCESSED" {
        assert!(
            std::time::Instant::now() < deadline,
            "row 1 not marked PROCESSED"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !db.sql("SELECT processed_at FROM outbox WHERE id = 1")
            .is_empty()
    );

    // The CRM refuses the next one for good: the row ends FAILED with the error.
    rx.set_default(400);
    db.sql("UPDATE orders SET status = 'paid' WHERE customer = 'ACME'");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db.sql("SELECT status FROM outbox WHERE id = 2") != "FAILED" {
        assert!(
            std::time::Instant::now() < deadline,
            "row 2 not marked FAILED"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = db.sql("SELECT error FROM outbox WHERE id = 2");
    assert!(error.contains("400"), "{error}");
}

/// `examples/service-orders` on its SQL: opening an urgent order and changing another's
/// status reach the technicians' ntfy topic with the right title, priority and tags, and the
/// outbox rows are marked PROCESSED after ntfy accepted them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_orders_example_notifies_technicians_and_marks_rows() {
    let db = estafeta_testkit::postgres::TestDb::create();
    db.sql(&example("service-orders/schema.sql"));
    let ntfy = estafeta_testkit::ntfy::FakeNtfy::start_with_auth(estafeta_testkit::ntfy::Auth {
        tokens: vec!["tk_fieldservice".into()],
        users: vec![],
        protect_all: true,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = example("service-orders/estafeta.yaml")
        .replace(
            "allow_private_networks: false",
            "allow_private_networks: true",
        )
        .replace(
            "postgres://estafeta:${secret:fieldservice_db_password}@localhost:5432/fieldservice",
            &db.url(),
        );
    let s = start_example(
        dir.path(),
        &config,
        &[
            ("NTFY_URL", ntfy.base_url().as_str()),
            ("ESTAFETA_SECRET_NTFY_TOKEN", "tk_fieldservice"),
        ],
    )
    .await;
    s.wait_json("/v1/sources/service-orders", Duration::from_secs(60), |v| {
        v["state"] == "running"
    })
    .await;
    db.sql(
        "INSERT INTO service_orders (customer, site, description, urgent) \
         VALUES ('ACME', 'Portaria 2', 'Catraca não libera saída', true); \
         INSERT INTO service_orders (customer, site, description) \
         VALUES ('Beta', 'Loja 5', 'Trocar leitor biométrico'); \
         UPDATE service_orders SET status = 'in_progress' WHERE customer = 'Beta'; \
         UPDATE service_orders SET description = 'no status change' WHERE customer = 'Beta'",
    );
    assert!(ntfy.wait_for_messages(3, Duration::from_secs(30)).await);
    let mut got = ntfy.messages();
    got.sort_by(|a, b| a.title.cmp(&b.title));
    let summary: Vec<(Option<String>, Option<u8>, Vec<String>)> = got
        .iter()
        .map(|m| (m.title.clone(), m.priority, m.tags.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                Some("Order 2: in_progress".into()),
                Some(3),
                vec!["wrench".into()]
            ),
            (Some("Order 2: open".into()), Some(3), vec!["wrench".into()]),
            (
                Some("URGENT order 1: open".into()),
                Some(5),
                vec!["rotating_light".into(), "wrench".into()]
            ),
        ]
    );
    let urgent = &got[2];
    assert_eq!(
        urgent.message,
        "ACME — Portaria 2: Catraca não libera saída"
    );
    assert_eq!(urgent.topic, "field-service-orders");
    assert_eq!(
        urgent.click.as_deref(),
        Some("https://erp.example.org/service-orders/1")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db.sql("SELECT count(*) FROM notification_outbox WHERE status = 'PROCESSED'") != "3" {
        assert!(
            std::time::Instant::now() < deadline,
            "rows not marked: {}",
            db.sql("SELECT string_agg(status, ',') FROM notification_outbox")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A description edit without a status change wrote no outbox row.
    assert_eq!(db.sql("SELECT count(*) FROM notification_outbox"), "3");
}

/// The database bench scenarios run end to end on a small load (the figures come from
/// release builds, see docs/performance.md).
#[tokio::test]
async fn bench_database_scenarios_run_and_report_json() {
    let db = estafeta_testkit::postgres::TestDb::create();
    for (scenario, events) in [("outbox", "300"), ("cdc", "500")] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
            .args([
                "bench",
                "--scenario",
                scenario,
                "--events",
                events,
                "--json",
            ])
            .env("ESTAFETA_BENCH_PG_URL", db.url())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{scenario}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(
            v["delivered"].as_u64(),
            Some(events.parse().unwrap()),
            "{v}"
        );
        assert_eq!(v["duplicates"], 0, "{v}");
    }
}
