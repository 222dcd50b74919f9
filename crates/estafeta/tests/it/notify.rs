//! Notifications end to end: the real binary delivering to local servers that follow the
//! Telegram Bot API and ntfy's publishing API (errors and rate limits included).

use std::time::Duration;

use estafeta_testkit::ntfy::FakeNtfy;
use estafeta_testkit::telegram::FakeTelegram;
use serde_json::json;

use crate::server::{Server, event};

const T: Duration = Duration::from_secs(60);
const BOT: &str = "123456:AAHfake-token_for_tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_alerts_escape_values_wait_out_rate_limits_and_report_a_refused_token() {
    let tg = FakeTelegram::start(BOT).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"routes:
  - id: alerts
    match: "visitor.*"
    to:
      - destination: ops
        template: "*Visitor {{{{ data.name }}}}* has {{{{ data.hits }}}} record\\(s\\)\\."
  - id: wrong-token
    match: "audit.*"
    to: [{{destination: stale}}]
destinations:
  - id: ops
    kind: telegram
    token: "{BOT}"
    chat_id: "-1001234567890"
    parse_mode: markdown_v2
    message_thread_id: 9
    api_url: {url}
    allow_private_networks: true
    concurrency: 1
    retry: {{ schedule: [0s, 50ms, 50ms, 50ms], jitter: 0 }}
  - id: stale
    kind: telegram
    token: "999:revoked"
    chat_id: "42"
    api_url: {url}
    allow_private_networks: true
    retry: {{ schedule: [0s, 50ms, 50ms], jitter: 0 }}
