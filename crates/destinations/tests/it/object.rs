//! Object storage destinations: `kind: s3` against a real S3-compatible server (moto's
//! `moto_server`, started per test by `estafeta_testkit::Moto`), objects read back with
//! `object_store`; `kind: file` against a temporary directory.

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use estafeta_config::{Lookup, load_str};
use estafeta_core::event::parse_cloudevent;
use estafeta_core::{DeliveryId, Destination, OutboundMessage, SendError, TenantId};
use estafeta_destinations::{HttpClients, build};
use estafeta_testkit::Moto;
use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore as _, ObjectStoreExt as _};
use serde_json::{Value, json};

const KEY_ID: &str = "AKIAESTAFETATEST0001";
const SECRET_KEY: &str = "s3cr3t-Do-Not-Show-9f8e7d6c5b4a";

struct Secrets;
impl Lookup for Secrets {
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn secret(&self, name: &str) -> Option<String> {
        match name {
            "s3_key_id" => Some(KEY_ID.into()),
            "s3_secret" => Some(SECRET_KEY.into()),
            _ => None,
        }
    }
}

/// A destination built from a config block, through validation and the registry.
fn destination(block: &str) -> Arc<dyn Destination> {
    let yaml = format!("destinations:\n  - id: out\n{block}");
    let cfg = load_str(&yaml, "test.yaml", &Secrets).unwrap_or_else(|e| panic!("{e}"));
    build(&cfg.destinations[0], &HttpClients::new()).unwrap()
}

fn s3_block(moto: &Moto, bucket: &str, extra: &str) -> String {
    format!(
        "    kind: s3\n    bucket: {bucket}\n    endpoint: {}\n    access_key_id: ${{secret:s3_key_id}}\n    secret_access_key: ${{secret:s3_secret}}\n    timeout: 5s\n{extra}",
        moto.endpoint()
    )
}

/// A reader of the bucket, independent of the destination.
fn reader(moto: &Moto, bucket: &str) -> AmazonS3 {
    estafeta_destinations::install_crypto_provider();
    AmazonS3Builder::new()
        .with_endpoint(moto.endpoint())
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id(KEY_ID)
        .with_secret_access_key(SECRET_KEY)
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()
        .unwrap()
}

async fn objects(store: &AmazonS3) -> Vec<(String, Vec<u8>)> {
    let mut metas: Vec<_> = store.list(None).try_collect().await.unwrap();
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    let mut out = Vec::new();
    for m in metas {
        let body = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.push((m.location.to_string(), body.to_vec()));
    }
    out
}

/// A message whose record is `data` (no route template).
fn msg(data: Value) -> OutboundMessage {
    let event = parse_cloudevent(
        json!({"specversion":"1.0","id":"e","source":"shop","type":"sale.created",
               "subject":"br-7","data":data}),
        &TenantId::default(),
        "http",
        chrono::Utc::now(),
    )
    .unwrap();
    OutboundMessage {
        delivery_id: DeliveryId::new(),
        event: Arc::new(event),
        body: Bytes::from_static(b"{\"not\":\"used\"}"),
        content_type: "application/cloudevents+json",
        attempt: 1,
    }
}

