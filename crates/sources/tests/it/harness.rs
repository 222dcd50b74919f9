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

/// A sink that stores nothing until the test lets appends through with [`Gated::open`].
pub(crate) struct Gated {
    gate: tokio::sync::Semaphore,
    events: Mutex<Vec<Event>>,
}

impl Gated {
    /// A sink that holds every append.
    pub(crate) fn closed() -> Arc<Self> {
        Arc::new(Self {
            gate: tokio::sync::Semaphore::new(0),
            events: Mutex::new(Vec::new()),
        })
    }

    /// Lets `appends` more appends through.
    pub(crate) fn open(&self, appends: usize) {
        self.gate.add_permits(appends);
    }

    /// How many events are stored so far.
    pub(crate) fn stored(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// The events stored so far.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventSink for Gated {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        self.gate.acquire().await.unwrap().forget();
        let ids = events.iter().map(|e| e.id).collect();
        self.events.lock().unwrap().extend(events);
        Ok(ids)
    }

    async fn append_new(&self, events: Vec<Event>) -> Result<Vec<EventId>, SinkError> {
        self.append(events).await
    }
}

/// Starts the sources of a config's `sources:` section over `sink`, with a throw-away store
/// (kept while the returned directory lives).
pub(crate) async fn start_with_sink(
    yaml: &str,
    sink: Arc<dyn EventSink>,
) -> (Sources, tempfile::TempDir) {
    let config = estafeta_config::load_str(
        yaml,
        "test.yaml",
        &estafeta_config::ProcessLookup::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::new(dir.path().join("t.db")))
            .await
            .unwrap(),
    );
    let vault = Vault::new(Arc::clone(&store), MasterKey::generate());
    let sources = Sources::start(&config.sources, sink, store, &vault.credentials());
    (sources, dir)
}
