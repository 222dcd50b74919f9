//! `examples/partner-to-bucket` end to end: the example's own file run by the real binary; a
//! manual run of the nightly schedule pulls yesterday's sales page by page from a local
//! partner API (API key, `?day=&page=&per_page=`), the S3 destination writes them as
//! `sales/<yesterday>.csv` to a real S3-compatible server (moto), and retention and purge
//! remove old objects under `sales/` while the new file stays, with audit entries.
//!
//! The partner API is local to this test rather than `estafeta_testkit::partner_api`: that
//! one serves fixed November 2026 records and filters only by `since`, while this scenario
//! needs sales on the real "yesterday" of the run and an API that filters by day.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{NaiveDate, TimeDelta, Utc};
use estafeta_testkit::Moto;
use serde_json::{Value, json};

use crate::server::Server;

const T: Duration = Duration::from_secs(60);
const API_KEY: &str = "pk-live-partner-7d3f9a";
const S3_SECRET: &str = "s3-secret-never-logged";
const BUCKET: &str = "partner-sales";
/// The example's page size (`pagination.size`).
const PAGE: usize = 500;
/// Yesterday's sales: three pages, the last one short.
const YESTERDAY_SALES: usize = 2 * PAGE + 37;

/// One sale of `day`: a few have commas and quotes in the customer's name.
fn sale(day: NaiveDate, i: usize) -> Value {
    let customer = match i % 5 {
        0 => "Ana, Lda.".to_owned(),
        1 => "Bo \"the\" buyer".to_owned(),
        _ => format!("Customer {i}"),
    };
    json!({
        "id": format!("{}-{i:04}", day.format("%Y%m%d")),
        "day": day.format("%Y-%m-%d").to_string(),
        "customer": customer,
        "total": format!("{}.{:02}", i * 3 + 1, i % 100),
        "channel": "web",
    })
}

/// The queries the partner API was asked, each with whether its key was right.
type Asked = Arc<Mutex<Vec<(bool, Vec<(String, String)>)>>>;

/// A partner's sales API: `GET /v1/sales?day=YYYY-MM-DD&page=N&per_page=K` with `X-Api-Key`,
/// answering `{"data": [...]}`; it records every query it was asked.
struct PartnerSales {
    addr: SocketAddr,
    asked: Asked,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for PartnerSales {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct ApiState {
    sales: Arc<Vec<Value>>,
    asked: Asked,
}

async fn sales(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let authorised = headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(API_KEY);
    st.asked.lock().unwrap().push((authorised, q.clone()));
    if !authorised {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "key"})),
        )
            .into_response();
    }
    let param = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let num = |n: &str, d: usize| param(n).and_then(|v| v.parse().ok()).unwrap_or(d);
    let day = param("day").unwrap_or_default();
    let (page, per_page) = (num("page", 1).max(1), num("per_page", 100).max(1));
    let data: Vec<Value> = st
        .sales
        .iter()
        .filter(|s| s["day"] == day.as_str())
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    axum::Json(json!({"data": data, "page": page})).into_response()
}

