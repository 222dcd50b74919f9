//! A route's `steps:` — `enrich` (an HTTP look-up bound to a name), `filter` (a CEL
//! condition) and `transform` (set or remove fields): the file's shape, the validated
//! settings, and the validation between them.

use std::collections::BTreeMap;
use std::time::Duration;

use estafeta_core::expr::{self, Expr, Filter};
use estafeta_core::template::{Escape, TemplateSet};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::duration::DurationText;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// One entry of a route's `steps:`; they run in order before the route's destinations.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepConfig {
    /// Call an HTTP API and bind its JSON answer to a name.
    Enrich(Box<EnrichConfig>),
    /// A CEL condition; false ends the event for this route with the outcome `filtered`.
    Filter(Spanned<String>),
    /// Set or remove fields of the event's data, or bind new names.
    Transform(TransformConfig),
}

/// `enrich:` — an HTTP look-up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// The name the JSON answer is bound to for later steps and templates (e.g. `court`).
    #[serde(rename = "as")]
    pub name: Spanned<String>,
    /// The request.
    pub http: EnrichHttpConfig,
    /// Keep answers for a while, keyed by the rendered request (method, URL, body).
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// When the look-up finally fails: `fail` (default: the delivery fails and is retried
    /// on the destination's schedule) or `continue` (the name is bound to null).
    #[serde(default)]
    pub on_error: OnError,
}

/// `http:` of an `enrich` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichHttpConfig {
    /// `GET` (default), `POST`, `PUT` or `PATCH`.
    #[serde(default)]
    pub method: Method,
    /// URL template, e.g. `${env:LOOKUP_URL}/people/{{ data.after.document }}`. Printed
    /// values are percent-encoded (`| safe` opts out).
    pub url: Text,
    /// URL templates tried in order when the one before fails to answer (connection error,
    /// timeout, 5xx or 429).
    #[serde(default)]
    pub fallback: Vec<Text>,
    /// Request headers; values may use `${env:…}` and `${secret:…}` (e.g.
    /// `Authorization: Bearer ${secret:lookup_token}`).
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// Body template for `POST`/`PUT`/`PATCH`. With a JSON content type, printed values are
    /// escaped for the inside of a JSON string.
    #[serde(default)]
    pub body: Option<Text>,
    /// The body's media type (default `application/json`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Time allowed for one request, connect to last byte (default `5s`).
    #[serde(default = "five_seconds")]
    pub timeout: DurationText,
    /// Tries of the whole URL list before the step fails (default 2) and the pause between
    /// them (default `200ms`, doubled each time).
    #[serde(default)]
    pub retry: EnrichRetryConfig,
    /// What a 404 answer means: `error` (default) or `null` (bind null: "nothing found").
    #[serde(default, deserialize_with = "not_found")]
    pub not_found: NotFound,
    /// The service's name in errors and the delivery record (default: the URL's host).
    #[serde(default)]
    pub service: Option<String>,
    /// Allow private, loopback and link-local addresses (default false: refused).
    #[serde(default)]
    pub allow_private_networks: bool,
    /// Largest answer accepted, in bytes (default 1 MiB).
    #[serde(default = "one_mebibyte")]
    pub max_response_bytes: usize,
    /// Requests of this step in flight at once, across deliveries (default 256).
    #[serde(default = "default_enrich_concurrency")]
    pub concurrency: usize,
}

/// `not_found: null` reads as YAML's null; take it as the `null` choice.
fn not_found<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NotFound, D::Error> {
    Option::<NotFound>::deserialize(d).map(|v| v.unwrap_or(NotFound::Null))
}

fn five_seconds() -> DurationText {
    DurationText::from_secs(5)
}

fn one_mebibyte() -> usize {
    1024 * 1024
}

fn default_enrich_concurrency() -> usize {
    256
}

