//! A NATS server with JetStream of the test's own, on a free loopback port with its store in
//! a temporary directory, that the test can kill (SIGKILL) and start again on the same port
//! and store — to test reconnection without touching the machine's shared server.
//!
//! The program is `ESTAFETA_NATS_SERVER` (a path), else `nats-server` on `PATH`, else
//! `/usr/sbin/nats-server`. When it is nowhere, [`NatsServer::start`] prints a notice and
//! returns `None`, so the test can skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or killed) private NATS server.
pub struct NatsServer {
    program: PathBuf,
    dir: tempfile_dir::Dir,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port; `None` (after a notice) when none is installed.
    ///
    /// # Panics
    /// When it does not listen within 10 s.
    pub async fn start() -> Option<Self> {
        let Some(program) = program() else {
            eprintln!("SKIPPED: `nats-server` is not installed; this test needs its own server");
            return None;
        };
        let mut server = Self {
            program,
            dir: tempfile_dir::Dir::new("estafeta-nats"),
            port: crate::local::free_port(),
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    /// The server's address, `nats://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL); JetStream data already written stays on disk.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and store.
    ///
    /// # Panics
    /// When it cannot be started or does not listen within 10 s.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.program)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on port {} within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ESTAFETA_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/sbin/nats-server");
        p.is_file().then_some(p)
    })
}

/// A temporary directory removed on drop (the testkit has no tempfile dependency).
mod tempfile_dir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);

    pub(super) struct Dir(PathBuf);

    impl Dir {
        pub(super) fn new(prefix: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "{prefix}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).expect("temporary directory");
            Self(path)
        }

        pub(super) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
