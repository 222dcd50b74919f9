//! What the [`Store`](crate::Store) keeps for a secret or a credential: public fields as JSON,
//! private fields sealed, the id of the master key that sealed them, and timestamps. The
//! store never sees a private value in the clear.

use chrono::{DateTime, Utc};

/// Which collection a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VaultKind {
    /// A named secret (`${secret:NAME}`): one private field, `value`.
    Secret,
    /// A named credential of a declared type.
    Credential,
}

impl VaultKind {
    /// The kind as stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Credential => "credential",
        }
    }

    /// The kind from its stored name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "secret" => Some(Self::Secret),
            "credential" => Some(Self::Credential),
            _ => None,
        }
    }
}

/// One stored secret or credential, private fields sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRecord {
    /// Secret or credential.
    pub kind: VaultKind,
    /// Its name, unique per kind.
    pub name: String,
    /// A credential's type name (`None` for a secret).
    pub credential_type: Option<String>,
    /// Public fields: a JSON object.
    pub public: String,
    /// Private fields: a JSON object of field name → sealed value.
    pub sealed: String,
    /// The id of the master key that sealed every private field.
    pub key_id: String,
    /// When it was first stored (kept by later updates).
    pub created_at: DateTime<Utc>,
    /// When it was last stored.
    pub updated_at: DateTime<Utc>,
}
