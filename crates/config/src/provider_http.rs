//! `provider: { kind: http, … }` — the declarative HTTP provider of a schedule: the file's
//! shape ([`HttpProviderConfig`]), the validated settings ([`HttpProviderSettings`]) and the
//! validation between them. Templates are only checked for syntax here; they are rendered
//! (with the date helpers) by `estafeta_sources::provider::http`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::DurationText;
use crate::settings::RateLimit;
use crate::text::{Secret, Text};
use crate::validate::Ctx;

/// The declarative HTTP provider: one request template, an auth method, a pagination style,
/// a JSON path to the records, an optional incremental cursor, and what to emit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// The HTTP method (default `GET`).
    #[serde(default)]
    pub method: Option<String>,
    /// The URL, a template (`https://api.example/v1/sales?day={{ yesterday }}`).
    pub url: Text,
    /// Query parameters added to the URL; each value is a template.
    #[serde(default)]
    pub query: BTreeMap<String, Text>,
    /// Request headers; each value is a template.
    #[serde(default)]
    pub headers: BTreeMap<String, Text>,
    /// How requests authenticate (default none): an inline method (`kind: …`) or a stored
    /// credential (`credential: NAME`).
    #[serde(default)]
    pub auth: Option<AuthEntry>,
    /// How the next page is found (default: a single request).
    #[serde(default)]
    pub pagination: Option<PaginationConfig>,
    /// A JSON path to the records in an answer, e.g. `$.data[*]` (default `$[*]`, the answer
    /// is an array).
    #[serde(default)]
    pub records: Option<String>,
    /// Incremental pulls: the record field whose largest value is kept as the cursor.
    #[serde(default)]
    pub cursor: Option<CursorConfig>,
    /// What the run emits (default one `provider.record` event per record).
    #[serde(default)]
    pub emit: Option<EmitConfig>,
    /// Largest request rate to the partner, e.g. `10/s` (default none).
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Tries per request on a timeout, a 429 or a 5xx (default 5).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Whole-request timeout (default 30s).
    #[serde(default)]
    pub timeout: Option<DurationText>,
    /// Stop after this many pages in one run (default 10,000).
    #[serde(default)]
    pub max_pages: Option<u32>,
    /// Let requests reach private, loopback and link-local addresses (default false: the
    /// SSRF guard refuses them).
    #[serde(default)]
    pub allow_private_networks: bool,
}

/// `auth:` as written: a stored credential by name, or an inline method.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "an auth method (`kind: api_key | bearer | basic | oauth2` with its fields) or `credential: NAME`"
)]
pub enum AuthEntry {
    /// `credential: NAME` — a credential from the credential store, read at each run.
    Stored(StoredCredential),
    /// An inline method.
    Inline(Box<AuthConfig>),
}

/// `auth: { credential: NAME }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCredential {
    /// The credential's name (`estafeta credentials set NAME`, `/v1/credentials`).
    pub credential: String,
}

/// `auth:` of the HTTP provider.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// An API key in a header (`header: X-Api-Key`) or a query parameter (`query: api_key`).
    ApiKey {
        /// The header that carries it.
        #[serde(default)]
        header: Option<String>,
        /// The query parameter that carries it.
        #[serde(default)]
        query: Option<String>,
        /// The key, usually `${secret:NAME}`.
        value: Text,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token, usually `${secret:NAME}`.
        token: Text,
    },
    /// HTTP basic auth.
    Basic {
        /// The user name.
        username: Text,
        /// The password, usually `${secret:NAME}`.
        password: Text,
    },
    /// OAuth 2 client credentials: a token from `token_url`, cached until it expires.
    Oauth2 {
        /// The token endpoint.
        token_url: Text,
        /// The client id.
        client_id: Text,
        /// The client secret, usually `${secret:NAME}`.
        client_secret: Text,
        /// Scopes asked for (space-separated in the request).
        #[serde(default)]
        scopes: Vec<String>,
    },
}

