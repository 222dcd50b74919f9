//! The HTTP provider against the local partner API: every pagination style and auth method,
//! retry after 429, OAuth 2 token expiry and revocation, the incremental cursor (advanced only
//! after the events are stored), one event per run. Named credentials and the SSRF guard are
//! in `tests/credentials.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use estafeta_config::provider::ProviderSettings;
use estafeta_config::schedule_source::JobSettings;
use estafeta_core::{Event, EventId, ScheduleRunId};
use estafeta_store::vault::{CredentialType, Credentials, MasterKey, Vault};
use estafeta_store::{RunTrigger, SqliteOptions, SqliteStore, Store};
use estafeta_testkit::PartnerApi;
use tokio_util::sync::CancellationToken;

use crate::provider::{ProviderJob, cursor_key, registry};
use crate::schedule::{JobError, RunContext, ScheduledJob};
use crate::sink::{EventSink, SinkError};

mod credentials;

/// Records appended events; fails every append while `fail` is set.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    fail: Mutex<bool>,
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventSink for Recorder {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        if *self.fail.lock().unwrap() {
            return Err(SinkError(Box::new(std::io::Error::other(
                "the log is down",
            ))));
        }
        let ids = events.iter().map(|e| e.id).collect();
        self.events.lock().unwrap().extend(events);
        Ok(ids)
    }

    async fn append_new(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        self.append(events).await
    }
}

struct Lookup;

impl estafeta_config::Lookup for Lookup {
    fn env(&self, _: &str) -> Option<String> {
        None
    }
    fn secret(&self, name: &str) -> Option<String> {
        Some(format!("secret-{name}"))
    }
}

/// A schedule job from the `provider:` YAML (indented under it), allowed to reach the local
/// partner API.
fn job(provider: &str) -> ProviderJob {
    guarded_job(
        &format!("{provider}      allow_private_networks: true\n"),
        None,
    )
}

/// A schedule job from the `provider:` YAML as written, reading named credentials from
/// `credentials`.
fn guarded_job(provider: &str, credentials: Option<Credentials>) -> ProviderJob {
    let text = format!(
        "sources:\n  - id: sales\n    kind: schedule\n    every: 1h\n    provider:\n{provider}"
    );
    let c = estafeta_config::load_str(&text, "t.yaml", &Lookup).unwrap();
    let estafeta_config::SourceKindSettings::Schedule(s) = &c.sources[0].kind else {
        unreachable!()
    };
    let JobSettings::Provider(p @ ProviderSettings::Http(_)) = &s.job else {
        unreachable!()
    };
    ProviderJob::new(registry::build("sales", p, credentials).unwrap())
}

struct Harness {
    sink: Arc<Recorder>,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("s.db")))
            .await
            .unwrap();
        Self {
            sink: Arc::new(Recorder::default()),
            store: Arc::new(store),
            _dir: dir,
        }
    }

    async fn run(&self, job: &ProviderJob) -> Result<u64, JobError> {
        let now = Utc::now();
        let cx = RunContext {
            schedule_id: "sales".to_owned(),
            run_id: ScheduleRunId::new(),
            scheduled_at: now,
            started_at: now,
            trigger: RunTrigger::Manual,
            sink: Arc::clone(&self.sink) as Arc<dyn EventSink>,
            store: Arc::clone(&self.store),
            cancel: CancellationToken::new(),
        };
        job.run(&cx).await.map(|o| o.records)
    }

    fn ids(&self) -> Vec<String> {
        self.sink
            .events()
            .iter()
            .map(|e| e.data.as_ref().unwrap()["id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn cursor(&self) -> Option<String> {
        self.store.get_cursor(&cursor_key("sales")).await.unwrap()
    }
}

/// An error and its causes, as the run history records them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        out.push_str(": ");
        out.push_str(&c.to_string());
        next = c.source();
    }
    out
}

fn expected(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s-{i:05}")).collect()
}

