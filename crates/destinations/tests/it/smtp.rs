//! The SMTP destination against `estafeta_testkit::smtp::FakeSmtp` on 127.0.0.1: what the
//! server receives, and how its answers are classified.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use estafeta_config::Secret;
use estafeta_config::smtp_destination::{SmtpCredentials, SmtpSettings, SmtpTls, parse_mailbox};
use estafeta_core::{DeliveryId, Destination, Event, OutboundMessage};
use estafeta_destinations::Smtp;
use estafeta_testkit::smtp::FakeSmtp;

const T: Duration = Duration::from_secs(10);

fn settings(fake: &FakeSmtp, user: Option<(&str, &str)>) -> SmtpSettings {
    SmtpSettings {
        id: "mail".into(),
        host: fake.host(),
        port: fake.port(),
        tls: SmtpTls::None,
        credentials: user.map(|(u, p)| SmtpCredentials {
            username: Secret::new(u.into()),
            password: Secret::new(p.into()),
        }),
        from: parse_mailbox("Estafeta <alerts@example.org>").unwrap(),
        to: vec![parse_mailbox("Ops <ops@example.org>").unwrap()],
        cc: vec![parse_mailbox("audit@example.org").unwrap()],
        bcc: vec![parse_mailbox("archive@example.org").unwrap()],
        reply_to: None,
        subject: Some("Order {{ data.id }} is {{ data.status }}".into()),
        html: false,
        timeout: Duration::from_secs(5),
        allow_private_networks: true,
    }
}

fn event() -> Arc<Event> {
    let ce = serde_json::json!({"specversion": "1.0", "id": "e1", "source": "/shop",
        "type": "order.updated", "data": {"id": 77, "status": "em execução"}});
    let event =
        estafeta_core::event::parse_cloudevent(ce, &Default::default(), "http", chrono::Utc::now());
    Arc::new(event.unwrap())
}

fn msg(body: &str) -> OutboundMessage {
    OutboundMessage {
        delivery_id: DeliveryId::new(),
        event: event(),
        body: Bytes::from(body.to_owned()),
        content_type: "text/plain; charset=utf-8",
        attempt: 1,
    }
}

#[tokio::test]
async fn sends_authenticated_mail_over_one_pooled_connection() {
    let fake = FakeSmtp::start_with_users(&[("alerts", "app-password")]).await;
    let smtp = Smtp::new(&settings(&fake, Some(("alerts", "app-password"))), 4).unwrap();
    let first = msg("Order 77 changed.\n.a line that starts with a dot\nBye");
    let ok = smtp.send(&first).await.unwrap();
    assert_eq!(ok.status_code, Some(250));
    assert!(ok.response_excerpt.unwrap().contains("queued"));
    // lettre parks a used connection from a task of its own: let it run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    smtp.send(&msg("second")).await.unwrap();
    assert!(fake.wait_for_messages(2, T).await);
    assert_eq!(fake.connections(), 1, "the connection was not reused");

    let m = &fake.messages()[0];
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
    let p = m.parsed();
    assert_eq!(
        p.header("from").as_deref(),
        Some("Estafeta <alerts@example.org>")
    );
    assert_eq!(p.header("to").as_deref(), Some("Ops <ops@example.org>"));
    assert_eq!(p.header("cc").as_deref(), Some("audit@example.org"));
    assert_eq!(p.header("bcc"), None);
    assert_eq!(
        p.header("subject").as_deref(),
        Some("Order 77 is em execução")
    );
    let id = first.delivery_id.to_string();
    assert_eq!(p.header("message-id"), Some(format!("<{id}@example.org>")));
    assert_eq!(p.header("x-estafeta-delivery"), Some(id));
    assert_eq!(p.content_type, "text/plain");
    assert_eq!(
        p.text().map(str::trim_end),
        Some("Order 77 changed.\n.a line that starts with a dot\nBye")
    );
}

