//! Object storage end to end: the real binary takes events over HTTP, routes them to an
//! `s3` destination that batches by time, and the CSV object appears in a real
//! S3-compatible server (moto).

use std::time::Duration;

use estafeta_testkit::Moto;
use serde_json::{Value, json};

use crate::server::{Server, event};

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_csv_rows_in_a_bucket_object() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.create_bucket("nightly-sales").await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"routes:
  - id: sales
    match: "sale.*"
    to: [{{destination: bucket}}]
destinations:
  - id: bucket
    kind: s3
    bucket: nightly-sales
    endpoint: {endpoint}
    access_key_id: ${{secret:s3_key_id}}
    secret_access_key: ${{secret:s3_secret}}
    timeout: 10s
    format: csv
    columns: [id, customer, total]
    key: "sales/{{{{ date }}}}/{{{{ batch_id }}}}.csv"
    batch: {{ max_records: 100, max_wait: 1s }}
"#,
        endpoint = moto.endpoint()
    );
    let cfg_path = dir.path().join("estafeta.yaml");
    std::fs::write(
        &cfg_path,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  shutdown_grace: 5s\nstorage: sqlite://{}/estafeta.db\n{config}",
            dir.path().display()
        ),
    )
    .unwrap();
    let s = Server::start_with_args(
        dir.path(),
        &cfg_path,
        &[],
        &[
            ("ESTAFETA_SECRET_S3_KEY_ID", "AKIAE2ETEST"),
            ("ESTAFETA_SECRET_S3_SECRET", "e2e-secret-never-logged"),
        ],
    )
    .await;
    let sales = [
        json!({"id": "s-1", "customer": "Ana, Lda.", "total": 10.5}),
        json!({"id": "s-2", "customer": "Bo \"the\" buyer", "total": 7}),
        json!({"id": "s-3", "customer": "Cy", "total": null}),
    ];
    let events: Vec<Value> = sales
        .iter()
        .enumerate()
        .map(|(i, d)| event(&format!("e-{i}"), "sale.created", d.clone()))
        .collect();
    let r = s.post_batch(&events).await;
    assert!(r.status().is_success(), "{}", r.status());

    // All three are delivered, each naming the object it went into.
    let delivered = s
        .wait_json(
            "/v1/deliveries?status=delivered&destination=bucket",
            T,
            |v| v["items"].as_array().unwrap().len() == 3,
        )
        .await;
    let id = delivered["items"][0]["id"].as_str().unwrap();
    let one = s.get_json(&format!("/v1/deliveries/{id}")).await;
    let excerpt = one["history"][0]["response_excerpt"].as_str().unwrap_or("");
    assert!(excerpt.contains("s3://nightly-sales/sales/"), "{one}");

    // The three events arrived together: the lane gathered them (waiting up to `max_wait`)
    // into one batch, written as one object.
    let keys = moto.wait_for_keys("nightly-sales", T).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut rows = Vec::new();
    for key in &keys {
        assert!(key.starts_with("sales/") && key.ends_with(".csv"), "{key}");
        let body = moto.get("nightly-sales", key).await.unwrap();
        let mut rd = csv::Reader::from_reader(body.as_slice());
        assert_eq!(
            rd.headers().unwrap().iter().collect::<Vec<_>>(),
            ["id", "customer", "total"]
        );
        for r in rd.records() {
            rows.push(r.unwrap().iter().map(str::to_owned).collect::<Vec<_>>());
        }
    }
    rows.sort();
    assert_eq!(
        rows,
        [
            ["s-1", "Ana, Lda.", "10.5"],
            ["s-2", "Bo \"the\" buyer", "7"],
            ["s-3", "Cy", ""],
        ]
    );
    assert!(!s.logs().contains("e2e-secret-never-logged"));
    s.terminate().await;
}
