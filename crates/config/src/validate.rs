//! Validation: turns a parsed [`ConfigFile`] into a [`Config`], resolving references,
//! compiling filters and templates, and collecting every problem instead of stopping at the
//! first.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use estafeta_core::RetryPolicy;
use estafeta_core::expr::Filter;
use estafeta_core::template::TemplateSet;
use serde_saphyr::Spanned;

use crate::errors::{ConfigError, ConfigErrors};
use crate::model::{ConfigFile, DestinationKind, LogConfig, Ordering, SourceKind};
use crate::settings::{
    BreakerSettings, DestinationKindSettings, DestinationSettings, RateLimit, WebhookSettings,
};
use crate::text::{self, Lookup, Secret, Text};

/// The default storage location.
pub const DEFAULT_STORAGE: &str = "sqlite://./estafeta-data/estafeta.db";

/// The validated configuration the runtime is built from.
#[derive(Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// The admin token, if configured.
    pub admin_token: Option<Secret>,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Storage.
    pub storage: StorageSettings,
    /// Dedupe window for ingest.
    pub dedupe_window: Duration,
    /// Logging.
    pub log: LogConfig,
    /// Sources (always includes `http`).
    pub sources: Vec<SourceSettings>,
    /// Routes.
    pub routes: Vec<RouteSettings>,
    /// Compiled templates, named `routes.<route>.to[<n>].template`.
    pub templates: Arc<TemplateSet>,
    /// Destinations.
    pub destinations: Vec<DestinationSettings>,
    /// Retention policies.
    pub retention: crate::retention::RetentionSettings,
}

/// Where data is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// Embedded SQLite database file.
    Sqlite {
        /// Database file.
        path: PathBuf,
    },
}

/// A validated source.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Source id.
    pub id: String,
    /// Kind.
    pub kind: SourceKindSettings,
}

/// Kinds of sources.
#[derive(Debug, Clone)]
pub enum SourceKindSettings {
    /// HTTP ingest.
    Http,
    /// PostgreSQL change data capture.
    Postgres(Box<crate::postgres_source::PostgresSourceSettings>),
    /// MySQL/MariaDB change data capture.
    Mysql(Box<crate::mysql_source::MysqlSourceSettings>),
    /// Outbox (queue table) polling.
    Outbox(Box<crate::outbox_source::OutboxSourceSettings>),
    /// A schedule.
    Schedule(Box<crate::schedule_source::ScheduleSourceSettings>),
    /// A RabbitMQ queue consumer.
    Amqp(Box<crate::amqp_source::AmqpSourceSettings>),
    /// A NATS JetStream consumer.
    Nats(Box<crate::nats_source::NatsSourceSettings>),
    /// A Kafka consumer group.
    Kafka(Box<crate::kafka_source::KafkaSourceSettings>),
    /// MQTT subscription.
    Mqtt(Box<crate::mqtt_source::MqttSourceSettings>),
}

impl SourceKindSettings {
    /// The kind's name as written in the config.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mysql",
            Self::Outbox(_) => "outbox",
            Self::Schedule(_) => "schedule",
            Self::Amqp(_) => "amqp",
            Self::Nats(_) => "nats",
            Self::Kafka(_) => "kafka",
            Self::Mqtt(_) => "mqtt",
        }
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Route id.
    pub id: String,
    /// Source ids (empty = all).
    pub from: Vec<String>,
    /// Type globs (empty = all).
    pub match_types: Vec<String>,
    /// Compiled filter.
    pub filter: Option<Filter>,
    /// Ordering.
    pub ordering: Ordering,
    /// Steps run before the destinations, in order.
    pub steps: Vec<crate::route_steps::StepSettings>,
    /// Targets.
    pub targets: Vec<TargetSettings>,
}

/// One destination of a route.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// Destination id.
    pub destination: String,
    /// Template name in [`Config::templates`], if the body is templated.
    pub template: Option<String>,
    /// Media type for the rendered template.
    pub content_type: Option<String>,
}

/// Name under which a route target's template is registered.
#[must_use]
pub fn template_name(route: &str, index: usize) -> String {
    format!("routes.{route}.to[{index}].template")
}

