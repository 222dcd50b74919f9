//! SQLite only: what the vault writes to disk (database and WAL files) holds no private value
//! in the clear, and a value sealed on disk reads back after a reopen.

use std::sync::Arc;

use estafeta_store::vault::{CredentialType, MasterKey, Vault};
use estafeta_store::{SqliteOptions, SqliteStore, Store};
use serde_json::json;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_files_never_hold_a_value_in_the_clear() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("estafeta.db");
    let key = MasterKey::generate();
    let secret = "plaintext-secret-4f1c9a";
    let password = "plaintext-password-77be";
    {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(SqliteOptions::new(&path))
                .await
                .expect("open"),
        );
        let vault = Vault::new(Arc::clone(&store), key.clone());
        vault.put_secret("db", secret).await.expect("put");
        let fields = json!({"username": "visible-user", "password": password});
        vault
            .put_credential(
                "partner",
                CredentialType::Basic,
                fields.as_object().expect("object"),
            )
            .await
            .expect("put");
        // Check the files while the WAL still holds the writes, then after close.
        for_each_file(dir.path(), |name, bytes| {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "{name} holds the secret"
            );
            assert!(
                !contains(bytes, password.as_bytes()),
                "{name} holds the password"
            );
        });
        store.close().await;
    }
    let mut seen_public = false;
    for_each_file(dir.path(), |name, bytes| {
        assert!(
            !contains(bytes, secret.as_bytes()),
            "{name} holds the secret"
        );
        assert!(
            !contains(bytes, password.as_bytes()),
            "{name} holds the password"
        );
        seen_public |= contains(bytes, b"visible-user");
    });
    assert!(
        seen_public,
        "the public field is stored as it is (the check looks in the right files)"
    );
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::new(&path))
            .await
            .expect("reopen"),
    );
    let vault = Vault::new(Arc::clone(&store), key);
    let got = vault.secret("db").await.expect("get").expect("some");
    assert_eq!(got.expose(), secret);
    store.close().await;
}

fn for_each_file(dir: &std::path::Path, mut f: impl FnMut(&str, &[u8])) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            let bytes = std::fs::read(entry.path()).expect("read");
            f(&entry.file_name().to_string_lossy(), &bytes);
        }
    }
}
