//! `kind: smtp` — e-mail through an SMTP server (a provider's submission service or your own
//! relay): the file's shape, the validated settings, and the validation between them.
//!
//! Decisions this file makes:
//! * `port` defaults to 465 with `tls: tls` (implicit TLS) and to 587 otherwise.
//! * `tls: none` (plain SMTP) is allowed for a loopback host (`localhost`, `127.0.0.1`,
//!   `::1`: the traffic never leaves the machine) or with `allow_insecure: true`; anywhere
//!   else it is an error, because the password and every message would cross the network
//!   readable by anyone on the path.
//! * `password` must be written as a reference (`${secret:…}` or `${env:…}`), never in the
//!   file itself.

mod mailbox;

use std::net::IpAddr;
use std::time::Duration;

use estafeta_core::template::TemplateSet;
use serde::Deserialize;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

pub use self::mailbox::{Mailbox, parse_mailbox};

/// `kind: smtp` — send each delivery as an e-mail.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// SMTP server host name or IP address, without scheme or port (e.g. `smtp.gmail.com`).
    pub host: Text,
    /// Server port (default 587; 465 with `tls: tls`).
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default: plain connection upgraded with STARTTLS, required), `tls`
    /// (implicit TLS from the first byte, usually port 465) or `none` (plain SMTP: only for
    /// a loopback host, or with `allow_insecure: true`).
    #[serde(default)]
    pub tls: SmtpTls,
    /// Allow `tls: none` to a host that is not loopback (default false).
    #[serde(default)]
    pub allow_insecure: bool,
    /// User for SMTP authentication (with `password`).
    #[serde(default)]
    pub username: Option<Text>,
    /// Password for SMTP authentication; write it as `${secret:…}`.
    #[serde(default)]
    pub password: Option<Text>,
    /// The sender: `alerts@example.org` or `Estafeta <alerts@example.org>`.
    pub from: Text,
    /// Recipients (at least one).
    pub to: Vec<Text>,
    /// Carbon-copy recipients.
    #[serde(default)]
    pub cc: Vec<Text>,
    /// Blind carbon-copy recipients (in the envelope, not in the headers).
    #[serde(default)]
    pub bcc: Vec<Text>,
    /// Where replies go, when not to `from`.
    #[serde(default)]
    pub reply_to: Option<Text>,
    /// The subject: a template over the event (default: the event type).
    #[serde(default)]
    pub subject: Option<String>,
    /// Send the route template's output as HTML (with a plain-text alternative) and escape
    /// the values it prints for HTML (default false: plain text).
    #[serde(default)]
    pub html: bool,
    /// Time allowed for one message: connect, TLS, authentication and transfer (default
    /// `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub timeout: DurationText,
    /// Allow a server on a private or loopback address (default false).
    #[serde(default)]
    pub allow_private_networks: bool,
}

/// How the connection to the server is protected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Connect in plain text, then upgrade with `STARTTLS`; a server that does not offer it
    /// is an error (never falls back to plain text).
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", SMTPS), usually port 465.
    Tls,
    /// No encryption.
    None,
}

impl SmtpTls {
    /// The mode as written in the configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starttls => "starttls",
            Self::Tls => "tls",
            Self::None => "none",
        }
    }

    /// The usual port of the mode: 465 for implicit TLS, 587 (submission) otherwise.
    #[must_use]
    pub fn default_port(self) -> u16 {
        match self {
            Self::Tls => 465,
            Self::Starttls | Self::None => 587,
        }
    }
}

/// SMTP credentials.
#[derive(Debug, Clone)]
pub struct SmtpCredentials {
    /// User name.
    pub username: Secret,
    /// Password.
    pub password: Secret,
}

/// A validated SMTP destination.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Destination id.
    pub id: String,
    /// Host name (lower-case ASCII) or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connection security.
    pub tls: SmtpTls,
    /// Credentials, when the server wants them.
    pub credentials: Option<SmtpCredentials>,
    /// Sender.
    pub from: Mailbox,
    /// Recipients.
    pub to: Vec<Mailbox>,
    /// Carbon-copy recipients.
    pub cc: Vec<Mailbox>,
    /// Blind carbon-copy recipients.
    pub bcc: Vec<Mailbox>,
    /// Reply-To, if any.
    pub reply_to: Option<Mailbox>,
    /// Subject template source, if any.
    pub subject: Option<String>,
    /// HTML body with a plain-text alternative.
    pub html: bool,
    /// Time allowed for one message.
    pub timeout: Duration,
    /// Whether private addresses may be reached.
    pub allow_private_networks: bool,
}