pub(crate) struct Ctx<'a> {
    file: &'a str,
    lookup: &'a dyn Lookup,
    errors: Vec<ConfigError>,
    entry: (u64, u64),
}

impl Ctx<'_> {
    pub(crate) fn err_at(
        &mut self,
        line: u64,
        column: u64,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    /// An error at the current entry's position (its `id`).
    pub(crate) fn err_here(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let (l, c) = self.entry;
        self.err_at(l, c, field, message);
    }

    pub(crate) fn err<T>(
        &mut self,
        at: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (l, c) = match at.referenced.line() {
            0 => self.entry,
            l => (l, at.referenced.column()),
        };
        self.err_at(l, c, field, message);
    }

    /// An error at a text value's position (or its entry's).
    pub(crate) fn err_text(
        &mut self,
        t: &Text,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (l, c) = self.pos(t);
        self.err_at(l, c, field, message);
    }

    /// An error placed at the entry being validated (for fields without a position).
    pub(crate) fn err_entry(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let (l, c) = self.entry;
        self.err_at(l, c, field, message);
    }

    pub(crate) fn resolve(&mut self, t: &Text, field: &str) -> Option<text::Resolved> {
        match text::resolve(t.raw(), self.lookup) {
            Ok(r) => Some(r),
            Err(e) => {
                let (l, c) = self.pos(t);
                self.err_at(l, c, field, e.to_string());
                None
            }
        }
    }

    /// A value's position; values inside a kind's settings lose theirs to serde's `flatten`,
    /// so those point at the entry (its `id`) instead.
    pub(crate) fn pos(&self, t: &Text) -> (u64, u64) {
        match t.position() {
            (0, _) => self.entry,
            p => p,
        }
    }

    /// The position of the entry being validated (its `id`).
    pub(crate) fn entry_pos(&self) -> (u64, u64) {
        self.entry
    }
}

