//! Stored secrets end to end: `estafeta secrets set` on a running server, then a config that
//! uses `${secret:NAME}` in a webhook header works after a restart; the master key file is
//! private, the value is in no log and in no database file; `secrets rotate-key` re-seals on
//! the stopped server's data and the next start still resolves the secret.

use std::path::Path;
use std::time::Duration;

use estafeta_testkit::WebhookReceiver;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use crate::server::{Server, TOKEN, WHSEC, event, one_route};

const VALUE: &str = "e2e-stored-api-key-5b0c7d";
const T: Duration = Duration::from_secs(30);

async fn cli(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_estafeta"))
        .args(args)
        .env("ESTAFETA_TOKEN", TOKEN)
        .env_remove("ESTAFETA_MASTER_KEY")
        .env_remove("ESTAFETA_MASTER_KEY_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cli");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    child.wait_with_output().await.expect("cli output")
}

fn holds(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[tokio::test]
async fn a_stored_secret_feeds_config_after_a_restart_and_never_reaches_the_log() {
    let rx = WebhookReceiver::start_with_secret(WHSEC).await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    let key_file = dir.path().join("master.key");
    assert!(
        key_file.exists(),
        "a master key is generated on first start"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = cli(
        &["secrets", "set", "partner_key", "--url", &s.url],
        Some(&format!("{VALUE}\n")),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["secrets", "list", "--url", &s.url], None).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("partner_key") && !listed.contains(VALUE),
        "{listed}"
    );
    // A credential through the CLI: fields on stdin, the private one shown only as set.
    let out = cli(
        &[
            "credentials",
            "set",
            "partner",
            "--type",
            "basic",
            "--url",
            &s.url,
        ],
        Some(&format!(r#"{{"username": "svc", "password": "{VALUE}"}}"#)),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["credentials", "get", "partner", "--url", &s.url], None).await;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown["fields"],
        json!({"username": "svc", "password": {"set": true}})
    );
    let out = cli(&["credentials", "list", "--url", &s.url], None).await;
    assert!(!String::from_utf8_lossy(&out.stdout).contains(VALUE));
    let first_logs = s.logs();
    assert!(s.terminate().await.success());

    let cfg = one_route(
        &rx.url(),
        "    headers: { X-Api-Key: \"${secret:partner_key}\" }\n",
    );
    let s = Server::start(dir.path(), &cfg).await;
    assert_eq!(
        s.post_event(&event("e-1", "t", json!({}))).await.status(),
        202
    );
    assert!(rx.wait_for_count(1, T).await, "got {}", rx.count());
    assert_eq!(rx.requests()[0].header("x-api-key"), Some(VALUE));
    let second_logs = s.logs();
    assert!(s.terminate().await.success());

    // Rotate the key on the stopped server's data; the default key file is replaced.
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    let new_key = dir.path().join("next.key");
    let storage = format!("sqlite://{}/estafeta.db", dir.path().display());
    let out = cli(
        &[
            "secrets",
            "rotate-key",
            "--new-key-file",
            new_key.to_str().unwrap(),
            "--storage",
            &storage,
        ],
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-sealed 2 record"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_ne!(std::fs::read_to_string(&key_file).unwrap(), old_key);

    let s = Server::start(dir.path(), &cfg).await;
    assert_eq!(
        s.post_event(&event("e-2", "t", json!({}))).await.status(),
        202
    );
    assert!(rx.wait_for_count(2, T).await, "got {}", rx.count());
    assert_eq!(rx.requests()[1].header("x-api-key"), Some(VALUE));
    let third_logs = s.logs();
    assert!(s.terminate().await.success());

    for (i, logs) in [first_logs, second_logs, third_logs].iter().enumerate() {
        assert!(!logs.is_empty(), "server {i} logged");
        assert!(
            !logs.contains(VALUE),
            "server {i} logged the value:\n{logs}"
        );
    }
    assert_eq!(holds(dir.path(), VALUE), Vec::<String>::new());
}

#[tokio::test]
async fn a_missing_secret_says_where_it_could_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "destinations:\n  - id: h\n    kind: webhook\n    url: http://127.0.0.1:9/\n    headers: { X-Key: \"${secret:nowhere_defined}\" }\n",
    )
    .unwrap();
    let out = cli(&["check", "--config", cfg.to_str().unwrap()], None).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("estafeta secrets set nowhere_defined"),
        "{err}"
    );
    assert!(err.contains("ESTAFETA_SECRET_NOWHERE_DEFINED"), "{err}");
}
