//! A route's steps at run time: `enrich` (an HTTP look-up bound to a name), `filter` (a CEL
//! condition that ends the delivery as `filtered`) and `transform` (field changes), run in
//! order for each delivery before its message is rendered. Every step leaves a
//! [`StepTrace`] in the attempt's record.

mod transform;

use std::sync::Arc;
use std::time::{Duration, Instant};

use estafeta_config::route_steps::{EnrichSettings, OnError, StepSettings, TransformOp};
use estafeta_core::expr::Filter;
use estafeta_core::metric_names as m;
use estafeta_core::template::TemplateSet;
use estafeta_core::{Event, SendError, SendErrorKind, StepOutcome, StepTrace};
use estafeta_destinations::{HttpClients, Lookup, LookupRequest};
use serde_json::Value;

/// Most bytes of a step's output kept in its trace.
const OUTPUT_LIMIT: usize = 512;

/// A route's compiled steps.
#[derive(Debug)]
pub(crate) struct RouteSteps {
    route: String,
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    Enrich {
        settings: Box<EnrichSettings>,
        lookup: Box<Lookup>,
        duration: metrics::Histogram,
    },
    Filter(Filter),
    Transform(Vec<TransformOp>),
}

/// The event as the route's destinations see it after the steps, and the names they bound.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) event: Arc<Event>,
    pub(crate) bindings: Vec<(String, Value)>,
}

impl Prepared {
    /// The bindings in the form templates and expressions take.
    pub(crate) fn extra(&self) -> Vec<(&str, &Value)> {
        self.bindings.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }
}

/// How the steps ended for one delivery.
#[derive(Debug)]
pub(crate) enum End {
    /// Go on to the destination with this.
    Go(Prepared),
    /// A filter said no.
    Filtered,
    /// A step failed; the attempt fails with this error.
    Failed(SendError),
}

/// The steps' result and their traces.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) end: End,
    pub(crate) traces: Vec<StepTrace>,
}

/// A step that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("route `{route}`: {source}")]
pub struct StepBuildError {
    /// The route.
    pub route: String,
    /// Why.
    #[source]
    pub source: estafeta_destinations::BuildError,
}

impl RouteSteps {
    /// Builds a route's steps; `None` when it has none.
    pub(crate) fn build(
        route: &str,
        steps: &[StepSettings],
        clients: &HttpClients,
    ) -> Result<Option<Self>, StepBuildError> {
        if steps.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(steps.len());
        for s in steps {
            out.push(match s {
                StepSettings::Enrich(e) => Step::Enrich {
                    lookup: Box::new(Lookup::new(route, e, clients).map_err(|source| {
                        StepBuildError {
                            route: route.to_owned(),
                            source,
                        }
                    })?),
                    duration: metrics::histogram!(m::STEP_DURATION, "route" => route.to_owned(), "step" => format!("enrich:{}", e.name)),
                    settings: e.clone(),
                },
                StepSettings::Filter(f) => Step::Filter(f.clone()),
                StepSettings::Transform(ops) => Step::Transform(ops.clone()),
            });
        }
        Ok(Some(Self {
            route: route.to_owned(),
            steps: out,
        }))
    }

    /// The most look-ups this route's steps run at once (0 without enrichment).
    pub(crate) fn concurrency(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Enrich { settings, .. } => settings.concurrency,
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// Runs the steps for one delivery of `event`.
    pub(crate) async fn run(&self, event: Arc<Event>, templates: &TemplateSet) -> Run {
        let mut prepared = Prepared {
            event,
            bindings: Vec::new(),
        };
        let mut traces = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let clock = Instant::now();
            let (trace, stop) = match step {
                Step::Enrich {
                    settings,
                    lookup,
                    duration,
                } => {
                    let r = self
                        .enrich(settings, lookup, &mut prepared, templates)
                        .await;
                    duration.record(clock.elapsed().as_secs_f64());
                    r
                }
                Step::Filter(f) => filter(&self.route, f, &prepared),
                Step::Transform(ops) => {
                    transform::apply(&self.route, ops, &mut prepared, templates)
                }
            };
            traces.push(StepTrace {
                duration_ms: millis(clock.elapsed()),
                ..trace
            });
            if let Some(end) = stop {
                return Run { end, traces };
            }
        }
        Run {
            end: End::Go(prepared),
            traces,
        }
    }

