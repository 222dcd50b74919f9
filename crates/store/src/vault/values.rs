//! What the vault hands out: values that redact themselves in `Debug` and `Display`, a
//! decrypted [`Credential`] for the one place that uses it, and the public views the API
//! shows.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::CredentialType;

/// A decrypted private value: `Debug` and `Display` print `[redacted]`, and it does not
/// implement `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value.
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

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([redacted])")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A credential with its private fields decrypted, for a provider or destination to use.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: CredentialType,
    /// Public fields (for example `header`, `username`, `token_url`, `scopes`).
    pub public: Map<String, Value>,
    /// Private fields, decrypted (for example `key`, `password`, `client_secret`).
    pub private: BTreeMap<String, SecretValue>,
}

impl Credential {
    /// A public field as a string.
    #[must_use]
    pub fn public_str(&self, field: &str) -> Option<&str> {
        self.public.get(field).and_then(Value::as_str)
    }

    /// A private field.
    #[must_use]
    pub fn private(&self, field: &str) -> Option<&SecretValue> {
        self.private.get(field)
    }
}

/// A secret as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// When it was last stored.
    pub updated_at: DateTime<Utc>,
}

/// A credential as the API shows it: public fields as they are, each private field as
/// `{"set": true}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CredentialView {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Public fields, then `{"set": true}` for each private field that is set.
    pub fields: Map<String, Value>,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// When it was last stored.
    pub updated_at: DateTime<Utc>,
}
