//! Strings that may hold `${env:NAME}` and `${secret:NAME}` references, and the `Secret`
//! type that never prints its value.

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A configured string that may contain references; resolved during validation.
#[derive(Debug, Clone)]
pub struct Text(pub Spanned<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Spanned::<String>::deserialize(d).map(Self)
    }
}

impl Text {
    /// The text as written.
    #[must_use]
    pub fn raw(&self) -> &str {
        &self.0.value
    }

    /// 1-based line and column where it was written (0 when unknown).
    #[must_use]
    pub fn position(&self) -> (u64, u64) {
        (self.0.referenced.line(), self.0.referenced.column())
    }
}

/// A value that must not be shown: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one place that must use it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where `${env:…}` and `${secret:…}` values come from.
pub trait Lookup {
    /// An environment variable.
    fn env(&self, name: &str) -> Option<String>;
    /// A named secret.
    fn secret(&self, name: &str) -> Option<String>;
}

/// The process environment; secrets come from `ESTAFETA_SECRET_<NAME>` (name upper-cased,
/// other characters than letters and digits as `_`) or from a file `<secrets_dir>/<name>` when a directory is set.
#[derive(Debug, Default, Clone)]
pub struct ProcessLookup {
    /// Directory of secret files (`ESTAFETA_SECRETS_DIR`).
    pub secrets_dir: Option<std::path::PathBuf>,
}

impl ProcessLookup {
    /// Reads `ESTAFETA_SECRETS_DIR` from the environment.
    #[must_use]
    pub fn from_env() -> Self {
        Self {
            secrets_dir: std::env::var_os("ESTAFETA_SECRETS_DIR").map(Into::into),
        }
    }
}

impl Lookup for ProcessLookup {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn secret(&self, name: &str) -> Option<String> {
        if let Ok(v) = std::env::var(format!("ESTAFETA_SECRET_{}", secret_var_suffix(name))) {
            return Some(v);
        }
        let dir = self.secrets_dir.as_ref()?;
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return None;
        }
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
    }
}

/// The environment variable suffix for a secret: upper-cased, every character other than a
/// letter or digit as `_` (`shop-whsec` → `SHOP_WHSEC`).
fn secret_var_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Why a reference could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// `${env:NAME}` with `NAME` unset.
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// `${secret:NAME}` with no such secret.
    #[error(
        "secret `{0}` is not defined (store it with `estafeta secrets set {0}` on a running server, set ESTAFETA_SECRET_{1}, or put a file named `{0}` in ESTAFETA_SECRETS_DIR)"
    )]
    MissingSecret(String, String),
    /// A malformed reference.
    #[error("malformed reference `{0}`: write `${{env:NAME}}` or `${{secret:NAME}}`")]
    Malformed(String),
}

/// The resolved value, and whether any secret went into it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The value with references replaced.
    pub value: Secret,
    /// True when a `${secret:…}` was used (the value must be treated as secret).
    pub has_secret: bool,
}

/// Replaces every `${env:NAME}` and `${secret:NAME}` in `raw`. `$${` writes a literal `${`.
///
/// # Errors
/// A missing variable or secret, or a malformed reference.
pub fn resolve(raw: &str, lookup: &dyn Lookup) -> Result<Resolved, ResolveError> {
    let mut out = String::with_capacity(raw.len());
    let mut has_secret = false;
    let mut rest = raw;
    while let Some(pos) = rest.find("${") {
        if rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| ResolveError::Malformed(rest[pos..].to_owned()))?;
        let reference = &after[..end];
        let (kind, name) = reference
            .split_once(':')
            .ok_or_else(|| ResolveError::Malformed(format!("${{{reference}}}")))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(ResolveError::Malformed(format!("${{{reference}}}")));
        }
        match kind.trim() {
            "env" => out.push_str(
                &lookup
                    .env(name)
                    .ok_or_else(|| ResolveError::MissingEnv(name.to_owned()))?,
            ),
            "secret" => {
                let v = lookup.secret(name).ok_or_else(|| {
                    ResolveError::MissingSecret(name.to_owned(), secret_var_suffix(name))
                })?;
                has_secret = true;
                out.push_str(&v);
            }
            _ => return Err(ResolveError::Malformed(format!("${{{reference}}}"))),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Resolved {
        value: Secret(out),
        has_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Lookup for Fixed {
        fn env(&self, name: &str) -> Option<String> {
            (name == "HOST").then(|| "example.org".to_owned())
        }
        fn secret(&self, name: &str) -> Option<String> {
            (name == "token").then(|| "s3cr3t".to_owned())
        }
    }

    #[test]
    fn resolves_env_and_secret_references() {
        let r = resolve("https://${env:HOST}/x?t=${secret:token}", &Fixed).unwrap();
        assert_eq!(r.value.expose(), "https://example.org/x?t=s3cr3t");
        assert!(r.has_secret);
        assert_eq!(format!("{:?}", r.value), "Secret([redacted])");
        let r = resolve("price: $${literal}", &Fixed).unwrap();
        assert_eq!(r.value.expose(), "price: ${literal}");
    }

    #[test]
    fn reports_what_is_missing() {
        assert_eq!(
            resolve("${env:NOPE}", &Fixed).unwrap_err(),
            ResolveError::MissingEnv("NOPE".into())
        );
        assert!(
            matches!(resolve("${secret:x-y}", &Fixed), Err(ResolveError::MissingSecret(_, v)) if v == "X_Y")
        );
        assert!(matches!(
            resolve("${env:HOST", &Fixed),
            Err(ResolveError::Malformed(_))
        ));
        assert!(matches!(
            resolve("${vault:a}", &Fixed),
            Err(ResolveError::Malformed(_))
        ));
    }
}