    async fn enrich(
        &self,
        s: &EnrichSettings,
        lookup: &Lookup,
        prepared: &mut Prepared,
        templates: &TemplateSet,
    ) -> (StepTrace, Option<End>) {
        let mut trace = trace("enrich", Some(s.name.clone()));
        let request = {
            let extra = prepared.extra();
            render_request(s, &prepared.event, &extra, templates)
        };
        let request = match request {
            Ok(r) => r,
            Err(message) => {
                let message = format!("route `{}`, enrichment `{}`: {message}", self.route, s.name);
                trace.outcome = StepOutcome::Failed;
                trace.detail = Some(message.clone());
                return (trace, Some(End::Failed(SendError::final_error(message))));
            }
        };
        match lookup.call(&request).await {
            Ok(answer) => {
                trace.outcome = if answer.cached {
                    StepOutcome::Cached
                } else {
                    StepOutcome::Ok
                };
                trace.answered_by = answer.answered_by;
                trace.output = Some(excerpt(&answer.value.to_string()));
                if !answer.tried.is_empty() {
                    trace.detail = Some(format!(
                        "failed before the answer: {}",
                        answer.tried.join("; ")
                    ));
                }
                prepared
                    .bindings
                    .push((s.name.clone(), Value::clone(&answer.value)));
                (trace, None)
            }
            Err(failure) => {
                let cause = &failure.error;
                let message = format!("enrichment `{}`: {}", s.name, cause.message);
                trace.detail = Some(if failure.tried.len() > 1 {
                    format!("{message} (tried: {})", failure.tried.join("; "))
                } else {
                    message.clone()
                });
                trace.answered_by = cause.status_code.map(|c| format!("HTTP {c}"));
                if s.on_error == OnError::Continue {
                    trace.outcome = StepOutcome::Continued;
                    prepared.bindings.push((s.name.clone(), Value::Null));
                    return (trace, None);
                }
                trace.outcome = StepOutcome::Failed;
                let mut err =
                    SendError::retryable(message).with_excerpt(cause.response_excerpt.clone());
                err.kind = cause.kind;
                err.status_code = cause.status_code;
                if matches!(err.kind, SendErrorKind::Final) {
                    tracing::warn!(route_id = %self.route, step = %s.name, error = %err, "enrichment failed for good");
                }
                (trace, Some(End::Failed(err)))
            }
        }
    }
}

fn filter(route: &str, f: &Filter, prepared: &Prepared) -> (StepTrace, Option<End>) {
    let mut t = trace("filter", Some(f.source().to_owned()));
    match f.matches(&prepared.event, &prepared.extra()) {
        Ok(true) => {
            t.output = Some("true".to_owned());
            (t, None)
        }
        Ok(false) => {
            t.outcome = StepOutcome::Filtered;
            t.output = Some("false".to_owned());
            (t, Some(End::Filtered))
        }
        Err(e) => {
            let message = format!("route `{route}`: filter step: {e}");
            t.outcome = StepOutcome::Failed;
            t.detail = Some(message.clone());
            (t, Some(End::Failed(SendError::final_error(message))))
        }
    }
}

fn render_request(
    s: &EnrichSettings,
    event: &Event,
    extra: &[(&str, &Value)],
    templates: &TemplateSet,
) -> Result<LookupRequest, String> {
    let mut urls = Vec::with_capacity(s.urls.len());
    for name in &s.urls {
        let url = templates
            .render(name, event, extra)
            .map_err(|e| format!("cannot render the URL: {e}"))?;
        urls.push(url.trim().to_owned());
    }
    let body = match &s.body {
        None => None,
        Some(name) => {
            let body = templates
                .render(name, event, extra)
                .map_err(|e| format!("cannot render the body: {e}"))?;
            if s.content_type.contains("json") {
                serde_json::from_str::<serde::de::IgnoredAny>(&body)
                    .map_err(|e| format!("the rendered body is not valid JSON ({e})"))?;
            }
            Some(body)
        }
    };
    Ok(LookupRequest { urls, body })
}

pub(crate) fn trace(step: &str, name: Option<String>) -> StepTrace {
    StepTrace {
        step: step.to_owned(),
        name,
        outcome: StepOutcome::Ok,
        duration_ms: 0,
        answered_by: None,
        output: None,
        detail: None,
    }
}

/// The start of `text`, cut at a character boundary.
pub(crate) fn excerpt(text: &str) -> String {
    if text.len() <= OUTPUT_LIMIT {
        return text.to_owned();
    }
    let mut end = OUTPUT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
