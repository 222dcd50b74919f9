//! [`ProviderJob`]: a schedule run that pulls through a provider. Each page's events are
//! appended to the log as the page arrives (one event per record), or all at the end (one
//! event per run); the provider's next checkpoint is written to the store only after that,
//! so the cursor never runs ahead of the log.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{PageSink, Provider, ProviderError};
use crate::schedule::{JobError, JobOutput, RunContext, ScheduledJob};

/// The cursor key of a schedule's provider in the store's `cursors` table.
#[must_use]
pub fn cursor_key(schedule_id: &str) -> String {
    format!("provider:{schedule_id}")
}

/// A schedule job that runs a provider.
pub struct ProviderJob {
    provider: Arc<dyn Provider>,
}

impl ProviderJob {
    /// Wraps a provider.
    #[must_use]
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self { provider }
    }
}

/// Appends each page as it comes (or keeps the records for one event at the end).
struct Appender<'a> {
    run: &'a RunContext,
    provider: &'a dyn Provider,
    kept: Vec<Value>,
    emitted: u64,
}

#[async_trait]
impl PageSink for Appender<'_> {
    async fn page(&mut self, records: Vec<Value>) -> Result<(), ProviderError> {
        if self.provider.per_run() {
            self.kept.extend(records);
            return Ok(());
        }
        let n = records.len() as u64;
        let events = self.provider.normalise(self.run, records, self.emitted);
        if !events.is_empty() {
            self.run
                .sink
                .append(events)
                .await
                .map_err(ProviderError::Sink)?;
        }
        self.emitted += n;
        Ok(())
    }
}

fn failed(e: impl std::error::Error + Send + Sync + 'static, message: &str) -> JobError {
    JobError::Failed {
        message: message.to_owned(),
        source: Some(Box::new(e)),
    }
}

#[async_trait]
impl ScheduledJob for ProviderJob {
    fn kind(&self) -> &'static str {
        self.provider.id()
    }

    async fn run(&self, run: &RunContext) -> Result<JobOutput, JobError> {
        let key = cursor_key(&run.schedule_id);
        let checkpoint = run
            .store
            .get_cursor(&key)
            .await
            .map_err(|e| failed(e, "the provider's cursor could not be read"))?;
        let mut out = Appender {
            run,
            provider: self.provider.as_ref(),
            kept: Vec::new(),
            emitted: 0,
        };
        let fetched = self
            .provider
            .fetch(run, checkpoint.as_deref(), &mut out)
            .await
            .map_err(|e| match e {
                ProviderError::Sink(s) => JobError::Sink(s),
                e => failed(e, "the provider's fetch failed"),
            })?;
        if self.provider.per_run() {
            let kept = std::mem::take(&mut out.kept);
            let events = self.provider.normalise(run, kept, 0);
            if !events.is_empty() {
                run.sink.append(events).await.map_err(JobError::Sink)?;
            }
        }
        // Only now, with every event durable, does the cursor move.
        if let Some(next) = &fetched.next_checkpoint
            && checkpoint.as_deref() != Some(next.as_str())
        {
            run.store
                .put_cursor(&key, next)
                .await
                .map_err(|e| failed(e, "the provider's cursor could not be stored"))?;
        }
        tracing::debug!(schedule_id = %run.schedule_id, provider = self.provider.id(), pages = fetched.pages, records = fetched.records, "provider fetch done");
        Ok(JobOutput {
            records: fetched.records,
        })
    }
}
