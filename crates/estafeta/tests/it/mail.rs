//! E-mail end to end: the real binary delivering `kind: smtp` destinations to a local SMTP
//! server that authenticates, refuses and records like a real one.

use std::path::Path;
use std::time::Duration;

use estafeta_testkit::smtp::FakeSmtp;
use serde_json::{Value, json};

use crate::server::{Server, event};

const T: Duration = Duration::from_secs(60);
const PASSWORD: &str = "app-password-for-e2e";
const WRONG: &str = "revoked-password-e2e";

/// Starts the server on `config` with the two SMTP passwords as secrets.
async fn start(dir: &Path, config: &str) -> Server {
    let cfg_path = dir.join("estafeta.yaml");
    std::fs::write(
        &cfg_path,
        format!(
            "server:\n  listen: 127.0.0.1:0\n  shutdown_grace: 5s\nstorage: sqlite://{}/estafeta.db\n{config}",
            dir.display()
        ),
    )
    .unwrap();
    Server::start_with_args(
        dir,
        &cfg_path,
        &[],
        &[
            ("ESTAFETA_SECRET_SMTP_PASSWORD", PASSWORD),
            ("ESTAFETA_SECRET_SMTP_OLD_PASSWORD", WRONG),
        ],
    )
    .await
}

/// The one delivery to `destination` with `status`, once there is one.
async fn delivery(s: &Server, destination: &str, status: &str) -> Value {
    let list = s
        .wait_json(
            &format!("/v1/deliveries?status={status}&destination={destination}"),
            T,
            |v| !v["items"].as_array().unwrap().is_empty(),
        )
        .await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    s.get_json(&format!("/v1/deliveries/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_arrives_templated_and_escaped_a_451_is_retried_and_refused_credentials_are_dead() {
    let smtp = FakeSmtp::start_with_users(&[("alerts", PASSWORD)]).await;
    let dir = tempfile::tempdir().unwrap();
    let common = format!(
        "    host: {host}\n    port: {port}\n    tls: none\n    username: alerts\n    from: \"Estafeta Alerts <alerts@example.org>\"\n    allow_private_networks: true\n    retry: {{ schedule: [0s, 50ms, 50ms], jitter: 0 }}\n",
        host = smtp.host(),
        port = smtp.port()
    );
    let cfg = format!(
        r#"routes:
  - id: orders
    match: "order.*"
    to:
      - destination: mail
        template: "Order {{{{ data.id }}}} for {{{{ data.customer }}}} is {{{{ data.status }}}}."
  - id: reports
    match: "report.*"
    to:
      - destination: mail-html
        template: "<h1>Daily report</h1><p>Customer: <b>{{{{ data.customer }}}}</b></p>"
  - id: audit
    match: "audit.*"
    to: [{{destination: mail-stale}}]
destinations:
  - id: mail
    kind: smtp
{common}    password: ${{secret:smtp_password}}
    to: ["Ops Team <ops@example.org>"]
    cc: [audit@example.org]
    bcc: [archive@example.org]
    reply_to: noc@example.org
    subject: "[{{{{ data.severity }}}}] Order {{{{ data.id }}}}"
  - id: mail-html
    kind: smtp
{common}    password: ${{secret:smtp_password}}
    to: [reports@example.org]
    html: true
  - id: mail-stale
    kind: smtp
{common}    password: ${{secret:smtp_old_password}}
    to: [security@example.org]
"#
    );
    let s = start(dir.path(), &cfg).await;

    // Plain text, templated subject, every kind of recipient; the first try gets a 451.
    smtp.fail_next(1, 451);
    s.post_event(&event(
        "o-1",
        "order.created",
        json!({"id": 77, "customer": "ACME <Sons> & Co", "status": "em execução", "severity": "high"}),
    ))
    .await;
    assert!(smtp.wait_for_messages(1, T).await, "no e-mail arrived");
    let m = &smtp.messages()[0];
    assert_eq!(m.from, "alerts@example.org");
    assert_eq!(
        m.recipients,
        [
            "ops@example.org",
            "audit@example.org",
            "archive@example.org"
        ]
    );
    assert_eq!(m.auth.as_deref(), Some("alerts"));
    let mail = m.parsed();
    assert_eq!(
        mail.header("from").as_deref(),
        Some("\"Estafeta Alerts\" <alerts@example.org>")
    );
    assert_eq!(
        mail.header("to").as_deref(),
        Some("\"Ops Team\" <ops@example.org>")
    );
    assert_eq!(mail.header("cc").as_deref(), Some("audit@example.org"));
    assert_eq!(mail.header("bcc"), None, "Bcc must not be in the headers");
    assert_eq!(mail.header("reply-to").as_deref(), Some("noc@example.org"));
    assert_eq!(mail.header("subject").as_deref(), Some("[high] Order 77"));
    assert_eq!(mail.content_type, "text/plain");
    assert_eq!(
        mail.text().map(str::trim_end),
        Some("Order 77 for ACME <Sons> & Co is em execução.")
    );

    // The 451 was retried: two attempts, the same Message-ID both times, from the delivery id.
    let d = delivery(&s, "mail", "delivered").await;
    assert_eq!(d["attempts"], 2, "{d}");
    assert_eq!(d["history"][0]["status_code"], 451, "{d}");
    assert_eq!(d["history"][1]["outcome"], "delivered", "{d}");
    let id = d["id"].as_str().unwrap();
    assert_eq!(
        mail.header("message-id"),
        Some(format!("<{id}@example.org>"))
    );
    assert_eq!(mail.header("x-estafeta-delivery").as_deref(), Some(id));
    let first_try = smtp.refused_messages()[0].parsed();
    assert_eq!(first_try.header("message-id"), mail.header("message-id"));

    // HTML: printed values escaped, a plain-text alternative, the event type as subject.
    s.post_event(&event(
        "r-1",
        "report.ready",
        json!({"customer": "<script>alert('x')</script> & Sons"}),
    ))
    .await;
    assert!(smtp.wait_for_messages(2, T).await, "no HTML e-mail arrived");
    let html_mail = smtp.messages()[1].parsed();
    assert_eq!(html_mail.content_type, "multipart/alternative");
    assert_eq!(html_mail.header("subject").as_deref(), Some("report.ready"));
    assert_eq!(
        html_mail.html().map(str::trim_end),
        Some(
            "<h1>Daily report</h1><p>Customer: <b>&lt;script&gt;alert('x')&lt;/script&gt; &amp; Sons</b></p>"
        )
    );
    assert_eq!(
        html_mail.text().map(str::trim_end),
        Some("Daily report\n\nCustomer: <script>alert('x')</script> & Sons")
    );
    assert_eq!(smtp.messages()[1].recipients, ["reports@example.org"]);

    // A refused password: dead after one attempt, the reason says so, the password is not shown.
    s.post_event(&event("a-1", "audit.login", json!({"user": "ana"})))
        .await;
    let dead = delivery(&s, "mail-stale", "dead").await;
    assert_eq!(dead["attempts"], 1, "{dead}");
    let reason = dead["last_error"].as_str().unwrap();
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(
        reason.contains(&format!("127.0.0.1:{}", smtp.port())),
        "{reason}"
    );
    assert!(!reason.contains(WRONG), "the password leaked: {reason}");
    let logs = s.logs();
    assert!(!logs.contains(WRONG), "the password leaked into the log");
    assert!(!logs.contains(PASSWORD), "the password leaked into the log");
    assert_eq!(smtp.messages().len(), 2);
    let attempts = smtp.auth_attempts();
    assert_eq!(attempts.iter().filter(|a| !a.ok).count(), 1, "{attempts:?}");
}
