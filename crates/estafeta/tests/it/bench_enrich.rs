//! `estafeta bench --scenario enrich` on a tiny load: the three phases run, every event is
//! delivered with the look-up's answer, and the cache saves look-ups.

use serde_json::Value;

/// The phase named `name` in the bench's JSON report.
fn phase<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["scenarios"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no phase {name} in {report}"))
}

#[tokio::test]
async fn bench_enrich_runs_three_phases_and_the_cache_saves_look_ups() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args([
            "bench",
            "--scenario",
            "enrich",
            "--events",
            "600",
            "--lookup-delay",
            "5ms",
            "--lookup-documents",
            "20",
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
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    for name in ["enrich-baseline", "enrich-unique", "enrich-cached"] {
        let p = phase(&report, name);
        assert_eq!(p["complete"], true, "{name}: {p}");
        assert_eq!(p["events"], 600, "{name}: {p}");
        assert_eq!(p["delivered"], 600, "{name}: {p}");
        assert_eq!(p["failed"], 0, "{name}: {p}");
        let ratio = p["enrichment"]["vs_baseline"].as_f64().unwrap_or(0.0);
        assert!(ratio > 0.0, "{name}: {p}");
    }

    let baseline = &phase(&report, "enrich-baseline")["enrichment"];
    assert_eq!(baseline["step"], false, "{baseline}");
    assert_eq!(baseline["lookup_requests"], 0, "{baseline}");

    let unique = &phase(&report, "enrich-unique")["enrichment"];
    assert_eq!(unique["enriched_deliveries"], 600, "{unique}");
    // One look-up per event (a retried one may add a few).
    let requests = unique["lookup_requests"].as_u64().unwrap();
    assert!((600..=660).contains(&requests), "{unique}");
    // Connections are reused.
    let connections = unique["lookup_connections"].as_u64().unwrap();
    assert!(connections < requests / 2, "{unique}");

    let cached = &phase(&report, "enrich-cached")["enrichment"];
    assert_eq!(cached["enriched_deliveries"], 600, "{cached}");
    let requests = cached["lookup_requests"].as_u64().unwrap();
    assert!((20..=60).contains(&requests), "{cached}");
}
