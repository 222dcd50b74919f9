//! What a schedule run does: the [`ScheduledJob`] trait, what a run is told about itself
//! ([`RunContext`]), and [`EmitEvent`]. Pulling from a partner API through a provider
//! ([`crate::provider::ProviderJob`]) is the other implementation: it gets the same context
//! (the log to append its records to, the store for its checkpoint, the run's times) and
//! reports how many records it produced.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use estafeta_config::schedule_source::JobSettings;
use estafeta_core::{Event, EventId, ScheduleRunId, TenantId};
use estafeta_store::RunTrigger;
use estafeta_store::vault::Credentials;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::sink::{EventSink, SinkError};

/// One run, as its job sees it.
pub struct RunContext {
    /// The schedule (source) id: the `source_id` of what the run emits.
    pub schedule_id: String,
    /// The run's id.
    pub run_id: ScheduleRunId,
    /// The tick the run stands for (for a manual run: when it was asked for).
    pub scheduled_at: DateTime<Utc>,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// What made the run.
    pub trigger: RunTrigger,
    /// Where the run's events go; `Ok` means they are durable.
    pub sink: Arc<dyn EventSink>,
    /// The store, for a job's checkpoint (`get_cursor`/`put_cursor` under the schedule id).
    pub store: Arc<dyn estafeta_store::Store>,
    /// Cancelled when Estafeta shuts down; a long job stops at a safe point.
    pub cancel: CancellationToken,
}

impl RunContext {
    /// An event of this run: source `/estafeta/schedule/<id>`, subject the schedule id,
    /// `time` the run's start, and the extension attributes `scheduledtime`, `firedtime`,
    /// `runid` and `runtrigger`. Its CloudEvents id is `<schedule>:<tick>` for a tick (so a
    /// tick's event is stored once however often it is emitted) and
    /// `<schedule>:manual:<run id>` for a manual run; `part` tells several events of one run
    /// apart.
    #[must_use]
    pub fn event(&self, ty: &str, data: Option<Value>, part: Option<&str>) -> Event {
        let key = match self.trigger {
            RunTrigger::Manual => format!("manual:{}", self.run_id),
            RunTrigger::Tick | RunTrigger::CatchUp => self
                .scheduled_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        };
        let ce_id = match part {
            Some(p) => format!("{}:{key}:{p}", self.schedule_id),
            None => format!("{}:{key}", self.schedule_id),
        };
        let mut extensions = Map::new();
        let text = |t: &DateTime<Utc>| Value::from(t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        extensions.insert("scheduledtime".into(), text(&self.scheduled_at));
        extensions.insert("firedtime".into(), text(&self.started_at));
        extensions.insert("runid".into(), Value::from(self.run_id.to_string()));
        extensions.insert("runtrigger".into(), Value::from(self.trigger.as_str()));
        // The id is taken after the time, as the store requires.
        let now = Utc::now();
        Event {
            id: EventId::new(),
            tenant: TenantId::default(),
            source_id: self.schedule_id.clone(),
            ce_id,
            ce_source: format!("/estafeta/schedule/{}", self.schedule_id),
            ty: ty.to_owned(),
            subject: Some(self.schedule_id.clone()),
            time: self.started_at,
            datacontenttype: data.as_ref().map(|_| "application/json".to_owned()),
            dataschema: None,
            key: None,
            extensions,
            data,
            data_is_base64: false,
            received_at: now,
        }
    }
}

/// What a finished job produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobOutput {
    /// Records (events) it emitted.
    pub records: u64,
}

/// Why a job failed; the run is recorded as failed with this text (and its causes).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The log could not store the run's events.
    #[error("the run's events could not be stored")]
    Sink(#[source] SinkError),
    /// The job itself failed.
    #[error("{message}")]
    Failed {
        /// What went wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// What one run of a schedule does. A job stores what it produces through
/// [`RunContext::sink`] before it returns `Ok`: the run is recorded as succeeded only after.
#[async_trait]
pub trait ScheduledJob: Send + Sync + 'static {
    /// A short name for logs (`emit`, a provider's id …).
    fn kind(&self) -> &'static str;

    /// Runs once.
    async fn run(&self, run: &RunContext) -> Result<JobOutput, JobError>;
}

/// The job that emits one event per run (`type` and `data` from the config).
#[derive(Debug, Clone)]
pub struct EmitEvent {
    event_type: String,
    data: Option<Value>,
}

#[async_trait]
impl ScheduledJob for EmitEvent {
    fn kind(&self) -> &'static str {
        "emit"
    }

    async fn run(&self, run: &RunContext) -> Result<JobOutput, JobError> {
        let event = run.event(&self.event_type, self.data.clone(), None);
        run.sink.append(vec![event]).await.map_err(JobError::Sink)?;
        Ok(JobOutput { records: 1 })
    }
}

/// A job that could not be built: every run fails with why.
struct Unbuilt {
    message: String,
}

#[async_trait]
impl ScheduledJob for Unbuilt {
    fn kind(&self) -> &'static str {
        "unbuilt"
    }

    async fn run(&self, _run: &RunContext) -> Result<JobOutput, JobError> {
        Err(JobError::Failed {
            message: self.message.clone(),
            source: None,
        })
    }
}

/// The job a schedule's settings describe (the one place a new kind of job is wired in).
pub(crate) fn build(
    schedule_id: &str,
    job: &JobSettings,
    credentials: &Credentials,
) -> Arc<dyn ScheduledJob> {
    match job {
        JobSettings::Provider(p) => {
            match crate::provider::registry::build(schedule_id, p, Some(credentials.clone())) {
                Ok(provider) => Arc::new(crate::provider::ProviderJob::new(provider)),
                Err(e) => {
                    tracing::error!(schedule_id, error = %e, "provider could not be built");
                    Arc::new(Unbuilt {
                        message: e.to_string(),
                    })
                }
            }
        }
        JobSettings::Emit { event_type, data } => Arc::new(EmitEvent {
            event_type: event_type.clone(),
            data: data.clone(),
        }),
    }
}