impl PartnerSales {
    async fn start(sales_list: Vec<Value>) -> Self {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/sales", get(sales))
            .with_state(ApiState {
                sales: Arc::new(sales_list),
                asked: Arc::clone(&asked),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            asked,
            server,
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn asked(&self) -> Vec<(bool, Vec<(String, String)>)> {
        self.asked.lock().unwrap().clone()
    }
}

/// Puts an object into moto (unsigned: moto does not check signatures here, but wants a
/// well-formed SigV4 header to treat the request as an authenticated one).
async fn put_object(endpoint: &str, key: &str, body: &str) {
    estafeta_destinations::install_crypto_provider();
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{BUCKET}/{key}"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {key}: {}", r.status());
}

/// Waits until `key` is in the bucket; all the keys then.
async fn wait_for_key(moto: &Moto, key: &str) -> Vec<String> {
    let start = Instant::now();
    loop {
        let keys = moto.keys(BUCKET).await;
        if keys.iter().any(|k| k == key) {
            return keys;
        }
        assert!(
            start.elapsed() < T,
            "no {key} in the bucket; keys: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn purge(s: &Server, body: Value) -> Value {
    let r = s
        .req(reqwest::Method::POST, "/v1/purge")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_sales_become_one_csv_and_old_files_are_purged() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.create_bucket(BUCKET).await;
    let endpoint = moto.endpoint();

    // A file from an earlier night. Objects' ages come from S3's LastModified, which moto
    // sets to now: `cutoff` stands for "30 days ago" in the purge below. Wait for the next
    // whole second so that the new CSV is strictly newer even at 1 s precision.
    let old_key = "sales/2026-01-01.csv";
    put_object(&endpoint, old_key, "id,day,customer,total\n").await;
    let cutoff = Utc::now();
    while Utc::now().timestamp() <= cutoff.timestamp() + 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A manual run's tick is now, so its "yesterday" is the day before today (UTC).
    let today = Utc::now().date_naive();
    let yesterday = today - TimeDelta::days(1);
    let before = yesterday - TimeDelta::days(1);
    let mut all: Vec<Value> = (0..40).map(|i| sale(before, i)).collect();
    all.extend((0..YESTERDAY_SALES).map(|i| sale(yesterday, i)));
    all.extend((0..25).map(|i| sale(today, i)));
    let api = PartnerSales::start(all).await;

    // The example's own file, run as its header says.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("estafeta.yaml");
    // The partner API runs on loopback here; a real partner is on the internet, so the
    // example leaves private addresses refused.
    let yaml = example("partner-to-bucket/estafeta.yaml").replace(
        "    provider:\n      kind: http\n",
        "    provider:\n      kind: http\n      allow_private_networks: true\n",
    );
    assert!(
        yaml.contains("allow_private_networks: true"),
        "the example's provider block moved"
    );
    std::fs::write(&cfg, yaml).unwrap();
    let storage = format!("sqlite://{}/estafeta.db", dir.path().display());
    let s = Server::start_with_args(
        dir.path(),
        &cfg,
        &["--listen", "127.0.0.1:0", "--storage", &storage],
        &[
            ("PARTNER_API_URL", api.base_url().as_str()),
            ("S3_ENDPOINT", endpoint.as_str()),
            ("ESTAFETA_SECRET_PARTNER_API_KEY", API_KEY),
            ("ESTAFETA_SECRET_S3_KEY_ID", "AKIAE2ETEST"),
            ("ESTAFETA_SECRET_S3_SECRET", S3_SECRET),
        ],
    )
    .await;

    // The retention job's first pass, right after start: nothing under `sales/` is 30 days
    // old, so nothing goes.
    let audit = s
        .wait_json("/v1/audit?limit=100", T, |v| {
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["actor"] == "retention" && e["kind"] == "objects")
        })
        .await;
    let pass = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["actor"] == "retention" && e["kind"] == "objects")
        .unwrap()
        .clone();
    assert!(pass["error"].is_null(), "{pass}");
    assert!(pass.to_string().contains("sales/"), "{pass}");
    assert_eq!(moto.keys(BUCKET).await, [old_key]);

    // Don't wait for midnight: run the schedule now.
    let r = s
        .req(reqwest::Method::POST, "/v1/schedules/partner-sales/run")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let runs = s
        .wait_json("/v1/schedules/partner-sales/runs", T, |v| {
            matches!(
                v["items"][0]["status"].as_str(),
                Some("succeeded" | "failed")
            )
        })
        .await;
    assert_eq!(runs["items"][0]["status"], "succeeded", "{runs}");
    assert_eq!(runs["items"][0]["records"], YESTERDAY_SALES, "{runs}");

    // Three pages of yesterday, with the key, 500 a page; the third is short and the last.
    let asked = api.asked();
    let expected: Vec<(bool, Vec<(String, String)>)> = (1..=3)
        .map(|page| {
            (
                true,
                vec![
                    ("day".to_owned(), yesterday.to_string()),
                    ("page".to_owned(), page.to_string()),
                    ("per_page".to_owned(), PAGE.to_string()),
                ],
            )
        })
        .collect();
    let mut sorted_asked = asked.clone();
    for (_, q) in &mut sorted_asked {
        q.sort();
    }
    assert_eq!(sorted_asked, expected, "{asked:?}");

    // One object for the night, named for yesterday.
    let new_key = format!("sales/{yesterday}.csv");
    let keys = wait_for_key(&moto, &new_key).await;
    assert_eq!(keys, [old_key.to_owned(), new_key.clone()]);
    let body = moto.get(BUCKET, &new_key).await.unwrap();
    let mut rd = csv::Reader::from_reader(body.as_slice());
    assert_eq!(
        rd.headers().unwrap().iter().collect::<Vec<_>>(),
        ["id", "day", "customer", "total"]
    );
    let rows: Vec<Vec<String>> = rd
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), YESTERDAY_SALES);
    for (i, row) in rows.iter().enumerate() {
        let want = sale(yesterday, i);
        let cell = |n: &str| want[n].as_str().unwrap().to_owned();
        assert_eq!(
            *row,
            [cell("id"), cell("day"), cell("customer"), cell("total")],
            "row {i}"
        );
    }

    // The policy's own period deletes nothing yet: both files are younger than 30 days.
    let dry = purge(
        &s,
        json!({"objects": {"destination": "sales-bucket", "prefix": "sales/", "older_than": "30d"}, "dry_run": true}),
    )
    .await;
    assert_eq!(dry["objects"]["matched"], 0, "{dry}");

    // Files older than the cutoff: a dry run names the old one and deletes nothing …
    let scope =
        json!({"destination": "sales-bucket", "prefix": "sales/", "before": cutoff.to_rfc3339()});
    let dry = purge(&s, json!({"objects": scope, "dry_run": true})).await;
    assert_eq!(dry["objects"]["matched"], 1, "{dry}");
    assert_eq!(dry["objects"]["sample"], json!([old_key]), "{dry}");
    assert_eq!(
        moto.keys(BUCKET).await,
        [old_key.to_owned(), new_key.clone()]
    );

    // … and the purge deletes it; yesterday's CSV stays.
    let done = purge(&s, json!({"objects": scope})).await;
    assert_eq!(done["objects"]["deleted"], 1, "{done}");
    assert_eq!(moto.keys(BUCKET).await, std::slice::from_ref(&new_key));

    // Who deleted what is in the audit log: the admin's real purge, newest first.
    let audit = s.get_json("/v1/audit?limit=100").await;
    let latest = &audit["items"][0];
    assert_eq!(latest["actor"], "admin", "{audit}");
    assert_eq!(latest["kind"], "objects", "{audit}");
    assert_eq!(latest["dry_run"], false, "{audit}");
    assert!(latest["error"].is_null(), "{audit}");
    assert!(latest.to_string().contains("sales-bucket"), "{latest}");

    let logs = s.logs();
    assert!(!logs.contains(API_KEY), "the API key must never be logged");
    assert!(
        !logs.contains(S3_SECRET),
        "the S3 secret must never be logged"
    );
    s.terminate().await;
}

/// An example file's text.
fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name),
    )
    .unwrap()
}