"#,
        url = tg.base_url()
    );
    let s = Server::start(dir.path(), &cfg).await;

    // A value full of MarkdownV2's reserved characters; the fake refuses unescaped ones.
    tg.rate_limit_next(1, 1);
    let sent = std::time::Instant::now();
    s.post_event(&event(
        "v-1",
        "visitor.created",
        json!({"name": "Ana_B. (VIP) #1!", "hits": 2}),
    ))
    .await;
    assert!(tg.wait_for_messages(1, T).await, "no Telegram message");
    let m = &tg.messages()[0];
    assert_eq!(
        m.text,
        "*Visitor Ana\\_B\\. \\(VIP\\) \\#1\\!* has 2 record\\(s\\)\\."
    );
    assert_eq!(m.chat_id, "-1001234567890");
    assert_eq!(m.parse_mode.as_deref(), Some("MarkdownV2"));
    assert_eq!(m.message_thread_id, Some(9));
    // The 429 asked for one second: the retry waited for it, not for the 50 ms schedule.
    assert!(
        sent.elapsed() >= Duration::from_millis(950),
        "{:?}",
        sent.elapsed()
    );
    let d = s
        .wait_json("/v1/deliveries?status=delivered", T, |v| {
            v["items"].as_array().unwrap().len() == 1
        })
        .await;
    let id = d["items"][0]["id"].as_str().unwrap();
    let one = s.get_json(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(one["history"][0]["status_code"], 429, "{one}");
    assert_eq!(one["history"][1]["outcome"], "delivered", "{one}");

    // A revoked token is an authentication failure: dead at once, not retried.
    s.post_event(&event("a-1", "audit.login", json!({"user": "x"})))
        .await;
    let dead = s
        .wait_json("/v1/deliveries?status=dead", T, |v| {
            !v["items"].as_array().unwrap().is_empty()
        })
        .await;
    let d = &dead["items"][0];
    assert_eq!(d["attempts"], 1, "{d}");
    let reason = d["last_error"].as_str().unwrap();
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(!reason.contains("revoked"), "the token leaked: {reason}");
    assert!(
        !s.logs().contains("999:revoked"),
        "the token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntfy_notifications_carry_title_priority_tags_and_click_and_refused_tokens_are_reported() {
    let ntfy = FakeNtfy::start_with_auth(estafeta_testkit::ntfy::Auth {
        tokens: vec!["tk_good".into()],
        users: vec![],
        protect_all: true,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"routes:
  - id: orders
    match: "order.*"
    to:
      - destination: push
        template: "{{{{ data.customer }}}}: {{{{ data.description }}}}"
      - destination: push-bad
destinations:
  - id: push
    kind: ntfy
    url: {url}
    topic: service-orders
    title: "Ordem {{{{ data.id }}}} — {{{{ data.status }}}}"
    priority: high
    tags: [wrench, warning]
    click: "https://erp.example/os/{{{{ data.id }}}}"
    token: tk_good
    allow_private_networks: true
    retry: {{ schedule: [0s, 50ms, 50ms], jitter: 0 }}
  - id: push-bad
    kind: ntfy
    url: {url}
    topic: service-orders
    token: tk_wrong
    allow_private_networks: true
    retry: {{ schedule: [0s, 50ms, 50ms], jitter: 0 }}
"#,
        url = ntfy.base_url()
    );
    let s = Server::start(dir.path(), &cfg).await;
    ntfy.rate_limit_next(1);
    s.post_event(&event(
        "o-1",
        "order.updated",
        json!({"id": 77, "status": "em execução", "customer": "ACME", "description": "troca de catraca"}),
    ))
    .await;
    assert!(ntfy.wait_for_messages(1, T).await, "no ntfy message");
    let m = &ntfy.messages()[0];
    assert_eq!(m.topic, "service-orders");
    assert_eq!(m.message, "ACME: troca de catraca");
    assert_eq!(m.title.as_deref(), Some("Ordem 77 — em execução"));
    assert_eq!(m.priority, Some(4));
    assert_eq!(m.tags, vec!["wrench".to_owned(), "warning".to_owned()]);
    assert_eq!(m.click.as_deref(), Some("https://erp.example/os/77"));
    assert_eq!(m.auth.as_deref(), Some("token:tk_good"));
    let dead = s
        .wait_json("/v1/deliveries?status=dead", T, |v| {
            !v["items"].as_array().unwrap().is_empty()
        })
        .await;
    let d = &dead["items"][0];
    assert_eq!(d["destination_id"], "push-bad", "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{d}"
    );
    let ok = s
        .wait_json("/v1/deliveries?status=delivered", T, |v| {
            !v["items"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(ok["items"][0]["attempts"], 2, "the 429 was retried: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_presets_send_each_services_body_and_wait_out_a_429() {
    let rx = estafeta_testkit::WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut dests = String::new();
    for kind in ["slack", "teams", "discord", "google_chat"] {
        dests.push_str(&format!(
            "  - id: {kind}\n    kind: {kind}\n    url: {}/{kind}\n    allow_private_networks: true\n    concurrency: 1\n    retry: {{ schedule: [0s, 50ms, 50ms], jitter: 0 }}\n",
            rx.url().trim_end_matches('/')
        ));
    }
    let cfg = format!(
        "routes:\n  - id: chat\n    match: \"alert.*\"\n    to:\n      - {{destination: slack, template: \"*{{{{ data.who }}}}* needs help\"}}\n      - {{destination: teams, template: \"{{{{ data.who }}}} needs help\"}}\n      - {{destination: discord, template: \"{{{{ data.who }}}} needs help\"}}\n      - {{destination: google_chat}}\ndestinations:\n{dests}"
    );
    let s = Server::start(dir.path(), &cfg).await;
    // Whichever request comes first is told to wait a second.
    rx.respond_with(1, 429, &[("retry-after", "1")], "rate limited");
    let sent = std::time::Instant::now();
    s.post_event(&event(
        "a-1",
        "alert.raised",
        json!({"who": "<@here> & Ana"}),
    ))
    .await;
    assert!(rx.wait_for_count(5, T).await, "{} requests", rx.count());
    assert!(sent.elapsed() >= Duration::from_millis(950));
    let by_path = |p: &str| {
        rx.requests()
            .into_iter()
            .filter(|r| r.uri.path() == p && r.json().is_some())
            .map(|r| r.json().unwrap())
            .next_back()
            .unwrap_or_else(|| panic!("nothing at {p}"))
    };
    assert_eq!(
        by_path("/slack"),
        json!({"text": "*&lt;@here&gt; &amp; Ana* needs help"})
    );
    let discord = by_path("/discord");
    assert_eq!(discord["content"], "<@here> & Ana needs help");
    assert_eq!(discord["allowed_mentions"], json!({"parse": []}));
    let teams = by_path("/teams");
    assert_eq!(
        teams["attachments"][0]["content"]["body"][0]["text"],
        "<@here> & Ana needs help"
    );
    // No template: the event type and its data.
    let google = by_path("/google_chat");
    let text = google["text"].as_str().unwrap();
    assert!(text.starts_with("alert.raised\n```"), "{text}");
    assert!(text.contains("\"who\": \"<@here> & Ana\""), "{text}");
    s.wait_json("/v1/deliveries?status=delivered", T, |v| {
        v["items"].as_array().unwrap().len() == 4
    })
    .await;
}
