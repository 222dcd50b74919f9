//! `estafeta bench`: drives the real server end to end (see `docs/performance.md`).

use std::process::ExitCode;

use clap::Args;

/// Options of `estafeta bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Events to send.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) events: u64,
}

pub(crate) async fn run(_args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("bench is being written")
}
