//! `GET /v1/plugins`: the HTTP provider with its settings schema and credential types, and
//! every destination kind with a schema, behind the API token.

use axum::http::StatusCode;

use super::{call, req, state};

#[tokio::test]
async fn plugins_list_providers_and_destinations_with_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let (status, v) = call(&st, req("GET", "/v1/plugins", None, "")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let http = &v["providers"][0];
    assert_eq!(http["id"], "http");
    assert_eq!(
        http["settings_schema"]["properties"]["kind"]["const"],
        "http"
    );
    assert_eq!(http["settings_schema"]["required"][1], "url");
    let creds: Vec<&str> = http["credential_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        creds,
        ["api_key", "bearer", "basic", "oauth2_client_credentials"]
    );
    let kinds: Vec<&str> = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"webhook") && kinds.contains(&"s3"),
        "{kinds:?}"
    );
    assert!(v["destinations"][0]["settings_schema"]["required"].is_array());
}
