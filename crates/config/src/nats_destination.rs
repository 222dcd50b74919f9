//! `kind: nats` — messages published to NATS subjects, acknowledged by JetStream (or plain
//! core-NATS publishes): the file's shape, the validated settings, and the validation between
//! them.

use std::time::Duration;

use estafeta_core::template::TemplateSet;
use serde::Deserialize;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// The server address used when `url` is not set.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// `kind: nats` — publish each delivery to a subject.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server address (`nats://host:4222`, `tls://host:4222`; several separated by commas);
    /// default `nats://127.0.0.1:4222`.
    #[serde(default)]
    pub url: Option<Text>,
    /// Subject to publish to: a template over the event, e.g. `orders.{{ type }}`. The
    /// rendered subject must be tokens of letters, digits, `-` and `_` separated by `.`
    /// (no spaces, no wildcards).
    pub subject: String,
    /// Publish through JetStream and wait for the stream's acknowledgement (default true);
    /// false publishes on core NATS (at most once from the server's side: no stream needed).
    #[serde(default = "yes")]
    pub jetstream: bool,
    /// Authentication token; use `${secret:…}`.
    #[serde(default)]
    pub token: Option<Text>,
    /// User name (with `password`).
    #[serde(default)]
    pub username: Option<Text>,
    /// Password; use `${secret:…}`.
    #[serde(default)]
    pub password: Option<Text>,
    /// Time allowed for connecting and for one publish with its acknowledgement
    /// (default `30s`).
    #[serde(default = "crate::duration::thirty_seconds")]
    pub timeout: DurationText,
    /// Publish up to `max_events` deliveries together (`{max_events: 100, max_wait: 5ms}`):
    /// sent at once and acknowledged together, they share the outcome. Off by default.
    #[serde(default)]
    pub batch: Option<crate::model::BatchConfig>,
}

fn yes() -> bool {
    true
}

/// How the destination authenticates.
#[derive(Debug, Clone)]
pub enum NatsAuth {
    /// No credentials.
    None,
    /// A token.
    Token(Secret),
    /// User and password.
    UserPassword {
        /// User name.
        username: Secret,
        /// Password.
        password: Secret,
    },
}

/// A validated NATS destination.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Destination id.
    pub id: String,
    /// Server address(es), as configured.
    pub url: String,
    /// Subject template source.
    pub subject: String,
    /// JetStream publish with acknowledgement, or core publish.
    pub jetstream: bool,
    /// Credentials.
    pub auth: NatsAuth,
    /// Connect and publish timeout.
    pub timeout: Duration,
    /// `(max_events, max_wait)` when deliveries are published in batches.
    pub batch: Option<(usize, Duration)>,
}

/// The name the subject template is compiled under.
#[must_use]
pub fn subject_template_name(id: &str) -> String {
    format!("destinations.{id}.subject")
}

/// True when `subject` can be published to: non-empty `.`-separated tokens without
/// whitespace or wildcards.
#[must_use]
pub fn is_publish_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        })
}

/// The connection settings a NATS destination and a NATS source share, as written.
pub(crate) struct ConnectionFields<'a> {
    pub(crate) url: &'a Option<Text>,
    pub(crate) token: &'a Option<Text>,
    pub(crate) username: &'a Option<Text>,
    pub(crate) password: &'a Option<Text>,
}

