//! Envelope encryption of secrets at rest.
//!
//! Every secret is sealed with XChaCha20-Poly1305 under the master key before
//! it reaches a store. The ciphertext carries the id of the key that sealed it
//! (so keys can rotate) and is bound by associated data to the row it belongs
//! to (so a ciphertext copied to another app or field fails to open).
//!
//! Layout: `b"v1" | key id (8 bytes) | nonce (24 bytes) | ciphertext+tag`.

use std::fs;
use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::Secret;

const VERSION: &[u8; 2] = b"v1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = VERSION.len() + KEY_ID_LEN + NONCE_LEN;
/// Plaintext sealed at first start and opened at every start, so a wrong
/// master key is refused before anything is served.
const KEY_CHECK_PLAINTEXT: &[u8] = b"runtime key check";
const KEY_CHECK_AAD: &[u8] = b"runtime/key-check";

/// Errors from sealing, opening or loading keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The ciphertext is truncated or has an unknown version.
    #[error("sealed value is malformed")]
    Malformed,
    /// The ciphertext was sealed with a key this process does not hold.
    #[error("sealed with key {0}, which is not loaded; start with that master key")]
    UnknownKey(String),
    /// Authentication failed: wrong key, tampered data, or moved to another row.
    #[error("sealed value failed authentication (wrong key, tampered, or moved between rows)")]
    Tampered,
    /// The master key file or variable is unusable.
    #[error("master key: {0}")]
    Key(String),
}

/// The master key and its id.
pub struct MasterKey {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &hex::encode(self.id))
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// Builds a key from 32 raw bytes. Its id is derived from the key, so the
    /// same key always has the same id and the id reveals nothing usable.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let digest = Sha256::new_with_prefix(b"runtime master key id")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(digest.get(..KEY_ID_LEN).unwrap_or(&[0; KEY_ID_LEN]));
        Self {
            id,
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }

    /// Parses a key given as 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let raw = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| CryptoError::Key("expected 64 hex characters (32 bytes)".into()))?,
        );
        let bytes: &[u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Key(format!("expected 32 bytes, got {}", raw.len())))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads a key file, or creates one (mode 0600) with a fresh random key.
    /// Used by dev mode only: production refuses to start without a key.
    pub fn load_or_create_file(path: &Path) -> Result<(Self, bool), CryptoError> {
        match fs::read_to_string(path) {
            Ok(text) => Ok((Self::from_hex(&text)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(bytes.as_mut());
                let text = Zeroizing::new(hex::encode(bytes.as_ref()));
                write_private_file(path, text.as_bytes()).map_err(|e| {
                    CryptoError::Key(format!("cannot create {}: {e}", path.display()))
                })?;
                Ok((Self::from_bytes(&bytes), true))
            }
            Err(e) => Err(CryptoError::Key(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// The key id, as hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// Seals `plaintext`, binding it to `aad` (which names the row and field).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Malformed)?;
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.extend_from_slice(VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a value sealed by [`MasterKey::seal`] with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (version, rest) = sealed
            .split_at_checked(VERSION.len())
            .ok_or(CryptoError::Malformed)?;
        if version != VERSION {
            return Err(CryptoError::Malformed);
        }
        let (id, rest) = rest
            .split_at_checked(KEY_ID_LEN)
            .ok_or(CryptoError::Malformed)?;
        if id != self.id {
            return Err(CryptoError::UnknownKey(hex::encode(id)));
        }
        let (nonce, ct) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(CryptoError::Malformed)?;
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Tampered)
    }

    /// Seals a secret string.
    pub fn seal_secret(&self, secret: &Secret, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal(secret.expose().as_bytes(), aad)
    }

    /// Opens a sealed secret string.
    pub fn open_secret(&self, sealed: &[u8], aad: &[u8]) -> Result<Secret, CryptoError> {
        let bytes = self.open(sealed, aad)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| CryptoError::Malformed)?;
        Ok(Secret::new(text))
    }

    /// A value to store at first start; [`MasterKey::verify_check`] proves
    /// later starts use the same key.
    pub fn key_check(&self) -> Result<Vec<u8>, CryptoError> {
        self.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD)
    }

    /// Verifies a stored key check value.
    pub fn verify_check(&self, stored: &[u8]) -> Result<(), CryptoError> {
        let opened = self.open(stored, KEY_CHECK_AAD)?;
        if opened.as_slice() == KEY_CHECK_PLAINTEXT {
            Ok(())
        } else {
            Err(CryptoError::Tampered)
        }
    }
}

/// Writes a file readable only by its owner (0600 on Unix), failing if it exists.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Associated data binding a sealed value to its row and field.
pub fn aad(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes(&[b; 32])
    }

    #[test]
    fn round_trip_and_binding() {
        let k = key(7);
        let sealed = k.seal(b"token", b"app\0conn\0access").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"token"));
        assert_eq!(
            k.open(&sealed, b"app\0conn\0access").unwrap().as_slice(),
            b"token"
        );
        assert!(matches!(
            k.open(&sealed, b"app\0other\0access"),
            Err(CryptoError::Tampered)
        ));
    }

    #[test]
    fn wrong_key_is_named_not_tampered() {
        let sealed = key(1).seal(b"x", b"a").unwrap();
        assert!(matches!(
            key(2).open(&sealed, b"a"),
            Err(CryptoError::UnknownKey(_))
        ));
        assert!(key(2).verify_check(&key(1).key_check().unwrap()).is_err());
        key(1).verify_check(&key(1).key_check().unwrap()).unwrap();
    }

    #[test]
    fn tampering_is_detected() {
        let k = key(3);
        let mut sealed = k.seal(b"secret", b"a").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(k.open(&sealed, b"a"), Err(CryptoError::Tampered)));
        assert!(matches!(
            k.open(&sealed[..10], b"a"),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (a, created) = MasterKey::load_or_create_file(&path).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (b, created) = MasterKey::load_or_create_file(&path).unwrap();
        assert!(!created);
        assert_eq!(a.id_hex(), b.id_hex());
    }
}