/// HTTP methods an `enrich` step may use.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `GET`.
    #[default]
    #[serde(alias = "get")]
    Get,
    /// `POST`.
    #[serde(alias = "post")]
    Post,
    /// `PUT`.
    #[serde(alias = "put")]
    Put,
    /// `PATCH`.
    #[serde(alias = "patch")]
    Patch,
}

impl Method {
    /// The method's name on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
        }
    }
}

/// `retry:` of an `enrich` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichRetryConfig {
    /// Tries of the URL list (1 = no retry).
    pub attempts: u32,
    /// Pause before the second try; doubled for each later one.
    pub backoff: DurationText,
}

impl Default for EnrichRetryConfig {
    fn default() -> Self {
        Self {
            attempts: 2,
            backoff: DurationText::from_millis(200),
        }
    }
}

/// `cache:` of an `enrich` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How long an answer is kept.
    pub ttl: DurationText,
    /// Most answers kept (default 10000); the least used go first.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
}

fn default_cache_entries() -> u64 {
    10_000
}

/// What a finally failing `enrich` step does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The delivery fails (and is retried on the destination's schedule).
    #[default]
    Fail,
    /// The name is bound to null and the steps go on.
    Continue,
}

/// What a 404 answer means to an `enrich` step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotFound {
    /// A failure, like other 4xx answers.
    #[default]
    Error,
    /// "Nothing found": the name is bound to null.
    Null,
}

/// `transform:` — changes applied in order: every `set`, then every `remove`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformConfig {
    /// Paths to set (`data.customer.tier`, `extensions.region`, or a new name such as
    /// `summary`), each from a CEL expression (a string), `{ template: … }` or
    /// `{ value: … }`.
    pub set: BTreeMap<String, SetValue>,
    /// Paths to remove (`data.after.internal_note`).
    pub remove: Vec<Spanned<String>>,
}

/// A value for `transform.set`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SetValue {
    /// A CEL expression.
    Expr(Spanned<String>),
    /// A minijinja template (the result is text) or a literal value.
    Other(SetValueForm),
}

/// The non-expression forms of a `transform.set` value.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SetValueForm {
    /// A minijinja template; the result is text.
    Template(Spanned<String>),
    /// A literal value, taken as is.
    Value(serde_json::Value),
}

/// A validated step.
#[derive(Debug, Clone)]
pub enum StepSettings {
    /// An HTTP look-up.
    Enrich(Box<EnrichSettings>),
    /// A condition.
    Filter(Filter),
    /// Field changes.
    Transform(Vec<TransformOp>),
}

/// A validated `enrich` step.
#[derive(Debug, Clone)]
pub struct EnrichSettings {
    /// The bound name.
    pub name: String,
    /// Method.
    pub method: Method,
    /// Template names (in the config's template set) of the URL and its fallbacks, in order.
    pub urls: Vec<String>,
    /// Template name of the body.
    pub body: Option<String>,
    /// The body's media type.
    pub content_type: String,
    /// Headers (name, resolved value).
    pub headers: Vec<(String, Secret)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Tries of the URL list.
    pub attempts: u32,
    /// Pause before the second try.
    pub backoff: Duration,
    /// What a 404 means.
    pub not_found: NotFound,
    /// The service's name, when configured.
    pub service: Option<String>,
    /// Whether private addresses are allowed.
    pub allow_private_networks: bool,
    /// Largest answer accepted.
    pub max_response_bytes: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Cache: time to live and most entries.
    pub cache: Option<(Duration, u64)>,
    /// On final failure.
    pub on_error: OnError,
}

/// One change of a `transform` step.
#[derive(Debug, Clone)]
pub enum TransformOp {
    /// Set the path to a value.
    Set {
        /// Where: the first segment is `data`, `extensions` or a name of the route's own.
        path: Vec<String>,
        /// What.
        value: ValueSource,
    },
    /// Remove the path (nothing happens when it is absent).
    Remove {
        /// Where.
        path: Vec<String>,
    },
}

