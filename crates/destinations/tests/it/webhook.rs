//! The webhook destination against `estafeta_testkit::WebhookReceiver` on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use estafeta_config::{DestinationKindSettings, DestinationSettings, Secret, WebhookSettings};
use estafeta_core::{DeliveryId, Destination, Event, OutboundMessage, RetryPolicy, SendErrorKind};
use estafeta_destinations::webhook::{BATCH_CONTENT_TYPE, signing};
use estafeta_destinations::{HttpClients, USER_AGENT, Webhook};
use estafeta_testkit::WebhookReceiver;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn settings(url: &str) -> WebhookSettings {
    WebhookSettings {
        id: "hook".into(),
        url: Secret::new(url.into()),
        signing_key: None,
        headers: vec![],
        timeout: Duration::from_secs(5),
        allow_private_networks: true,
        batch: None,
    }
}

fn hook(settings: &WebhookSettings) -> Webhook {
    Webhook::new(settings, &HttpClients::new(), 4).unwrap()
}

fn event() -> Arc<Event> {
    let ce =
        serde_json::json!({"specversion": "1.0", "id": "e1", "source": "/test", "type": "test"});
    let event =
        estafeta_core::event::parse_cloudevent(ce, &Default::default(), "http", chrono::Utc::now());
    Arc::new(event.unwrap())
}

