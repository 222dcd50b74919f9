//! The HTTP provider with `auth: { credential: NAME }` read from a real SQLite-backed vault
//! (API key and OAuth 2 client credentials, an update used by the next run, a missing
//! credential), and the SSRF guard refusing loopback addresses without
//! `allow_private_networks`.

use serde_json::{Map, Value, json};

use super::*;

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

impl Harness {
    /// A vault over this harness's store.
    fn vault(&self) -> Vault {
        Vault::new(Arc::clone(&self.store), MasterKey::generate())
    }
}

#[tokio::test]
async fn an_api_key_credential_is_read_at_each_run() {
    let api = PartnerApi::builder()
        .records(12)
        .api_key("key-one")
        .start()
        .await;
    let h = Harness::new().await;
    let vault = h.vault();
    vault
        .put_credential(
            "partner",
            CredentialType::ApiKey,
            &fields(json!({"header": "X-Api-Key", "key": "key-one"})),
        )
        .await
        .unwrap();
    let job = guarded_job(
        &format!(
            "      kind: http\n      url: \"{}/v1/sales/pages\"\n      auth: {{ credential: partner }}\n      pagination: {{ kind: page_number, size: 10 }}\n      records: $.data[*]\n      allow_private_networks: true\n",
            api.base_url()
        ),
        Some(vault.credentials()),
    );
    assert_eq!(h.run(&job).await.unwrap(), 12);
    assert_eq!(h.ids(), expected(12));

    // The credential changes in the store: the next run uses the new key (here a wrong one).
    vault
        .put_credential(
            "partner",
            CredentialType::ApiKey,
            &fields(json!({"header": "X-Api-Key", "key": "key-two"})),
        )
        .await
        .unwrap();
    let err = chain(&h.run(&job).await.unwrap_err());
    assert!(err.contains("answered 401"), "{err}");
    assert!(!err.contains("key-two"), "no secret in errors: {err}");
}

#[tokio::test]
async fn an_oauth2_credential_gets_a_token_from_its_token_url() {
    let api = PartnerApi::builder()
        .records(9)
        .page_size(4)
        .oauth("client", "cs-1", Duration::from_secs(3600))
        .start()
        .await;
    let h = Harness::new().await;
    let vault = h.vault();
    vault
        .put_credential(
            "partner-oauth",
            CredentialType::Oauth2ClientCredentials,
            &fields(json!({
                "token_url": format!("{}/oauth/token", api.base_url()),
                "client_id": "client",
                "scopes": ["sales.read"],
                "client_secret": "cs-1",
            })),
        )
        .await
        .unwrap();
    let job = guarded_job(
        &format!(
            "      kind: http\n      url: \"{}/v1/sales/next\"\n      auth: {{ credential: partner-oauth }}\n      pagination: {{ kind: next_url, path: $.next }}\n      records: $.results\n      allow_private_networks: true\n",
            api.base_url()
        ),
        Some(vault.credentials()),
    );
    assert_eq!(h.run(&job).await.unwrap(), 9);
    assert_eq!(api.tokens_issued(), 1, "one token for three pages");
    assert_eq!(h.run(&job).await.unwrap(), 9);
    assert_eq!(
        api.tokens_issued(),
        1,
        "the cached token serves the next run"
    );
}

#[tokio::test]
async fn a_missing_credential_fails_the_run_naming_it() {
    let api = PartnerApi::builder().records(3).api_key("k").start().await;
    let h = Harness::new().await;
    let job = guarded_job(
        &format!(
            "      kind: http\n      url: \"{}/v1/sales/pages\"\n      auth: {{ credential: nope }}\n      allow_private_networks: true\n",
            api.base_url()
        ),
        Some(h.vault().credentials()),
    );
    let err = chain(&h.run(&job).await.unwrap_err());
    assert!(err.contains("credential `nope` does not exist"), "{err}");
    assert!(
        api.requests().is_empty(),
        "no request without its credential"
    );
}

#[tokio::test]
async fn loopback_is_refused_without_allow_private_networks() {
    let api = PartnerApi::builder().records(3).start().await;
    let h = Harness::new().await;
    // An IP literal is refused before sending.
    let job = guarded_job(
        &format!(
            "      kind: http\n      url: \"{}/v1/sales/pages\"\n      records: $.data\n",
            api.base_url()
        ),
        None,
    );
    let err = chain(&h.run(&job).await.unwrap_err());
    assert!(err.contains("request refused"), "{err}");
    assert!(
        err.contains("127.0.0.1") && err.contains("loopback"),
        "{err}"
    );
    assert!(err.contains("allow_private_networks"), "{err}");
    // A name that resolves to loopback is refused after resolution, without retries.
    let by_name = api.base_url().replace("127.0.0.1", "localhost");
    let job = guarded_job(
        &format!(
            "      kind: http\n      url: \"{by_name}/v1/sales/pages\"\n      records: $.data\n"
        ),
        None,
    );
    let err = chain(&h.run(&job).await.unwrap_err());
    assert!(
        err.contains("request refused") && err.contains("loopback"),
        "{err}"
    );
    assert!(api.requests().is_empty());
}