/// The UTC date the key template's `date` names: the batch's first delivery's.
fn batch_date(msgs: &[OutboundMessage]) -> String {
    let first = msgs.iter().map(|m| m.delivery_id).min().unwrap();
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(
        i64::try_from(first.ulid().timestamp_ms()).unwrap(),
    )
    .unwrap()
    .format("%Y-%m-%d")
    .to_string()
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn chain(err: &SendError) -> String {
    let mut out = err.to_string();
    let mut cur = std::error::Error::source(err);
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

macro_rules! moto_or_skip {
    () => {
        match Moto::start().await {
            Some(m) => m,
            None => return,
        }
    };
}

#[tokio::test]
async fn csv_with_header_and_quoting_under_a_dated_key() {
    let moto = moto_or_skip!();
    moto.create_bucket("sales-data").await;
    let dest = destination(&s3_block(
        &moto,
        "sales-data",
        "    format: csv\n    key: \"sales/{{ date }}/{{ batch_id }}.csv\"\n",
    ));
    let msgs = vec![
        msg(json!({"id": 1, "name": "Ana, \"the\" first", "total": 10.5})),
        msg(json!({"id": 2, "name": "two\nlines", "total": null, "items": [{"sku": "a"}]})),
        msg(json!({"id": 3, "name": "plain", "total": 7})),
    ];
    let ok = dest.send_batch(&msgs).await.unwrap();
    let objs = objects(&reader(&moto, "sales-data")).await;
    assert_eq!(objs.len(), 1);
    let first = msgs.iter().map(|m| m.delivery_id).min().unwrap();
    let date = batch_date(&msgs);
    assert_eq!(objs[0].0, format!("sales/{date}/{first}.csv"));
    assert!(
        ok.response_excerpt
            .as_deref()
            .unwrap()
            .contains(&format!("s3://sales-data/sales/{date}/{first}.csv")),
        "{ok:?}"
    );
    let text = String::from_utf8(objs[0].1.clone()).unwrap();
    assert!(text.starts_with("id,name,total,items\n"), "{text}");
    let mut rd = csv::Reader::from_reader(objs[0].1.as_slice());
    let rows: Vec<Vec<String>> = rd
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["1", "Ana, \"the\" first", "10.5", ""],
            vec!["2", "two\nlines", "", r#"[{"sku":"a"}]"#],
            vec!["3", "plain", "7", ""],
        ]
    );
}

#[tokio::test]
async fn jsonl_gzip_round_trip_and_template_records() {
    let moto = moto_or_skip!();
    moto.create_bucket("events-archive").await;
    let dest = destination(&s3_block(
        &moto,
        "events-archive",
        "    format: jsonl\n    gzip: true\n    prefix: archive/\n    key: \"{{ first.data.region }}/{{ year }}/{{ month }}/{{ batch_id }}.{{ extension }}\"\n",
    ));
    let mut msgs: Vec<OutboundMessage> = (0..20)
        .map(|i| msg(json!({"region": "eu", "n": i, "note": "ünïcødé"})))
        .collect();
    // A route template's output is the record.
    msgs[5].body = Bytes::from_static(br#"{"renamed": true}"#);
    msgs[5].content_type = "application/json";
    dest.send_batch(&msgs).await.unwrap();
    let store = reader(&moto, "events-archive");
    let objs = objects(&store).await;
    assert_eq!(objs.len(), 1);
    let key = &objs[0].0;
    assert!(key.starts_with("archive/eu/"), "{key}");
    assert!(key.ends_with(".jsonl.gz"), "{key}");
    let meta = store.get(&Path::parse(key).unwrap()).await.unwrap();
    assert_eq!(
        meta.attributes
            .get(&object_store::Attribute::ContentType)
            .map(AsRef::as_ref),
        Some("application/gzip")
    );
    let lines: Vec<Value> = gunzip(&objs[0].1)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[0], json!({"region": "eu", "n": 0, "note": "ünïcødé"}));
    assert_eq!(lines[5], json!({"renamed": true}));
    assert_eq!(lines[19]["n"], 19);
}

#[tokio::test]
async fn a_large_batch_is_split_by_bytes_into_numbered_objects() {
    let moto = moto_or_skip!();
    moto.create_bucket("split-test").await;
    let dest = destination(&s3_block(
        &moto,
        "split-test",
        "    format: json\n    key: \"daily/{{ date }}.json\"\n    batch: { max_bytes: 1KiB, max_records: 500 }\n",
    ));
    assert_eq!(dest.max_batch(), 500);
    let msgs: Vec<_> = (0..60)
        .map(|i| msg(json!({"n": i, "pad": "x".repeat(40)})))
        .collect();
    dest.send_batch(&msgs).await.unwrap();
    let objs = objects(&reader(&moto, "split-test")).await;
    assert!(objs.len() >= 4, "{} objects", objs.len());
    let mut seen = Vec::new();
    for (key, body) in &objs {
        assert!(body.len() <= 1024, "{key} has {} bytes", body.len());
        let arr: Vec<Value> = serde_json::from_slice(body).unwrap();
        seen.extend(arr.iter().map(|v| v["n"].as_u64().unwrap()));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..60).collect::<Vec<u64>>());
    // The template has no `part`: keys are numbered from the second object on.
    let date = batch_date(&msgs);
    assert!(objs.iter().any(|(k, _)| k == &format!("daily/{date}.json")));
    assert!(
        objs.iter()
            .any(|(k, _)| k == &format!("daily/{date}-2.json"))
    );
}