/// Name the destination's subject template is compiled under.
#[must_use]
pub fn subject_template_name(id: &str) -> String {
    format!("destinations.{id}.subject")
}

/// True for hosts whose traffic never leaves the machine.
#[must_use]
pub fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.to_canonical().is_loopback(),
        Err(_) => {
            let h = host.trim_end_matches('.').to_ascii_lowercase();
            h == "localhost" || h.ends_with(".localhost")
        }
    }
}

/// The host as the transport uses it: an IP address (brackets dropped, other IPv4 spellings
/// normalised) or a lower-case ASCII domain name.
fn parse_host(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("the SMTP server's host name is empty");
    }
    if raw.contains("://") {
        return Err("write only the host name (e.g. `smtp.example.org`), without `smtp://`");
    }
    let bracketed = raw.starts_with('[') && raw.ends_with(']');
    if raw.contains(':') && !bracketed && raw.parse::<IpAddr>().is_err() {
        return Err("write only the host name; the port goes in `port`");
    }
    let input = if raw.parse::<IpAddr>().is_ok() && raw.contains(':') {
        format!("[{raw}]")
    } else {
        raw.to_owned()
    };
    match url::Host::parse(&input) {
        Ok(url::Host::Ipv4(ip)) => Ok(ip.to_string()),
        Ok(url::Host::Ipv6(ip)) => Ok(ip.to_string()),
        Ok(url::Host::Domain(d)) if valid_domain(&d) => Ok(d),
        _ => Err("not a valid host name or IP address"),
    }
}

