//! Secrets and named credentials, encrypted at rest.
//!
//! - [`MasterKey`] ([`crypto`](self::crypto)): XChaCha20-Poly1305, a random nonce per value,
//!   the value's place as associated data; loaded by [`load_master_key`].
//! - [`CredentialType`]: the declared types, their public and private fields, validation.
//! - [`Vault`]: create, read, list and delete over any [`Store`](crate::Store), which only
//!   ever holds sealed private fields ([`VaultRecord`]); [`Credentials`] is the read-only
//!   handle a provider gets; [`rotate_master_key`] re-seals everything in one transaction.

mod credential_types;
mod crypto;
mod handle;
mod record;
mod values;

pub use credential_types::{CheckedFields, CredentialType, FieldSpec};
pub use crypto::{
    CryptoError, DEFAULT_KEY_FILE, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV, MasterKey, load_master_key,
    write_key_file,
};
pub use handle::{Credentials, Vault, VaultError, rotate_master_key};
pub use record::{VaultKind, VaultRecord};
pub use values::{Credential, CredentialView, SecretInfo, SecretValue};
