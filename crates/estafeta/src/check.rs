//! `estafeta check`: parse and validate a configuration file and print every problem.

use std::path::Path;
use std::process::ExitCode;

use estafeta_config::ProcessLookup;

pub(crate) fn run(path: &Path) -> ExitCode {
    match estafeta_config::load_file(path, &ProcessLookup::from_env()) {
        Ok(c) => {
            println!(
                "{}: ok ({} source{}, {} route{}, {} destination{})",
                path.display(),
                c.sources.len(),
                plural(c.sources.len()),
                c.routes.len(),
                plural(c.routes.len()),
                c.destinations.len(),
                plural(c.destinations.len()),
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!("{errors}");
            ExitCode::from(2)
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