fn valid_domain(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Resolves and parses one mailbox field; errors name the field.
fn mailbox(cx: &mut Ctx<'_>, t: &Text, field: String) -> Option<Mailbox> {
    let r = cx.resolve(t, &field)?;
    match parse_mailbox(r.value.expose()) {
        Ok(m) => Some(m),
        Err(why) => {
            let shown = if r.has_secret {
                String::new()
            } else {
                format!("`{}`: ", r.value.expose().trim())
            };
            cx.err_text(
                t,
                field,
                format!(
                    "not a valid e-mail address ({shown}{why}); write `name@example.org` or `Name <name@example.org>`"
                ),
            );
            None
        }
    }
}

fn mailboxes(cx: &mut Ctx<'_>, list: &[Text], field: &str) -> Vec<Mailbox> {
    list.iter()
        .enumerate()
        .filter_map(|(i, t)| mailbox(cx, t, format!("{field}[{i}]")))
        .collect()
}

#[allow(clippy::too_many_lines)]
pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &SmtpConfig,
) -> Option<SmtpSettings> {
    let raw_host = cx.resolve(&c.host, &format!("{p}.host"))?.value;
    let raw_host = raw_host.expose().trim();
    let host = parse_host(raw_host).unwrap_or_else(|why| {
        cx.err_text(&c.host, format!("{p}.host"), why);
        raw_host.to_owned()
    });
    let port = c.port.unwrap_or_else(|| c.tls.default_port());
    if port == 0 {
        cx.err_text(&c.host, format!("{p}.port"), "must be 1 to 65535");
    }
    if c.tls == SmtpTls::None && !c.allow_insecure && !is_loopback_host(&host) {
        cx.err_text(
            &c.host,
            format!("{p}.tls"),
            format!(
                "`tls: none` sends the password and every message unencrypted to `{host}`, readable and changeable by anyone on the network path; use `tls: starttls` (port 587) or `tls: tls` (port 465), or set `allow_insecure: true` for a relay on a network you trust (plain SMTP is allowed without it only to a loopback host)"
            ),
        );
    }
    let credentials = match (&c.username, &c.password) {
        (None, None) => None,
        (Some(u), Some(pw)) => {
            if !(pw.raw().contains("${secret:") || pw.raw().contains("${env:")) {
                cx.err_text(
                    pw,
                    format!("{p}.password"),
                    "write the password as a reference, `${secret:NAME}` (or `${env:NAME}`), not in the file",
                );
            }
            let username = cx.resolve(u, &format!("{p}.username"));
            let password = cx.resolve(pw, &format!("{p}.password"));
            if username
                .as_ref()
                .is_some_and(|u| u.value.expose().is_empty())
            {
                cx.err_text(u, format!("{p}.username"), "must not be empty");
            }
            match (username, password) {
                (Some(u), Some(pw)) => Some(SmtpCredentials {
                    username: u.value,
                    password: pw.value,
                }),
                _ => None,
            }
        }
        (Some(u), None) => {
            cx.err_text(
                u,
                format!("{p}.password"),
                "SMTP authentication needs both `username` and `password`",
            );
            None
        }
        (None, Some(pw)) => {
            cx.err_text(
                pw,
                format!("{p}.username"),
                "SMTP authentication needs both `username` and `password`",
            );
            None
        }
    };
    let from = mailbox(cx, &c.from, format!("{p}.from"));
    if c.to.is_empty() {
        cx.err_text(
            &c.from,
            format!("{p}.to"),
            "list at least one recipient address",
        );
    }
    let to = mailboxes(cx, &c.to, &format!("{p}.to"));
    let cc = mailboxes(cx, &c.cc, &format!("{p}.cc"));
    let bcc = mailboxes(cx, &c.bcc, &format!("{p}.bcc"));
    let reply_to = c
        .reply_to
        .as_ref()
        .and_then(|t| mailbox(cx, t, format!("{p}.reply_to")));
    if let Some(src) = &c.subject
        && let Err(e) = TemplateSet::new().add(&subject_template_name(id), src)
    {
        cx.err_text(
            &c.from,
            format!("{p}.subject"),
            format!(
                "template does not compile: {} (line {} of the template)",
                e.message,
                e.line.unwrap_or(1)
            ),
        );
    }
    if c.timeout.0.is_zero() {
        cx.err_text(&c.host, format!("{p}.timeout"), "must be more than 0s");
    }
    Some(SmtpSettings {
        id: id.to_owned(),
        host,
        port,
        tls: c.tls,
        credentials,
        from: from.unwrap_or_else(|| Mailbox {
            name: None,
            address: String::new(),
        }),
        to,
        cc,
        bcc,
        reply_to,
        subject: c.subject.clone(),
        html: c.html,
        timeout: c.timeout.0,
        allow_private_networks: c.allow_private_networks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DestinationKindSettings, Lookup, load_str};

    struct Env;
    impl Lookup for Env {
        fn env(&self, name: &str) -> Option<String> {
            (name == "MAIL_TO").then(|| "ops@example.org".into())
        }
        fn secret(&self, name: &str) -> Option<String> {
            (name == "smtp_password").then(|| "app-password-123".into())
        }
    }

    fn smtp(yaml_fields: &str) -> Result<Box<SmtpSettings>, String> {
        let yaml = format!("destinations:\n  - id: mail\n    kind: smtp\n{yaml_fields}");
        let cfg = load_str(&yaml, "m.yaml", &Env).map_err(|e| e.to_string())?;
        match cfg.destinations.into_iter().next().map(|d| d.kind) {
            Some(DestinationKindSettings::Smtp(s)) => Ok(s),
            other => panic!("not an smtp destination: {other:?}"),
        }
    }

    #[test]
    fn a_full_destination_validates() {
        let s = smtp(
            r#"    host: SMTP.Example.org
    username: alerts@example.org
    password: ${secret:smtp_password}
    from: "Estafeta Alerts <alerts@example.org>"
    to: ["${env:MAIL_TO}", "\"Doe, Jane\" <jane@example.org>"]
    cc: [audit@example.org]
    bcc: [archive@example.org]
    reply_to: noc@example.org
    subject: "[{{ type }}] {{ data.name }}"
    html: true
"#,
        )
        .unwrap();
        assert_eq!(s.host, "smtp.example.org");
        assert_eq!(s.port, 587);
        assert_eq!(s.tls, SmtpTls::Starttls);
        assert_eq!(s.from.name.as_deref(), Some("Estafeta Alerts"));
        assert_eq!(s.from.address, "alerts@example.org");
        assert_eq!(s.from.domain(), "example.org");
        assert_eq!(s.to[0].address, "ops@example.org");
        assert_eq!(s.to[1].name.as_deref(), Some("Doe, Jane"));
        assert_eq!(s.cc[0].address, "audit@example.org");
        assert_eq!(s.bcc[0].address, "archive@example.org");
        assert_eq!(s.reply_to.as_ref().unwrap().address, "noc@example.org");
        let creds = s.credentials.as_ref().unwrap();
        assert_eq!(creds.password.expose(), "app-password-123");
        assert!(s.html);
        assert_eq!(s.timeout, Duration::from_secs(30));
        // The password never shows in debug output.
        assert!(!format!("{s:?}").contains("app-password"));
    }

    #[test]
    fn implicit_tls_defaults_to_port_465_and_html_escapes_route_templates() {
        let s = smtp("    host: smtp.example.org\n    tls: tls\n    from: a@example.org\n    to: [b@example.org]\n").unwrap();
        assert_eq!((s.tls, s.port), (SmtpTls::Tls, 465));
        let yaml = "routes:\n  - id: r\n    to: [{destination: mail, template: \"<b>{{ data.x }}</b>\"}]\ndestinations:\n  - id: mail\n    kind: smtp\n    host: smtp.example.org\n    from: a@example.org\n    to: [b@example.org]\n    html: true\n";
        let cfg = load_str(yaml, "m.yaml", &Env).unwrap();
        assert_eq!(
            cfg.destinations[0].kind.template_escape(),
            estafeta_core::template::Escape::Html
        );
        let plain = yaml.replace("    html: true\n", "");
        let cfg = load_str(&plain, "m.yaml", &Env).unwrap();
        assert_eq!(
            cfg.destinations[0].kind.template_escape(),
            estafeta_core::template::Escape::None
        );
    }

    #[test]
    fn plain_smtp_is_refused_to_a_public_host_and_allowed_to_loopback() {
        let err = smtp(
            "    host: mail.example.org\n    port: 25\n    tls: none\n    from: a@example.org\n    to: [b@example.org]\n",
        )
        .unwrap_err();
        assert!(
            err.contains(
                "destinations[0].tls: `tls: none` sends the password and every message unencrypted"
            ),
            "{err}"
        );
        assert!(err.contains("allow_insecure: true"), "{err}");
        for host in ["127.0.0.1", "localhost", "\"::1\"", "\"[::1]\""] {
            let s = smtp(&format!(
                "    host: {host}\n    port: 2525\n    tls: none\n    from: a@example.org\n    to: [b@example.org]\n"
            ))
            .unwrap();
            assert_eq!(s.tls, SmtpTls::None, "{host}");
        }
        let s = smtp(
            "    host: relay.internal.example\n    port: 25\n    tls: none\n    allow_insecure: true\n    from: a@example.org\n    to: [b@example.org]\n",
        )
        .unwrap();
        assert_eq!((s.tls, s.port), (SmtpTls::None, 25));
    }

    #[test]
    fn every_problem_names_its_field() {
        let err = smtp(
            r#"    host: "smtp://mail.example.org:587"
    username: alerts
    from: "Estafeta alerts@example.org"
    to: [ok@example.org, "bob@", "Bob <bob>"]
    cc: ["not an address"]
    reply_to: "x@"
    subject: "{{ data.x "
    timeout: 0s
"#,
        )
        .unwrap_err();
        for expected in [
            "destinations[0].host: write only the host name",
            "destinations[0].password: SMTP authentication needs both `username` and `password`",
            "destinations[0].from: not a valid e-mail address",
            "destinations[0].to[1]: not a valid e-mail address (`bob@`: the domain after the `@` is missing)",
            "destinations[0].to[2]: not a valid e-mail address",
            "destinations[0].cc[0]: not a valid e-mail address",
            "destinations[0].reply_to: not a valid e-mail address",
            "destinations[0].subject: template does not compile",
            "destinations[0].timeout: must be more than 0s",
        ] {
            assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
        }
        assert!(!err.contains("destinations[0].to[0]"), "{err}");
    }

    #[test]
    fn recipients_credentials_and_hosts_are_checked() {
        let err =
            smtp("    host: smtp.example.org\n    from: a@example.org\n    to: []\n").unwrap_err();
        assert!(
            err.contains("destinations[0].to: list at least one recipient"),
            "{err}"
        );
        let err = smtp(
            "    host: smtp.example.org\n    username: a\n    password: hunter2\n    from: a@example.org\n    to: [b@example.org]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("destinations[0].password: write the password as a reference"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let err = smtp(
            "    host: smtp.example.org\n    password: ${secret:smtp_password}\n    from: a@example.org\n    to: [b@example.org]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("destinations[0].username: SMTP authentication needs both"),
            "{err}"
        );
        let err = smtp(
            "    host: smtp.example.org:587\n    from: a@example.org\n    to: [b@example.org]\n",
        )
        .unwrap_err();
        assert!(err.contains("the port goes in `port`"), "{err}");
        let err = smtp("    host: smtp.example.org\n    tls: ssl\n    from: a@example.org\n    to: [b@example.org]\n")
            .unwrap_err();
        assert!(err.contains("ssl"), "{err}");
        let err =
            smtp("    host: smtp.example.org\n    form: a@example.org\n    to: [b@example.org]\n")
                .unwrap_err();
        assert!(err.contains("form"), "{err}");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "localhost",
            "LOCALHOST.",
            "mail.localhost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "example.org",
            "localhost.example.org",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
        assert!(is_loopback_host("::ffff:127.0.0.1"));
        assert_eq!(parse_host("2130706433").unwrap(), "127.0.0.1");
        assert_eq!(parse_host("[::1]").unwrap(), "::1");
    }
}
