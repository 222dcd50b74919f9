//! Starts the real `estafeta` binary for end-to-end tests and talks to it over HTTP.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const TOKEN: &str = "e2e-admin-token-0123456789";
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A running server.
pub struct Server {
    child: Child,
    pub url: String,
    stderr_log: PathBuf,
    http: reqwest::Client,
}

impl Server {
    /// Writes `config` (the `storage` and `server.listen` lines are added) into `dir` and
    /// starts the server, waiting for it to listen.
    pub async fn start(dir: &Path, config: &str) -> Self {
        let cfg = format!(
            "server:\n  listen: 127.0.0.1:0\n  shutdown_grace: 5s\nstorage: sqlite://{}/estafeta.db\n{config}",
            dir.display()
        );
        let cfg_path = dir.join("estafeta.yaml");
        std::fs::write(&cfg_path, cfg).expect("write config");
        Self::start_with_file(dir, &cfg_path).await
    }

    pub async fn start_with_file(dir: &Path, cfg_path: &Path) -> Self {
        Self::start_with_args(dir, cfg_path, &[], &[]).await
    }

    /// Starts with extra command-line arguments and environment variables.
    pub async fn start_with_args(
        dir: &Path,
        cfg_path: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        estafeta_destinations::install_crypto_provider();
        let stderr_log = dir.join(format!(
            "stderr-{}.log",
            std::process::id() as u64 * 1000 + rand_u16() as u64
        ));
        let stderr = std::fs::File::create(&stderr_log).expect("stderr log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_estafeta"))
            .arg("serve")
            .arg("--config")
            .arg(cfg_path)
            .args(args)
            .envs(envs.iter().copied())
            .env("ESTAFETA_ADMIN_TOKEN", TOKEN)
            .env("ESTAFETA_SECRET_HOOK", WHSEC)
            .env("ESTAFETA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn estafeta");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(u) = line.strip_prefix("estafeta listening on ") {
                    return Some(u.to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "server did not start:\n{}",
                std::fs::read_to_string(&stderr_log).unwrap_or_default()
            )
        });
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            url,
            stderr_log,
            http: reqwest::Client::new(),
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL, no chance to clean up.
    pub async fn kill9(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status().await;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("server did not stop within 30 s of SIGTERM")
            .expect("wait")
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    pub async fn post_event(&self, ev: &Value) -> reqwest::Response {
        self.req(reqwest::Method::POST, "/v1/events")
            .header("content-type", "application/cloudevents+json")
            .body(ev.to_string())
            .send()
            .await
            .expect("post")
    }

    pub async fn post_batch(&self, events: &[Value]) -> reqwest::Response {
        self.req(reqwest::Method::POST, "/v1/events")
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_string(events).expect("json"))
            .send()
            .await
            .expect("post")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("get");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("json")
    }

    /// Waits until `GET path` satisfies `pred`, polling with a bound.
    pub async fn wait_json(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = std::time::Instant::now();
        loop {
            let v = self.get_json(path).await;
            if pred(&v) {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting on {path}; last answer: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() % 65_521) as u16
}

pub fn event(id: &str, ty: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "e2e", "type": ty, "data": data})
}

/// A destination block for a webhook at `url`.
pub fn webhook(id: &str, url: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    kind: webhook\n    url: {url}\n    secret: ${{secret:hook}}\n    allow_private_networks: true\n    timeout: 5s\n{extra}"
    )
}

/// A config with one route (`r`, every event) to one webhook `hook` at `url`; `extra` adds
/// lines to the destination.
pub fn one_route(url: &str, extra: &str) -> String {
    format!(
        "routes:\n  - id: r\n    to: [{{destination: hook}}]\ndestinations:\n{}",
        webhook("hook", url, extra)
    )
}