/// Validates a parsed file. `file` names it in errors.
///
/// # Errors
/// Every problem found.
#[allow(clippy::too_many_lines)]
pub fn validate(raw: ConfigFile, file: &str, lookup: &dyn Lookup) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx {
        file,
        lookup,
        errors: Vec::new(),
        entry: (0, 0),
    };

    let listen = match raw.server.listen.value.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            cx.err(
                &raw.server.listen,
                "server.listen",
                format!(
                    "`{}` is not an address; write e.g. `127.0.0.1:8080` or `0.0.0.0:8080`",
                    raw.server.listen.value
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }
    };
    if raw.server.max_body_bytes == 0 {
        cx.err_at(0, 0, "server.max_body_bytes", "must be greater than 0");
    }
    let admin_token = raw
        .server
        .admin_token
        .as_ref()
        .and_then(|t| cx.resolve(t, "server.admin_token"))
        .map(|r| r.value);
    if admin_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        let (l, c) = raw
            .server
            .admin_token
            .as_ref()
            .map_or((0, 0), Text::position);
        cx.err_at(
            l,
            c,
            "server.admin_token",
            "must be at least 16 characters long",
        );
    }

    let storage = match &raw.storage {
        None => StorageSettings::Sqlite {
            path: PathBuf::from("./estafeta-data/estafeta.db"),
        },
        Some(s) => {
            match s.value.strip_prefix("sqlite://") {
                Some(p) if !p.is_empty() => StorageSettings::Sqlite {
                    path: PathBuf::from(p),
                },
                _ if s.value.starts_with("postgres://") || s.value.starts_with("postgresql://") => {
                    cx.err(s, "storage", "PostgreSQL storage (cluster mode) is not available in this version; use `sqlite://PATH`");
                    StorageSettings::Sqlite {
                        path: PathBuf::new(),
                    }
                }
                _ => {
                    cx.err(s, "storage", format!("`{}` is not a storage URL; write `sqlite://./estafeta-data/estafeta.db`", s.value));
                    StorageSettings::Sqlite {
                        path: PathBuf::new(),
                    }
                }
            }
        }
    };

    cx.entry = (0, 0);
    // Sources: `http` always exists.
    let mut sources = Vec::new();
    let mut source_ids = HashSet::new();
    for (i, s) in raw.sources.iter().enumerate() {
        let field = format!("sources[{i}].id");
        check_id(&mut cx, &s.id, &field);
        if !source_ids.insert(s.id.value.clone()) {
            cx.err(
                &s.id,
                field,
                format!("duplicate source id `{}`", s.id.value),
            );
        }
        cx.entry = (s.id.referenced.line(), s.id.referenced.column());
        let kind = match &s.kind {
            SourceKind::Http(_) => SourceKindSettings::Http,
            SourceKind::Postgres(pg) => {
                match crate::postgres_source::validate(
                    &mut cx,
                    &format!("sources[{i}]"),
                    &s.id.value,
                    pg,
                ) {
                    Some(v) => SourceKindSettings::Postgres(Box::new(v)),
                    None => continue,
                }
            }
            SourceKind::Mysql(my) => {
                let p = format!("sources[{i}]");
                match crate::mysql_source::validate(&mut cx, &p, &s.id.value, my, &sources) {
                    Some(v) => SourceKindSettings::Mysql(Box::new(v)),
                    None => continue,
                }
            }
            SourceKind::Outbox(ob) => {
                match crate::outbox_source::validate(&mut cx, &format!("sources[{i}]"), ob) {
                    Some(v) => SourceKindSettings::Outbox(Box::new(v)),
                    None => continue,
                }
            }
            SourceKind::Kafka(k) => {
                let p = format!("sources[{i}]");
                match crate::kafka_source::validate(&mut cx, &p, &s.id.value, k) {
                    Some(v) => SourceKindSettings::Kafka(Box::new(v)),
                    None => continue,
                }
            }
            SourceKind::Mqtt(mq) => {
                let p = format!("sources[{i}]");
                match crate::mqtt_source::validate(&mut cx, &p, &s.id.value, mq) {
                    Some(v) => SourceKindSettings::Mqtt(Box::new(v)),
                    None => continue,
                }
            }
            SourceKind::Nats(n) => {
                let p = format!("sources[{i}]");
                match crate::nats_source::validate(&mut cx, &p, &s.id.value, n) {
                    Some(v) => SourceKindSettings::Nats(Box::new(v)),
                    None => continue,
                }
            }
            SourceKind::Amqp(a) => {
                let p = format!("sources[{i}]");
                match crate::amqp_source::validate(&mut cx, &p, &s.id.value, a) {
                    Some(v) => SourceKindSettings::Amqp(Box::new(v)),
                    None => continue,
                }
            }
            SourceKind::Schedule(sc) => {
                match crate::schedule_source::validate(&mut cx, &format!("sources[{i}]"), sc) {
                    Some(v) => SourceKindSettings::Schedule(Box::new(v)),
                    None => continue,
                }
            }
        };
        sources.push(SourceSettings {
            id: s.id.value.clone(),
            kind,
        });
    }
    if !source_ids.contains("http") {
        source_ids.insert("http".to_owned());
        sources.push(SourceSettings {
            id: "http".to_owned(),
            kind: SourceKindSettings::Http,
        });
    }

    // Destinations.
    let mut destinations = Vec::new();
    let mut dest_ids = HashSet::new();
    for (i, d) in raw.destinations.iter().enumerate() {
        let p = format!("destinations[{i}]");
        cx.entry = (d.id.referenced.line(), d.id.referenced.column());
        check_id(&mut cx, &d.id, &format!("{p}.id"));
        if !dest_ids.insert(d.id.value.clone()) {
            cx.err(
                &d.id,
                format!("{p}.id"),
                format!("duplicate destination id `{}`", d.id.value),
            );
        }
        if d.concurrency == 0 || d.concurrency > 10_000 {
            cx.err(
                &d.id,
                format!("{p}.concurrency"),
                "must be between 1 and 10000",
            );
        }
        if d.queue_capacity < 2 || d.queue_capacity > 10_000_000 {
            cx.err(
                &d.id,
                format!("{p}.queue_capacity"),
                "must be between 2 and 10000000",
            );
        }
        let rate_limit = d
            .rate_limit
            .as_ref()
            .and_then(|r| match parse_rate(&r.value) {
                Ok(rl) => Some(rl),
                Err(m) => {
                    cx.err(r, format!("{p}.rate_limit"), m);
                    None
                }
            });
        let jitter = d.retry.jitter.unwrap_or(0.1);
        if !(0.0..=1.0).contains(&jitter) {
            cx.err(
                &d.id,
                format!("{p}.retry.jitter"),
                "must be between 0 and 1",
            );
        }
        let retry = match &d.retry.schedule {
            None => RetryPolicy::new(RetryPolicy::default().schedule().to_vec(), jitter),
            Some(s) if s.is_empty() => {
                cx.err(
                    &d.id,
                    format!("{p}.retry.schedule"),
                    "must list at least one delay (the first is usually `0s`)",
                );
                RetryPolicy::default()
            }
            Some(s) => RetryPolicy::new(s.iter().map(|d| d.0).collect(), jitter),
        };
        let breaker = d.circuit_breaker.enabled.then_some(BreakerSettings {
            failure_window: d.circuit_breaker.failure_window.0,
            probe_interval: d
                .circuit_breaker
                .probe_interval
                .0
                .max(Duration::from_millis(10)),
        });
        let kind = match &d.kind {
            DestinationKind::Webhook(w) => {
                webhook(&mut cx, &p, &d.id.value, w).map(DestinationKindSettings::Webhook)
            }
            DestinationKind::Telegram(t) => {
                crate::telegram_destination::validate(&mut cx, &p, &d.id.value, t)
                    .map(|s| DestinationKindSettings::Telegram(Box::new(s)))
            }
            DestinationKind::Slack(c)
            | DestinationKind::Teams(c)
            | DestinationKind::Discord(c)
            | DestinationKind::GoogleChat(c) => {
                use crate::chat_destination::ChatService;
                let service = match &d.kind {
                    DestinationKind::Slack(_) => ChatService::Slack,
                    DestinationKind::Teams(_) => ChatService::Teams,
                    DestinationKind::Discord(_) => ChatService::Discord,
                    _ => ChatService::GoogleChat,
                };
                crate::chat_destination::validate(&mut cx, &p, &d.id.value, service, c)
                    .map(|s| DestinationKindSettings::Chat(Box::new(s)))
            }
            DestinationKind::Ntfy(n) => {
                crate::ntfy_destination::validate(&mut cx, &p, &d.id.value, n)
                    .map(|s| DestinationKindSettings::Ntfy(Box::new(s)))
            }
            DestinationKind::Kafka(k) => {
                crate::kafka_destination::validate(&mut cx, &p, &d.id.value, k)
                    .map(|s| DestinationKindSettings::Kafka(Box::new(s)))
            }
            DestinationKind::Mqtt(m) => {
                crate::mqtt_destination::validate(&mut cx, &p, &d.id.value, m)
                    .map(|s| DestinationKindSettings::Mqtt(Box::new(s)))
            }
            DestinationKind::Amqp(a) => {
                crate::amqp_destination::validate(&mut cx, &p, &d.id.value, a)
                    .map(|s| DestinationKindSettings::Amqp(Box::new(s)))
            }
            DestinationKind::Nats(n) => {
                crate::nats_destination::validate(&mut cx, &p, &d.id.value, n)
                    .map(|s| DestinationKindSettings::Nats(Box::new(s)))
            }
            DestinationKind::Smtp(m) => {
                crate::smtp_destination::validate(&mut cx, &p, &d.id.value, m)
                    .map(|s| DestinationKindSettings::Smtp(Box::new(s)))
            }
            DestinationKind::S3(o) => {
                crate::object_destination::validate_s3(&mut cx, &p, &d.id.value, o)
                    .map(|s| DestinationKindSettings::S3(Box::new(s)))
            }
            DestinationKind::File(o) => {
                crate::object_destination::validate_file(&mut cx, &p, &d.id.value, o)
                    .map(|s| DestinationKindSettings::File(Box::new(s)))
            }
        };
        if let Some(kind) = kind {
            destinations.push(DestinationSettings {
                id: d.id.value.clone(),
                concurrency: d.concurrency.max(1),
                queue_capacity: d.queue_capacity.max(2),
                rate_limit,
                retry,
                breaker,
                kind,
            });
        }
    }

    // Routes.
    let mut routes = Vec::new();
    let mut templates = TemplateSet::new();
    let mut route_ids = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let p = format!("routes[{i}]");
        cx.entry = (r.id.referenced.line(), r.id.referenced.column());
        check_id(&mut cx, &r.id, &format!("{p}.id"));
        if !route_ids.insert(r.id.value.clone()) {
            cx.err(
                &r.id,
                format!("{p}.id"),
                format!("duplicate route id `{}`", r.id.value),
            );
        }
        let mut from = Vec::new();
        for f in r.from.values() {
            if !source_ids.contains(&f.value) {
                cx.err(
                    f,
                    format!("{p}.from"),
                    format!("no source with id `{}`", f.value),
                );
            }
            from.push(f.value.clone());
        }
        let match_types: Vec<String> = r
            .match_types
            .values()
            .into_iter()
            .map(|m| m.value.clone())
            .collect();
        for m in r.match_types.values() {
            if m.value.trim().is_empty() {
                cx.err(
                    m,
                    format!("{p}.match"),
                    "an event-type pattern must not be empty",
                );
            }
        }
        let filter = r.filter.as_ref().and_then(|f| match Filter::compile(&f.value) {
            Ok(c) => Some(c),
            Err(e) => {
                let (line, col) = inner_position(f, e.line, e.column);
                cx.err_at(line, col, format!("{p}.filter"), format!(
                    "route `{}`: filter does not compile: {} (line {}, column {} of the expression)",
                    r.id.value, e.message, e.line, e.column
                ));
                None
            }
        });
        let (steps, _bound) =
            crate::route_steps::validate(&mut cx, &p, &r.id.value, &r.steps, &mut templates);
        if r.to.is_empty() {
            cx.err(
                &r.id,
                format!("{p}.to"),
                "a route needs at least one destination",
            );
        }
        let mut targets = Vec::new();
        for (j, t) in r.to.iter().enumerate() {
            if !dest_ids.contains(&t.destination.value) {
                cx.err(
                    &t.destination,
                    format!("{p}.to[{j}].destination"),
                    format!("no destination with id `{}`", t.destination.value),
                );
            }
            let escape = destinations
                .iter()
                .find(|d| d.id == t.destination.value)
                .map(|d| d.kind.template_escape())
                .unwrap_or_default();
            let template = t.template.as_ref().and_then(|src| {
                let name = template_name(&r.id.value, j);
                match templates.add_escaped(&name, &src.value, escape) {
                    Ok(()) => Some(name),
                    Err(e) => {
                        let (line, col) = inner_position(src, e.line.unwrap_or(1), 1);
                        cx.err_at(line, col, format!("{p}.to[{j}].template"), format!(
                            "route `{}`: template does not compile: {} (line {} of the template)",
                            r.id.value, e.message, e.line.unwrap_or(1)
                        ));
                        None
                    }
                }
            });
            targets.push(TargetSettings {
                destination: t.destination.value.clone(),
                template,
                content_type: t.content_type.clone(),
            });
        }
        routes.push(RouteSettings {
            id: r.id.value.clone(),
            from,
            match_types,
            filter,
            ordering: r.ordering,
            steps,
            targets,
        });
    }

    cx.entry = (0, 0);
    let retention = crate::retention::validate(&mut cx, &raw.retention, &source_ids, &destinations);

    if !cx.errors.is_empty() {
        return Err(ConfigErrors(cx.errors));
    }
    Ok(Config {
        retention,
        listen,
        max_body_bytes: raw.server.max_body_bytes,
        admin_token,
        shutdown_grace: raw.server.shutdown_grace.0,
        storage,
        dedupe_window: raw.ingest.dedupe_window.0,
        log: raw.log,
        sources,
        routes,
        templates: Arc::new(templates),
        destinations,
    })
}