/// `pagination:` of the HTTP provider.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationConfig {
    /// `?page=1`, `?page=2` … until a page has fewer records than `size` (or none).
    PageNumber {
        /// The page parameter (default `page`).
        #[serde(default)]
        param: Option<String>,
        /// The first page's number (default 1).
        #[serde(default)]
        start: Option<u64>,
        /// The page-size parameter, if the API takes one.
        #[serde(default)]
        size_param: Option<String>,
        /// The page size: a shorter page is the last (default: only an empty page stops).
        #[serde(default)]
        size: Option<u64>,
    },
    /// `?offset=0&limit=100`, then `offset=100` … until a page is shorter than `limit`.
    OffsetLimit {
        /// The offset parameter (default `offset`).
        #[serde(default)]
        offset_param: Option<String>,
        /// The limit parameter (default `limit`).
        #[serde(default)]
        limit_param: Option<String>,
        /// The page size (default 100).
        #[serde(default)]
        limit: Option<u64>,
    },
    /// A cursor in the answer's body (`path: $.next_cursor`), sent back as `param`.
    Cursor {
        /// JSON path to the next cursor; none, null or empty means the last page.
        path: String,
        /// The query parameter that carries it (default `cursor`).
        #[serde(default)]
        param: Option<String>,
    },
    /// The `Link: <…>; rel="next"` answer header.
    LinkHeader,
    /// The next page's URL in the body (`path: $.links.next`).
    NextUrl {
        /// JSON path to the next URL (absolute or relative to the current one).
        path: String,
    },
}

/// `cursor:` of the HTTP provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorConfig {
    /// The record field (a name, or a JSON path such as `$.meta.updated_at`) whose largest
    /// value is stored as the cursor after the run's events are in the log.
    pub field: String,
    /// The cursor before the first run (default none: `cursor` is empty in templates).
    #[serde(default)]
    pub initial: Option<String>,
}

/// `emit:` of the HTTP provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitConfig {
    /// `record` (default): one event per record; `run`: one event whose data is the array
    /// of all the run's records.
    #[serde(default)]
    pub per: EmitPer,
    /// The events' type (default `provider.record`, or `provider.run` with `per: run`).
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    /// With `per: record`, the record field (name or JSON path) that identifies it: the
    /// event id is built from it, so a record pulled twice is stored once.
    #[serde(default)]
    pub id: Option<String>,
}

/// One event per record or per run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmitPer {
    /// One event per record.
    #[default]
    Record,
    /// One event per run, its data the array of records.
    Run,
}

/// Validated auth.
#[derive(Debug, Clone)]
pub enum AuthSettings {
    /// No auth.
    None,
    /// API key in a header.
    ApiKeyHeader {
        /// The header.
        name: String,
        /// The key.
        value: Secret,
    },
    /// API key in a query parameter.
    ApiKeyQuery {
        /// The parameter.
        name: String,
        /// The key.
        value: Secret,
    },
    /// Bearer token.
    Bearer(Secret),
    /// Basic auth.
    Basic {
        /// User.
        username: String,
        /// Password.
        password: Secret,
    },
    /// OAuth 2 client credentials.
    Oauth2 {
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Secret,
        /// Scopes.
        scopes: Vec<String>,
    },
    /// A stored credential, by name: read from the credential store at each run and mapped
    /// by its type to one of the other variants.
    Credential(String),
}

/// Validated pagination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaginationSettings {
    /// One request.
    None,
    /// Page numbers.
    PageNumber {
        /// Parameter.
        param: String,
        /// First page.
        start: u64,
        /// Page-size parameter.
        size_param: Option<String>,
        /// Page size.
        size: Option<u64>,
    },
    /// Offset and limit.
    OffsetLimit {
        /// Offset parameter.
        offset_param: String,
        /// Limit parameter.
        limit_param: String,
        /// Page size.
        limit: u64,
    },
    /// Cursor in the body.
    Cursor {
        /// JSON path.
        path: String,
        /// Parameter.
        param: String,
    },
    /// `Link` header.
    LinkHeader,
    /// Next URL in the body.
    NextUrl {
        /// JSON path.
        path: String,
    },
}

