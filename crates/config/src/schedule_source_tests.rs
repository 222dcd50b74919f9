//! Tests of `kind: schedule` settings: defaults, each way to give the timing, and problems
//! reported at their field.

use estafeta_core::schedule::Spec;

use super::*;
use crate::validate::SourceKindSettings;

fn load(extra: &str) -> Result<ScheduleSourceSettings, String> {
    let yaml = format!("sources:\n  - id: nightly\n    kind: schedule\n{extra}");
    let c = crate::load_str(&yaml, "t.yaml", &crate::ProcessLookup::default())
        .map_err(|e| e.to_string())?;
    match &c.sources[0].kind {
        SourceKindSettings::Schedule(s) => Ok((**s).clone()),
        other => Err(format!("unexpected kind {}", other.name())),
    }
}

#[test]
fn defaults() {
    let s = load("    cron: \"0 0 * * *\"\n").unwrap();
    assert_eq!((s.spec_key, s.spec_text.as_str()), ("cron", "0 0 * * *"));
    assert_eq!(s.timing.time_zone(), Tz::UTC);
    assert_eq!(s.jitter, Duration::ZERO);
    assert_eq!(
        (s.misfire, s.priority, s.overlap),
        (Misfire::RunOnce, Priority::Normal, Overlap::Skip)
    );
    let JobSettings::Emit { event_type, data } = &s.job else {
        unreachable!()
    };
    assert_eq!((event_type.as_str(), data), ("schedule.fired", &None));
}

#[test]
fn every_setting() {
    let s = load(
        "    cron: \"cron(0 3 ? * MON-FRI *)\"\n    timezone: America/Sao_Paulo\n    \
         start: 2026-12-01\n    end: 2027-12-01T00:00:00Z\n    jitter: 30s\n    misfire: skip\n    \
         priority: high\n    overlap: queue\n    type: sales.pull\n    data: {day: yesterday, pages: [1, 2]}\n",
    )
    .unwrap();
    assert_eq!(s.timing.time_zone(), chrono_tz::America::Sao_Paulo);
    assert_eq!(
        s.timing.start().map(|t| t.to_rfc3339()),
        Some("2026-12-01T03:00:00+00:00".to_owned())
    );
    assert_eq!(s.jitter, Duration::from_secs(30));
    assert_eq!(
        (s.misfire, s.priority, s.overlap),
        (Misfire::Skip, Priority::High, Overlap::Queue)
    );
    let JobSettings::Emit { event_type, data } = &s.job else {
        unreachable!()
    };
    assert_eq!(event_type, "sales.pull");
    assert_eq!(
        data,
        &Some(serde_json::json!({"day": "yesterday", "pages": [1, 2]}))
    );

    let s = load("    every: 5m\n").unwrap();
    assert!(matches!(s.timing.spec(), Spec::Interval(d) if *d == Duration::from_secs(300)));
    assert_eq!((s.spec_key, s.spec_text.as_str()), ("every", "5m"));
    let s = load("    cron: rate(2 hours)\n").unwrap();
    assert!(matches!(s.timing.spec(), Spec::Interval(d) if d.as_secs() == 7200));
    let s = load("    at: \"2026-12-01T09:00:00\"\n    timezone: America/Sao_Paulo\n").unwrap();
    assert!(
        matches!(s.timing.spec(), Spec::Once(t) if t.to_rfc3339() == "2026-12-01T12:00:00+00:00")
    );
}

