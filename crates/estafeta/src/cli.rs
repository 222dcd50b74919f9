//! The command line (clap): `serve`, `check`, `events`, `deliveries`, `sources`,
//! `schedules`, `replay`, `bench`, `secret`, `secrets`, `credentials`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Estafeta: capture, route and deliver events with retries, dead letters and replay.
#[derive(Debug, Parser)]
#[command(name = "estafeta", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: API, ingest and delivery engine (no config = embedded defaults).
    Serve {
        /// Configuration file (YAML).
        #[arg(long, short, env = "ESTAFETA_CONFIG")]
        config: Option<PathBuf>,
        /// Listen on this address instead of `server.listen` (e.g. `0.0.0.0:8080`, or
        /// `127.0.0.1:0` for a free port).
        #[arg(long, env = "ESTAFETA_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Use this storage instead of `storage` (e.g. `sqlite:///var/lib/estafeta/estafeta.db`).
        #[arg(long, env = "ESTAFETA_STORAGE")]
        storage: Option<String>,
    },
    /// Validate a configuration file, its filters and templates, without starting anything.
    Check {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Send, read and follow events on a running server.
    #[command(subcommand)]
    Events(crate::client::EventsCommand),
    /// List, inspect and retry deliveries on a running server.
    #[command(subcommand)]
    Deliveries(crate::client::DeliveriesCommand),
    /// Show the sources of a running server: state, snapshot progress, slot health.
    #[command(subcommand)]
    Sources(crate::sources_cmd::SourcesCommand),
    /// List schedules, run one now, show a schedule's run history.
    #[command(subcommand)]
    Schedules(crate::schedules_cmd::SchedulesCommand),
    /// Delete events or objects on demand (admin token; `--dry-run` first).
    #[command(subcommand)]
    Purge(crate::purge_cmd::PurgeCommand),
    /// Show the audit log of deletions (retention passes and purges; admin token).
    Audit(crate::purge_cmd::AuditArgs),
    /// Send a route's events again from a point in the log.
    Replay(crate::client::ReplayArgs),
    /// Load-test the real server end to end and report throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Helpers for secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Store, list and delete secrets (`${secret:NAME}`); rotate the master key.
    #[command(subcommand)]
    Secrets(crate::secrets_cmd::SecretsCommand),
    /// Create, show, list and delete named credentials.
    #[command(subcommand)]
    Credentials(crate::secrets_cmd::CredentialsCommand),
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Print a new webhook signing secret (`whsec_…`).
    Generate,
}

/// Where a client command finds the server.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Server URL.
    #[arg(
        long,
        env = "ESTAFETA_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) url: String,
    /// API token (defaults to ESTAFETA_TOKEN, then ESTAFETA_ADMIN_TOKEN).
    #[arg(long, env = "ESTAFETA_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            storage,
        } => {
            crate::serve::run(crate::serve::Options {
                config,
                listen,
                storage,
            })
            .await
        }
        Command::Check { config } => Ok(crate::check::run(&config)),
        Command::Events(c) => crate::client::events(c).await,
        Command::Deliveries(c) => crate::client::deliveries(c).await,
        Command::Sources(c) => crate::sources_cmd::run(c).await,
        Command::Schedules(c) => crate::schedules_cmd::run(c).await,
        Command::Purge(c) => crate::purge_cmd::purge(c).await,
        Command::Audit(a) => crate::purge_cmd::audit(a).await,
        Command::Replay(a) => crate::client::replay(a).await,
        Command::Bench(a) => crate::bench::run(a).await,
        Command::Secrets(c) => crate::secrets_cmd::secrets(c).await,
        Command::Credentials(c) => crate::secrets_cmd::credentials(c).await,
        Command::Secret(SecretCommand::Generate) => {
            println!("{}", generate_whsec());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn generate_whsec() -> String {
    use base64::Engine as _;
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}