/// Where a `set` value comes from.
#[derive(Debug, Clone)]
pub enum ValueSource {
    /// A CEL expression.
    Expr(Expr),
    /// A template's name in the config's template set.
    Template(String),
    /// A literal.
    Literal(serde_json::Value),
}

/// Name under which a step's template is registered.
#[must_use]
pub fn step_template_name(route: &str, step: usize, what: &str) -> String {
    format!("routes.{route}.steps[{step}].{what}")
}

/// Validates a route's steps; returns them and the names they bind, in order.
pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    route: &str,
    steps: &[StepConfig],
    templates: &mut TemplateSet,
) -> (Vec<StepSettings>, Vec<String>) {
    let mut out = Vec::new();
    let mut bound: Vec<String> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let sp = format!("{p}.steps[{i}]");
        match step {
            StepConfig::Enrich(e) => {
                if let Some(s) = enrich(cx, &sp, route, i, e, templates) {
                    out.push(StepSettings::Enrich(Box::new(s)));
                }
                let name = &e.name;
                if let Err(m) = check_binding(&name.value, &bound) {
                    cx.err(name, format!("{sp}.enrich.as"), m);
                }
                bound.push(name.value.clone());
            }
            StepConfig::Filter(f) => match Filter::compile(&f.value) {
                Ok(filter) => {
                    check_names(cx, f, &format!("{sp}.filter"), &filter.variables(), &bound);
                    out.push(StepSettings::Filter(filter));
                }
                Err(e) => compile_error(cx, f, &format!("{sp}.filter"), route, &e),
            },
            StepConfig::Transform(t) => {
                let ops = transform(cx, &sp, route, i, t, templates, &mut bound);
                out.push(StepSettings::Transform(ops));
            }
        }
    }
    (out, bound)
}