fn msg(body: &str) -> OutboundMessage {
    OutboundMessage {
        delivery_id: DeliveryId::new(),
        event: event(),
        body: Bytes::from(body.to_owned()),
        content_type: "application/json",
        attempt: 1,
    }
}

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// The error with its whole cause chain, as a log line would show it.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[tokio::test]
async fn delivers_signed_with_all_headers() {
    let rx = WebhookReceiver::start_with_secret(SECRET).await;
    rx.respond_with(1, 202, &[], "accepted");
    let mut s = settings(&format!("{}hooks?token=abc", rx.url()));
    s.signing_key = Some(Secret::new(SECRET.into()));
    s.headers = vec![("X-Tenant".into(), Secret::new("acme".into()))];
    let hook = hook(&s);
    let mut m = msg(r#"{"hello":"world"}"#);
    m.attempt = 3;

    let ok = hook.send(&m).await.unwrap();
    assert_eq!(ok.status_code, Some(202));
    assert_eq!(ok.response_excerpt.as_deref(), Some("accepted"));

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.signature_valid, Some(true));
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri.to_string(), "/hooks?token=abc");
    assert_eq!(&r.body[..], br#"{"hello":"world"}"#);
    let id = m.delivery_id.to_string();
    assert_eq!(r.delivery_id(), Some(id.as_str()));
    assert_eq!(r.header("x-estafeta-delivery"), Some(id.as_str()));
    assert_eq!(r.header("x-estafeta-attempt"), Some("3"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("user-agent"), Some(USER_AGENT));
    assert_eq!(r.header("x-tenant"), Some("acme"));
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((unix_now() - ts).abs() <= 2, "timestamp {ts} is not now");
    // The signature also verifies with the destination crate's own helper.
    let key = signing::decode_secret(SECRET).unwrap();
    assert!(signing::verify(
        &key,
        &id,
        ts,
        &r.body,
        r.header("webhook-signature").unwrap()
    ));
}

#[tokio::test]
async fn unsigned_without_a_key() {
    let rx = WebhookReceiver::start().await;
    let hook = hook(&settings(&rx.url()));
    hook.send(&msg("{}")).await.unwrap();
    let r = &rx.requests()[0];
    assert_eq!(r.signature_valid, None);
    assert!(r.header("webhook-signature").is_none());
    assert!(r.header("webhook-timestamp").is_some());
}

#[tokio::test]
async fn server_error_is_retryable_with_status_and_excerpt() {
    let rx = WebhookReceiver::start().await;
    rx.respond_with(1, 500, &[], "database down");
    let hook = hook(&settings(&format!("{}x?token=sekrit", rx.url())));
    let err = hook.send(&msg("{}")).await.unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Retryable { after: None });
    assert_eq!(err.status_code, Some(500));
    assert_eq!(err.response_excerpt.as_deref(), Some("database down"));
    assert!(
        err.message.contains(&rx.addr().to_string()),
        "{}",
        err.message
    );
    assert!(!chain(&err).contains("sekrit"), "{}", chain(&err));
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let rx = WebhookReceiver::start().await;
    rx.respond_with(1, 429, &[("Retry-After", "7")], "slow down");
    let hook = hook(&settings(&rx.url()));
    let err = hook.send(&msg("{}")).await.unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::Retryable {
            after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(err.status_code, Some(429));
}

#[tokio::test]
async fn unavailable_with_http_date_retry_after() {
    let rx = WebhookReceiver::start().await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(120);
    let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    rx.respond_with(1, 503, &[("retry-after", date.as_str())], "");
    let err = hook(&settings(&rx.url()))
        .send(&msg("{}"))
        .await
        .unwrap_err();
    let SendErrorKind::Retryable { after: Some(after) } = err.kind else {
        panic!("expected a delay, got {:?}", err.kind);
    };
    assert!(
        (Duration::from_secs(115)..=Duration::from_secs(120)).contains(&after),
        "{after:?}"
    );
    assert_eq!(err.response_excerpt, None);
}

#[tokio::test]
async fn client_error_is_final() {
    let rx = WebhookReceiver::start().await;
    rx.respond_with(1, 400, &[], r#"{"error":"bad"}"#);
    let err = hook(&settings(&rx.url()))
        .send(&msg("{}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Final);
    assert_eq!(err.status_code, Some(400));
    assert_eq!(err.response_excerpt.as_deref(), Some(r#"{"error":"bad"}"#));
}

#[tokio::test]
async fn redirect_is_final_and_not_followed() {
    let rx = WebhookReceiver::start().await;
    let location = format!("{}elsewhere", rx.url());
    rx.respond_with(1, 301, &[("location", location.as_str())], "");
    let err = hook(&settings(&rx.url()))
        .send(&msg("{}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Final);
    assert_eq!(err.status_code, Some(301));
    assert!(
        err.message.contains("redirects are not followed"),
        "{}",
        err.message
    );
    assert!(!rx.wait_for_count(2, Duration::from_millis(200)).await);
    assert_eq!(rx.count(), 1);
}

#[tokio::test]
async fn timeout_is_retryable_and_prompt() {
    let rx = WebhookReceiver::start().await;
    rx.set_delay(Duration::from_secs(5));
    let mut s = settings(&rx.url());
    s.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = hook(&s).send(&msg("{}")).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind, SendErrorKind::Retryable { after: None });
    assert_eq!(err.status_code, None);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert!(err.message.contains("300ms"), "{}", err.message);
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    // A port that was free a moment ago: nothing listens on it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = hook(&settings(&format!("http://127.0.0.1:{port}/?token=sekrit")))
        .send(&msg("{}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, SendErrorKind::Retryable { after: None });
    assert!(
        err.message.starts_with("cannot connect to 127.0.0.1:"),
        "{}",
        err.message
    );
    assert!(!chain(&err).contains("sekrit"), "{}", chain(&err));
}

#[tokio::test]
async fn batch_sends_one_signed_json_array() {
    let rx = WebhookReceiver::start_with_secret(SECRET).await;
    let mut s = settings(&rx.url());
    s.signing_key = Some(Secret::new(SECRET.into()));
    s.batch = Some((10, Duration::from_millis(20)));
    let hook = hook(&s);
    assert_eq!(hook.max_batch(), 10);
    assert_eq!(hook.batch_wait(), Duration::from_millis(20));
    let msgs = [msg(r#"{"n":1}"#), msg("not json"), msg(r#"{"n":3}"#)];

    let ok = hook.send_batch(&msgs).await.unwrap();
    assert_eq!(ok.status_code, Some(200));

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.header("content-type"), Some(BATCH_CONTENT_TYPE));
    assert_eq!(
        r.delivery_id(),
        Some(msgs[0].delivery_id.to_string().as_str())
    );
    assert_eq!(r.signature_valid, Some(true));
    assert_eq!(
        r.json().unwrap(),
        serde_json::json!([{"n": 1}, "not json", {"n": 3}])
    );

    // A batch shares its outcome.
    rx.fail_next(1, 502);
    let err = hook.send_batch(&msgs).await.unwrap_err();
    assert_eq!(err.status_code, Some(502));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn private_addresses_are_refused_before_any_request() {
    let rx = WebhookReceiver::start().await;
    let port = rx.addr().port();
    for url in [
        format!("http://127.0.0.1:{port}/?token=sekrit"),
        format!("http://localhost:{port}/?token=sekrit"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let mut s = settings(&url);
        s.allow_private_networks = false;
        let err = hook(&s).send(&msg("{}")).await.unwrap_err();
        assert_eq!(err.kind, SendErrorKind::Final, "{url}: {err}");
        assert!(err.message.contains("is private"), "{}", err.message);
        assert!(
            err.message.contains("allow_private_networks: true"),
            "{}",
            err.message
        );
        assert!(!chain(&err).contains("sekrit"), "{}", chain(&err));
    }
    assert!(!rx.wait_for_count(1, Duration::from_millis(100)).await);
    assert_eq!(rx.count(), 0);
}

#[tokio::test]
async fn registry_builds_a_webhook() {
    let rx = WebhookReceiver::start().await;
    let settings = DestinationSettings {
        id: "hook".into(),
        concurrency: 8,
        queue_capacity: 20_000,
        rate_limit: None,
        retry: RetryPolicy::default(),
        breaker: None,
        kind: DestinationKindSettings::Webhook(settings(&rx.url())),
    };
    let dest = estafeta_destinations::build(&settings, &HttpClients::new()).unwrap();
    assert_eq!(dest.id(), "hook");
    assert_eq!(dest.kind(), "webhook");
    dest.send(&msg("{}")).await.unwrap();
    assert!(rx.wait_for_count(1, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn reuses_one_connection_for_sequential_sends() {
    let rx = WebhookReceiver::start_with_secret(SECRET).await;
    let mut s = settings(&rx.url());
    s.signing_key = Some(Secret::new(SECRET.into()));
    let hook = hook(&s);
    let n = 50;
    for _ in 0..n {
        hook.send(&msg("{}")).await.unwrap();
    }
    assert!(rx.wait_for_count(n, Duration::from_secs(1)).await);
    let reqs = rx.requests();
    assert!(reqs.iter().all(|r| r.signature_valid == Some(true)));
    assert!(
        reqs.iter().all(|r| r.peer == reqs[0].peer),
        "a new connection was opened"
    );
    assert_eq!(rx.bad_signatures(), 0);
}

#[tokio::test]
async fn each_attempt_gets_a_fresh_timestamp() {
    let rx = WebhookReceiver::start_with_secret(SECRET).await;
    let mut s = settings(&rx.url());
    s.signing_key = Some(Secret::new(SECRET.into()));
    let hook = hook(&s);
    let mut m = msg("{}");
    hook.send(&m).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    m.attempt = 2;
    hook.send(&m).await.unwrap();
    let reqs = rx.requests();
    let ts = |i: usize| {
        reqs[i]
            .header("webhook-timestamp")
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    assert!(ts(1) > ts(0));
    assert_eq!(reqs[0].delivery_id(), reqs[1].delivery_id());
    assert_eq!(reqs[1].header("x-estafeta-attempt"), Some("2"));
    assert!(reqs.iter().all(|r| r.signature_valid == Some(true)));
}

#[tokio::test]
async fn counting_only_receiver_keeps_arrivals() {
    let rx = WebhookReceiver::builder()
        .secret(SECRET)
        .counting_only()
        .start()
        .await;
    let hook = hook(&settings(&rx.url()));
    let m = msg("{}");
    hook.send(&m).await.unwrap();
    assert!(rx.wait_for_count(1, Duration::from_secs(1)).await);
    assert!(rx.requests().is_empty());
    let arrivals = rx.arrivals();
    assert_eq!(arrivals.len(), 1);
    assert_eq!(arrivals[0].delivery_id, Some(m.delivery_id.to_string()));
    // Unsigned requests are counted as bad signatures.
    assert_eq!(rx.bad_signatures(), 1);
}