/// Where line `line` (1-based) of a multi-line value starts in the file: block scalars start
/// on the next line.
/// A destination's `batch:` block, as `(max_events, max_wait)`; problems are placed at `at`.
pub(crate) fn validate_batch(
    cx: &mut Ctx<'_>,
    p: &str,
    batch: Option<&crate::model::BatchConfig>,
    at: (u64, u64),
) -> Option<(usize, Duration)> {
    match batch {
        None => None,
        Some(b) if b.max_events == 0 || b.max_events > 10_000 => {
            cx.err_at(
                at.0,
                at.1,
                format!("{p}.batch.max_events"),
                "must be between 1 and 10000",
            );
            None
        }
        Some(b) => Some((b.max_events, b.max_wait.0)),
    }
}

pub(crate) fn inner_position(at: &Spanned<String>, line: usize, column: usize) -> (u64, u64) {
    let base = at.referenced.line();
    if base == 0 {
        return (0, 0);
    }
    let line = u64::try_from(line.max(1)).unwrap_or(1);
    if line == 1 {
        (
            base,
            at.referenced.column() + u64::try_from(column.saturating_sub(1)).unwrap_or(0),
        )
    } else {
        (base + line - 1, u64::try_from(column).unwrap_or(0))
    }
}

fn check_id(cx: &mut Ctx<'_>, id: &Spanned<String>, field: &str) {
    let v = &id.value;
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        cx.err(
            id,
            field,
            format!("`{v}` is not a valid id: use 1-64 letters, digits, `-`, `_` or `.`"),
        );
    }
}