#[test]
fn problems_name_their_field() {
    let e = load("    every: 5m\n    cron: \"0 0 * * *\"\n").unwrap_err();
    assert!(e.contains("sources[0]: give exactly one of `cron`"), "{e}");
    let e = load("    timezone: UTC\n").unwrap_err();
    assert!(e.contains("give exactly one of"), "{e}");
    let e = load("    cron: \"0 0 * * ? *\"\n").unwrap_err();
    assert!(
        e.contains("sources[0].cron:") && e.contains("cron(0 0 * * ? *)"),
        "{e}"
    );
    let e = load("    cron: \"0 0 30 2 *\"\n").unwrap_err();
    assert!(
        e.contains("sources[0].cron: the cron expression matches no date"),
        "{e}"
    );
    let e = load("    every: 100ms\n").unwrap_err();
    assert!(
        e.contains("sources[0].every: an interval must be at least 1s"),
        "{e}"
    );
    let e = load("    every: soon\n").unwrap_err();
    assert!(e.contains("is not a duration"), "{e}");
    let e = load(
        "    every: 1m\n    jitter: 2m\n    timezone: Mars/Base\n    start: yesterday\n    type: \" \"\n",
    )
    .unwrap_err();
    for field in [
        "sources[0].timezone: `Mars/Base` is not an IANA time zone",
        "sources[0].start: `yesterday` is not a time",
        "sources[0].jitter: must be shorter than the interval (1m)",
        "sources[0].type: must not be empty",
    ] {
        assert!(e.contains(field), "{field} missing in {e}");
    }
    let e = load("    every: 1m\n    start: 2027-01-01\n    end: 2026-01-01\n").unwrap_err();
    assert!(
        e.contains("sources[0].end: must be later than `start`"),
        "{e}"
    );
    let e = load("    at: 2026-01-01T00:00:00Z\n    end: 2025-01-01T00:00:00Z\n").unwrap_err();
    assert!(e.contains("sources[0].at: `at` lies outside"), "{e}");
    let e = load("    every: 1m\n    misfire: burst\n").unwrap_err();
    assert!(e.contains("misfire") || e.contains("burst"), "{e}");
    let e = load("    every: 1m\n    colour: red\n").unwrap_err();
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn a_provider_job() {
    let s = load(
        "    every: 1h\n    provider:\n      kind: http\n      url: \"https://api.example/v1/sales?day={{ yesterday }}\"\n      \
         auth: { kind: api_key, header: X-Api-Key, value: k }\n      pagination: { kind: page_number, size: 50 }\n      \
         records: $.data[*]\n      cursor: { field: updated_at }\n      rate_limit: 5/s\n      emit: { per: run, type: partner.sales }\n",
    )
    .unwrap();
    let JobSettings::Provider(crate::provider::ProviderSettings::Http(h)) = &s.job else {
        unreachable!()
    };
    assert_eq!(h.method, "GET");
    assert_eq!(h.event_type, "partner.sales");
    assert_eq!(
        h.cursor.as_ref().map(|c| c.0.as_str()),
        Some("$['updated_at']")
    );
    assert_eq!(h.rate_limit.map(|r| r.count), Some(5));
    assert!(matches!(
        h.pagination,
        crate::provider_http::PaginationSettings::PageNumber {
            start: 1,
            size: Some(50),
            ..
        }
    ));
    assert!(format!("{:?}", h.auth).contains("redacted"));
}

#[test]
fn provider_problems_are_reported_at_their_field() {
    let e = load(
        "    every: 1h\n    type: x\n    provider:\n      kind: http\n      url: \"https://a/{{ x\"\n      \
         auth: { kind: api_key, header: A, query: b, value: k }\n      pagination: { kind: cursor, path: \"next\" }\n      \
         records: \"$.data[\"\n      rate_limit: fast\n      attempts: 0\n",
    )
    .unwrap_err();
    for field in [
        "sources[0].provider: a schedule with a `provider`",
        "sources[0].provider.url: template error",
        "sources[0].provider.auth: give exactly one of `header` or `query`",
        "sources[0].provider.pagination.path: `next` is not a JSON path",
        "sources[0].provider.records: `$.data[` is not a JSON path",
        "sources[0].provider.rate_limit: `fast` is not a rate",
        "sources[0].provider.attempts: must be between 1 and 20",
    ] {
        assert!(e.contains(field), "{field} missing in {e}");
    }
    let e = load("    every: 1h\n    provider: { kind: ftp }\n").unwrap_err();
    assert!(e.contains("ftp"), "{e}");
}

#[test]
fn a_provider_can_name_a_stored_credential_and_allow_private_networks() {
    let s = load(
        "    every: 1h\n    provider:\n      kind: http\n      url: https://api.example/v1\n      \
         auth: { credential: partner-api }\n      allow_private_networks: true\n",
    )
    .unwrap();
    let JobSettings::Provider(crate::provider::ProviderSettings::Http(h)) = &s.job else {
        unreachable!()
    };
    assert!(matches!(
        &h.auth,
        crate::provider_http::AuthSettings::Credential(name) if name == "partner-api"
    ));
    assert!(h.allow_private_networks);
    let e = load(
        "    every: 1h\n    provider: { kind: http, url: \"https://a\", auth: { credential: \" \" } }\n",
    )
    .unwrap_err();
    assert!(
        e.contains("sources[0].provider.auth.credential: must not be empty"),
        "{e}"
    );
    let e = load(
        "    every: 1h\n    provider: { kind: http, url: \"https://a\", auth: { credential: x, kind: bearer } }\n",
    )
    .unwrap_err();
    assert!(e.contains("`credential: NAME`"), "{e}");
}
