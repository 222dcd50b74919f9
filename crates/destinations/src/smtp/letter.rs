//! One delivery as an e-mail: addresses, the templated subject, the body (plain text, or
//! HTML with a plain-text alternative), and the headers that let receivers recognise and
//! de-duplicate it (`Message-ID` from the delivery id, `X-Estafeta-Delivery`).

use std::str::FromStr as _;

use estafeta_config::smtp_destination::{Mailbox, SmtpSettings, subject_template_name};
use estafeta_core::template::{Escape, TemplateSet};
use estafeta_core::{Event, OutboundMessage, SendError};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{MultiPart, SinglePart};

use super::plain_text::html_to_text;
use crate::build_error::BuildError;

/// The header that carries the delivery id, as on every other destination.
const DELIVERY_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Estafeta-Delivery");
/// RFC 3834: marks the message as machine-made, so auto-responders stay quiet.
const AUTO_SUBMITTED: HeaderName = HeaderName::new_from_ascii_str("Auto-Submitted");
/// Longest subject kept, in characters (mail clients show far fewer).
const SUBJECT_LIMIT: usize = 250;

/// What every message of one destination shares.
pub(super) struct Letter {
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
    cc: Vec<lettre::message::Mailbox>,
    bcc: Vec<lettre::message::Mailbox>,
    reply_to: Option<lettre::message::Mailbox>,
    /// The right-hand side of `Message-ID`s: the sender's domain.
    id_domain: String,
    html: bool,
    templates: TemplateSet,
    subject: Option<String>,
}

fn mailbox(id: &str, field: &str, m: &Mailbox) -> Result<lettre::message::Mailbox, BuildError> {
    let address =
        lettre::Address::from_str(&m.address).map_err(|source| BuildError::InvalidAddress {
            id: id.to_owned(),
            field: field.to_owned(),
            address: m.address.clone(),
            source,
        })?;
    Ok(lettre::message::Mailbox::new(m.name.clone(), address))
}

fn mailboxes(
    id: &str,
    field: &str,
    list: &[Mailbox],
) -> Result<Vec<lettre::message::Mailbox>, BuildError> {
    list.iter()
        .enumerate()
        .map(|(i, m)| mailbox(id, &format!("{field}[{i}]"), m))
        .collect()
}

impl Letter {
    /// The addresses and templates of `settings`.
    pub(super) fn new(settings: &SmtpSettings) -> Result<Self, BuildError> {
        let id = &settings.id;
        let mut templates = TemplateSet::new();
        let subject = match &settings.subject {
            Some(src) => {
                let name = subject_template_name(id);
                templates
                    .add(&name, src)
                    .map_err(|e| BuildError::Template {
                        id: id.clone(),
                        message: e.to_string(),
                    })?;
                Some(name)
            }
            None => None,
        };
        Ok(Self {
            from: mailbox(id, "from", &settings.from)?,
            to: mailboxes(id, "to", &settings.to)?,
            cc: mailboxes(id, "cc", &settings.cc)?,
            bcc: mailboxes(id, "bcc", &settings.bcc)?,
            reply_to: settings
                .reply_to
                .as_ref()
                .map(|m| mailbox(id, "reply_to", m))
                .transpose()?,
            id_domain: settings.from.domain().to_owned(),
            html: settings.html,
            templates,
            subject,
        })
    }

    /// The `Message-ID` of a delivery: the same on every attempt.
    pub(super) fn message_id(&self, msg: &OutboundMessage) -> String {
        format!("<{}@{}>", msg.delivery_id, self.id_domain)
    }

