//! A collecting sink, a store for cursors (and a credential vault over it), and a way to start
//! one source from YAML.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use estafeta_core::{Event, EventId};
use estafeta_sources::{EventSink, SinkError, SourceStatus, Sources};
use estafeta_store::vault::{MasterKey, Vault};
use estafeta_store::{SqliteOptions, SqliteStore, Store};
use serde_json::Value;

/// Keeps every event appended, like a durable log would.
#[derive(Default)]
pub(crate) struct Collect {
    pub(crate) events: Mutex<Vec<Event>>,
}

#[async_trait]
impl EventSink for Collect {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        let ids = events.iter().map(|e| e.id).collect();
        self.events.lock().unwrap().extend(events);
        Ok(ids)
    }

    async fn append_new(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        self.append(events).await
    }
}

impl Collect {
    pub(crate) fn all(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub(crate) fn data(&self) -> Vec<Value> {
        self.all().into_iter().filter_map(|e| e.data).collect()
    }
}

pub(crate) struct Harness {
    pub(crate) sink: Arc<Collect>,
    pub(crate) store: Arc<dyn Store>,
    /// The credential store over `store` that providers read named credentials from.
    pub(crate) vault: Vault,
    pub(crate) sources: Option<Sources>,
    _dir: tempfile::TempDir,
    yaml: String,
}

impl Harness {
    /// Starts the sources of a config file's `sources:` section.
    pub(crate) async fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(SqliteOptions::new(dir.path().join("t.db")))
                .await
                .unwrap(),
        );
        let mut h = Self {
            sink: Arc::new(Collect::default()),
            vault: Vault::new(Arc::clone(&store), MasterKey::generate()),
            store,
            sources: None,
            _dir: dir,
            yaml: yaml.to_owned(),
        };
        h.restart_sources();
        h
    }

    /// (Re)starts the sources on the same sink and store.
    pub(crate) fn restart_sources(&mut self) {
        let config = estafeta_config::load_str(
            &self.yaml,
            "test.yaml",
            &estafeta_config::ProcessLookup::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.sources = Some(Sources::start(
            &config.sources,
            Arc::clone(&self.sink) as Arc<dyn EventSink>,
            Arc::clone(&self.store),
            &self.vault.credentials(),
        ));
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(s) = self.sources.take() {
            s.shutdown(Duration::from_secs(10)).await;
        }
    }

    pub(crate) fn status(&self, id: &str) -> SourceStatus {
        self.sources.as_ref().unwrap().board().get(id).unwrap()
    }

    /// Waits until `cond` holds, or panics after `secs` with `what` and the last status.
    pub(crate) async fn wait(&self, secs: u64, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if cond(self) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let statuses: Vec<_> = self
                    .sources
                    .as_ref()
                    .map(|s| s.board().list())
                    .unwrap_or_default();
                panic!(
                    "timed out waiting for {what}; {} events; status: {statuses:#?}",
                    self.sink.all().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