#[tokio::test]
async fn a_retried_batch_rewrites_the_same_key() {
    let moto = moto_or_skip!();
    moto.create_bucket("retry-test").await;
    let dest = destination(&s3_block(&moto, "retry-test", "    format: csv\n"));
    let msgs: Vec<_> = (0..5).map(|i| msg(json!({"n": i}))).collect();
    dest.send_batch(&msgs).await.unwrap();
    let first = objects(&reader(&moto, "retry-test")).await;
    // The retry: later attempt, gathered in another order.
    let mut again = msgs.clone();
    again.reverse();
    for m in &mut again {
        m.attempt = 2;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    dest.send_batch(&again).await.unwrap();
    let second = objects(&reader(&moto, "retry-test")).await;
    assert_eq!(first.len(), 1);
    assert_eq!(second, first, "same key, same content, no second copy");
    assert!(first[0].0.contains(&msgs[0].delivery_id.to_string()));
}

#[tokio::test]
async fn bad_credentials_are_final_and_name_the_bucket_not_the_secret() {
    let moto = moto_or_skip!();
    moto.create_bucket("locked-bucket").await;
    moto.enforce_auth().await;
    let dest = destination(&s3_block(&moto, "locked-bucket", ""));
    let err = dest.send(&msg(json!({"a": 1}))).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(err.status_code, Some(403));
    let text = err.to_string();
    assert!(text.contains("locked-bucket"), "{text}");
    assert!(text.contains(&moto.endpoint()), "{text}");
    assert!(text.contains("access denied"), "{text}");
    assert!(text.contains("InvalidAccessKeyId"), "{text}");
    for shown in [chain(&err), format!("{err:?}")] {
        assert!(!shown.contains(SECRET_KEY), "secret shown: {shown}");
    }
}

#[tokio::test]
async fn a_missing_bucket_is_final() {
    let moto = moto_or_skip!();
    let dest = destination(&s3_block(&moto, "no-such-bucket", ""));
    let err = dest.send(&msg(json!({"a": 1}))).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(err.status_code, Some(404));
    let text = err.to_string();
    assert!(text.contains("bucket `no-such-bucket`"), "{text}");
    assert!(text.contains("does not exist"), "{text}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dest = destination(&format!(
        "    kind: s3\n    bucket: far-away\n    endpoint: http://127.0.0.1:{port}\n    access_key_id: ${{secret:s3_key_id}}\n    secret_access_key: ${{secret:s3_secret}}\n    timeout: 3s\n"
    ));
    let started = Instant::now();
    let err = dest.send(&msg(json!({"a": 1}))).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("far-away"), "{text}");
}

fn file_block(dir: &std::path::Path, extra: &str) -> String {
    format!("    kind: file\n    path: {}\n{extra}", dir.display())
}

#[tokio::test]
async fn the_file_kind_writes_the_same_formats() {
    let dir = tempfile::tempdir().unwrap();
    let dest = destination(&file_block(
        dir.path(),
        "    format: csv\n    columns: [id, customer.name]\n    key: \"out/{{ batch_id }}.{{ extension }}\"\n",
    ));
    assert_eq!(dest.kind(), "file");
    let msgs = vec![
        msg(json!({"id": "o-1", "customer": {"name": "Ana, Jr."}})),
        msg(json!({"id": "o-2", "customer": {"name": "Bo"}})),
    ];
    dest.send_batch(&msgs).await.unwrap();
    let path = dir.path().join(format!("out/{}.csv", msgs[0].delivery_id));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "id,customer.name\no-1,\"Ana, Jr.\"\no-2,Bo\n"
    );
    let json = destination(&file_block(
        dir.path(),
        "    format: json\n    gzip: true\n    key: \"json/{{ batch_id }}.{{ extension }}\"\n",
    ));
    json.send_batch(&msgs).await.unwrap();
    let gz = std::fs::read(
        dir.path()
            .join(format!("json/{}.json.gz", msgs[0].delivery_id)),
    )
    .unwrap();
    let back: Value = serde_json::from_str(&gunzip(&gz)).unwrap();
    assert_eq!(back[1]["customer"]["name"], "Bo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_kind_shows_whole_files_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = destination(&file_block(
        dir.path(),
        "    format: jsonl\n    gzip: true\n    key: \"big/{{ batch_id }}.{{ extension }}\"\n    batch: { max_records: 5000 }\n",
    ));
    let big = dir.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    // A reader that keeps opening every visible file while the writer works.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        let big = big.clone();
        std::thread::spawn(move || {
            let mut checked = 0;
            loop {
                // One more look after the writer is done.
                let done = stop.load(std::sync::atomic::Ordering::Relaxed);
                for entry in std::fs::read_dir(&big).unwrap() {
                    let entry = entry.unwrap();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue; // a temporary file: never a final name
                    }
                    let bytes = std::fs::read(entry.path()).unwrap();
                    let text = gunzip(&bytes);
                    assert_eq!(text.lines().count(), 3000, "{name} is partial");
                    checked += 1;
                }
                if done {
                    return checked;
                }
            }
        })
    };
    for _ in 0..6 {
        let msgs: Vec<_> = (0..3000)
            .map(|i| msg(json!({"n": i, "pad": "y".repeat(200)})))
            .collect();
        dest.send_batch(&msgs).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(watcher.join().unwrap() >= 6);
    let names: Vec<_> = std::fs::read_dir(&big)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".jsonl.gz")), "{names:?}");

    // A write that fails leaves neither a partial file nor a temporary one.
    let blocked = destination(&file_block(
        dir.path(),
        "    key: \"taken/{{ first.subject }}\"\n",
    ));
    std::fs::create_dir_all(dir.path().join("taken/br-7/inside")).unwrap();
    let err = blocked.send(&msg(json!({"a": 1}))).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("taken"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["br-7"]);
}
