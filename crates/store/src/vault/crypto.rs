//! The master key and the sealing of one value: XChaCha20-Poly1305 with a random 24-byte
//! nonce per value and the value's place (record kind, name and field) as associated data,
//! so a sealed value copied onto another record or field does not open.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use sha2::{Digest, Sha256};

/// The environment variable holding the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "ESTAFETA_MASTER_KEY";
/// The environment variable naming a file that holds the master key.
pub const MASTER_KEY_FILE_ENV: &str = "ESTAFETA_MASTER_KEY_FILE";
/// The key file created in the data directory when no key is configured.
pub const DEFAULT_KEY_FILE: &str = "master.key";

/// Why the master key could not be had, or a value could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key text is not base64 of exactly 32 bytes.
    #[error("the master key from {origin} is not base64 of 32 bytes")]
    BadKey {
        /// Where the key came from (an env var name or a file path).
        origin: String,
    },
    /// The key file cannot be read or written.
    #[error("cannot use the master key file {path}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The value was sealed with another master key.
    #[error("the value was sealed with master key {found}, but the key in use is {expected}")]
    WrongKey {
        /// The key id stored with the value.
        found: String,
        /// The id of the key in use.
        expected: String,
    },
    /// The sealed value is malformed, was changed, or belongs to another place.
    #[error("a sealed value does not open: it was changed, or belongs to another record")]
    Tampered,
}

/// The 32-byte key that seals every private value. `Debug` shows only its id.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; 32],
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// A key from its 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let id = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Self { bytes, id }
    }

    /// A fresh random key.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// A key from its base64 text (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`CryptoError::BadKey`] naming `origin`.
    pub fn from_base64(text: &str, origin: &str) -> Result<Self, CryptoError> {
        let bad = || CryptoError::BadKey {
            origin: origin.to_owned(),
        };
        let raw = STANDARD.decode(text.trim()).map_err(|_| bad())?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| bad())?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads a key file (base64 of 32 bytes).
    ///
    /// # Errors
    /// The file cannot be read, or does not hold a key.
    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let text = std::fs::read_to_string(path).map_err(|source| CryptoError::KeyFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_base64(&text, &path.display().to_string())
    }

    /// The key's base64 text, for writing a key file.
    #[must_use]
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// A short public id of the key (the first 6 bytes of its SHA-256, in hex), stored with
    /// every value it seals.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` for the place `aad`: `base64(nonce || ciphertext || tag)`.
    ///
    /// # Errors
    /// Only if the cipher refuses the input (far beyond any real value's size).
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<String, CryptoError> {
        let cipher = XChaCha20Poly1305::new(&self.bytes.into());
        let mut nonce = [0u8; 24];
        rand::fill(&mut nonce);
        let sealed = cipher
            .encrypt(&nonce.into(), Payload { msg: plain, aad })
            .map_err(|_| CryptoError::Tampered)?;
        let mut out = Vec::with_capacity(24 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// Opens a value sealed by [`MasterKey::seal`] for the same place `aad`.
    ///
    /// # Errors
    /// [`CryptoError::Tampered`] when the text is malformed, was changed, was sealed with
    /// another key or for another place.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let raw = STANDARD.decode(sealed).map_err(|_| CryptoError::Tampered)?;
        if raw.len() < 24 + 16 {
            return Err(CryptoError::Tampered);
        }
        let (nonce, body) = raw.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| CryptoError::Tampered)?;
        let cipher = XChaCha20Poly1305::new(&self.bytes.into());
        cipher
            .decrypt(&nonce.into(), Payload { msg: body, aad })
            .map_err(|_| CryptoError::Tampered)
    }
}

/// Where the master key comes from, in order: `ESTAFETA_MASTER_KEY`, the file named by
/// `ESTAFETA_MASTER_KEY_FILE`, or `<data_dir>/master.key`, created (mode 0600) with a fresh
/// key when it does not exist yet.
///
/// # Errors
/// A configured key is malformed, or the key file cannot be read or created.
pub fn load_master_key(data_dir: &Path) -> Result<MasterKey, CryptoError> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        return MasterKey::from_base64(&text, MASTER_KEY_ENV);
    }
    if let Some(path) = std::env::var_os(MASTER_KEY_FILE_ENV) {
        return MasterKey::from_file(Path::new(&path));
    }
    let path = data_dir.join(DEFAULT_KEY_FILE);
    if path.exists() {
        return MasterKey::from_file(&path);
    }
    let key = MasterKey::generate();
    write_key_file(&path, &key)?;
    tracing::warn!(
        path = %path.display(),
        key_id = key.id(),
        "generated a master key next to the data; back it up and keep it apart from database backups"
    );
    Ok(key)
}

/// Writes a key file readable only by this user; an existing file is not replaced.
///
/// # Errors
/// The file exists or cannot be written.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), CryptoError> {
    use std::io::Write as _;
    let err = |source| CryptoError::KeyFile {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(key.to_base64().as_bytes()).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_the_same_key_and_place() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"hunter2", b"secret/db").expect("seal");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(key.open(&sealed, b"secret/db").expect("open"), b"hunter2");
        // A fresh nonce each time: the same value seals differently.
        assert_ne!(sealed, key.seal(b"hunter2", b"secret/db").expect("seal"));
    }

    #[test]
    fn another_key_does_not_open_it() {
        let sealed = MasterKey::generate().seal(b"v", b"a").expect("seal");
        assert!(matches!(
            MasterKey::generate().open(&sealed, b"a"),
            Err(CryptoError::Tampered)
        ));
    }

    #[test]
    fn a_changed_byte_does_not_open() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"value", b"a").expect("seal");
        let mut raw = STANDARD.decode(&sealed).expect("base64");
        for i in [0, 24, raw.len() - 1] {
            raw[i] ^= 1;
            assert!(key.open(&STANDARD.encode(&raw), b"a").is_err(), "byte {i}");
            raw[i] ^= 1;
        }
        assert!(key.open("not base64!", b"a").is_err());
        assert!(key.open(&STANDARD.encode([0u8; 10]), b"a").is_err());
    }

    #[test]
    fn the_associated_data_binds_the_place() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"value", b"secret/one").expect("seal");
        assert!(key.open(&sealed, b"secret/two").is_err());
    }

    #[test]
    fn keys_parse_from_base64_and_files_and_debug_shows_only_the_id() {
        let key = MasterKey::generate();
        let again = MasterKey::from_base64(&format!(" {}\n", key.to_base64()), "t").expect("k");
        assert_eq!(again.id(), key.id());
        assert!(MasterKey::from_base64("c2hvcnQ=", "t").is_err());
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("k");
        write_key_file(&path, &key).expect("write");
        assert!(write_key_file(&path, &key).is_err(), "never overwrites");
        assert_eq!(MasterKey::from_file(&path).expect("read").id(), key.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let shown = format!("{key:?}");
        assert!(shown.contains(key.id()) && !shown.contains(&key.to_base64()));
    }
}
