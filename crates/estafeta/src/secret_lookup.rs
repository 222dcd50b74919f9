//! How `serve` resolves `${secret:NAME}`: from the secrets stored in the vault first, then
//! from the environment and the secrets directory as before. The store's location is itself
//! part of the config, so a first pass (answering any secret with a placeholder) finds it
//! and sets up logging; the config is validated for real once the store is open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use estafeta_config::{Config, ConfigErrors, Lookup, ProcessLookup, StorageSettings};
use estafeta_store::vault::SecretValue;

/// Store first, then `ESTAFETA_SECRET_<NAME>` / `ESTAFETA_SECRETS_DIR`.
pub(crate) struct StoreFirst<'a> {
    pub(crate) stored: &'a HashMap<String, SecretValue>,
    pub(crate) fallback: &'a ProcessLookup,
}

impl Lookup for StoreFirst<'_> {
    fn env(&self, name: &str) -> Option<String> {
        self.fallback.env(name)
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.stored
            .get(name)
            .map(|v| v.expose().to_owned())
            .or_else(|| self.fallback.secret(name))
    }
}

/// The first pass: real environment, every secret defined (its value a placeholder that is
/// never used beyond finding the storage location and the log settings).
pub(crate) struct FirstPass<'a>(pub(crate) &'a ProcessLookup);

/// A value that passes the shape checks secrets get (a webhook secret is `whsec_` + base64).
const PLACEHOLDER: &str = "whsec_cGxhY2Vob2xkZXItcGxhY2Vob2xkZXI=";

impl Lookup for FirstPass<'_> {
    fn env(&self, name: &str) -> Option<String> {
        self.0.env(name)
    }

    fn secret(&self, name: &str) -> Option<String> {
        Some(
            self.0
                .secret(name)
                .unwrap_or_else(|| PLACEHOLDER.to_owned()),
        )
    }
}

/// The config to open the store with. When the first pass fails, the failure may come from a
/// placeholder where a stored secret will go (a whole URL kept as a secret): then the file's
/// `storage` with the embedded defaults is enough to open the store, and the second pass
/// reports whatever is really wrong.
///
/// # Errors
/// The first pass's errors when the file cannot be read or parsed at all.
pub(crate) fn first_pass(path: &Path, lookup: &ProcessLookup) -> Result<Config, ConfigErrors> {
    let errors = match estafeta_config::load_file(path, &FirstPass(lookup)) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Err(errors);
    };
    let Ok(raw) = estafeta_config::parse_str(&text, &path.display().to_string()) else {
        return Err(errors);
    };
    let Ok(mut config) = estafeta_config::defaults(lookup) else {
        return Err(errors);
    };
    if let Some(s) = raw.storage {
        match s.value.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => {
                config.storage = StorageSettings::Sqlite {
                    path: PathBuf::from(p),
                };
            }
            _ => return Err(errors),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_secrets_win_and_the_environment_is_the_fallback() {
        let stored = HashMap::from([("a".to_owned(), SecretValue::new("from-store".into()))]);
        let fallback = ProcessLookup::default();
        let l = StoreFirst {
            stored: &stored,
            fallback: &fallback,
        };
        assert_eq!(l.secret("a").as_deref(), Some("from-store"));
        assert_eq!(l.secret("surely-not-defined-anywhere-8c1f"), None);
        assert!(FirstPass(&fallback).secret("anything").is_some());
    }

    #[test]
    fn a_secret_used_as_a_whole_url_still_finds_the_store() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "storage: sqlite://./elsewhere/e.db\ndestinations:\n  - id: h\n    kind: webhook\n    url: ${secret:hook_url_2f9c}\n",
        )
        .expect("write");
        let c = first_pass(&path, &ProcessLookup::default()).expect("first pass");
        let StorageSettings::Sqlite { path: db } = c.storage;
        assert_eq!(db, PathBuf::from("./elsewhere/e.db"));
        std::fs::write(&path, "storage: [").expect("write");
        assert!(first_pass(&path, &ProcessLookup::default()).is_err());
    }
}
