//! Message templates (minijinja, strict about undefined names) that render a destination's
//! body from an event.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::event::Event;

/// A template that failed to compile or render, naming the template and the line.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("template `{name}`{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct TemplateError {
    /// The template's name (where it is configured, e.g. `routes.orders.to[0].template`).
    pub name: String,
    /// 1-based line inside the template, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl TemplateError {
    fn from_minijinja(name: &str, e: &minijinja::Error) -> Self {
        let mut message = e
            .detail()
            .map_or_else(|| e.kind().to_string(), str::to_owned);
        if e.detail().is_some() {
            message = format!("{}: {message}", e.kind());
        }
        Self {
            name: name.to_owned(),
            line: e.line(),
            message,
        }
    }
}

/// How the values a template prints are escaped for where its text goes. The template's own
/// text is never changed: only what `{{ … }}` prints (unless marked `| safe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Escape {
    /// Printed as is.
    #[default]
    None,
    /// `&`, `<` and `>` as entities, for Telegram's `HTML` parse mode.
    Html,
    /// A backslash before each character Telegram's `MarkdownV2` reserves.
    MarkdownV2,
    /// Percent-encoded except RFC 3986's unreserved characters, for values placed in a URL
    /// (an enrichment's path or query): a `/` or `?` in a value cannot change the request.
    Url,
    /// The inside of a JSON string: quotes, backslashes and control characters escaped, for
    /// values placed between quotes in a JSON body.
    Json,
}

impl Escape {
    const HTML: &'static str = "estafeta-html";
    const MARKDOWN_V2: &'static str = "estafeta-markdown-v2";
    const URL: &'static str = "estafeta-url";
    const JSON: &'static str = "estafeta-json";

    fn auto_escape(self) -> AutoEscape {
        match self {
            Escape::None => AutoEscape::None,
            Escape::Html => AutoEscape::Custom(Self::HTML.into()),
            Escape::MarkdownV2 => AutoEscape::Custom(Self::MARKDOWN_V2.into()),
            Escape::Url => AutoEscape::Custom(Self::URL.into()),
            Escape::Json => AutoEscape::Custom(Self::JSON.into()),
        }
    }

    fn from_custom(name: &str) -> Option<Self> {
        [Self::Html, Self::MarkdownV2, Self::Url, Self::Json]
            .into_iter()
            .find(|e| matches!(e.auto_escape(), AutoEscape::Custom(n) if n == name))
    }

    /// `text` escaped for this mode.
    #[must_use]
    pub fn apply(self, text: &str) -> String {
        match self {
            Escape::None => text.to_owned(),
            Escape::Html => {
                let mut out = String::with_capacity(text.len());
                for ch in text.chars() {
                    match ch {
                        '&' => out.push_str("&amp;"),
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        c => out.push(c),
                    }
                }
                out
            }
            Escape::MarkdownV2 => {
                let mut out = String::with_capacity(text.len() + 8);
                for ch in text.chars() {
                    if "_*[]()~`>#+-=|{}.!\\".contains(ch) {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out
            }
            Escape::Url => {
                let mut out = String::with_capacity(text.len());
                for b in text.bytes() {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                        out.push(char::from(b));
                    } else {
                        out.push('%');
                        out.push(char::from(HEX[usize::from(b >> 4)]));
                        out.push(char::from(HEX[usize::from(b & 0xf)]));
                    }
                }
                out
            }
            Escape::Json => {
                let quoted = Value::from(text).to_string();
                quoted[1..quoted.len() - 1].to_owned()
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// A set of compiled templates, addressed by name.
pub struct TemplateSet {
    env: Environment<'static>,
    escapes: Arc<RwLock<HashMap<String, Escape>>>,
}

impl fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateSet").finish_non_exhaustive()
    }
}

impl Default for TemplateSet {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let escapes: Arc<RwLock<HashMap<String, Escape>>> = Arc::default();
        let lookup = Arc::clone(&escapes);
        env.set_auto_escape_callback(move |name| {
            lookup
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .copied()
                .unwrap_or_default()
                .auto_escape()
        });
        env.set_formatter(|out, state, value| {
            let mode = match state.auto_escape() {
                AutoEscape::Custom(m) => match Escape::from_custom(m) {
                    Some(mode) => mode,
                    None => return minijinja::escape_formatter(out, state, value),
                },
                _ => return minijinja::escape_formatter(out, state, value),
            };
            if value.is_safe() || value.is_undefined() {
                return minijinja::escape_formatter(out, state, value);
            }
            let text = value.to_string();
            out.write_str(&mode.apply(&text)).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            })
        });
        Self { env, escapes }
    }
}

