//! The server under test: writes a one-route, one-webhook config into a temporary data
//! directory, spawns `estafeta serve` as a child, waits for its "listening" line and stops
//! it with SIGTERM. Its stderr is kept (last lines) to explain a failed start.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How long the server may take to print its "listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to exit after SIGTERM (its own grace is 10 s by default).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the server's stderr kept for error messages.
const STDERR_LINES: usize = 40;
const LISTENING: &str = "estafeta listening on ";

/// What the spawned server is configured with.
#[derive(Debug, Clone)]
pub(super) struct ServerSpec {
    pub(super) binary: PathBuf,
    pub(super) token: String,
    pub(super) receiver_url: String,
    pub(super) dest_concurrency: usize,
    /// `max_events` per webhook request; `None` = one event per request.
    pub(super) dest_batch: Option<usize>,
    pub(super) keep_data: bool,
    /// A `sources:` entry (YAML, id `pg`) to route from instead of HTTP ingest.
    pub(super) source_yaml: Option<String>,
    /// Whether the route matches the source's events (`false`: they are only stored).
    pub(super) deliver: bool,
    /// The route's `steps:` block (YAML, indented as a key of the route), if any.
    pub(super) route_steps: Option<String>,
    /// The route target's `template`, if any (default: the structured CloudEvent).
    pub(super) route_template: Option<String>,
    /// A `destinations:` entry (YAML, id `bench-receiver`) to deliver to instead of the
    /// bench's webhook receiver.
    pub(super) destination_yaml: Option<String>,
}

impl ServerSpec {
    /// A server whose one route takes the events of a database source (the `sources:`
    /// entry `source_yaml`, id `pg`) to the bench receiver in webhook batches (500 unless
    /// `--dest-batch` says otherwise); with `deliver: false` they are only stored.
    pub(super) fn with_source(
        args: &super::BenchArgs,
        binary: PathBuf,
        token: String,
        receiver_url: String,
        source_yaml: String,
        deliver: bool,
    ) -> Self {
        Self {
            binary,
            token,
            receiver_url,
            dest_concurrency: usize::from(args.dest_concurrency),
            dest_batch: Some(if args.dest_batch > 1 {
                args.dest_batch
            } else {
                500
            }),
            keep_data: args.keep_data,
            source_yaml: Some(source_yaml),
            deliver,
            route_steps: None,
            route_template: None,
            destination_yaml: None,
        }
    }
}