    /// The e-mail for one delivery. A subject template that fails for this event is final.
    pub(super) fn build(&self, msg: &OutboundMessage) -> Result<lettre::Message, SendError> {
        let event = &msg.event;
        let subject = match &self.subject {
            Some(name) => self
                .templates
                .render(name, event, &[])
                .map_err(|e| SendError::final_error(format!("cannot render the subject: {e}")))?,
            None => event.ty.clone(),
        };
        let mut subject = one_line(&subject);
        if subject.is_empty() {
            subject.clone_from(&event.ty);
        }
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(self.message_id(msg)))
            .raw_header(HeaderValue::new(
                DELIVERY_HEADER,
                msg.delivery_id.to_string(),
            ))
            .raw_header(HeaderValue::new(
                AUTO_SUBMITTED,
                "auto-generated".to_owned(),
            ));
        for m in &self.to {
            b = b.to(m.clone());
        }
        for m in &self.cc {
            b = b.cc(m.clone());
        }
        for m in &self.bcc {
            b = b.bcc(m.clone());
        }
        if let Some(m) = &self.reply_to {
            b = b.reply_to(m.clone());
        }
        let templated = msg.content_type != "application/cloudevents+json";
        let built = if self.html {
            let html = if templated {
                String::from_utf8_lossy(&msg.body).into_owned()
            } else {
                format!("<pre>{}</pre>", Escape::Html.apply(&default_text(event)))
            };
            b.multipart(MultiPart::alternative_plain_html(html_to_text(&html), html))
        } else {
            let text = if templated {
                String::from_utf8_lossy(&msg.body).into_owned()
            } else {
                default_text(event)
            };
            b.singlepart(SinglePart::plain(text))
        };
        built.map_err(|e| SendError::final_error(format!("cannot build the e-mail: {e}")))
    }
}