impl TemplateSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles and adds a template.
    ///
    /// # Errors
    /// A syntax error, with its line.
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), TemplateError> {
        self.add_escaped(name, source, Escape::None)
    }

    /// Compiles and adds a template whose printed values are escaped with `escape`.
    ///
    /// # Errors
    /// A syntax error, with its line.
    pub fn add_escaped(
        &mut self,
        name: &str,
        source: &str,
        escape: Escape,
    ) -> Result<(), TemplateError> {
        // The escape mode is read when the template compiles: record it first.
        self.escapes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), escape);
        self.env
            .add_template_owned(name.to_owned(), source.to_owned())
            .map_err(|e| TemplateError::from_minijinja(name, &e))
    }

    /// True when a template of that name exists.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Renders template `name` for `event`; `extra` binds more names.
    ///
    /// # Errors
    /// An undefined name, a failing filter, or an unknown template.
    pub fn render(
        &self,
        name: &str,
        event: &Event,
        extra: &[(&str, &Value)],
    ) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError::from_minijinja(name, &e))?;
        let ctx = event_context(event, extra);
        tmpl.render(minijinja::value::Serde(ctx))
            .map_err(|e| TemplateError::from_minijinja(name, &e))
    }
}

/// The names a template sees for `event`: the same as a filter expression's, plus `extra`
/// (for example the names a route's steps bound).
#[must_use]
pub fn event_context(event: &Event, extra: &[(&str, &Value)]) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), Value::from(event.ce_id.as_str()));
    m.insert("source".into(), Value::from(event.ce_source.as_str()));
    m.insert("type".into(), Value::from(event.ty.as_str()));
    m.insert(
        "subject".into(),
        Value::from(event.subject.clone().unwrap_or_default()),
    );
    m.insert(
        "key".into(),
        Value::from(event.key.clone().unwrap_or_default()),
    );
    m.insert("tenant".into(), Value::from(event.tenant.as_str()));
    m.insert(
        "time".into(),
        Value::from(
            event
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
    );
    m.insert("data".into(), event.data.clone().unwrap_or(Value::Null));
    m.insert("extensions".into(), Value::Object(event.extensions.clone()));
    m.insert("event".into(), event.to_cloudevent());
    for (k, v) in extra {
        m.insert((*k).to_owned(), (*v).clone());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::event::{TenantId, parse_cloudevent};

    fn event() -> Event {
        parse_cloudevent(
            json!({"specversion":"1.0","id":"o-1","source":"shop","type":"order.created",
                   "subject":"br-7","data":{"total":42,"items":["a","b"]}}),
            &TenantId::default(),
            "http",
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn escapes_printed_values_not_the_template_text() {
        let mut t = TemplateSet::new();
        let e = parse_cloudevent(
            json!({"specversion":"1.0","id":"o-1","source":"shop","type":"visitor.created",
                   "data":{"name":"Ana <b>&</b> Silva_Jr. (VIP)!","n":3}}),
            &TenantId::default(),
            "http",
            Utc::now(),
        )
        .unwrap();
        t.add_escaped("h", "<b>{{ data.name }}</b> {{ data.n }}", Escape::Html)
            .unwrap();
        assert_eq!(
            t.render("h", &e, &[]).unwrap(),
            "<b>Ana &lt;b&gt;&amp;&lt;/b&gt; Silva_Jr. (VIP)!</b> 3"
        );
        t.add_escaped(
            "m",
            "*{{ data.name }}* has {{ data.n }} hit(s)\\.",
            Escape::MarkdownV2,
        )
        .unwrap();
        assert_eq!(
            t.render("m", &e, &[]).unwrap(),
            "*Ana <b\\>&</b\\> Silva\\_Jr\\. \\(VIP\\)\\!* has 3 hit(s)\\."
        );
        // `| safe` opts a value out; plain templates print as is.
        t.add_escaped("s", "{{ data.name | safe }}", Escape::MarkdownV2)
            .unwrap();
        assert_eq!(
            t.render("s", &e, &[]).unwrap(),
            "Ana <b>&</b> Silva_Jr. (VIP)!"
        );
        t.add("p", "{{ data.name }}").unwrap();
        assert_eq!(
            t.render("p", &e, &[]).unwrap(),
            "Ana <b>&</b> Silva_Jr. (VIP)!"
        );
        assert_eq!(Escape::MarkdownV2.apply("a\\b"), "a\\\\b");
        t.add_escaped(
            "u",
            "https://x.test/v/{{ data.name }}?q={{ data.n }}",
            Escape::Url,
        )
        .unwrap();
        assert_eq!(
            t.render("u", &e, &[]).unwrap(),
            "https://x.test/v/Ana%20%3Cb%3E%26%3C%2Fb%3E%20Silva_Jr.%20%28VIP%29%21?q=3"
        );
        t.add_escaped(
            "j",
            r#"{"name": "{{ data.name }}", "q": "{{ 'a"b\\' }}", "n": {{ data.n }}}"#,
            Escape::Json,
        )
        .unwrap();
        let body: Value = serde_json::from_str(&t.render("j", &e, &[]).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"name": "Ana <b>&</b> Silva_Jr. (VIP)!", "q": "a\"b\\", "n": 3})
        );
        t.add_escaped(
            "u",
            "https://x.test/v/{{ data.name }}?q={{ data.n }}",
            Escape::Url,
        )
        .unwrap();
        assert_eq!(
            t.render("u", &e, &[]).unwrap(),
            "https://x.test/v/Ana%20%3Cb%3E%26%3C%2Fb%3E%20Silva_Jr.%20%28VIP%29%21?q=3"
        );
        t.add_escaped(
            "j",
            r#"{"name": "{{ data.name }}", "q": "{{ 'a"b\\' }}"}"#,
            Escape::Json,
        )
        .unwrap();
        let body: Value = serde_json::from_str(&t.render("j", &e, &[]).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"name": "Ana <b>&</b> Silva_Jr. (VIP)!", "q": "a\"b\\"})
        );
    }

    #[test]
    fn renders_event_fields() {
        let mut t = TemplateSet::new();
        t.add(
            "t",
            "Order {{ id }} for {{ subject }}: {{ data.total }} ({{ data.items | length }} items)",
        )
        .unwrap();
        assert_eq!(
            t.render("t", &event(), &[]).unwrap(),
            "Order o-1 for br-7: 42 (2 items)"
        );
        t.add("j", "{{ data | tojson }}").unwrap();
        assert_eq!(
            t.render("j", &event(), &[]).unwrap(),
            r#"{"items": ["a", "b"], "total": 42}"#
        );
    }

    #[test]
    fn undefined_names_fail_with_the_template_name_and_line() {
        let mut t = TemplateSet::new();
        t.add(
            "routes.r.to[0].template",
            "line one\n{{ data.nope.deeper }}",
        )
        .unwrap();
        let e = t
            .render("routes.r.to[0].template", &event(), &[])
            .unwrap_err();
        assert_eq!(e.name, "routes.r.to[0].template");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let mut t = TemplateSet::new();
        let e = t.add("x", "ok\n{{ data.total ").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("template `x`, line 2"), "{e}");
    }

    proptest! {
        #[test]
        fn arbitrary_templates_never_panic(src in ".{0,40}") {
            let mut t = TemplateSet::new();
            if t.add("p", &src).is_ok() {
                let _ = t.render("p", &event(), &[]);
            }
        }
    }
}
