//! `examples/visitor-alert` end to end: a visitor inserted in PostgreSQL is captured, looked
//! up in a records API (a primary and a fallback, token auth), filtered on `hits > 0` and
//! alerted in a Telegram chat — with the real binary, the example's own files, two local
//! look-up APIs and a local Bot API.

use std::path::Path;
use std::time::Duration;

use estafeta_testkit::postgres::TestDb;
use estafeta_testkit::telegram::FakeTelegram;
use estafeta_testkit::{LookupApi, LookupRecord};
use serde_json::Value;

use crate::server::Server;

const T: Duration = Duration::from_secs(60);
const BOT: &str = "123456:AAH-visitor_alert_bot";
const CHAT: &str = "-1001234567890";
const LOOKUP_TOKEN: &str = "tk-records-5f1c9e0b7a";
const ROUTE: &str = "/v1/deliveries?route=visitor-alert&limit=100";

/// Two people with court records; everyone else has none.
fn records_api(token: &str) -> estafeta_testkit::LookupApiBuilder {
    LookupApi::builder(token)
        .records(
            "123.456.789-00",
            [
                LookupRecord::new("TJSP", "0001234-56.2023.8.26.0050", "criminal"),
                LookupRecord::new("TRF3", "5004321-10.2022.4.03.6100", "civil"),
            ],
        )
        .record(
            "111.222.333-44",
            LookupRecord::new("TJRJ", "0800123-45.2024.8.19.0001", "criminal"),
        )
}

/// The example running on a fresh database, with its two look-up APIs and the Bot API.
struct Pipeline {
    db: TestDb,
    primary: LookupApi,
    fallback: LookupApi,
    tg: FakeTelegram,
    s: Server,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    /// Starts everything; the look-up APIs accept `api_token` (the binary sends
    /// `LOOKUP_TOKEN`).
    async fn start(api_token: &str) -> Self {
        let db = TestDb::create();
        db.sql(&example("visitor-alert/schema.sql"));
        let primary = records_api(api_token).start().await;
        let fallback = records_api(api_token).start().await;
        let tg = FakeTelegram::start(BOT).await;
        let dir = tempfile::tempdir().unwrap();
        // A slot and publication of this test's own, so tests can run side by side.
        let config = example("visitor-alert/estafeta.yaml").replace(
            "  - id: access-control\n",
            &format!(
                "  - id: access-control\n    slot: {0}\n    publication: {0}_pub\n",
                db.name()
            ),
        );
        let cfg = dir.path().join("estafeta.yaml");
        std::fs::write(&cfg, config).unwrap();
        let storage = format!("sqlite://{}/estafeta.db", dir.path().display());
        let s = Server::start_with_args(
            dir.path(),
            &cfg,
            &["--listen", "127.0.0.1:0", "--storage", &storage],
            &[
                ("PG_URL", db.url().as_str()),
                ("LOOKUP_URL", primary.base_url().as_str()),
                ("LOOKUP_FALLBACK_URL", fallback.base_url().as_str()),
                ("ESTAFETA_SECRET_LOOKUP_TOKEN", LOOKUP_TOKEN),
                ("TELEGRAM_API_URL", tg.base_url().as_str()),
                ("TELEGRAM_CHAT_ID", CHAT),
                ("ESTAFETA_SECRET_TELEGRAM_TOKEN", BOT),
            ],
        )
        .await;
        s.wait_json("/v1/sources/access-control", T, |v| v["state"] == "running")
            .await;
        Self {
            db,
            primary,
            fallback,
            tg,
            s,
            _dir: dir,
        }
    }

    /// Registers a visitor at the front desk.
    fn visit(&self, name: &str, document: &str, building: &str) {
        self.db.sql(&format!(
            "INSERT INTO visitors (name, document, building) VALUES ('{name}', '{document}', '{building}')"
        ));
    }

    /// Waits until the route has `n` deliveries, all finished (delivered, filtered or
    /// dead); returns them.
    async fn finished_deliveries(&self, n: usize) -> Vec<Value> {
        let page = self
            .s
            .wait_json(ROUTE, T, |v| {
                let items = v["items"].as_array().unwrap();
                items.len() == n
                    && items.iter().all(|d| {
                        matches!(
                            d["status"].as_str(),
                            Some("delivered" | "filtered" | "dead")
                        )
                    })
            })
            .await;
        page["items"].as_array().unwrap().clone()
    }

