//! Readings from Linux's `/proc`: resident memory (VmRSS, VmHWM) and CPU time, per process
//! and per thread. Elsewhere every reading is `None` and the report says "n/a".

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Memory of a process, in bytes.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(super) struct Memory {
    /// Resident now (VmRSS).
    pub(super) rss: u64,
    /// Highest resident so far (VmHWM).
    pub(super) peak: u64,
}

/// `pid`'s memory, or `None` when `/proc` cannot tell.
pub(super) fn memory(pid: Pid) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.path())).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// A process: ours or a child.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pid {
    /// The bench process itself.
    Current,
    /// Another process.
    Other(u32),
}

impl Pid {
    fn path(self) -> String {
        match self {
            Self::Current => "self".to_owned(),
            Self::Other(pid) => pid.to_string(),
        }
    }
}

/// `(comm, utime + stime in ticks)` from a `stat` file's text.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_whitespace();
    // After `)`: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU time a process has used so far (all threads, user + system).
pub(super) fn cpu_time(pid: Pid, ticks_per_sec: u64) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{}/stat", pid.path())).ok()?;
    parse_stat(&text).map(|(_, t)| ticks_to_duration(t, ticks_per_sec))
}

fn ticks_to_duration(ticks: u64, per_sec: u64) -> Duration {
    Duration::from_millis(ticks.saturating_mul(1000) / per_sec.max(1))
}

/// The CPU ticks of each thread of a process, by thread id: `(name, ticks)`.
pub(super) type ThreadTicks = HashMap<u32, (String, u64)>;

/// A snapshot of every thread's CPU ticks.
pub(super) fn thread_ticks(pid: Pid) -> ThreadTicks {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", pid.path())) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            out.insert(tid, stat);
        }
    }
    out
}

/// CPU time used between two snapshots, summed per thread name, largest first.
pub(super) fn thread_cpu_between(
    before: &ThreadTicks,
    after: &ThreadTicks,
    ticks_per_sec: u64,
) -> Vec<(String, Duration)> {
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (name, ticks)) in after {
        let earlier = before.get(tid).map_or(0, |(_, t)| *t);
        *by_name.entry(name.clone()).or_default() += ticks.saturating_sub(earlier);
    }
    let mut list: Vec<_> = by_name
        .into_iter()
        .filter(|(_, t)| *t > 0)
        .map(|(n, t)| (n, ticks_to_duration(t, ticks_per_sec)))
        .collect();
    list.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    list
}

/// Bytes a process has caused to be written to storage so far (`write_bytes` of
/// `/proc/<pid>/io`).
pub(super) fn disk_write_bytes(pid: Pid) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{}/io", pid.path())).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The whole machine's CPU ticks so far (first line of `/proc/stat`).
#[derive(Debug, Clone, Copy)]
pub(super) struct MachineTicks {
    /// user + nice + system + irq + softirq.
    busy: u64,
    /// Ticks stolen by the hypervisor.
    steal: u64,
}

/// A reading of the machine's CPU ticks.
pub(super) fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(MachineTicks {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        steal: at(7),
    })
}

/// CPU time the machine spent busy, and stolen, between two readings.
pub(super) fn machine_between(
    a: MachineTicks,
    b: MachineTicks,
    ticks_per_sec: u64,
) -> (Duration, Duration) {
    (
        ticks_to_duration(b.busy.saturating_sub(a.busy), ticks_per_sec),
        ticks_to_duration(b.steal.saturating_sub(a.steal), ticks_per_sec),
    )
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 when that fails).
pub(super) fn ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line = "42 (tokio runtime) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0";
        assert_eq!(parse_stat(line), Some(("tokio runtime".to_owned(), 300)));
    }

    #[test]
    fn reads_our_own_process() {
        if cfg!(target_os = "linux") {
            let m = memory(Pid::Current).expect("memory");
            assert!(m.rss > 0 && m.peak >= m.rss);
            assert!(cpu_time(Pid::Current, 100).is_some());
            assert!(!thread_ticks(Pid::Current).is_empty());
            assert!(machine_ticks().is_some());
        }
    }
}
