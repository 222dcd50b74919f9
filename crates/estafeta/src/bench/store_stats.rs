//! The server's group-commit figures, read from its `/metrics` before and after a scenario:
//! how many commits, how many commands each, how long each took — the evidence for whether
//! the store's single writer is the limit.

use estafeta_core::metric_names::{STORE_BATCH_SIZE, STORE_COMMIT_DURATION};
use reqwest::header::AUTHORIZATION;

/// Cumulative store counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct StoreStats {
    commits: f64,
    commit_secs: f64,
    commands: f64,
}

/// What the store did between two readings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(super) struct StoreActivity {
    /// Transactions committed (one fsync each).
    pub(super) commits: u64,
    /// Mean write commands per commit.
    pub(super) mean_batch: f64,
    /// Mean time per commit, milliseconds.
    pub(super) mean_commit_ms: f64,
    /// Total time spent committing, seconds: the writer's busy time.
    pub(super) busy_secs: f64,
}

impl StoreStats {
    /// The activity from `earlier` to `self`.
    pub(super) fn since(&self, earlier: &Self) -> StoreActivity {
        let commits = (self.commits - earlier.commits).max(0.0);
        let secs = (self.commit_secs - earlier.commit_secs).max(0.0);
        let commands = (self.commands - earlier.commands).max(0.0);
        let per = |v: f64| if commits > 0.0 { v / commits } else { 0.0 };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        StoreActivity {
            commits: commits.round() as u64,
            mean_batch: per(commands),
            mean_commit_ms: per(secs) * 1000.0,
            busy_secs: secs,
        }
    }
}

fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

fn parse(text: &str) -> Option<StoreStats> {
    Some(StoreStats {
        commits: value(text, &format!("{STORE_COMMIT_DURATION}_count"))?,
        commit_secs: value(text, &format!("{STORE_COMMIT_DURATION}_sum"))?,
        commands: value(text, &format!("{STORE_BATCH_SIZE}_sum"))?,
    })
}

/// Reads the figures from `{base_url}/metrics`; `None` when they are not available (no
/// commit yet counts as zero).
pub(super) async fn scrape(
    client: &reqwest::Client,
    base_url: &str,
    token: &str,
) -> Option<StoreStats> {
    let resp = client
        .get(format!("{base_url}/metrics"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let text = resp.text().await.ok()?;
    Some(parse(&text).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_histogram_sums() {
        let text = "# TYPE x histogram\n\
            estafeta_store_commit_duration_seconds_bucket{le=\"0.001\"} 3\n\
            estafeta_store_commit_duration_seconds_sum 0.5\n\
            estafeta_store_commit_duration_seconds_count 100\n\
            estafeta_store_batch_size_sum 2500\n\
            estafeta_store_batch_size_count 100\n";
        let a = parse(text).expect("parsed").since(&StoreStats::default());
        assert_eq!(a.commits, 100);
        assert!((a.mean_batch - 25.0).abs() < 1e-9);
        assert!((a.mean_commit_ms - 5.0).abs() < 1e-9);
    }
}
