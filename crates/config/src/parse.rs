//! Parsing: YAML text into the serde structs of [`crate::model`], with the error's line and
//! column.

use std::path::Path;

use crate::errors::{ConfigError, ConfigErrors};
use crate::model::ConfigFile;
use crate::text::Lookup;
use crate::validate::{Config, validate};

/// Parses YAML text. `file` names the source in errors.
///
/// # Errors
/// The syntax or shape error, with line and column.
pub fn parse_str(text: &str, file: &str) -> Result<ConfigFile, ConfigErrors> {
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_saphyr::from_str::<ConfigFile>(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            line,
            column,
            field: String::new(),
            message: first_line(&e.to_string()),
        }])
    })
}

fn first_line(msg: &str) -> String {
    // serde-saphyr renders a snippet after the message; keep the message itself.
    msg.lines().next().unwrap_or(msg).trim().to_owned()
}

/// Parses and validates text.
///
/// # Errors
/// Every problem found.
pub fn load_str(text: &str, file: &str, lookup: &dyn Lookup) -> Result<Config, ConfigErrors> {
    validate(parse_str(text, file)?, file, lookup)
}

/// Reads, parses and validates a file.
///
/// # Errors
/// The file cannot be read, or every problem found in it.
pub fn load_file(path: &Path, lookup: &dyn Lookup) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    load_str(&text, &name, lookup)
}

/// The embedded defaults (no file).
///
/// # Errors
/// Only if the environment makes the defaults invalid (it cannot today).
pub fn defaults(lookup: &dyn Lookup) -> Result<Config, ConfigErrors> {
    validate(ConfigFile::default(), "<defaults>", lookup)
}