/// A running `estafeta serve` child.
#[derive(Debug)]
pub(super) struct ServerProcess {
    child: Child,
    pid: u32,
    base_url: String,
    data_dir: Option<tempfile::TempDir>,
    kept_dir: Option<PathBuf>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// The YAML config for the bench: one http route `bench.*` → one signed webhook.
fn config_yaml(spec: &ServerSpec, db_path: &Path, secret: &str) -> anyhow::Result<String> {
    let quote = |s: &str| serde_json::to_string(s).context("quoting a config value");
    let storage = quote(&format!("sqlite://{}", db_path.display()))?;
    let url = quote(&spec.receiver_url)?;
    let batch = spec.dest_batch.map_or(String::new(), |n| {
        format!("    batch: {{ max_events: {n}, max_wait: 5ms }}\n")
    });
    let (sources, from, pattern) = match &spec.source_yaml {
        Some(y) => (
            format!("sources:\n{y}"),
            "pg",
            if spec.deliver {
                "*"
            } else {
                "no.event.has.this.type"
            },
        ),
        None => (String::new(), "http", "bench.*"),
    };
    let steps = spec.route_steps.as_deref().unwrap_or_default();
    let destination = match &spec.destination_yaml {
        Some(y) => y.clone(),
        None => format!(
            "  - id: bench-receiver\n    kind: webhook\n    url: {url}\n    secret: {secret}\n\
             \x20   allow_private_networks: true\n    timeout: 10s\n    concurrency: {conc}\n{batch}\
             \x20   retry:\n      schedule: [0s, 100ms, 500ms, 1s, 2s, 5s]\n",
            secret = quote(secret)?,
            conc = spec.dest_concurrency,
        ),
    };
    let template = match &spec.route_template {
        Some(t) => format!("        template: {}\n", quote(t)?),
        None => String::new(),
    };
    Ok(format!(
        "# Written by `estafeta bench`.\n\
         server:\n  listen: 127.0.0.1:0\n\
         storage: {storage}\n\
         {sources}\
         routes:\n  - id: bench\n    from: {from}\n    match: \"{pattern}\"\n{steps}    to:\n      - destination: bench-receiver\n{template}\
         destinations:\n{destination}",
    ))
}

fn random_whsec() -> String {
    use base64::Engine as _;
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

impl ServerProcess {
    /// Writes the config, starts the server and waits until it listens.
    pub(super) async fn spawn(spec: &ServerSpec) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("estafeta-bench-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let config_path = dir.path().join("bench.yaml");
        let yaml = config_yaml(spec, &dir.path().join("estafeta.db"), &random_whsec())?;
        std::fs::write(&config_path, yaml)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut child = Command::new(&spec.binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("ESTAFETA_ADMIN_TOKEN", &spec.token)
            .env_remove("ESTAFETA_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{} serve`", spec.binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            tokio::spawn(keep_tail(err, Arc::clone(&stderr_tail)));
        }
        let stdout = child
            .stdout
            .take()
            .context("no stdout pipe to the server")?;
        let (data_dir, kept_dir) = if spec.keep_data {
            (None, Some(dir.keep()))
        } else {
            (Some(dir), None)
        };
        let mut server = Self {
            child,
            pid,
            base_url: String::new(),
            data_dir,
            kept_dir,
            stderr_tail,
        };
        match tokio::time::timeout(START_TIMEOUT, wait_listening(stdout)).await {
            Ok(Ok(addr)) => {
                server.base_url = format!("http://{addr}");
                Ok(server)
            }
            Ok(Err(e)) => Err(server.failed(e).await),
            Err(_) => {
                let e = anyhow::anyhow!("no \"listening\" line within {START_TIMEOUT:?}");
                Err(server.failed(e).await)
            }
        }
    }

    /// Explains a failed start with the server's exit status and last stderr lines.
    async fn failed(&mut self, cause: anyhow::Error) -> anyhow::Error {
        let _ = self.child.start_kill();
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        // Give the stderr reader a moment to take the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = match status {
            Ok(Ok(s)) => s.to_string(),
            _ => "unknown".to_owned(),
        };
        anyhow::anyhow!(
            "the server did not start ({cause:#}; exit: {status}). Its last stderr lines:\n{}",
            self.stderr_tail()
        )
    }

    /// `http://ADDR` of the API.
    pub(super) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The child's process id.
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU time the server has used so far.
    pub(super) fn cpu_time(&self) -> Option<Duration> {
        super::procfs::cpu_time(
            super::procfs::Pid::Other(self.pid),
            super::procfs::ticks_per_sec(),
        )
    }

    /// Its highest resident memory so far, in bytes.
    pub(super) fn peak_rss(&self) -> Option<u64> {
        super::procfs::memory(super::procfs::Pid::Other(self.pid)).map(|m| m.peak)
    }

    /// The exit status, when the server has already exited.
    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The data directory, when it is kept after the run.
    pub(super) fn kept_dir(&self) -> Option<&Path> {
        self.kept_dir.as_deref()
    }

    /// The last lines the server wrote to stderr.
    pub(super) fn stderr_tail(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if tail.is_empty() {
            return "  (nothing)\n".to_owned();
        }
        tail.iter().map(|l| format!("  | {l}\n")).collect()
    }

    /// Sends SIGTERM and waits for a clean exit (SIGKILL after `STOP_TIMEOUT`).
    pub(super) async fn stop(mut self) -> anyhow::Result<()> {
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !term.is_ok_and(|s| s.success()) {
            let _ = self.child.start_kill();
        }
        let status = match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(s) => s.context("waiting for the server to exit")?,
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                bail!("the server did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it")
            }
        };
        drop(self.data_dir.take());
        if !status.success() {
            bail!(
                "the server exited with {status}. Its last stderr lines:\n{}",
                self.stderr_tail()
            );
        }
        Ok(())
    }
}

async fn wait_listening(stdout: impl AsyncRead + Unpin + Send + 'static) -> anyhow::Result<String> {
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines
        .next_line()
        .await
        .context("reading the server's stdout")?
    {
        if let Some(url) = line.trim().strip_prefix(LISTENING) {
            let addr = url.trim_start_matches("http://").to_owned();
            // Keep draining stdout so the server never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(addr);
        }
    }
    bail!("the server closed its stdout before it was listening")
}

async fn keep_tail(stderr: impl AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if t.len() == STDERR_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// Writes the config for `spec` and loads it as `estafeta serve` would.
#[cfg(test)]
pub(super) fn check_config(spec: &ServerSpec) -> Result<(), String> {
    let yaml = config_yaml(spec, Path::new("/tmp/x y/estafeta.db"), &random_whsec())
        .map_err(|e| format!("{e:#}"))?;
    let lookup = estafeta_config::ProcessLookup::from_env();
    estafeta_config::load_str(&yaml, "bench.yaml", &lookup)
        .map(|_| ())
        .map_err(|e| format!("{yaml}\n{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_valid() {
        let spec = ServerSpec {
            binary: PathBuf::from("estafeta"),
            token: "t".repeat(20),
            receiver_url: "http://127.0.0.1:9/hook".to_owned(),
            dest_concurrency: 64,
            dest_batch: Some(100),
            keep_data: false,
            source_yaml: None,
            deliver: true,
            route_steps: None,
            route_template: None,
            destination_yaml: None,
        };
        check_config(&spec).expect("a valid config");
    }

    #[test]
    fn a_broker_to_broker_config_is_valid() {
        let spec = ServerSpec {
            binary: PathBuf::from("estafeta"),
            token: "t".repeat(20),
            receiver_url: String::new(),
            dest_concurrency: 64,
            dest_batch: None,
            keep_data: false,
            source_yaml: Some(
                "  - id: pg\n    kind: nats\n    url: \"nats://127.0.0.1:4222\"\n    stream: IN\n"
                    .to_owned(),
            ),
            deliver: true,
            route_steps: None,
            route_template: None,
            destination_yaml: Some(
                "  - id: bench-receiver\n    kind: nats\n    subject: out.m\n    concurrency: 256\n"
                    .to_owned(),
            ),
        };
        check_config(&spec).expect("a valid config");
    }
}
