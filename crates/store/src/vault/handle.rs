//! [`Vault`]: secrets and credentials over any [`Store`], sealing private fields with the
//! master key on the way in and opening them on the way out; [`Credentials`], the read-only
//! handle providers get; and [`rotate_master_key`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::CredentialType;
use super::crypto::{CryptoError, MasterKey};
use super::record::{VaultKind, VaultRecord};
use super::values::{Credential, CredentialView, SecretInfo, SecretValue};
use crate::{Store, StoreError};

/// The one private field of a secret.
const SECRET_FIELD: &str = "value";

/// Why a vault operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The name is empty, too long, or has characters other than letters, digits, `_`, `-`
    /// and `.`.
    #[error("`{0}` is not a valid name (1–128 letters, digits, `_`, `-` or `.`)")]
    BadName(String),
    /// The fields do not fit the credential type.
    #[error("invalid credential: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The stored record cannot be opened with the key in use, or is malformed.
    #[error("`{name}` cannot be decrypted")]
    Crypto {
        /// The record.
        name: String,
        /// What went wrong.
        #[source]
        source: CryptoError,
    },
    /// The store failed.
    #[error("the store failed")]
    Store(
        #[from]
        #[source]
        StoreError,
    ),
}

/// Secrets and credentials, sealed with the master key at rest.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
    key: Arc<MasterKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("key", &self.key).finish()
    }
}

/// The read-only handle providers use to get a credential by name.
#[derive(Clone, Debug)]
pub struct Credentials(Vault);

impl Credentials {
    /// The credential `name`, decrypted, or `None` when there is none.
    ///
    /// # Errors
    /// The store failed, or the record does not open with the master key in use.
    pub async fn get(&self, name: &str) -> Result<Option<Credential>, VaultError> {
        self.0.credential(name).await
    }
}

fn check_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(VaultError::BadName(name.to_owned()))
    }
}

/// The associated data that binds a sealed value to its place.
fn aad(kind: VaultKind, name: &str, field: &str) -> Vec<u8> {
    format!("estafeta/{}/{name}/{field}", kind.as_str()).into_bytes()
}

fn parse_object(text: &str, name: &str) -> Result<Map<String, Value>, VaultError> {
    serde_json::from_str(text).map_err(|_| VaultError::Crypto {
        name: name.to_owned(),
        source: CryptoError::Tampered,
    })
}