pub(crate) fn parse_rate(s: &str) -> Result<RateLimit, String> {
    let bad = || format!("`{s}` is not a rate; write e.g. `100/s`, `600/min` or `5000/h`");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("a rate limit must allow at least 1 request".to_owned());
    }
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    // One request per microsecond is the finest the limiter resolves; above that it would
    // silently not limit at all.
    if per.as_micros() < u128::from(count) {
        return Err(format!(
            "`{s}` is more than 1,000,000 requests per second; remove the limit instead"
        ));
    }
    Ok(RateLimit { count, per })
}

fn webhook(
    cx: &mut Ctx<'_>,
    p: &str,
    id: &str,
    w: &crate::model::WebhookConfig,
) -> Option<WebhookSettings> {
    let url = cx.resolve(&w.url, &format!("{p}.url"))?;
    match url::Url::parse(url.value.expose()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(u) => {
            let (l, c) = cx.pos(&w.url);
            cx.err_at(
                l,
                c,
                format!("{p}.url"),
                format!(
                    "scheme `{}` is not supported; webhook URLs start with http:// or https://",
                    u.scheme()
                ),
            );
        }
        Err(e) => {
            let (l, c) = cx.pos(&w.url);
            cx.err_at(l, c, format!("{p}.url"), format!("not a valid URL ({e})"));
        }
    }
    let signing_key = match &w.secret {
        None => None,
        Some(t) => {
            let r = cx.resolve(t, &format!("{p}.secret"))?;
            let ok = r.value.expose().strip_prefix("whsec_").is_some_and(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .is_ok_and(|k| k.len() >= 16)
            });
            if !ok {
                let (l, c) = cx.pos(t);
                cx.err_at(l, c, format!("{p}.secret"), "a webhook secret is `whsec_` followed by base64 of at least 16 bytes (generate one with `estafeta secret generate`)");
            }
            Some(r.value)
        }
    };
    let mut headers = Vec::new();
    for (name, value) in &w.headers {
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            let (l, c) = cx.pos(value);
            cx.err_at(
                l,
                c,
                format!("{p}.headers"),
                format!("`{name}` is not a valid header name"),
            );
            continue;
        }
        if crate::settings::RESERVED_WEBHOOK_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            let (l, c) = cx.pos(value);
            cx.err_at(
                l,
                c,
                format!("{p}.headers.{name}"),
                "Estafeta sets this header itself; it cannot be configured",
            );
            continue;
        }
        if let Some(v) = cx.resolve(value, &format!("{p}.headers.{name}")) {
            if v.value.expose().contains(['\r', '\n']) {
                let (l, c) = cx.pos(value);
                cx.err_at(
                    l,
                    c,
                    format!("{p}.headers.{name}"),
                    "header values must not contain line breaks",
                );
            }
            headers.push((name.clone(), v.value));
        }
    }
    if w.timeout.0.is_zero() {
        let (l, c) = cx.pos(&w.url);
        cx.err_at(l, c, format!("{p}.timeout"), "must be greater than 0");
    }
    let at = cx.pos(&w.url);
    let batch = validate_batch(cx, p, w.batch.as_ref(), at);
    Some(WebhookSettings {
        id: id.to_owned(),
        url: url.value,
        signing_key,
        headers,
        timeout: w.timeout.0,
        allow_private_networks: w.allow_private_networks,
        batch,
    })
}
