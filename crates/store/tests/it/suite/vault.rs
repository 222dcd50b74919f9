//! Secrets and credentials: round trips through the store, views that never show a private
//! value, updates that keep private fields, key rotation, and a wrong key refused.

use std::sync::Arc;

use estafeta_store::Store;
use estafeta_store::vault::{
    CredentialType, MasterKey, Vault, VaultError, VaultKind, rotate_master_key,
};
use serde_json::{Map, Value, json};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

pub(crate) async fn secrets_round_trip_and_list_without_values(store: Arc<dyn Store>) {
    let vault = Vault::new(Arc::clone(&store), MasterKey::generate());
    let first = vault
        .put_secret("db-password", "s3cr3t-one")
        .await
        .expect("put");
    vault.put_secret("api.token", "tok").await.expect("put");
    let again = vault
        .put_secret("db-password", "s3cr3t-two")
        .await
        .expect("replace");
    assert_eq!(again.created_at, first.created_at, "created_at is kept");
    assert!(again.updated_at >= first.updated_at);
    let got = vault
        .secret("db-password")
        .await
        .expect("get")
        .expect("some");
    assert_eq!(got.expose(), "s3cr3t-two");
    assert_eq!(format!("{got:?}"), "SecretValue([redacted])");
    let names: Vec<_> = vault
        .list_secrets()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["api.token", "db-password"]);
    assert_eq!(vault.all_secrets().await.expect("all").len(), 2);
    // The store holds sealed text only.
    let raw = store
        .get_vault_record(VaultKind::Secret, "db-password")
        .await
        .expect("raw")
        .expect("some");
    assert!(!raw.sealed.contains("s3cr3t") && !raw.public.contains("s3cr3t"));
    assert_eq!(raw.key_id, vault.key_id());
    assert!(vault.delete_secret("db-password").await.expect("delete"));
    assert!(
        !vault
            .delete_secret("db-password")
            .await
            .expect("delete again")
    );
    assert!(vault.secret("db-password").await.expect("get").is_none());
    assert!(matches!(
        vault.put_secret("no/slash", "v").await,
        Err(VaultError::BadName(_))
    ));
}

pub(crate) async fn credentials_show_only_whether_private_fields_are_set(store: Arc<dyn Store>) {
    let vault = Vault::new(Arc::clone(&store), MasterKey::generate());
    let fields = obj(json!({"username": "svc", "password": "pa55"}));
    let view = vault
        .put_credential("partner", CredentialType::Basic, &fields)
        .await
        .expect("put");
    assert_eq!(view.fields["username"], json!("svc"));
    assert_eq!(view.fields["password"], json!({"set": true}));
    assert!(!serde_json::to_string(&view).expect("json").contains("pa55"));
    // An update that leaves the password out keeps it.
    vault
        .put_credential(
            "partner",
            CredentialType::Basic,
            &obj(json!({"username": "svc2"})),
        )
        .await
        .expect("update");
    let cred = vault
        .credentials()
        .get("partner")
        .await
        .expect("get")
        .expect("some");
    assert_eq!(cred.kind, CredentialType::Basic);
    assert_eq!(cred.public_str("username"), Some("svc2"));
    assert_eq!(cred.private("password").map(|v| v.expose()), Some("pa55"));
    assert!(!format!("{cred:?}").contains("pa55"));
    // Validation against the type.
    let bad = vault
        .put_credential("k", CredentialType::ApiKey, &obj(json!({"key": "x"})))
        .await;
    assert!(matches!(bad, Err(VaultError::Invalid(p)) if p.iter().any(|m| m.contains("header"))));
    assert_eq!(vault.list_credentials().await.expect("list").len(), 1);
    assert!(vault.delete_credential("partner").await.expect("delete"));
    assert!(
        vault
            .credentials()
            .get("partner")
            .await
            .expect("get")
            .is_none()
    );
}

pub(crate) async fn rotation_reseals_everything_and_the_old_key_stops_working(
    store: Arc<dyn Store>,
) {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let vault = Vault::new(Arc::clone(&store), old.clone());
    vault.put_secret("a", "value-a").await.expect("put");
    vault
        .put_credential("c", CredentialType::Bearer, &obj(json!({"token": "tok-c"})))
        .await
        .expect("put");
    let n = rotate_master_key(Arc::clone(&store), old.clone(), new.clone())
        .await
        .expect("rotate");
    assert_eq!(n, 2);
    // Running it again changes nothing.
    assert_eq!(
        rotate_master_key(Arc::clone(&store), old.clone(), new.clone())
            .await
            .expect("again"),
        0
    );
    let fresh = Vault::new(Arc::clone(&store), new);
    assert_eq!(
        fresh
            .secret("a")
            .await
            .expect("get")
            .map(|v| v.expose().to_owned()),
        Some("value-a".to_owned())
    );
    let c = fresh
        .credentials()
        .get("c")
        .await
        .expect("get")
        .expect("some");
    assert_eq!(c.private("token").map(|v| v.expose()), Some("tok-c"));
    assert!(matches!(
        vault.secret("a").await,
        Err(VaultError::Crypto { .. })
    ));
    // A third key cannot rotate what it did not seal; nothing changes.
    assert!(
        rotate_master_key(
            Arc::clone(&store),
            MasterKey::generate(),
            MasterKey::generate()
        )
        .await
        .is_err()
    );
    assert!(fresh.secret("a").await.expect("still opens").is_some());
}