impl Vault {
    /// A vault over `store` sealing with `key`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, key: MasterKey) -> Self {
        Self {
            store,
            key: Arc::new(key),
        }
    }

    /// The handle providers get.
    #[must_use]
    pub fn credentials(&self) -> Credentials {
        Credentials(self.clone())
    }

    /// The id of the master key in use.
    #[must_use]
    pub fn key_id(&self) -> &str {
        self.key.id()
    }

    fn open_all(&self, r: &VaultRecord) -> Result<BTreeMap<String, SecretValue>, VaultError> {
        let crypto = |source| VaultError::Crypto {
            name: r.name.clone(),
            source,
        };
        if r.key_id != self.key.id() {
            return Err(crypto(CryptoError::WrongKey {
                found: r.key_id.clone(),
                expected: self.key.id().to_owned(),
            }));
        }
        let mut out = BTreeMap::new();
        for (field, sealed) in parse_object(&r.sealed, &r.name)? {
            let sealed = sealed
                .as_str()
                .ok_or_else(|| crypto(CryptoError::Tampered))?;
            let plain = self
                .key
                .open(sealed, &aad(r.kind, &r.name, &field))
                .map_err(crypto)?;
            let text = String::from_utf8(plain).map_err(|_| crypto(CryptoError::Tampered))?;
            out.insert(field, SecretValue::new(text));
        }
        Ok(out)
    }

    fn seal_all(
        key: &MasterKey,
        kind: VaultKind,
        name: &str,
        private: &BTreeMap<String, String>,
    ) -> Result<String, VaultError> {
        let mut sealed = Map::new();
        for (field, value) in private {
            let s = key
                .seal(value.as_bytes(), &aad(kind, name, field))
                .map_err(|source| VaultError::Crypto {
                    name: name.to_owned(),
                    source,
                })?;
            sealed.insert(field.clone(), Value::String(s));
        }
        Ok(Value::Object(sealed).to_string())
    }

    async fn put(
        &self,
        kind: VaultKind,
        name: &str,
        credential_type: Option<String>,
        public: Map<String, Value>,
        private: &BTreeMap<String, String>,
    ) -> Result<VaultRecord, VaultError> {
        let now = Utc::now();
        let created_at = self
            .store
            .get_vault_record(kind, name)
            .await?
            .map_or(now, |r| r.created_at);
        let record = VaultRecord {
            kind,
            name: name.to_owned(),
            credential_type,
            public: Value::Object(public).to_string(),
            sealed: Self::seal_all(&self.key, kind, name, private)?,
            key_id: self.key.id().to_owned(),
            created_at,
            updated_at: now,
        };
        self.store.put_vault_record(record.clone()).await?;
        Ok(record)
    }

    /// Stores (creates or replaces) the secret `name`.
    ///
    /// # Errors
    /// A bad name, or the store failed.
    pub async fn put_secret(&self, name: &str, value: &str) -> Result<SecretInfo, VaultError> {
        check_name(name)?;
        let private = BTreeMap::from([(SECRET_FIELD.to_owned(), value.to_owned())]);
        let r = self
            .put(VaultKind::Secret, name, None, Map::new(), &private)
            .await?;
        Ok(info(&r))
    }

    /// The secret `name`, decrypted.
    ///
    /// # Errors
    /// The store failed or the record does not open.
    pub async fn secret(&self, name: &str) -> Result<Option<SecretValue>, VaultError> {
        let Some(r) = self.store.get_vault_record(VaultKind::Secret, name).await? else {
            return Ok(None);
        };
        Ok(self.open_all(&r)?.remove(SECRET_FIELD))
    }

    /// Every secret, decrypted, by name: what `${secret:NAME}` in config resolves from.
    ///
    /// # Errors
    /// The store failed or a record does not open.
    pub async fn all_secrets(&self) -> Result<HashMap<String, SecretValue>, VaultError> {
        let mut out = HashMap::new();
        for r in self
            .store
            .list_vault_records(Some(VaultKind::Secret))
            .await?
        {
            if let Some(v) = self.open_all(&r)?.remove(SECRET_FIELD) {
                out.insert(r.name, v);
            }
        }
        Ok(out)
    }

    /// The secrets' names and times, by name; never their values.
    ///
    /// # Errors
    /// The store failed.
    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>, VaultError> {
        let records = self
            .store
            .list_vault_records(Some(VaultKind::Secret))
            .await?;
        Ok(records.iter().map(info).collect())
    }

    /// Deletes the secret `name`; answers whether it existed.
    ///
    /// # Errors
    /// The store failed.
    pub async fn delete_secret(&self, name: &str) -> Result<bool, VaultError> {
        Ok(self
            .store
            .delete_vault_record(VaultKind::Secret, name)
            .await?)
    }

    /// Stores (creates or replaces) the credential `name` after checking `fields` against
    /// its type. A private field left out keeps its stored value when the type is unchanged.
    ///
    /// # Errors
    /// A bad name, fields that do not fit the type, or the store failed.
    pub async fn put_credential(
        &self,
        name: &str,
        kind: CredentialType,
        fields: &Map<String, Value>,
    ) -> Result<CredentialView, VaultError> {
        check_name(name)?;
        let existing = match self
            .store
            .get_vault_record(VaultKind::Credential, name)
            .await?
        {
            Some(r) if r.credential_type.as_deref() == Some(kind.as_str()) => self.open_all(&r)?,
            _ => BTreeMap::new(),
        };
        let (public, mut private) = kind
            .check(fields, &|f| existing.contains_key(f))
            .map_err(VaultError::Invalid)?;
        for (field, value) in existing {
            private
                .entry(field)
                .or_insert_with(|| value.expose().to_owned());
        }
        let r = self
            .put(
                VaultKind::Credential,
                name,
                Some(kind.as_str().to_owned()),
                public,
                &private,
            )
            .await?;
        view(&r)
    }

    /// The credential `name`, decrypted.
    ///
    /// # Errors
    /// The store failed or the record does not open.
    pub async fn credential(&self, name: &str) -> Result<Option<Credential>, VaultError> {
        let Some(r) = self
            .store
            .get_vault_record(VaultKind::Credential, name)
            .await?
        else {
            return Ok(None);
        };
        let kind = r
            .credential_type
            .as_deref()
            .and_then(|t| t.parse::<CredentialType>().ok())
            .ok_or_else(|| VaultError::Crypto {
                name: r.name.clone(),
                source: CryptoError::Tampered,
            })?;
        Ok(Some(Credential {
            name: r.name.clone(),
            kind,
            public: parse_object(&r.public, &r.name)?,
            private: self.open_all(&r)?,
        }))
    }

    /// The credential `name` as the API shows it.
    ///
    /// # Errors
    /// The store failed.
    pub async fn credential_view(&self, name: &str) -> Result<Option<CredentialView>, VaultError> {
        self.store
            .get_vault_record(VaultKind::Credential, name)
            .await?
            .map(|r| view(&r))
            .transpose()
    }

    /// Every credential as the API shows it, by name.
    ///
    /// # Errors
    /// The store failed.
    pub async fn list_credentials(&self) -> Result<Vec<CredentialView>, VaultError> {
        let records = self
            .store
            .list_vault_records(Some(VaultKind::Credential))
            .await?;
        records.iter().map(view).collect()
    }

    /// Deletes the credential `name`; answers whether it existed.
    ///
    /// # Errors
    /// The store failed.
    pub async fn delete_credential(&self, name: &str) -> Result<bool, VaultError> {
        Ok(self
            .store
            .delete_vault_record(VaultKind::Credential, name)
            .await?)
    }
}

