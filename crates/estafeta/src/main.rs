//! The `estafeta` binary: parses the command line and hands off to the command. Thin on
//! purpose; the work lives in the library crates.

mod bench;
mod check;
mod cli;
mod client;
mod purge_cmd;
mod schedules_cmd;
mod secret_lookup;
mod secrets_cmd;
mod serve;
mod sources_cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
