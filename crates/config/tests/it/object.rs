//! Object storage destinations (`kind: s3`, `kind: file`) in the configuration: what
//! validates into which settings, and how mistakes are named.

use std::time::Duration;

use estafeta_config::object_destination::{DEFAULT_KEY, ObjectFormat};
use estafeta_config::{DestinationKindSettings, Lookup, load_str};

struct Env;
impl Lookup for Env {
    fn env(&self, name: &str) -> Option<String> {
        (name == "S3_ENDPOINT").then(|| "http://127.0.0.1:9000/".into())
    }
    fn secret(&self, name: &str) -> Option<String> {
        match name {
            "s3_key_id" => Some("AKIAEXAMPLE".into()),
            "s3_secret" => Some("wJalrXUtnFEMI-example-secret".into()),
            _ => None,
        }
    }
}

const GOOD: &str = r#"
routes:
  - id: sales
    to:
      - destination: bucket
        template: '{"name": "{{ data.name }}", "total": {{ data.total }}}'
      - destination: local
destinations:
  - id: bucket
    kind: s3
    bucket: partner-sales
    endpoint: ${env:S3_ENDPOINT}
    region: eu-central-1
    access_key_id: ${secret:s3_key_id}
    secret_access_key: ${secret:s3_secret}
    prefix: exports/partner-a
    key: "sales/{{ date }}/{{ first.data.region }}-{{ batch_id }}.{{ extension }}"
    format: csv
    columns: [id, name, customer.email]
    gzip: true
    batch: { max_records: 5000, max_bytes: 8MiB, max_wait: 30s }
  - id: local
    kind: file
    path: /var/lib/estafeta/exports
  - id: aws
    kind: s3
    bucket: archive.example.org
    access_key_id: ${secret:s3_key_id}
    secret_access_key: ${secret:s3_secret}
"#;

#[test]
fn s3_and_file_destinations_validate_into_settings() {
    let c = load_str(GOOD, "objects.yaml", &Env).unwrap();
    let DestinationKindSettings::S3(s3) = &c.destinations[0].kind else {
        panic!("not s3")
    };
    assert_eq!(s3.bucket, "partner-sales");
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(s3.region, "eu-central-1");
    assert!(s3.path_style, "path style by default with an endpoint");
    assert_eq!(s3.access_key_id.expose(), "AKIAEXAMPLE");
    assert_eq!(s3.timeout, Duration::from_secs(60));
    let l = &s3.layout;
    assert_eq!(l.prefix, "exports/partner-a/");
    assert_eq!(l.format, ObjectFormat::Csv);
    assert_eq!(l.extension(), "csv.gz");
    assert_eq!(l.columns.as_ref().unwrap().len(), 3);
    assert_eq!(
        (l.max_records, l.max_bytes, l.max_wait),
        (5000, 8 << 20, Duration::from_secs(30))
    );
    let DestinationKindSettings::File(f) = &c.destinations[1].kind else {
        panic!("not file")
    };
    assert_eq!(f.path, std::path::Path::new("/var/lib/estafeta/exports"));
    assert_eq!(f.layout.key, DEFAULT_KEY);
    assert_eq!(f.layout.format, ObjectFormat::Jsonl);
    assert_eq!(f.layout.prefix, "");
    assert_eq!(
        (f.layout.max_records, f.layout.max_bytes, f.layout.max_wait),
        (1000, 16 << 20, Duration::from_secs(10))
    );
    let DestinationKindSettings::S3(aws) = &c.destinations[2].kind else {
        panic!("not s3")
    };
    assert_eq!(aws.region, "us-east-1");
    assert!(!aws.path_style, "virtual-hosted for AWS itself");
    assert_eq!(aws.endpoint_name(), "https://s3.us-east-1.amazonaws.com");
    // Secrets never show.
    assert!(!format!("{c:?}").contains("wJalrXUtnFEMI"));
}

#[test]
fn route_templates_for_objects_escape_values_as_json_strings() {
    let c = load_str(GOOD, "objects.yaml", &Env).unwrap();
    let event = estafeta_core::event::parse_cloudevent(
        serde_json::json!({"specversion":"1.0","id":"1","source":"s","type":"t",
                           "data":{"name":"Ana \"Bo\" \\ Silva","total":3}}),
        &estafeta_core::TenantId::default(),
        "http",
        chrono::Utc::now(),
    )
    .unwrap();
    let text = c
        .templates
        .render(&estafeta_config::template_name("sales", 0), &event, &[])
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["name"], "Ana \"Bo\" \\ Silva");
}

#[test]
fn mistakes_are_reported_together_with_their_places() {
    let yaml = r#"destinations:
  - id: bucket
    kind: s3
    bucket: Partner_Sales
    endpoint: ftp://storage.example.org
    region: "eu central"
    access_key_id: ${secret:s3_key_id}
    secret_access_key: ${secret:missing}
  - id: local
    kind: file
    path: ""
    prefix: /abs/../x
    key: "{{ date }}/{{ batch }}/{{ first.data.x }}.csv"
    format: jsonl
    columns: [id, id, ""]
    batch: { max_records: 0, max_bytes: 2GiB, max_wait: 48h }
  - id: broken
    kind: file
    path: /tmp/x
    key: "{{ date "
"#;
    let err = load_str(yaml, "objects.yaml", &Env).unwrap_err();
    let text = err.to_string();
    for expected in [
        "objects.yaml:2:9: destinations[0].bucket: `Partner_Sales` is not a bucket name",
        "objects.yaml:2:9: destinations[0].endpoint: the endpoint is the service's base URL",
        "objects.yaml:2:9: destinations[0].region: `eu central` is not a region",
        "destinations[0].secret_access_key: secret `missing` is not defined",
        "objects.yaml:9:9: destinations[1].path: the directory to write files under must not be empty",
        "destinations[1].prefix: `/abs/../x` is not a key prefix",
        "destinations[1].key: the key template uses `batch`",
        "destinations[1].columns: `columns` applies to `format: csv` only",
        "destinations[1].columns[1]: column `id` is listed twice",
        "destinations[1].columns[2]: a column name must not be empty",
        "destinations[1].batch.max_records: must be between 1 and 100000",
        "destinations[1].batch.max_bytes: must be between 1KiB and 1GiB",
        "destinations[1].batch.max_wait: must be at most 24h",
        "objects.yaml:17:9: destinations[2].key: template does not compile",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(err.0.iter().all(|e| e.line > 0), "{text}");
}

#[test]
fn unknown_and_missing_fields_are_named() {
    let yaml =
        "destinations:\n  - id: b\n    kind: s3\n    bucket: sales-data\n    acces_key_id: x\n";
    let text = load_str(yaml, "s.yaml", &Env).unwrap_err().to_string();
    assert!(text.contains("s.yaml:5:5"), "{text}");
    assert!(text.contains("acces_key_id"), "{text}");
    let yaml = "destinations:\n  - id: f\n    kind: file\n    path: /x\n    bucket: nope\n";
    let text = load_str(yaml, "f.yaml", &Env).unwrap_err().to_string();
    assert!(text.contains("bucket"), "{text}");
    let yaml = "destinations:\n  - id: f\n    kind: file\n    path: /x\n    format: parquet\n";
    let text = load_str(yaml, "f.yaml", &Env).unwrap_err().to_string();
    assert!(text.contains("parquet"), "{text}");
}
