//! `retention:` in the configuration: defaults, periods by scope, object policies and how
//! mistakes are named.

use std::time::Duration;

use estafeta_config::{Lookup, load_str};

struct NoEnv;
impl Lookup for NoEnv {
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn secret(&self, _: &str) -> Option<String> {
        None
    }
}

const GOOD: &str = r"
sources:
  - id: visitors
    kind: http
retention:
  interval: 10m
  events:
    older_than: 30d
    tenants: { acme: 90d }
    sources: { visitors: 7d }
  objects:
    - destination: local
      older_than: 2d
    - destination: local
      prefix: other/
      older_than: 1h
destinations:
  - id: local
    kind: file
    path: /tmp/estafeta-retention-config
    prefix: sales/
";

#[test]
fn periods_and_object_policies_validate() {
    let config = load_str(GOOD, "retention.yaml", &NoEnv).expect("valid config");
    let r = &config.retention;
    assert_eq!(r.interval, Duration::from_secs(600));
    assert_eq!(r.events.default, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(r.events.tenants["acme"], Duration::from_secs(90 * 86_400));
    assert_eq!(
        r.events.sources["visitors"],
        Duration::from_secs(7 * 86_400)
    );
    assert_eq!(r.objects.len(), 2);
    assert_eq!(
        r.objects[0].prefix, "sales/",
        "the destination's own prefix"
    );
    assert_eq!(r.objects[1].prefix, "other/");
}

#[test]
fn no_section_means_no_policy_and_an_hourly_interval() {
    let config = load_str("", "empty.yaml", &NoEnv).expect("empty config");
    assert!(config.retention.is_empty());
    assert_eq!(config.retention.interval, Duration::from_secs(3600));
}

#[test]
fn mistakes_are_named() {
    let yaml = r"
retention:
  interval: 1ms
  events:
    older_than: 0s
    sources: { nowhere: 1d }
  objects:
    - destination: missing
      older_than: 1d
    - destination: hook
      older_than: 1d
destinations:
  - id: hook
    kind: webhook
    url: https://example.com/hook
";
    let errors = load_str(yaml, "bad.yaml", &NoEnv)
        .expect_err("invalid retention")
        .to_string();
    for needle in [
        "retention.interval",
        "retention.events.older_than",
        "retention.events.sources.nowhere",
        "there is no destination `missing`",
        "`hook` is not an `s3` or `file` destination",
    ] {
        assert!(errors.contains(needle), "{needle} not in {errors}");
    }
}

#[test]
fn unknown_keys_are_rejected() {
    let yaml = "retention:\n  event: {}\n";
    assert!(load_str(yaml, "typo.yaml", &NoEnv).is_err());
}