/// The subject on one line: control characters (line breaks included) as spaces, runs of
/// spaces as one, cut at [`SUBJECT_LIMIT`] characters.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(SUBJECT_LIMIT * 4));
    for c in text.trim().chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && out.ends_with(' ') {
            continue;
        }
        if out.chars().count() == SUBJECT_LIMIT {
            out.pop();
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// The body without a route template: the event's type and subject, its ids and time, and
/// its data as indented JSON.
fn default_text(event: &Event) -> String {
    let mut text = event.ty.clone();
    if let Some(subject) = &event.subject {
        text.push_str(&format!(" ({subject})"));
    }
    text.push_str(&format!(
        "\nid: {} · source: {} · time: {}\n",
        event.ce_id,
        event.ce_source,
        event
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    ));
    if let Some(data) = &event.data {
        let json = serde_json::to_string_pretty(data).unwrap_or_default();
        text.push('\n');
        text.push_str(&json);
        text.push('\n');
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use estafeta_config::smtp_destination::{SmtpTls, parse_mailbox};
    use estafeta_core::ids::DeliveryId;
    use serde_json::json;

    use super::*;

    fn settings(html: bool, subject: Option<&str>) -> SmtpSettings {
        SmtpSettings {
            id: "mail".into(),
            host: "smtp.example.org".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            credentials: None,
            from: parse_mailbox("Estafeta <alerts@example.org>").unwrap(),
            to: vec![parse_mailbox("ops@example.org").unwrap()],
            cc: vec![parse_mailbox("\"Doe, Jane\" <jane@example.org>").unwrap()],
            bcc: vec![parse_mailbox("archive@example.org").unwrap()],
            reply_to: Some(parse_mailbox("noc@example.org").unwrap()),
            subject: subject.map(str::to_owned),
            html,
            timeout: std::time::Duration::from_secs(5),
            allow_private_networks: false,
        }
    }

    fn message(body: Option<&str>) -> OutboundMessage {
        let event = estafeta_core::event::parse_cloudevent(
            json!({"specversion":"1.0","id":"o-1","source":"shop","type":"order.created",
                   "subject":"br-7","data":{"name":"Ana\nB","total":42}}),
            &estafeta_core::TenantId::default(),
            "http",
            chrono::Utc::now(),
        )
        .unwrap();
        OutboundMessage {
            delivery_id: DeliveryId::new(),
            event: Arc::new(event),
            body: body.map_or_else(
                || bytes::Bytes::from_static(b"{}"),
                |b| bytes::Bytes::from(b.to_owned()),
            ),
            content_type: if body.is_some() {
                "text/plain; charset=utf-8"
            } else {
                "application/cloudevents+json"
            },
            attempt: 1,
        }
    }

    fn formatted(m: &lettre::Message) -> String {
        String::from_utf8(m.formatted()).unwrap()
    }

    #[test]
    fn headers_carry_the_delivery_and_bcc_stays_in_the_envelope() {
        let letter = Letter::new(&settings(false, Some("Order {{ data.name }}!"))).unwrap();
        let msg = message(Some("Hello"));
        let mail = letter.build(&msg).unwrap();
        let text = formatted(&mail);
        let id = msg.delivery_id.to_string();
        assert!(
            text.contains(&format!("Message-ID: <{id}@example.org>\r\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("X-Estafeta-Delivery: {id}\r\n")),
            "{text}"
        );
        assert!(
            text.contains("Auto-Submitted: auto-generated\r\n"),
            "{text}"
        );
        // A line break printed into the subject cannot start a new header.
        assert!(text.contains("Subject: Order Ana B!\r\n"), "{text}");
        assert!(
            text.contains("From: Estafeta <alerts@example.org>\r\n"),
            "{text}"
        );
        let parsed = estafeta_testkit::smtp::ParsedMail::parse(text.as_bytes());
        assert_eq!(
            parsed.header("cc").as_deref(),
            Some("Doe, Jane <jane@example.org>")
        );
        assert!(text.contains("Reply-To: noc@example.org\r\n"), "{text}");
        assert!(!text.contains("archive@"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8"),
            "{text}"
        );
        let rcpt: Vec<String> = mail
            .envelope()
            .to()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            rcpt,
            ["ops@example.org", "jane@example.org", "archive@example.org"]
        );
        // The same delivery gets the same Message-ID on the next attempt.
        assert_eq!(letter.message_id(&msg), letter.message_id(&msg.clone()));
    }

    #[test]
    fn without_a_template_the_event_is_the_body_and_its_type_the_subject() {
        let letter = Letter::new(&settings(false, None)).unwrap();
        let text = formatted(&letter.build(&message(None)).unwrap());
        assert!(text.contains("Subject: order.created\r\n"), "{text}");
        assert!(text.contains("order.created (br-7)"), "{text}");
        assert!(text.contains("\"total\": 42"), "{text}");
    }

    #[test]
    fn html_bodies_get_a_plain_text_alternative() {
        let letter = Letter::new(&settings(true, None)).unwrap();
        let mail = letter
            .build(&message(Some("<p>Total <b>42</b> &amp; more</p>")))
            .unwrap();
        let text = formatted(&mail);
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(
            text.contains("Content-Type: text/html; charset=utf-8"),
            "{text}"
        );
        assert!(text.contains("Total 42 & more"), "{text}");
        assert!(text.contains("<p>Total <b>42</b> &amp; more</p>"), "{text}");
    }

    #[test]
    fn addresses_the_configuration_accepts_are_taken_by_the_mail_library() {
        for text in [
            "josé@exämple.org",
            "a@[192.0.2.1]",
            "ops+night@example.org",
            "\"Ana \\\"AB\\\" Silva\" <ana@example.org>",
            "first.last@sub.example.co.uk",
        ] {
            let m = parse_mailbox(text).unwrap();
            assert!(mailbox("mail", "to[0]", &m).is_ok(), "{text}");
        }
    }

    #[test]
    fn subject_errors_are_final_and_subjects_stay_short() {
        let letter = Letter::new(&settings(false, Some("{{ data.missing.x }}"))).unwrap();
        let err = letter.build(&message(Some("x"))).unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.message.contains("cannot render the subject"),
            "{}",
            err.message
        );
        let long = one_line(&"word ".repeat(100));
        assert_eq!(long.chars().count(), SUBJECT_LIMIT);
        assert!(long.ends_with('…'));
    }
}