/// Checks a server address list and the credentials; `p` is the entry's path.
pub(crate) fn validate_connection(
    cx: &mut Ctx<'_>,
    p: &str,
    c: &ConnectionFields<'_>,
) -> Option<(String, NatsAuth)> {
    let url = match c.url {
        None => DEFAULT_URL.to_owned(),
        Some(t) => {
            let text = cx
                .resolve(t, &format!("{p}.url"))?
                .value
                .expose()
                .trim()
                .to_owned();
            let well_formed = !text.is_empty()
                && text.split(',').all(|one| {
                    let one = one.trim();
                    let with_scheme = if one.contains("://") {
                        one.to_owned()
                    } else {
                        format!("nats://{one}")
                    };
                    url::Url::parse(&with_scheme)
                        .is_ok_and(|u| matches!(u.scheme(), "nats" | "tls") && u.host().is_some())
                });
            if !well_formed {
                cx.err_text(
                    t,
                    format!("{p}.url"),
                    "a NATS server address is `nats://host:4222` or `tls://host:4222` (several separated by commas)",
                );
            }
            text
        }
    };
    let anchor = c.url.as_ref().or(c.token.as_ref()).or(c.username.as_ref());
    let problem = |cx: &mut Ctx<'_>, field: &str, message: &str| match anchor {
        Some(t) => cx.err_text(t, format!("{p}.{field}"), message),
        None => cx.err_entry(format!("{p}.{field}"), message),
    };
    let auth = match (c.token, c.username, c.password) {
        (None, None, None) => NatsAuth::None,
        (Some(t), None, None) => NatsAuth::Token(cx.resolve(t, &format!("{p}.token"))?.value),
        (None, Some(u), Some(pw)) => NatsAuth::UserPassword {
            username: cx.resolve(u, &format!("{p}.username"))?.value,
            password: cx.resolve(pw, &format!("{p}.password"))?.value,
        },
        (Some(_), _, _) => {
            problem(
                cx,
                "token",
                "use either `token` or `username` + `password`, not both",
            );
            NatsAuth::None
        }
        (None, _, _) => {
            problem(
                cx,
                "username",
                "user/password authentication needs both `username` and `password`",
            );
            NatsAuth::None
        }
    };
    Some((url, auth))
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    c: &NatsConfig,
) -> Option<NatsSettings> {
    let (url, auth) = validate_connection(
        cx,
        p,
        &ConnectionFields {
            url: &c.url,
            token: &c.token,
            username: &c.username,
            password: &c.password,
        },
    )?;
    let anchor = c.url.as_ref().or(c.token.as_ref()).or(c.username.as_ref());
    let problem = |cx: &mut Ctx<'_>, field: &str, message: String| match anchor {
        Some(t) => cx.err_text(t, format!("{p}.{field}"), message),
        None => cx.err_entry(format!("{p}.{field}"), message),
    };
    let mut templates = TemplateSet::new();
    if c.subject.trim().is_empty() {
        problem(cx, "subject", "must name a subject".to_owned());
    } else if let Err(e) = templates.add(&subject_template_name(id), &c.subject) {
        problem(
            cx,
            "subject",
            format!(
                "template does not compile: {} (line {} of the template)",
                e.message,
                e.line.unwrap_or(1)
            ),
        );
    } else if !c.subject.contains("{{")
        && !c.subject.contains("{%")
        && !is_publish_subject(&c.subject)
    {
        problem(
            cx,
            "subject",
            format!(
                "`{}` is not a subject to publish to: tokens separated by `.`, without spaces or wildcards (`*`, `>`)",
                c.subject
            ),
        );
    }
    if c.timeout.0.is_zero() {
        problem(cx, "timeout", "must be more than 0s".to_owned());
    }
    let at = match anchor {
        Some(t) => cx.pos(t),
        None => cx.entry_pos(),
    };
    let batch = crate::validate::validate_batch(cx, p, c.batch.as_ref(), at);
    Some(NatsSettings {
        id: id.to_owned(),
        url,
        subject: c.subject.clone(),
        jetstream: c.jetstream,
        auth,
        timeout: c.timeout.0,
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subjects_are_dot_separated_tokens_without_wildcards() {
        assert!(is_publish_subject("orders.created"));
        assert!(is_publish_subject("a"));
        assert!(!is_publish_subject(""));
        assert!(!is_publish_subject("orders..created"));
        assert!(!is_publish_subject("orders.*"));
        assert!(!is_publish_subject("orders.>"));
        assert!(!is_publish_subject("orders created"));
        assert!(!is_publish_subject(".orders"));
    }
}
