//! Before/after readings around a scenario — CPU of the server (per thread), of the bench
//! process and of the whole machine, the server's disk writes and its store's group
//! commits — turned into the resource-usage part of the report.

use std::time::Duration;

use serde::Serialize;

use super::clock::{between, now_ns};
use super::procfs::{self, MachineTicks, Pid, ThreadTicks};
use super::store_stats::{self, StoreActivity, StoreStats};

/// Where the probe looks.
pub(super) struct Probe {
    /// The server's process id, when it is our child.
    pub(super) pid: Option<u32>,
    pub(super) ticks_per_sec: u64,
    pub(super) base_url: String,
    pub(super) token: String,
    pub(super) client: reqwest::Client,
}

/// Everything read at one moment.
pub(super) struct Snapshot {
    at_ns: u64,
    server_cpu: Option<Duration>,
    threads: ThreadTicks,
    bench_cpu: Option<Duration>,
    machine: Option<MachineTicks>,
    disk: Option<u64>,
    store: Option<StoreStats>,
}

/// What was used between two snapshots.
#[derive(Debug, Default, Serialize)]
pub(super) struct Usage {
    /// CPU cores the server used on average.
    pub(super) server_cpu_cores: Option<f64>,
    /// CPU cores the bench process (generator + receiver) used.
    pub(super) bench_cpu_cores: Option<f64>,
    /// CPU cores the whole machine was busy (user, system, interrupts).
    pub(super) machine_busy_cores: Option<f64>,
    /// Busy cores not explained by the server or the bench: other processes and the
    /// kernel's network work.
    pub(super) other_cpu_cores: Option<f64>,
    /// Cores stolen by the hypervisor.
    pub(super) steal_cores: Option<f64>,
    /// The server's CPU cores by thread name, largest first.
    pub(super) server_threads: Vec<(String, f64)>,
    /// Bytes the server wrote to storage.
    pub(super) server_disk_write_bytes: Option<u64>,
    /// The store's group commits.
    pub(super) store: Option<StoreActivity>,
}

impl Probe {
    /// Reads everything now.
    pub(super) async fn snapshot(&self) -> Snapshot {
        let server = self.pid.map(Pid::Other);
        let store = store_stats::scrape(&self.client, &self.base_url, &self.token).await;
        Snapshot {
            at_ns: now_ns(),
            server_cpu: server.and_then(|p| procfs::cpu_time(p, self.ticks_per_sec)),
            threads: server.map(procfs::thread_ticks).unwrap_or_default(),
            bench_cpu: procfs::cpu_time(Pid::Current, self.ticks_per_sec),
            machine: procfs::machine_ticks(),
            disk: server.and_then(procfs::disk_write_bytes),
            store,
        }
    }

    /// The usage from `a` to `b`.
    pub(super) fn usage(&self, a: &Snapshot, b: &Snapshot) -> Usage {
        let wall = between(a.at_ns, b.at_ns).as_secs_f64();
        if wall <= 0.0 {
            return Usage::default();
        }
        let cores = |x: Option<Duration>, y: Option<Duration>| match (x, y) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x).as_secs_f64() / wall),
            _ => None,
        };
        let server = cores(a.server_cpu, b.server_cpu);
        let bench = cores(a.bench_cpu, b.bench_cpu);
        let (busy, steal) = match (a.machine, b.machine) {
            (Some(x), Some(y)) => {
                let (busy, steal) = procfs::machine_between(x, y, self.ticks_per_sec);
                (
                    Some(busy.as_secs_f64() / wall),
                    Some(steal.as_secs_f64() / wall),
                )
            }
            _ => (None, None),
        };
        let other = busy.map(|m| (m - server.unwrap_or(0.0) - bench.unwrap_or(0.0)).max(0.0));
        let server_threads = procfs::thread_cpu_between(&a.threads, &b.threads, self.ticks_per_sec)
            .into_iter()
            .map(|(name, d)| (name, d.as_secs_f64() / wall))
            .collect();
        Usage {
            server_cpu_cores: server,
            bench_cpu_cores: bench,
            machine_busy_cores: busy,
            other_cpu_cores: other,
            steal_cores: steal,
            server_threads,
            server_disk_write_bytes: a.disk.zip(b.disk).map(|(x, y)| y.saturating_sub(x)),
            store: a.store.zip(b.store).map(|(x, y)| y.since(&x)),
        }
    }
}

/// Busy cores below which the machine counts as quiet.
const QUIET_CORES: f64 = 0.3;

/// Waits, up to `max`, until the machine's other work uses less than `QUIET_CORES` over
/// one second; returns the busy cores last measured (`None` without `/proc/stat`).
pub(super) async fn wait_quiet(max: Duration, ticks_per_sec: u64) -> Option<f64> {
    let deadline = tokio::time::Instant::now() + max;
    let mut announced = false;
    loop {
        let a = procfs::machine_ticks()?;
        let started = now_ns();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b = procfs::machine_ticks()?;
        let (busy, _) = procfs::machine_between(a, b, ticks_per_sec);
        let cores = busy.as_secs_f64() / between(started, now_ns()).as_secs_f64().max(1e-3);
        if cores < QUIET_CORES || tokio::time::Instant::now() >= deadline {
            return Some(cores);
        }
        if !announced {
            eprintln!("  waiting for the machine to quiet down ({cores:.2} cores busy)…");
            announced = true;
        }
    }
}