fn enrich(
    cx: &mut Ctx<'_>,
    sp: &str,
    route: &str,
    index: usize,
    e: &EnrichConfig,
    templates: &mut TemplateSet,
) -> Option<EnrichSettings> {
    let h = &e.http;
    let mut urls = Vec::new();
    for (j, t) in std::iter::once(&h.url).chain(&h.fallback).enumerate() {
        let (field, what) = if j == 0 {
            (
                format!("{sp}.enrich.http.url"),
                "enrich.http.url".to_owned(),
            )
        } else {
            (
                format!("{sp}.enrich.http.fallback[{}]", j - 1),
                format!("enrich.http.fallback[{}]", j - 1),
            )
        };
        let Some(src) = cx.resolve(t, &field) else {
            continue;
        };
        let source = src.value.expose();
        let scheme_ok = source.starts_with("http://") || source.starts_with("https://");
        if !scheme_ok {
            cx.err_text(
                t,
                &field,
                "an enrichment URL starts with http:// or https://",
            );
            continue;
        }
        let name = step_template_name(route, index, &what);
        match templates.add_escaped(&name, source, Escape::Url) {
            Ok(()) => urls.push(name),
            Err(err) => cx.err_text(
                t,
                &field,
                format!(
                    "route `{route}`: the URL template does not compile: {}",
                    err.message
                ),
            ),
        }
    }
    let content_type = h
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".to_owned());
    let body = h.body.as_ref().and_then(|t| {
        let field = format!("{sp}.enrich.http.body");
        if h.method == Method::Get {
            cx.err_text(t, &field, "a GET request has no body; use `method: POST`");
            return None;
        }
        let src = cx.resolve(t, &field)?;
        let escape = if content_type.contains("json") {
            Escape::Json
        } else {
            Escape::None
        };
        let name = step_template_name(route, index, "enrich.http.body");
        match templates.add_escaped(&name, src.value.expose(), escape) {
            Ok(()) => Some(name),
            Err(err) => {
                cx.err_text(
                    t,
                    &field,
                    format!(
                        "route `{route}`: the body template does not compile: {}",
                        err.message
                    ),
                );
                None
            }
        }
    });
    let mut headers = Vec::new();
    for (name, value) in &h.headers {
        let field = format!("{sp}.enrich.http.headers.{name}");
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            cx.err_text(
                value,
                &field,
                format!("`{name}` is not a valid header name"),
            );
            continue;
        }
        if matches!(
            name.to_ascii_lowercase().as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            cx.err_text(value, &field, "Estafeta sets this header itself");
            continue;
        }
        if let Some(v) = cx.resolve(value, &field) {
            if v.value.expose().contains(['\r', '\n']) {
                cx.err_text(value, &field, "header values must not contain line breaks");
                continue;
            }
            headers.push((name.clone(), v.value));
        }
    }
    let at = &h.url;
    if h.timeout.0.is_zero() {
        cx.err_text(
            at,
            format!("{sp}.enrich.http.timeout"),
            "must be greater than 0",
        );
    }
    if h.retry.attempts == 0 || h.retry.attempts > 10 {
        cx.err_text(
            at,
            format!("{sp}.enrich.http.retry.attempts"),
            "must be between 1 and 10",
        );
    }
    if h.concurrency == 0 || h.concurrency > 10_000 {
        cx.err_text(
            at,
            format!("{sp}.enrich.http.concurrency"),
            "must be between 1 and 10000",
        );
    }
    if h.max_response_bytes == 0 {
        cx.err_text(
            at,
            format!("{sp}.enrich.http.max_response_bytes"),
            "must be greater than 0",
        );
    }
    let cache = match &e.cache {
        Some(c) if c.ttl.0.is_zero() || c.max_entries == 0 => {
            cx.err(
                &e.name,
                format!("{sp}.enrich.cache"),
                "`ttl` and `max_entries` must be greater than 0 (leave `cache` out to turn it off)",
            );
            None
        }
        Some(c) => Some((c.ttl.0, c.max_entries)),
        None => None,
    };
    (urls.len() == 1 + h.fallback.len()).then(|| EnrichSettings {
        name: e.name.value.clone(),
        method: h.method,
        urls,
        body,
        content_type,
        headers,
        timeout: h.timeout.0,
        attempts: h.retry.attempts.clamp(1, 10),
        backoff: h.retry.backoff.0,
        not_found: h.not_found,
        service: h.service.clone(),
        allow_private_networks: h.allow_private_networks,
        max_response_bytes: h.max_response_bytes.max(1),
        concurrency: h.concurrency.clamp(1, 10_000),
        cache,
        on_error: e.on_error,
    })
}

fn transform(
    cx: &mut Ctx<'_>,
    sp: &str,
    route: &str,
    index: usize,
    t: &TransformConfig,
    templates: &mut TemplateSet,
    bound: &mut Vec<String>,
) -> Vec<TransformOp> {
    let mut ops = Vec::new();
    let mut new_names = Vec::new();
    for (key, value) in &t.set {
        let field = format!("{sp}.transform.set.{key}");
        let path = match parse_path(key, bound, true) {
            Ok(p) => p,
            Err(m) => {
                set_error(cx, value, &field, m);
                continue;
            }
        };
        let source = match value {
            SetValue::Expr(src) => match Expr::compile(&src.value) {
                Ok(expr) => {
                    check_names(cx, src, &field, &expr.variables(), bound);
                    ValueSource::Expr(expr)
                }
                Err(e) => {
                    compile_error(cx, src, &field, route, &e);
                    continue;
                }
            },
            SetValue::Other(SetValueForm::Template(src)) => {
                let name = step_template_name(route, index, &format!("transform.set.{key}"));
                match templates.add(&name, &src.value) {
                    Ok(()) => ValueSource::Template(name),
                    Err(e) => {
                        cx.err(
                            src,
                            &field,
                            format!(
                                "route `{route}`: template does not compile: {} (line {} of the template)",
                                e.message,
                                e.line.unwrap_or(1)
                            ),
                        );
                        continue;
                    }
                }
            }
            SetValue::Other(SetValueForm::Value(v)) => ValueSource::Literal(v.clone()),
        };
        if path.len() == 1 && !matches!(path[0].as_str(), "data" | "extensions") {
            new_names.push(path[0].clone());
        }
        ops.push(TransformOp::Set {
            path,
            value: source,
        });
    }
    for r in &t.remove {
        let field = format!("{sp}.transform.remove");
        match parse_path(&r.value, bound, false) {
            Ok(path) if path.len() < 2 => cx.err(
                r,
                &field,
                format!(
                    "`{}`: remove a field inside `data` or `extensions`, e.g. `data.note`",
                    r.value
                ),
            ),
            Ok(path) => ops.push(TransformOp::Remove { path }),
            Err(m) => cx.err(r, &field, m),
        }
    }
    for n in new_names {
        if !bound.contains(&n) {
            bound.push(n);
        }
    }
    ops
}

