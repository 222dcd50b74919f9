//! `/v1/secrets` and `/v1/credentials`: admin token only, values never returned, private
//! fields shown only as `{"set": true}`, problems for bad input.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tower::ServiceExt as _;

use super::{call, req, state};

const VALUE: &str = "very-secret-value-91d2";
const PASSWORD: &str = "very-secret-password-3e77";

#[tokio::test]
async fn secrets_and_credentials_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    for (method, uri) in [
        ("GET", "/v1/secrets"),
        ("PUT", "/v1/secrets/a"),
        ("DELETE", "/v1/secrets/a"),
        ("GET", "/v1/credentials"),
        ("GET", "/v1/credentials/a"),
        ("PUT", "/v1/credentials/a"),
        ("DELETE", "/v1/credentials/a"),
    ] {
        for auth in [None, Some("Bearer not-the-token-000000000")] {
            let mut b = Request::builder().method(method).uri(uri);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            let r = b
                .header("content-type", "application/json")
                .body(Body::from(json!({"value": VALUE}).to_string()))
                .unwrap();
            let resp = estafeta_api::app(st.clone()).oneshot(r).await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {uri}");
        }
    }
    let (_, v) = call(&st, req("GET", "/v1/secrets", None, "")).await;
    assert_eq!(v["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn a_token_that_is_not_admin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = state(dir.path()).await;
    let reader = "reader-token-0123456789abcdef";
    st.auth = std::sync::Arc::new(
        estafeta_api::Auth::from_token(super::TOKEN).with_token(reader, "reader", false),
    );
    for (method, uri) in [
        ("GET", "/v1/secrets"),
        ("PUT", "/v1/secrets/a"),
        ("DELETE", "/v1/secrets/a"),
        ("GET", "/v1/credentials"),
        ("GET", "/v1/credentials/a"),
        ("PUT", "/v1/credentials/a"),
        ("DELETE", "/v1/credentials/a"),
    ] {
        let r = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {reader}"))
            .header("content-type", "application/json")
            .body(Body::from(json!({"value": VALUE}).to_string()))
            .unwrap();
        let resp = estafeta_api::app(st.clone()).oneshot(r).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {uri}");
    }
    assert!(st.vault.list_secrets().await.unwrap().is_empty());
}

#[tokio::test]
async fn secret_values_go_in_and_never_come_out() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let body = json!({"value": VALUE}).to_string();
    let (status, v) = call(
        &st,
        req(
            "PUT",
            "/v1/secrets/api_token",
            Some("application/json"),
            &body,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "api_token");
    assert!(!v.to_string().contains(VALUE));
    let (status, v) = call(
        &st,
        req(
            "PUT",
            "/v1/secrets/api_token",
            Some("application/json"),
            &body,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = call(&st, req("GET", "/v1/secrets", None, "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["items"][0]["name"], "api_token");
    assert!(v["items"][0].get("value").is_none());
    assert!(!v.to_string().contains(VALUE));
    // The engine's store holds it sealed, and the vault opens it.
    let got = st.vault.secret("api_token").await.unwrap().unwrap();
    assert_eq!(got.expose(), VALUE);

    let (status, v) = call(
        &st,
        req(
            "PUT",
            "/v1/secrets/bad%20name",
            Some("application/json"),
            &body,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "name");
    let (status, v) = call(
        &st,
        req(
            "PUT",
            "/v1/secrets/x",
            Some("application/json"),
            r#"{"valu": 1}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    let (status, _) = call(&st, req("DELETE", "/v1/secrets/api_token", None, "")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = call(&st, req("DELETE", "/v1/secrets/api_token", None, "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["status"], 404);
}

#[tokio::test]
async fn credentials_show_public_fields_and_only_whether_private_ones_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let body =
        json!({"type": "basic", "fields": {"username": "svc", "password": PASSWORD}}).to_string();
    let (status, v) = call(
        &st,
        req(
            "PUT",
            "/v1/credentials/partner",
            Some("application/json"),
            &body,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["type"], "basic");
    assert_eq!(
        v["fields"],
        json!({"username": "svc", "password": {"set": true}})
    );
    for uri in ["/v1/credentials/partner", "/v1/credentials"] {
        let (status, v) = call(&st, req("GET", uri, None, "")).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(!v.to_string().contains(PASSWORD), "{uri}");
        assert!(
            v.to_string().contains(r#""password":{"set":true}"#),
            "{uri}: {v}"
        );
    }
    // Providers read it decrypted through the handle.
    let c = st
        .vault
        .credentials()
        .get("partner")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.private("password").unwrap().expose(), PASSWORD);

    let bad = json!({"type": "api_key", "fields": {"key": "k", "extra": 1}}).to_string();
    let (status, v) = call(
        &st,
        req("PUT", "/v1/credentials/k", Some("application/json"), &bad),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("header") && detail.contains("extra"),
        "{detail}"
    );
    let unknown = json!({"type": "kerberos", "fields": {}}).to_string();
    let (status, v) = call(
        &st,
        req(
            "PUT",
            "/v1/credentials/k",
            Some("application/json"),
            &unknown,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["field"], "type");

    let (status, _) = call(&st, req("DELETE", "/v1/credentials/partner", None, "")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&st, req("GET", "/v1/credentials/partner", None, "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
