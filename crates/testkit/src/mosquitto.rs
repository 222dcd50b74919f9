//! A Mosquitto MQTT broker of the test's own, on a free loopback port with persistence in a
//! temporary directory, that the test can kill and start again on the same port (to test
//! reconnection and persistent sessions without touching the machine's shared broker).
//!
//! The program is `mosquitto` on `PATH` or `/usr/sbin/mosquitto`. When it is nowhere,
//! [`Mosquitto::start`] prints a notice and returns `None`, so the test can skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running (or stopped) private Mosquitto.
pub struct Mosquitto {
    program: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker on a free port; `None` (after a notice) when Mosquitto is not
    /// installed.
    ///
    /// # Panics
    /// When it does not listen within 10 s.
    pub async fn start() -> Option<Self> {
        let Some(program) = program() else {
            eprintln!("SKIPPED: `mosquitto` is not installed; this test needs its own broker");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "estafeta-mosquitto-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("mosquitto directory");
        let mut broker = Self {
            program,
            dir,
            port: crate::local::free_port(),
            child: None,
        };
        broker.restart().await;
        Some(broker)
    }

    /// The broker's address, `mqtt://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker at once (SIGKILL): connections drop, nothing is said to clients.
    /// Persisted sessions survive only what Mosquitto had saved; call [`Mosquitto::stop`]
    /// for a clean shutdown that saves them.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker cleanly (SIGTERM), so it writes its persistence file.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port (stopping it first if it runs).
    ///
    /// # Panics
    /// When it does not listen within 10 s.
    pub async fn restart(&mut self) {
        self.stop();
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nuser root\nlog_dest stderr\n",
                self.port,
                self.dir.display()
            ),
        )
        .expect("mosquitto config");
        let log = std::fs::File::create(self.dir.join("mosquitto.log")).expect("mosquitto log");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = Command::new(&self.program)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log.try_clone().expect("mosquitto log")))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
            self.child = Some(child);
            // The port of a killed broker can take a moment to be free again.
            while Instant::now() < deadline {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
                {
                    return;
                }
                if let Some(c) = self.child.as_mut()
                    && matches!(c.try_wait(), Ok(Some(_)))
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.kill();
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on port {}:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn program() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mosquitto"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let sbin = Path::new("/usr/sbin/mosquitto");
        sbin.is_file().then(|| sbin.to_path_buf())
    })
}