#[tokio::test]
async fn refused_credentials_are_final_and_never_shown() {
    let fake = FakeSmtp::start_with_users(&[("alerts", "app-password")]).await;
    let smtp = Smtp::new(&settings(&fake, Some(("alerts", "wrong-secret"))), 1).unwrap();
    let err = smtp.send(&msg("x")).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(err.status_code, Some(535));
    assert!(
        err.message.starts_with(&format!(
            "the SMTP server 127.0.0.1:{} refused the credentials (authentication failed",
            fake.port()
        )),
        "{}",
        err.message
    );
    assert!(!format!("{err:?}").contains("wrong-secret"));
    assert!(!format!("{smtp:?}").contains("wrong-secret"));
    assert_eq!(fake.auth_attempts().len(), 1);
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn transient_answers_are_retryable_and_refused_mailboxes_final() {
    let fake = FakeSmtp::start().await;
    let smtp = Smtp::new(&settings(&fake, None), 2).unwrap();
    fake.fail_next(1, 451);
    let err = smtp.send(&msg("x")).await.unwrap_err();
    assert!(err.is_retryable(), "{}", err.message);
    assert_eq!(err.status_code, Some(451));
    assert!(err.message.contains("temporary"), "{}", err.message);
    smtp.send(&msg("x")).await.unwrap();
    // A server that closes with 421 is retried, and the next message gets through.
    fake.fail_next(1, 421);
    let err = smtp.send(&msg("x")).await.unwrap_err();
    assert!(err.is_retryable(), "{}", err.message);
    assert_eq!(err.status_code, Some(421));
    smtp.send(&msg("x")).await.unwrap();

    fake.refuse_recipient("audit@example.org", 550);
    let err = smtp.send(&msg("x")).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(err.status_code, Some(550));
    assert!(
        err.message.contains("refused an address") && err.message.contains("<audit@example.org>"),
        "{}",
        err.message
    );
    fake.refuse_recipient("audit@example.org", 553);
    let err = smtp.send(&msg("x")).await.unwrap_err();
    assert!(
        err.message.contains("553 5.1.3 Mailbox name not allowed"),
        "{}",
        err.message
    );

    assert_eq!(fake.messages().len(), 2);
}

#[tokio::test]
async fn wrong_tls_modes_are_final_and_explained() {
    let fake = FakeSmtp::start().await;
    let mut s = settings(&fake, None);
    s.tls = SmtpTls::Tls;
    let err = Smtp::new(&s, 1).unwrap().send(&msg("x")).await.unwrap_err();
    assert!(!err.is_retryable(), "{}", err.message);
    assert!(
        err.message.starts_with("TLS with the SMTP server"),
        "{}",
        err.message
    );
    s.tls = SmtpTls::Starttls;
    let err = Smtp::new(&s, 1).unwrap().send(&msg("x")).await.unwrap_err();
    assert!(!err.is_retryable(), "{}", err.message);
    assert!(
        err.message.contains("does not offer STARTTLS"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn unreachable_servers_are_retried_and_private_ones_refused() {
    let fake = FakeSmtp::start().await;
    let mut s = settings(&fake, None);
    // A port nobody listens on: bind one, then free it.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    s.port = free.local_addr().unwrap().port();
    drop(free);
    let err = Smtp::new(&s, 1).unwrap().send(&msg("x")).await.unwrap_err();
    assert!(err.is_retryable(), "{}", err.message);
    assert!(
        err.message
            .contains("cannot talk to the SMTP server 127.0.0.1:"),
        "{}",
        err.message
    );

    let mut s = settings(&fake, None);
    s.allow_private_networks = false;
    let err = Smtp::new(&s, 1).unwrap().send(&msg("x")).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.message.contains("is private (loopback)"),
        "{}",
        err.message
    );
    // A name that resolves inside is refused after resolution.
    s.host = "localhost".into();
    let err = Smtp::new(&s, 1).unwrap().send(&msg("x")).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.message.contains("of host `localhost` is private"),
        "{}",
        err.message
    );
    assert_eq!(fake.connections(), 0);
}
