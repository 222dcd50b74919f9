//! A real S3-compatible server for tests: moto's `moto_server` (PyPI `moto[server]`), one
//! per test on a free loopback port, stopped when the [`Moto`] is dropped.
//!
//! The program is looked for in `ESTAFETA_MOTO_SERVER` (a path), then in the virtual
//! environment `.ci/run` installs (`$HOME/.cache/estafeta/moto/bin/moto_server`), then on
//! `PATH`. When it is nowhere, [`Moto::start`] prints a loud notice and returns `None` so a
//! developer without it can still run the other tests — unless `ESTAFETA_REQUIRE_MOTO=1`
//! (set by `.ci/run`), where it panics: in CI these tests must run.
//!
//! moto accepts any credentials until [`Moto::enforce_auth`] turns its IAM checks on; after
//! that, keys it does not know are refused with `403 InvalidAccessKeyId`, like S3.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `Authorization` header of the helper's own requests (see [`Moto::get`]).
const TEST_AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Moto {
    /// Starts `moto_server` on a free port and waits until it answers; `None` (after a loud
    /// notice) when moto is not installed and `ESTAFETA_REQUIRE_MOTO` is not `1`.
    ///
    /// # Panics
    /// When moto is required but missing, or does not come up within 60 s.
    pub async fn start() -> Option<Self> {
        let Some(program) = program() else {
            let required = std::env::var("ESTAFETA_REQUIRE_MOTO").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "moto_server is required (ESTAFETA_REQUIRE_MOTO=1) but was not found: install it with `pip install 'moto[server]'` or run .ci/run"
            );
            eprintln!(
                "\n==================== SKIPPED: moto_server not found ====================\n\
                 This S3 test needs moto's server: pip install 'moto[server]' (or run .ci/run).\n\
                 Set ESTAFETA_REQUIRE_MOTO=1 to make its absence a failure.\n\
                 =========================================================================\n"
            );
            return None;
        };
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = crate::local::free_port();
            let log = std::env::temp_dir()
                .join(format!("estafeta-moto-{}-{port}.log", std::process::id()));
            let stderr = std::fs::File::create(&log).expect("moto log file");
            let child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            let mut moto = Self { child, port, log };
            if moto.wait_ready(Duration::from_secs(60)).await {
                return Some(moto);
            }
            last_log = std::fs::read_to_string(&moto.log).unwrap_or_default();
            // Dropping stops it; try another port (it may have been taken meanwhile).
        }
        panic!("moto_server did not start:\n{last_log}");
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a bucket (moto takes unsigned requests while auth is not enforced).
    ///
    /// # Panics
    /// When moto does not create it.
    pub async fn create_bucket(&self, name: &str) {
        let (status, body) = self.request("PUT", &format!("/{name}"), b"").await;
        assert_eq!(
            status,
            200,
            "creating bucket {name}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// From now on only credentials moto's IAM knows are accepted; others get 403.
    ///
    /// # Panics
    /// When moto does not take the setting.
    pub async fn enforce_auth(&self) {
        let (status, body) = self.request("POST", "/moto-api/reset-auth", b"0").await;
        assert_eq!(
            status,
            200,
            "enforcing auth: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// An object's bytes, or `None` when there is no such object. (Only while auth is not
    /// enforced: the helper's requests carry a placeholder signature.)
    ///
    /// # Panics
    /// When moto answers anything but 200 or 404.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.request("GET", &format!("/{bucket}/{key}"), b"").await;
        match status {
            200 => Some(body),
            404 => None,
            s => panic!("GET {bucket}/{key}: {s} {}", String::from_utf8_lossy(&body)),
        }
    }

    /// The keys in a bucket, sorted (up to 1000).
    ///
    /// # Panics
    /// When the bucket cannot be listed.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self
            .request("GET", &format!("/{bucket}?list-type=2"), b"")
            .await;
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 200, "listing {bucket}: {text}");
        let mut keys = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("<Key>") {
            let after = &rest[start + 5..];
            let Some(end) = after.find("</Key>") else {
                break;
            };
            keys.push(after[..end].replace("&amp;", "&"));
            rest = &after[end..];
        }
        keys.sort();
        keys
    }

    /// Waits until a key exists under `bucket`; the keys, or empty after `timeout`.
    pub async fn wait_for_keys(&self, bucket: &str, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let keys = self.keys(bucket).await;
            if !keys.is_empty() || start.elapsed() > timeout {
                return keys;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok((200, _)) = self.try_request("GET", "/moto-api/", b"").await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.try_request(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} to moto: {e}"))
    }

    /// One HTTP/1.0 exchange (the server closes the connection after its answer).
    async fn try_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        // moto does not check signatures until auth is enforced, but it refuses anonymous
        // reads of private objects: a well-formed but unsigned SigV4 header makes the
        // request a signed one.
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAuthorization: {TEST_AUTH}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        );
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body).await?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no header end"))?;
        let status = std::str::from_utf8(&answer[..split])
            .ok()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        Ok((status, answer[split + 4..].to_vec()))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Where `moto_server` is, if anywhere.
fn program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ESTAFETA_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/estafeta/moto/bin/moto_server");
        if venv.is_file() {
            return Some(venv);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
}