#[tokio::test]
async fn page_numbers_with_an_api_key_header_and_a_429() {
    let api = PartnerApi::builder()
        .records(25)
        .api_key("secret-partner")
        .throttle_once()
        .start()
        .await;
    let job = job(&format!(
        "      kind: http\n      url: \"{}/v1/sales/pages\"\n      auth: {{ kind: api_key, header: X-Api-Key, value: \"${{secret:partner}}\" }}\n      pagination: {{ kind: page_number, size_param: per_page, size: 10 }}\n      records: $.data[*]\n      emit: {{ type: partner.sale, id: id }}\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    assert_eq!(h.run(&job).await.unwrap(), 25);
    assert_eq!(h.ids(), expected(25));
    let ev = &h.sink.events()[0];
    assert_eq!(ev.ty, "partner.sale");
    assert_eq!(ev.ce_id, "sales:s-00000");
    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 200, 200]);
    assert!(api.requests()[3].path_and_query.contains("page=3"));
}

#[tokio::test]
async fn offset_and_limit_with_an_api_key_in_the_query() {
    let api = PartnerApi::builder()
        .records(20)
        .api_key("secret-k")
        .start()
        .await;
    let job = job(&format!(
        "      kind: http\n      url: \"{}/v1/sales/offset\"\n      auth: {{ kind: api_key, query: api_key, value: \"${{secret:k}}\" }}\n      pagination: {{ kind: offset_limit, limit: 7 }}\n      records: $.items\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    assert_eq!(h.run(&job).await.unwrap(), 20);
    assert_eq!(h.ids(), expected(20));
    assert_eq!(api.requests().len(), 3);
    assert_eq!(h.sink.events()[0].ty, "provider.record");
}

#[tokio::test]
async fn body_cursor_with_a_bearer_token() {
    let api = PartnerApi::builder()
        .records(23)
        .page_size(5)
        .bearer("secret-t")
        .start()
        .await;
    let job = job(&format!(
        "      kind: http\n      url: \"{}/v1/sales/cursor\"\n      auth: {{ kind: bearer, token: \"${{secret:t}}\" }}\n      pagination: {{ kind: cursor, path: $.next_cursor }}\n      records: $.data[*]\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    assert_eq!(h.run(&job).await.unwrap(), 23);
    assert_eq!(h.ids(), expected(23));
    assert_eq!(api.requests().len(), 5);
}

#[tokio::test]
async fn link_header_with_one_event_per_run() {
    let api = PartnerApi::builder().records(12).page_size(5).start().await;
    let job = job(&format!(
        "      kind: http\n      url: \"{}/v1/sales/link\"\n      pagination: {{ kind: link_header }}\n      emit: {{ per: run, type: partner.sales }}\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    assert_eq!(h.run(&job).await.unwrap(), 12);
    let events = h.sink.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].ty, "partner.sales");
    assert_eq!(
        events[0].data.as_ref().unwrap().as_array().unwrap().len(),
        12
    );
    assert_eq!(api.requests().len(), 3);
}

#[tokio::test]
async fn next_url_with_oauth2_tokens_cached_and_refreshed_after_401() {
    let api = PartnerApi::builder()
        .records(9)
        .page_size(4)
        .oauth("client", "secret-cs", Duration::from_secs(3600))
        .start()
        .await;
    let job = job(&format!(
        "      kind: http\n      url: \"{0}/v1/sales/next\"\n      auth: {{ kind: oauth2, token_url: \"{0}/oauth/token\", client_id: client, client_secret: \"${{secret:cs}}\" }}\n      pagination: {{ kind: next_url, path: $.next }}\n      records: $.results\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    assert_eq!(h.run(&job).await.unwrap(), 9);
    assert_eq!(api.tokens_issued(), 1, "one token for three pages");
    api.revoke_tokens();
    assert_eq!(h.run(&job).await.unwrap(), 9);
    assert_eq!(api.tokens_issued(), 2, "a 401 fetches a new token");
    assert_eq!(h.sink.events().len(), 18);
}

#[tokio::test]
async fn oauth2_tokens_about_to_expire_are_fetched_again() {
    let api = PartnerApi::builder()
        .records(6)
        .page_size(2)
        .oauth("client", "secret-cs", Duration::from_secs(5))
        .start()
        .await;
    let job = job(&format!(
        "      kind: http\n      url: \"{0}/v1/sales/next\"\n      auth: {{ kind: oauth2, token_url: \"{0}/oauth/token\", client_id: client, client_secret: \"${{secret:cs}}\", scopes: [sales.read] }}\n      pagination: {{ kind: next_url, path: $.next }}\n      records: $.results\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    assert_eq!(h.run(&job).await.unwrap(), 6);
    // A 5 s token is within the 30 s safety margin: each page gets a fresh one.
    assert_eq!(api.tokens_issued(), 3);
}

#[tokio::test]
async fn a_wrong_key_fails_at_once() {
    let api = PartnerApi::builder()
        .records(3)
        .api_key("right")
        .start()
        .await;
    let job = job(&format!(
        "      kind: http\n      url: \"{}/v1/sales/pages\"\n      auth: {{ kind: api_key, header: X-Api-Key, value: wrong }}\n      pagination: {{ kind: page_number }}\n      records: $.data\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    let err = chain(&h.run(&job).await.unwrap_err());
    assert!(err.contains("answered 401"), "{err}");
    assert!(!err.contains("wrong"), "no secret in errors: {err}");
    assert_eq!(api.requests().len(), 1);
}

const INCREMENTAL: &str = "      kind: http\n      url: \"{}/v1/sales/pages\"\n      query: {{ since: \"{{{{ cursor }}}}\" }}\n      pagination: {{ kind: page_number, size_param: per_page, size: 10 }}\n      records: $.data[*]\n      cursor: {{ field: updated_at }}\n      emit: {{ type: partner.sale, id: id }}\n";

#[tokio::test]
async fn the_cursor_moves_after_the_events_are_stored_and_the_next_run_gets_newer_records() {
    let api = PartnerApi::builder().records(15).start().await;
    let job = job(&INCREMENTAL
        .replace("{}", &api.base_url())
        .replace("{{", "{")
        .replace("}}", "}"));
    let h = Harness::new().await;

    // The log refuses the events: the run fails and the cursor stays where it was.
    *h.sink.fail.lock().unwrap() = true;
    assert!(matches!(h.run(&job).await, Err(JobError::Sink(_))));
    assert_eq!(h.cursor().await, None);

    *h.sink.fail.lock().unwrap() = false;
    assert_eq!(h.run(&job).await.unwrap(), 15);
    assert_eq!(h.cursor().await.as_deref(), Some("2026-11-01T00:14:00Z"));
    assert!(api.requests()[1].path_and_query.contains("since=&"));

    api.add_records(15, 18);
    assert_eq!(h.run(&job).await.unwrap(), 3);
    assert_eq!(h.ids(), expected(18));
    assert_eq!(h.cursor().await.as_deref(), Some("2026-11-01T00:17:00Z"));
    let last = api.requests().pop().unwrap();
    assert!(
        last.path_and_query
            .contains("since=2026-11-01T00%3A14%3A00Z"),
        "{last:?}"
    );

    // Nothing new: no events, the cursor stays.
    assert_eq!(h.run(&job).await.unwrap(), 0);
    assert_eq!(h.cursor().await.as_deref(), Some("2026-11-01T00:17:00Z"));
}

#[tokio::test]
async fn basic_auth_and_a_5xx_retried() {
    let api = PartnerApi::builder()
        .records(4)
        .basic("estafeta", "secret-pw")
        .fail_next(2)
        .start()
        .await;
    let job = job(&format!(
        "      kind: http\n      url: \"{}/v1/sales/pages\"\n      auth: {{ kind: basic, username: estafeta, password: \"${{secret:pw}}\" }}\n      pagination: {{ kind: page_number, size: 10 }}\n      records: $.data\n      attempts: 3\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    assert_eq!(h.run(&job).await.unwrap(), 4);
    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[tokio::test]
async fn a_5xx_past_the_attempts_fails_the_run() {
    let api = PartnerApi::builder().records(4).fail_next(5).start().await;
    let job = job(&format!(
        "      kind: http\n      url: \"{}/v1/sales/pages\"\n      attempts: 2\n      records: $.data\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    let err = h.run(&job).await.unwrap_err();
    let text = chain(&err);
    assert!(text.contains("answered 503"), "{text}");
    assert_eq!(api.requests().len(), 2);
}

#[tokio::test]
async fn the_rate_limit_spaces_requests() {
    let api = PartnerApi::builder().records(12).page_size(2).start().await;
    let job = job(&format!(
        "      kind: http\n      url: \"{}/v1/sales/link\"\n      pagination: {{ kind: link_header }}\n      rate_limit: 4/s\n",
        api.base_url()
    ));
    let h = Harness::new().await;
    let started = std::time::Instant::now();
    assert_eq!(h.run(&job).await.unwrap(), 12);
    // Six pages: four at once (the burst), then two at 250 ms each.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}