/// Validated HTTP provider settings. Templates are kept as written (with `${…}` resolved);
/// values that hold a secret are [`Secret`]s.
#[derive(Debug, Clone)]
pub struct HttpProviderSettings {
    /// Method template.
    pub method: String,
    /// URL template.
    pub url: Secret,
    /// Query templates.
    pub query: Vec<(String, Secret)>,
    /// Header templates.
    pub headers: Vec<(String, Secret)>,
    /// Auth.
    pub auth: AuthSettings,
    /// Pagination.
    pub pagination: PaginationSettings,
    /// JSON path to the records.
    pub records: String,
    /// Cursor field (JSON path) and initial value.
    pub cursor: Option<(String, Option<String>)>,
    /// One event per record or per run.
    pub per: EmitPer,
    /// Event type.
    pub event_type: String,
    /// JSON path of the record id.
    pub id_field: Option<String>,
    /// Request rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Tries per request.
    pub attempts: u32,
    /// Request timeout.
    pub timeout: Duration,
    /// Page limit per run.
    pub max_pages: u32,
    /// Whether private addresses may be reached.
    pub allow_private_networks: bool,
}

/// A record field given as a bare name (`updated_at`) or a JSON path (`$.a.b`) → a path.
#[must_use]
pub fn field_path(field: &str) -> String {
    let f = field.trim();
    if f.starts_with('$') {
        f.to_owned()
    } else {
        format!("$['{}']", f.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

fn check_path(cx: &mut Ctx<'_>, field: String, path: &str) {
    if let Err(e) = serde_json_path::JsonPath::parse(path) {
        cx.err_here(field, format!("`{path}` is not a JSON path: {e}"));
    }
}

fn check_template(cx: &mut Ctx<'_>, field: String, source: &str) {
    let env = minijinja::Environment::new();
    if let Err(e) = env.template_from_str(source) {
        cx.err_here(field, format!("template error: {e}"));
    }
}

fn param(v: Option<&String>, default: &str) -> String {
    v.map_or_else(|| default.to_owned(), |s| s.trim().to_owned())
}

pub(crate) fn validate(
    cx: &mut Ctx<'_>,
    p: &str,
    c: &HttpProviderConfig,
) -> Option<HttpProviderSettings> {
    let method = c.method.as_deref().unwrap_or("GET").trim().to_owned();
    check_template(cx, format!("{p}.method"), &method);
    let url = cx.resolve(&c.url, &format!("{p}.url"));
    if let Some(u) = &url {
        check_template(cx, format!("{p}.url"), u.value.expose());
    }
    let pairs = |cx: &mut Ctx<'_>, what: &str, list: &BTreeMap<String, Text>| {
        let mut out = Vec::new();
        for (name, value) in list {
            if let Some(v) = cx.resolve(value, &format!("{p}.{what}.{name}")) {
                check_template(cx, format!("{p}.{what}.{name}"), v.value.expose());
                out.push((name.clone(), v.value));
            }
        }
        out
    };
    let query = pairs(cx, "query", &c.query);
    let headers = pairs(cx, "headers", &c.headers);
    let auth = auth(cx, &format!("{p}.auth"), c.auth.as_ref());
    let pagination = match &c.pagination {
        None => PaginationSettings::None,
        Some(PaginationConfig::PageNumber {
            param: name,
            start,
            size_param,
            size,
        }) => PaginationSettings::PageNumber {
            param: param(name.as_ref(), "page"),
            start: start.unwrap_or(1),
            size_param: size_param.clone(),
            size: size.filter(|s| *s > 0),
        },
        Some(PaginationConfig::OffsetLimit {
            offset_param,
            limit_param,
            limit,
        }) => PaginationSettings::OffsetLimit {
            offset_param: param(offset_param.as_ref(), "offset"),
            limit_param: param(limit_param.as_ref(), "limit"),
            limit: limit.unwrap_or(100).max(1),
        },
        Some(PaginationConfig::Cursor { path, param: name }) => {
            check_path(cx, format!("{p}.pagination.path"), path);
            PaginationSettings::Cursor {
                path: path.clone(),
                param: param(name.as_ref(), "cursor"),
            }
        }
        Some(PaginationConfig::LinkHeader) => PaginationSettings::LinkHeader,
        Some(PaginationConfig::NextUrl { path }) => {
            check_path(cx, format!("{p}.pagination.path"), path);
            PaginationSettings::NextUrl { path: path.clone() }
        }
    };
    let records = c.records.clone().unwrap_or_else(|| "$[*]".to_owned());
    check_path(cx, format!("{p}.records"), &records);
    let cursor = c.cursor.as_ref().map(|k| {
        let path = field_path(&k.field);
        check_path(cx, format!("{p}.cursor.field"), &path);
        (path, k.initial.clone())
    });
    let per = c.emit.as_ref().map_or(EmitPer::Record, |e| e.per);
    let event_type = match c.emit.as_ref().and_then(|e| e.event_type.as_deref()) {
        Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
        Some(_) => {
            cx.err_here(format!("{p}.emit.type"), "must not be empty");
            String::new()
        }
        None if per == EmitPer::Run => "provider.run".to_owned(),
        None => "provider.record".to_owned(),
    };
    let id_field = c.emit.as_ref().and_then(|e| e.id.as_deref()).map(|f| {
        let path = field_path(f);
        check_path(cx, format!("{p}.emit.id"), &path);
        path
    });
    let rate_limit = c.rate_limit.as_deref().and_then(|r| {
        crate::validate::parse_rate(r)
            .map_err(|e| cx.err_here(format!("{p}.rate_limit"), e))
            .ok()
    });
    let attempts = c.attempts.unwrap_or(5);
    if attempts == 0 || attempts > 20 {
        cx.err_here(format!("{p}.attempts"), "must be between 1 and 20");
    }
    Some(HttpProviderSettings {
        method,
        url: url?.value,
        query,
        headers,
        auth: auth?,
        pagination,
        records,
        cursor,
        per,
        event_type,
        id_field,
        rate_limit,
        attempts: attempts.clamp(1, 20),
        timeout: c.timeout.map_or(Duration::from_secs(30), |t| t.0),
        max_pages: c.max_pages.unwrap_or(10_000).max(1),
        allow_private_networks: c.allow_private_networks,
    })
}

fn auth(cx: &mut Ctx<'_>, p: &str, c: Option<&AuthEntry>) -> Option<AuthSettings> {
    let secret =
        |cx: &mut Ctx<'_>, t: &Text, f: &str| cx.resolve(t, &format!("{p}.{f}")).map(|r| r.value);
    let c = match c {
        None => return Some(AuthSettings::None),
        Some(AuthEntry::Stored(StoredCredential { credential })) => {
            let name = credential.trim();
            if name.is_empty() {
                cx.err_here(format!("{p}.credential"), "must not be empty");
                return None;
            }
            return Some(AuthSettings::Credential(name.to_owned()));
        }
        Some(AuthEntry::Inline(c)) => c.as_ref(),
    };
    Some(match c {
        AuthConfig::ApiKey {
            header,
            query,
            value,
        } => {
            let value = secret(cx, value, "value")?;
            match (header, query) {
                (Some(h), None) => AuthSettings::ApiKeyHeader {
                    name: h.trim().to_owned(),
                    value,
                },
                (None, Some(q)) => AuthSettings::ApiKeyQuery {
                    name: q.trim().to_owned(),
                    value,
                },
                _ => {
                    cx.err_here(p, "give exactly one of `header` or `query`");
                    return None;
                }
            }
        }
        AuthConfig::Bearer { token } => AuthSettings::Bearer(secret(cx, token, "token")?),
        AuthConfig::Basic { username, password } => {
            let u = secret(cx, username, "username");
            let pw = secret(cx, password, "password");
            AuthSettings::Basic {
                username: u?.expose().to_owned(),
                password: pw?,
            }
        }
        AuthConfig::Oauth2 {
            token_url,
            client_id,
            client_secret,
            scopes,
        } => {
            let url = secret(cx, token_url, "token_url");
            let id = secret(cx, client_id, "client_id");
            let cs = secret(cx, client_secret, "client_secret");
            let url = url?.expose().to_owned();
            if url::Url::parse(&url).is_err() {
                cx.err_here(format!("{p}.token_url"), "is not a URL");
            }
            AuthSettings::Oauth2 {
                token_url: url,
                client_id: id?.expose().to_owned(),
                client_secret: cs?,
                scopes: scopes.clone(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::field_path;

    #[test]
    fn bare_fields_become_paths() {
        assert_eq!(field_path("updated_at"), "$['updated_at']");
        assert_eq!(field_path("$.a.b"), "$.a.b");
        assert_eq!(field_path("it's"), "$['it\\'s']");
    }
}
