//! Route steps in the configuration: what validates, and how mistakes are named.

use estafeta_config::route_steps::{Method, NotFound, OnError, StepSettings, TransformOp};
use estafeta_config::{Lookup, load_str};

struct Env;
impl Lookup for Env {
    fn env(&self, name: &str) -> Option<String> {
        (name == "LOOKUP_URL").then(|| "https://records.example.org".into())
    }
    fn secret(&self, name: &str) -> Option<String> {
        (name == "lookup_token").then(|| "tok-123".into())
    }
}

const STEPS: &str = r#"
routes:
  - id: visitors
    steps:
      - enrich:
          as: court
          http:
            url: "${env:LOOKUP_URL}/v1/records/{{ data.after.document }}"
            fallback: ["https://backup.example.org/v1/records/{{ data.after.document }}"]
            headers: { Authorization: "Bearer ${secret:lookup_token}" }
            timeout: 2s
            retry: { attempts: 3, backoff: 100ms }
            not_found: null
          cache: { ttl: 5m }
          on_error: continue
      - enrich:
          as: extra
          http:
            method: POST
            url: "https://search.example.org/v1/search"
            body: '{"document": "{{ data.after.document }}", "hits": {{ court.hits }}}'
      - transform:
          set:
            data.alert: "court.hits > 2 ? 'high' : 'low'"
            summary: { template: "{{ data.after.name }}: {{ court.hits }}" }
            data.source_system: { value: turnstile }
          remove: [data.after.internal_note]
      - filter: "court != null && court.hits > 0 && summary != ''"
    to:
      - destination: hook
        template: "{{ summary }} / {{ extra.total }}"
destinations:
  - id: hook
    kind: webhook
    url: https://hooks.example.org/in
"#;

#[test]
fn steps_validate_into_settings() {
    let c = load_str(STEPS, "steps.yaml", &Env).unwrap();
    let steps = &c.routes[0].steps;
    assert_eq!(steps.len(), 4);
    let StepSettings::Enrich(e) = &steps[0] else {
        panic!("not an enrich step")
    };
    assert_eq!(e.name, "court");
    assert_eq!(e.method, Method::Get);
    assert_eq!(e.urls.len(), 2);
    assert_eq!(e.headers[0].1.expose(), "Bearer tok-123");
    assert_eq!(e.attempts, 3);
    assert_eq!(e.not_found, NotFound::Null);
    assert_eq!(e.on_error, OnError::Continue);
    assert_eq!(
        e.cache.map(|(ttl, n)| (ttl.as_secs(), n)),
        Some((300, 10_000))
    );
    assert!(c.templates.contains(&e.urls[0]));
    let StepSettings::Enrich(post) = &steps[1] else {
        panic!("not an enrich step")
    };
    assert_eq!(post.method, Method::Post);
    assert!(post.body.is_some());
    let StepSettings::Transform(ops) = &steps[2] else {
        panic!("not a transform step")
    };
    assert_eq!(ops.len(), 4);
    assert!(
        matches!(&ops[3], TransformOp::Remove { path } if path.join(".") == "data.after.internal_note")
    );
    assert!(matches!(steps[3], StepSettings::Filter(_)));
}

fn errors(yaml: &str) -> String {
    load_str(yaml, "steps.yaml", &Env).unwrap_err().to_string()
}

#[test]
fn mistakes_in_steps_are_named_with_their_place() {
    let bad = r#"
routes:
  - id: visitors
    steps:
      - filter: "cour.hits > 0"
      - enrich:
          as: type
          http:
            url: "ftp://records.example.org/{{ data.id }}"
            body: "{}"
      - enrich:
          as: court
          http: { url: "https://x.example.org/{{ data.id", retry: { attempts: 0 } }
      - transform:
          set: { subject: "'x'" }
          remove: [nowhere.field]
      - filter: "court.hits >"
    to: [{ destination: hook }]
destinations:
  - { id: hook, kind: webhook, url: "https://hooks.example.org/in" }
"#;
    let e = errors(bad);
    for want in [
        // The filter reads a name nothing binds.
        "steps.yaml:5:",
        "routes[0].steps[0].filter",
        "reads `cour`",
        // `as` may not shadow the event's own names.
        "routes[0].steps[1].enrich.as",
        "`type` is one of the event's own names",
        "routes[0].steps[1].enrich.http.url",
        "starts with http:// or https://",
        "a GET request has no body",
        "routes[0].steps[2].enrich.http.url",
        "URL template does not compile",
        "routes[0].steps[2].enrich.http.retry.attempts",
        "routes[0].steps[3].transform.set.subject",
        "attribute of the event and cannot be changed",
        "`nowhere.field`: `nowhere` is not bound by an earlier step",
        "routes[0].steps[4].filter",
        "expression does not compile",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn a_name_is_bound_once_and_only_for_later_steps() {
    let e = errors(
        r#"
routes:
  - id: r
    steps:
      - transform: { set: { total: "lookup.hits" } }
      - enrich: { as: lookup, http: { url: "https://x.example.org/a" } }
      - enrich: { as: lookup, http: { url: "https://x.example.org/b" } }
    to: [{ destination: hook }]
destinations:
  - { id: hook, kind: webhook, url: "https://hooks.example.org/in" }
"#,
    );
    assert!(
        e.contains("reads `lookup`, which is not defined here"),
        "{e}"
    );
    assert!(
        e.contains("`lookup` is already bound by an earlier step"),
        "{e}"
    );
}
