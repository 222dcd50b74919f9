//! The `enrich` steps' HTTP look-ups against the local records API: answers, fallbacks,
//! retries, authentication failures, "nothing found", the cache and the SSRF guard.

use std::time::Duration;

use estafeta_config::Secret;
use estafeta_config::route_steps::{EnrichSettings, Method, NotFound, OnError};
use estafeta_core::SendErrorKind;
use estafeta_destinations::{HttpClients, Lookup, LookupRequest};
use estafeta_testkit::lookup_api::{LookupApi, LookupRecord};
use serde_json::json;

const TOKEN: &str = "tok-visitors";

fn settings(token: &str) -> EnrichSettings {
    EnrichSettings {
        name: "court".to_owned(),
        method: Method::Get,
        urls: Vec::new(),
        body: None,
        content_type: "application/json".to_owned(),
        headers: vec![(
            "Authorization".to_owned(),
            Secret::new(format!("Bearer {token}")),
        )],
        timeout: Duration::from_secs(5),
        attempts: 2,
        backoff: Duration::from_millis(10),
        not_found: NotFound::Error,
        service: None,
        allow_private_networks: true,
        max_response_bytes: 1024 * 1024,
        concurrency: 16,
        cache: None,
        on_error: OnError::Fail,
    }
}

fn lookup(s: &EnrichSettings) -> Lookup {
    Lookup::new("visitors", s, &HttpClients::new()).unwrap()
}

fn get(urls: &[String]) -> LookupRequest {
    LookupRequest {
        urls: urls.to_vec(),
        body: None,
    }
}

async fn api() -> LookupApi {
    LookupApi::builder(TOKEN)
        .record("12345678900", LookupRecord::new("TJSP", "0001", "criminal"))
        .start()
        .await
}

#[tokio::test]
async fn answers_are_bound_and_the_fallback_answers_when_the_primary_is_gone() {
    let primary = api().await;
    let fallback = api().await;
    let l = lookup(&settings(TOKEN));
    let urls = [
        format!("{}/v1/records/12345678900", primary.base_url()),
        format!("{}/v1/records/12345678900", fallback.base_url()),
    ];
    let a = l.call(&get(&urls)).await.unwrap();
    assert_eq!(a.value["hits"], json!(1));
    assert!(!a.cached);
    assert!(
        a.answered_by
            .as_deref()
            .unwrap()
            .contains(&primary.addr().to_string()),
        "{a:?}"
    );
    assert!(a.tried.is_empty());

    primary.stop().await;
    let a = l.call(&get(&urls)).await.unwrap();
    assert_eq!(a.value["records"][0]["court"], json!("TJSP"));
    let by = a.answered_by.unwrap();
    assert!(by.contains(&fallback.addr().to_string()), "{by}");
    assert!(a.tried[0].contains("cannot connect"), "{:?}", a.tried);

    // A primary answering 503 also hands over to the fallback.
    let flaky = api().await;
    flaky.set_down(true);
    let urls = [
        format!("{}/v1/records/1", flaky.base_url()),
        format!("{}/v1/records/1", fallback.base_url()),
    ];
    let a = l.call(&get(&urls)).await.unwrap();
    assert_eq!(a.value["hits"], json!(0));
    assert!(a.tried[0].contains("HTTP 503"), "{:?}", a.tried);
}

#[tokio::test]
async fn when_nothing_answers_the_failure_is_retryable_after_every_try() {
    let a = api().await;
    let b = api().await;
    a.set_down(true);
    b.set_down(true);
    let mut s = settings(TOKEN);
    s.attempts = 3;
    s.service = Some("court records".to_owned());
    let urls = [
        format!("{}/v1/records/1", a.base_url()),
        format!("{}/v1/records/1", b.base_url()),
    ];
    let err = lookup(&s).call(&get(&urls)).await.unwrap_err();
    assert!(matches!(err.error.kind, SendErrorKind::Retryable { .. }));
    assert!(
        err.error
            .message
            .contains("court records did not answer (3 tries of 2 URLs)"),
        "{}",
        err.error.message
    );
    assert_eq!(err.tried.len(), 6);
    assert_eq!(a.request_count() + b.request_count(), 6);
}