fn info(r: &VaultRecord) -> SecretInfo {
    SecretInfo {
        name: r.name.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

fn view(r: &VaultRecord) -> Result<CredentialView, VaultError> {
    let mut fields = parse_object(&r.public, &r.name)?;
    for field in parse_object(&r.sealed, &r.name)?.keys() {
        fields.insert(field.clone(), json!({ "set": true }));
    }
    Ok(CredentialView {
        name: r.name.clone(),
        kind: r.credential_type.clone().unwrap_or_default(),
        fields,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// Re-seals every secret and credential from `old` to `new` in one transaction; answers
/// how many records changed. Records already sealed with `new` are left as they are, so an
/// interrupted rotation can be run again.
///
/// # Errors
/// A record sealed with a third key, one that does not open, or the store failed: then
/// nothing changed.
pub async fn rotate_master_key(
    store: Arc<dyn Store>,
    old: MasterKey,
    new: MasterKey,
) -> Result<usize, VaultError> {
    let reader = Vault::new(Arc::clone(&store), old);
    let mut changed = Vec::new();
    for r in store.list_vault_records(None).await? {
        if r.key_id == new.id() {
            continue;
        }
        let private: BTreeMap<String, String> = reader
            .open_all(&r)?
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_owned()))
            .collect();
        let sealed = Vault::seal_all(&new, r.kind, &r.name, &private)?;
        changed.push(VaultRecord {
            sealed,
            key_id: new.id().to_owned(),
            ..r
        });
    }
    let n = changed.len();
    if n > 0 {
        store.replace_vault_records(changed).await?;
    }
    Ok(n)
}
