//! Retention of object destinations: objects older than a cutoff under a prefix are found
//! and deleted, newer ones and other prefixes are kept, and a dry run deletes nothing —
//! against moto (a real S3-compatible server) and a temporary directory (file times set by
//! the test).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::Utc;
use estafeta_config::{Lookup, load_str};
use estafeta_destinations::object::ObjectSweeper;
use estafeta_testkit::Moto;
use object_store::ObjectStoreExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, PutPayload};

const KEY_ID: &str = "AKIAESTAFETATEST0002";
const SECRET_KEY: &str = "s3cr3t-Retention-Test-1a2b3c4d";

struct NoEnv;
impl Lookup for NoEnv {
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn secret(&self, _: &str) -> Option<String> {
        None
    }
}

fn sweeper(block: &str) -> ObjectSweeper {
    let yaml = format!("destinations:\n  - id: out\n{block}");
    let cfg = load_str(&yaml, "test.yaml", &NoEnv).unwrap_or_else(|e| panic!("{e}"));
    ObjectSweeper::new(&cfg.destinations[0]).unwrap()
}

#[tokio::test]
async fn s3_objects_older_than_the_cutoff_under_the_prefix_are_deleted() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.create_bucket("keep-30d").await;
    estafeta_destinations::install_crypto_provider();
    let writer = AmazonS3Builder::new()
        .with_endpoint(moto.endpoint())
        .with_bucket_name("keep-30d")
        .with_region("us-east-1")
        .with_access_key_id(KEY_ID)
        .with_secret_access_key(SECRET_KEY)
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()
        .unwrap();
    for key in [
        "sales/2026-11-01.csv",
        "sales/2026-11-02.csv",
        "other/a.csv",
    ] {
        writer
            .put(
                &Path::parse(key).unwrap(),
                PutPayload::from(Bytes::from_static(b"a,b\n")),
            )
            .await
            .unwrap();
    }
    let s = sweeper(&format!(
        "    kind: s3\n    bucket: keep-30d\n    endpoint: {}\n    access_key_id: {KEY_ID}\n    secret_access_key: {SECRET_KEY}\n",
        moto.endpoint()
    ));

    // Everything was written just now: a cutoff an hour ago finds nothing.
    let past = Utc::now() - chrono::Duration::hours(1);
    let none = s.sweep("sales/", past, false, 10).await.unwrap();
    assert_eq!((none.matched, none.deleted), (0, 0));

    // A cutoff in the future makes the objects "old" without waiting.
    let future = Utc::now() + chrono::Duration::minutes(5);
    let dry = s.sweep("sales/", future, true, 1).await.unwrap();
    assert_eq!((dry.matched, dry.deleted, dry.bytes), (2, 0, 8));
    assert_eq!(dry.sample.len(), 1);
    assert_eq!(
        moto.keys("keep-30d").await.len(),
        3,
        "a dry run deletes nothing"
    );

    let done = s.sweep("sales/", future, false, 10).await.unwrap();
    assert_eq!((done.matched, done.deleted), (2, 2));
    assert_eq!(moto.keys("keep-30d").await, vec!["other/a.csv".to_owned()]);
}

fn write(path: &std::path::Path, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"x,y\n").unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn files_older_than_the_cutoff_under_the_prefix_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let day = Duration::from_secs(86_400);
    write(&dir.path().join("sales/2026-10-01.csv"), 40 * day);
    write(&dir.path().join("sales/nested/2026-10-02.csv"), 35 * day);
    write(&dir.path().join("sales/2026-11-20.csv"), 2 * day);
    write(&dir.path().join("other/2026-10-01.csv"), 40 * day);
    let s = sweeper(&format!(
        "    kind: file\n    path: {}\n",
        dir.path().display()
    ));
    let cutoff = Utc::now() - chrono::Duration::days(30);

    let dry = s.sweep("sales/", cutoff, true, 10).await.unwrap();
    assert_eq!(
        dry.sample,
        vec!["sales/2026-10-01.csv", "sales/nested/2026-10-02.csv"]
    );
    assert_eq!(dry.deleted, 0);
    assert!(dir.path().join("sales/2026-10-01.csv").exists());

    let done = s.sweep("sales/", cutoff, false, 10).await.unwrap();
    assert_eq!((done.matched, done.deleted), (2, 2));
    assert!(!dir.path().join("sales/2026-10-01.csv").exists());
    assert!(!dir.path().join("sales/nested/2026-10-02.csv").exists());
    assert!(
        dir.path().join("sales/2026-11-20.csv").exists(),
        "newer kept"
    );
    assert!(
        dir.path().join("other/2026-10-01.csv").exists(),
        "other prefix kept"
    );

    // A partial name prefix and a prefix with nothing under it.
    write(&dir.path().join("sales/2026-09-01.csv"), 60 * day);
    let partial = s.sweep("sales/2026-09", cutoff, true, 10).await.unwrap();
    assert_eq!(partial.sample, vec!["sales/2026-09-01.csv"]);
    let empty = s.sweep("nothing/here/", cutoff, false, 10).await.unwrap();
    assert_eq!(empty, estafeta_destinations::object::SweepReport::default());
}

#[test]
fn other_kinds_are_refused() {
    let yaml = "destinations:\n  - id: hook\n    kind: webhook\n    url: https://example.com/\n";
    let cfg = load_str(yaml, "test.yaml", &NoEnv).unwrap();
    let err = ObjectSweeper::new(&cfg.destinations[0]).unwrap_err();
    assert!(err.to_string().contains("not an `s3` or `file`"), "{err}");
}