    /// One delivery with its attempts (`history`).
    async fn delivery(&self, d: &Value) -> Value {
        let id = d["id"].as_str().unwrap();
        self.s.get_json(&format!("/v1/deliveries/{id}")).await
    }
}

/// An example file's text.
fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name),
    )
    .unwrap()
}

/// The steps the last attempt of a delivery went through.
fn last_steps(delivery: &Value) -> Vec<Value> {
    let history = delivery["history"].as_array().unwrap();
    let last = history
        .last()
        .unwrap_or_else(|| panic!("no attempt: {delivery}"));
    last["steps"].as_array().cloned().unwrap_or_default()
}

/// The look-up's answer as recorded in the enrich step's trace.
fn enrich_answer(steps: &[Value]) -> Value {
    let enrich = steps
        .iter()
        .find(|s| s["step"] == "enrich")
        .unwrap_or_else(|| panic!("no enrich step: {steps:?}"));
    serde_json::from_str(enrich["output"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_with_records_are_alerted_and_the_others_are_filtered() {
    let p = Pipeline::start(LOOKUP_TOKEN).await;
    p.visit("João da Silva", "123.456.789-00", "Torre Norte");
    p.visit("Maria Oliveira", "987.654.321-00", "Torre Sul");
    p.visit("Ana Lima & <Souza>", "111.222.333-44", "Torre Sul");
    p.visit("Pedro Santos", "555.666.777-88", "Torre Norte");

    // Every visit is decided: two alerts, two filtered — so nothing else can arrive.
    let all = p.finished_deliveries(4).await;
    let count = |status: &str| all.iter().filter(|d| d["status"] == status).count();
    assert_eq!((count("delivered"), count("filtered")), (2, 2), "{all:?}");
    assert!(p.tg.wait_for_messages(2, T).await);
    let messages = p.tg.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    let joao = messages
        .iter()
        .find(|m| m.plain_text.contains("João da Silva"))
        .unwrap_or_else(|| panic!("no alert for João: {messages:?}"));
    assert_eq!(joao.chat_id, CHAT);
    assert_eq!(joao.parse_mode.as_deref(), Some("HTML"));
    assert_eq!(
        joao.plain_text,
        "🚨 Visitor with court records\n\
         Name: João da Silva\n\
         Document: 123.456.789-00\n\
         Building: Torre Norte\n\
         Records found: 2\n\
         • TJSP: criminal, case 0001234-56.2023.8.26.0050\n\
         • TRF3: civil, case 5004321-10.2022.4.03.6100"
    );
    // The name's `&` and `<…>` are escaped for HTML, and shown as typed.
    let ana = messages
        .iter()
        .find(|m| m.plain_text.contains("Ana Lima & <Souza>"))
        .unwrap_or_else(|| panic!("no alert for Ana: {messages:?}"));
    assert!(
        ana.text.contains("Ana Lima &amp; &lt;Souza&gt;"),
        "{}",
        ana.text
    );
    assert!(ana.plain_text.contains("Document: 111.222.333-44"));
    assert!(ana.plain_text.contains("Records found: 1"));
    assert!(
        !messages
            .iter()
            .any(|m| m.plain_text.contains("Maria") || m.plain_text.contains("Pedro"))
    );

    // The filtered deliveries are the visitors without records, and their record shows why.
    let filtered =
        p.s.get_json("/v1/deliveries?status=filtered&route=visitor-alert")
            .await;
    let mut documents = Vec::new();
    for d in filtered["items"].as_array().unwrap() {
        let one = p.delivery(d).await;
        assert_eq!(one["status"], "filtered", "{one}");
        let steps = last_steps(&one);
        assert_eq!(steps.len(), 2, "{one}");
        assert_eq!(steps[0]["name"], "lookup");
        assert_eq!(steps[0]["outcome"], "ok");
        let answered_by = steps[0]["answered_by"].as_str().unwrap();
        assert!(
            answered_by.contains(&p.primary.addr().to_string()) && answered_by.contains("200"),
            "{answered_by}"
        );
        let answer = enrich_answer(&steps);
        assert_eq!(answer["hits"], 0, "{answer}");
        assert_eq!(steps[1]["step"], "filter");
        assert_eq!(steps[1]["name"], "lookup.hits > 0");
        assert_eq!(steps[1]["outcome"], "filtered");
        documents.push(answer["document"].as_str().unwrap().to_owned());
    }
    documents.sort();
    assert_eq!(documents, ["555.666.777-88", "987.654.321-00"]);

    // Each document was asked once, of the primary, with the token from the secret.
    let mut asked = p.primary.documents();
    asked.sort();
    assert_eq!(
        asked,
        [
            "111.222.333-44",
            "123.456.789-00",
            "555.666.777-88",
            "987.654.321-00"
        ]
    );
    assert!(
        p.primary
            .requests()
            .iter()
            .all(|r| r.bearer.as_deref() == Some(LOOKUP_TOKEN))
    );
    assert_eq!(p.fallback.request_count(), 0);
    assert!(
        !p.s.logs().contains(LOOKUP_TOKEN),
        "the look-up token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_primary_api_down_the_fallback_answers_and_the_alert_still_arrives() {
    let p = Pipeline::start(LOOKUP_TOKEN).await;
    // The primary's port is closed: connections are refused.
    p.primary.stop().await;
    p.visit("João da Silva", "123.456.789-00", "Torre Norte");

    assert!(p.tg.wait_for_messages(1, T).await, "no alert");
    let m = &p.tg.messages()[0];
    assert!(
        m.plain_text.contains("Name: João da Silva"),
        "{}",
        m.plain_text
    );
    assert!(
        m.plain_text.contains("Records found: 2"),
        "{}",
        m.plain_text
    );

    let all = p.finished_deliveries(1).await;
    assert_eq!(all[0]["status"], "delivered", "{all:?}");
    let one = p.delivery(&all[0]).await;
    let steps = last_steps(&one);
    let enrich = &steps[0];
    assert_eq!(enrich["outcome"], "ok", "{one}");
    // Who answered: the fallback; what failed before: the primary.
    let answered_by = enrich["answered_by"].as_str().unwrap();
    assert!(
        answered_by.contains(&p.fallback.addr().to_string()) && answered_by.contains("200"),
        "{answered_by}"
    );
    let detail = enrich["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&p.primary.addr().to_string()), "{one}");
    assert_eq!(enrich_answer(&steps)["hits"], 2);
    assert_eq!(p.fallback.documents(), ["123.456.789-00"]);
    assert_eq!(p.primary.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_look_up_token_fails_the_delivery_naming_the_service_and_sends_nothing() {
    // The APIs expect another token than the one Estafeta was given.
    let p = Pipeline::start("tk-rotated-yesterday").await;
    p.visit("João da Silva", "123.456.789-00", "Torre Norte");

    let page =
        p.s.wait_json(ROUTE, T, |v| {
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["last_error"].is_string())
        })
        .await;
    let d = &page["items"][0];
    assert!(
        matches!(d["status"].as_str(), Some("dead" | "retrying")),
        "{d}"
    );
    let reason = d["last_error"].as_str().unwrap();
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(
        reason.contains("court-records"),
        "the service is not named: {reason}"
    );
    assert!(!reason.contains(LOOKUP_TOKEN), "the token leaked: {reason}");
    let one = p.delivery(d).await;
    let steps = last_steps(&one);
    assert_eq!(steps.len(), 1, "no step runs after a failed look-up: {one}");
    assert_eq!(steps[0]["outcome"], "failed", "{one}");

    // The primary refused the token it was sent; a refusal is not a reason to ask the
    // fallback, and no alert went out.
    let refused = p.primary.requests();
    assert!(!refused.is_empty());
    assert!(
        refused
            .iter()
            .all(|r| r.status == 401 && r.bearer.as_deref() == Some(LOOKUP_TOKEN)),
        "{refused:?}"
    );
    assert_eq!(p.fallback.request_count(), 0);
    assert!(p.tg.messages().is_empty(), "{:?}", p.tg.messages());
    assert!(
        !p.s.logs().contains(LOOKUP_TOKEN),
        "the look-up token leaked into the log"
    );
}