#[tokio::test]
async fn a_refused_token_is_an_authentication_failure_and_stops_at_once() {
    let primary = api().await;
    let fallback = api().await;
    let err = lookup(&settings("wrong"))
        .call(&get(&[
            format!("{}/v1/records/1", primary.base_url()),
            format!("{}/v1/records/1", fallback.base_url()),
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.error.kind, SendErrorKind::Final);
    assert_eq!(err.error.status_code, Some(401));
    let msg = &err.error.message;
    assert!(
        msg.contains(&primary.addr().to_string()) && msg.contains("authentication failed"),
        "{msg}"
    );
    assert!(!msg.contains("wrong"), "the token must not appear: {msg}");
    assert_eq!(primary.request_count(), 1);
    assert_eq!(fallback.request_count(), 0, "no point asking the fallback");
}

#[tokio::test]
async fn not_found_is_an_error_or_null_as_configured() {
    let api = api().await;
    let url = [format!("{}/v1/no-such-path/1", api.base_url())];
    let err = lookup(&settings(TOKEN)).call(&get(&url)).await.unwrap_err();
    assert_eq!(err.error.status_code, Some(404));
    assert_eq!(err.error.kind, SendErrorKind::Final);
    let mut s = settings(TOKEN);
    s.not_found = NotFound::Null;
    let a = lookup(&s).call(&get(&url)).await.unwrap();
    assert!(a.value.is_null());
}

#[tokio::test]
async fn the_cache_answers_repeats_and_shares_identical_calls_in_flight() {
    let api = api().await;
    api.set_delay(Duration::from_millis(200));
    let mut s = settings(TOKEN);
    s.cache = Some((Duration::from_secs(60), 100));
    let l = lookup(&s);
    let url = [format!("{}/v1/records/12345678900", api.base_url())];
    let req = get(&url);
    let calls: Vec<_> = (0..10).map(|_| l.call(&req)).collect();
    let answers = futures::future::join_all(calls).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().unwrap().value["hits"] == json!(1))
    );
    assert_eq!(
        answers
            .iter()
            .filter(|a| !a.as_ref().unwrap().cached)
            .count(),
        1
    );
    assert_eq!(api.request_count(), 1, "ten identical calls, one request");
    assert!(l.call(&req).await.unwrap().cached);
    // Another document is another request; failures are not kept.
    let other = [format!("{}/v1/records/999", api.base_url())];
    assert!(!l.call(&get(&other)).await.unwrap().cached);
    api.set_down(true);
    let gone = [format!("{}/v1/records/777", api.base_url())];
    assert!(l.call(&get(&gone)).await.is_err());
    api.set_down(false);
    assert!(l.call(&get(&gone)).await.is_ok());
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let api = api().await;
    let mut s = settings(TOKEN);
    s.allow_private_networks = false;
    let err = lookup(&s)
        .call(&get(&[format!("{}/v1/records/1", api.base_url())]))
        .await
        .unwrap_err();
    assert_eq!(err.error.kind, SendErrorKind::Final);
    assert!(
        err.error.message.contains("127.0.0.1"),
        "{}",
        err.error.message
    );
    assert_eq!(api.request_count(), 0);
}

#[tokio::test]
async fn post_look_ups_send_the_rendered_body() {
    let api = api().await;
    let mut s = settings(TOKEN);
    s.method = Method::Post;
    let a = lookup(&s)
        .call(&LookupRequest {
            urls: vec![format!("{}/v1/search", api.base_url())],
            body: Some(r#"{"document": "123.456.789-00"}"#.to_owned()),
        })
        .await
        .unwrap();
    assert_eq!(a.value["hits"], json!(1));
}