fn set_error(cx: &mut Ctx<'_>, value: &SetValue, field: &str, message: String) {
    match value {
        SetValue::Expr(s) | SetValue::Other(SetValueForm::Template(s)) => cx.err(s, field, message),
        SetValue::Other(SetValueForm::Value(_)) => cx.err_here(field, message),
    }
}

/// Splits `a.b.c` and checks where it points: into `data` or `extensions`, into a name an
/// earlier step bound, or (for `set`, one segment) a new name.
fn parse_path(path: &str, bound: &[String], setting: bool) -> Result<Vec<String>, String> {
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(format!(
            "`{path}` is not a path; write e.g. `data.customer.tier`"
        ));
    }
    let first = segments[0].as_str();
    if matches!(first, "data" | "extensions") || bound.iter().any(|b| b == first) {
        return Ok(segments);
    }
    if expr::VARIABLES.contains(&first) {
        return Err(format!(
            "`{path}`: `{first}` is an attribute of the event and cannot be changed here; change `data.…`, `extensions.…` or bind a new name"
        ));
    }
    if setting && segments.len() == 1 {
        check_binding(first, bound)?;
        return Ok(segments);
    }
    Err(format!(
        "`{path}`: `{first}` is not bound by an earlier step; paths start with `data`, `extensions` or a name an earlier step binds"
    ))
}

/// A name a step binds must be an identifier, not an event attribute, and new.
fn check_binding(name: &str, bound: &[String]) -> Result<(), String> {
    let ident = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ident {
        return Err(format!(
            "`{name}` is not a valid name: use letters, digits and `_`, starting with a letter"
        ));
    }
    if expr::VARIABLES.contains(&name) {
        return Err(format!(
            "`{name}` is one of the event's own names ({}); choose another",
            expr::VARIABLES.join(", ")
        ));
    }
    if bound.iter().any(|b| b == name) {
        return Err(format!("`{name}` is already bound by an earlier step"));
    }
    Ok(())
}

/// Every variable an expression reads must be an event name or bound by an earlier step.
fn check_names(
    cx: &mut Ctx<'_>,
    at: &Spanned<String>,
    field: &str,
    used: &[String],
    bound: &[String],
) {
    for v in used {
        if !expr::VARIABLES.contains(&v.as_str()) && !bound.contains(v) {
            let earlier = if bound.is_empty() {
                "no earlier step binds a name".to_owned()
            } else {
                format!("earlier steps bind {}", bound.join(", "))
            };
            cx.err(
                at,
                field,
                format!(
                    "`{}` reads `{v}`, which is not defined here: the event's names are {}; {earlier}",
                    at.value,
                    expr::VARIABLES.join(", ")
                ),
            );
        }
    }
}

fn compile_error(
    cx: &mut Ctx<'_>,
    at: &Spanned<String>,
    field: &str,
    route: &str,
    e: &expr::CompileError,
) {
    let (line, col) = crate::validate::inner_position(at, e.line, e.column);
    cx.err_at(
        line,
        col,
        field,
        format!(
            "route `{route}`: expression does not compile: {} (line {}, column {} of the expression)",
            e.message, e.line, e.column
        ),
    );
}
