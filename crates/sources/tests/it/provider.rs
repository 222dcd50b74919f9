//! A schedule with an HTTP provider, through the real schedule runtime and a SQLite store,
//! against the local partner API: manual runs pull every page into events, the run history
//! counts the records, the cursor is stored after the events and the next run asks only for
//! newer records; a run whose partner is gone fails and leaves the cursor alone. A named
//! credential is read from the vault at each run.

use std::time::Duration;

use estafeta_sources::provider::cursor_key;
use estafeta_store::vault::CredentialType;
use estafeta_store::{RunStatus, ScheduleRun};
use estafeta_testkit::PartnerApi;

use crate::harness::Harness;

async fn runs(h: &Harness) -> Vec<ScheduleRun> {
    h.store.list_runs("sales", 10, None).await.unwrap().items
}

/// Triggers a run and waits until it has finished; answers it.
async fn run_once(h: &Harness) -> ScheduleRun {
    let run = h
        .sources
        .as_ref()
        .unwrap()
        .schedules()
        .trigger("sales")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = runs(h).await.into_iter().find(|r| r.id == run.id).unwrap();
        if matches!(found.status, RunStatus::Succeeded | RunStatus::Failed) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run not finished: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_scheduled_provider_pulls_pages_into_events_and_keeps_its_cursor() {
    let api = PartnerApi::builder()
        .records(25)
        .api_key("k-1")
        .start()
        .await;
    let yaml = format!(
        r#"sources:
  - id: sales
    kind: schedule
    every: 1h
    provider:
      kind: http
      url: "{}/v1/sales/pages"
      query: {{ since: "{{{{ cursor }}}}", day: "{{{{ yesterday }}}}" }}
      auth: {{ kind: api_key, header: X-Api-Key, value: k-1 }}
      pagination: {{ kind: page_number, size_param: per_page, size: 10 }}
      records: $.data[*]
      cursor: {{ field: updated_at }}
      attempts: 2
      emit: {{ type: partner.sale, id: id }}
      allow_private_networks: true
"#,
        api.base_url()
    );
    let mut h = Harness::start(&yaml).await;
    let first = run_once(&h).await;
    assert_eq!(first.status, RunStatus::Succeeded, "{first:?}");
    assert_eq!(first.records, 25);
    let events = h.sink.all();
    assert_eq!(events.len(), 25);
    assert!(
        events
            .iter()
            .all(|e| e.ty == "partner.sale" && e.source_id == "sales")
    );
    assert_eq!(events[24].data.as_ref().unwrap()["id"], "s-00024");
    let key = cursor_key("sales");
    assert_eq!(
        h.store.get_cursor(&key).await.unwrap().as_deref(),
        Some("2026-11-01T00:24:00Z")
    );

    // The next run asks for what is newer than the cursor, and gets only that.
    api.add_records(25, 28);
    let second = run_once(&h).await;
    assert_eq!(second.records, 3, "{second:?}");
    assert_eq!(h.sink.all().len(), 28);
    let asked = api.requests().pop().unwrap().path_and_query;
    assert!(asked.contains("since=2026-11-01T00%3A24%3A00Z"), "{asked}");

    // The partner goes away: the run fails, the cursor stays.
    drop(api);
    let third = run_once(&h).await;
    assert_eq!(third.status, RunStatus::Failed);
    assert!(
        third
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("request to 127.0.0.1"),
        "{third:?}"
    );
    assert_eq!(
        h.store.get_cursor(&key).await.unwrap().as_deref(),
        Some("2026-11-01T00:27:00Z")
    );
    h.stop().await;
}

#[tokio::test]
async fn a_named_credential_is_read_from_the_vault_at_each_run() {
    let api = PartnerApi::builder()
        .records(5)
        .api_key("vault-key")
        .start()
        .await;
    let yaml = format!(
        r#"sources:
  - id: sales
    kind: schedule
    every: 1h
    provider:
      kind: http
      url: "{}/v1/sales/pages"
      auth: {{ credential: partner }}
      pagination: {{ kind: page_number, size: 10 }}
      records: $.data[*]
      attempts: 1
      allow_private_networks: true
"#,
        api.base_url()
    );
    let mut h = Harness::start(&yaml).await;
    // Not stored yet: the run fails naming it.
    let missing = run_once(&h).await;
    assert_eq!(missing.status, RunStatus::Failed);
    let error = missing.error.unwrap_or_default();
    assert!(
        error.contains("credential `partner` does not exist"),
        "{error}"
    );
    // Stored while the schedule runs: the next run uses it.
    let fields = serde_json::json!({"header": "X-Api-Key", "key": "vault-key"});
    h.vault
        .put_credential(
            "partner",
            CredentialType::ApiKey,
            fields.as_object().unwrap(),
        )
        .await
        .unwrap();
    let ok = run_once(&h).await;
    assert_eq!(ok.status, RunStatus::Succeeded, "{ok:?}");
    assert_eq!(ok.records, 5);
    assert_eq!(h.sink.all().len(), 5);
    h.stop().await;
}
