//! Envelope encryption of secrets at rest, and the keyring that rotates keys.
//!
//! Every secret is sealed with XChaCha20-Poly1305 under the active master key
//! before it reaches a store. The ciphertext carries the id of the key that
//! sealed it (so keys can rotate: a [`Keyring`] opens each value with the key
//! it names) and is bound by associated data to the row it belongs to (so a
//! ciphertext copied to another app or field fails to open).
//!
//! Layout: `b"v1" | key id (8 bytes) | nonce (24 bytes) | ciphertext+tag`.
//!
//! Rotation, online: a new key goes first in the key file and the old keys
//! stay below it; the running process swaps the new [`KeySet`] into the
//! shared [`Keyring`], new values are sealed under the new key at once, and a
//! store-wide pass [`Keyring::rewrap`]s the old ones. Old keys may leave the
//! file once that pass has finished.
//!
//! Key file: one key per line (64 hex characters), the first one active;
//! blank lines and `#` comments are ignored. A file holding a single key (the
//! format from before rotation) is a key file without older keys.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
/// Re-exported: [`Keyring::open`] returns it, and callers holding key
/// material need it without depending on `zeroize` themselves.
pub use zeroize::Zeroizing;

use crate::secret::Secret;

pub mod aad;
mod files;
mod keyring;

pub use aad::aad;
pub use files::{write_private_file, write_private_file_atomic};
use keyring::read_key_file;
pub use keyring::{KeySet, Keyring};

const VERSION: &[u8; 2] = b"v1";
const KEY_ID_LEN: usize = 8;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = VERSION.len() + KEY_ID_LEN + NONCE_LEN;
/// Plaintext sealed at first start and opened at every start, so a wrong
/// master key is refused before anything is served. It may be followed by
/// the ids of other keys still in use (see [`KeySet::key_check_all_keys`]).
const KEY_CHECK_PLAINTEXT: &[u8] = b"runtime key check";
const KEY_CHECK_AAD: &[u8] = b"runtime/key-check";
/// Written at the top of key files this module writes.
const KEY_FILE_HEADER: &str = "\
# Master keys of the runtime. The first key seals new secrets; the keys below
# it only open secrets sealed before a rotation. Keep them until the server
# has logged that re-encryption finished. Lines are 64 hex characters;
# `#` starts a comment. Create a new active key with `runtime keys rotate`.
";

/// A key id (derived from the key, not secret).
type KeyId = [u8; KEY_ID_LEN];

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

/// A sealed value split into its parts.
struct Sealed<'a> {
    id: &'a [u8],
    nonce: &'a [u8],
    ct: &'a [u8],
}

impl<'a> Sealed<'a> {
    fn parse(sealed: &'a [u8]) -> Result<Self, CryptoError> {
        let (version, rest) = sealed
            .split_at_checked(VERSION.len())
            .ok_or(CryptoError::Malformed)?;
        if version != VERSION {
            return Err(CryptoError::Malformed);
        }
        let (id, rest) = rest
            .split_at_checked(KEY_ID_LEN)
            .ok_or(CryptoError::Malformed)?;
        let (nonce, ct) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(CryptoError::Malformed)?;
        Ok(Self { id, nonce, ct })
    }
}

/// The id (hex) of the key that sealed `sealed`, without opening it. For
/// counting what a rotation still has to re-encrypt.
pub fn sealed_key_id_hex(sealed: &[u8]) -> Result<String, CryptoError> {
    Ok(hex::encode(Sealed::parse(sealed)?.id))
}

/// One master key and its id.
pub struct MasterKey {
    id: KeyId,
    cipher: XChaCha20Poly1305,
    /// The raw key, kept so a key file can be rewritten when rotating
    /// (zeroed on drop; the cipher holds a copy anyway).
    bytes: Zeroizing<[u8; KEY_LEN]>,
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
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let digest = Sha256::new_with_prefix(b"runtime master key id")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(digest.get(..KEY_ID_LEN).unwrap_or(&[0; KEY_ID_LEN]));
        Self {
            id,
            cipher: XChaCha20Poly1305::new(bytes.into()),
            bytes: Zeroizing::new(*bytes),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(bytes.as_mut());
        Self::from_bytes(&bytes)
    }

    /// Parses a key given as 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let raw = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| CryptoError::Key("expected 64 hex characters (32 bytes)".into()))?,
        );
        let bytes: &[u8; KEY_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Key(format!("expected 32 bytes, got {}", raw.len())))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads a key file, or creates one (mode 0600) with a fresh random key.
    /// Used by dev mode only: production refuses to start without a key.
    pub fn load_or_create_file(path: &Path) -> Result<(Self, bool), CryptoError> {
        match read_key_file(path)? {
            Some(text) => Ok((Self::from_hex(&text)?, false)),
            None => {
                let key = Self::generate();
                let text = key.to_hex();
                write_private_file(path, text.as_bytes()).map_err(|e| {
                    CryptoError::Key(format!("cannot create {}: {e}", path.display()))
                })?;
                Ok((key, true))
            }
        }
    }

    /// The key id, as hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes.as_ref()))
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
        let parts = Sealed::parse(sealed)?;
        if parts.id != self.id {
            return Err(CryptoError::UnknownKey(hex::encode(parts.id)));
        }
        self.open_parts(&parts, aad)
    }

    fn open_parts(
        &self,
        parts: &Sealed<'_>,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.cipher
            .decrypt(
                XNonce::from_slice(parts.nonce),
                Payload { msg: parts.ct, aad },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Tampered)
    }

    /// Seals a secret string.
    pub fn seal_secret(&self, secret: &Secret, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal(secret.expose().as_bytes(), aad)
    }

    /// Opens a sealed secret string.
    pub fn open_secret(&self, sealed: &[u8], aad: &[u8]) -> Result<Secret, CryptoError> {
        open_utf8(&self.open(sealed, aad)?)
    }

    /// A value to store at first start; [`MasterKey::verify_check`] proves
    /// later starts use the same key.
    pub fn key_check(&self) -> Result<Vec<u8>, CryptoError> {
        self.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD)
    }

    /// Verifies a stored key check value: it must have been made with this
    /// key, and name no other key as still in use.
    pub fn verify_check(&self, stored: &[u8]) -> Result<(), CryptoError> {
        let opened = self.open(stored, KEY_CHECK_AAD)?;
        match check_extra_ids(&opened)?.find(|id| *id != self.id.as_slice()) {
            Some(missing) => Err(CryptoError::UnknownKey(hex::encode(missing))),
            None => Ok(()),
        }
    }
}

fn open_utf8(bytes: &[u8]) -> Result<Secret, CryptoError> {
    let text = std::str::from_utf8(bytes).map_err(|_| CryptoError::Malformed)?;
    Ok(Secret::new(text))
}

/// The ids a key check names besides the key that sealed it.
fn check_extra_ids(opened: &[u8]) -> Result<std::slice::ChunksExact<'_, u8>, CryptoError> {
    let ids = opened
        .strip_prefix(KEY_CHECK_PLAINTEXT)
        .ok_or(CryptoError::Tampered)?;
    let chunks = ids.chunks_exact(KEY_ID_LEN);
    if !chunks.remainder().is_empty() {
        return Err(CryptoError::Malformed);
    }
    Ok(chunks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::fs;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes(&[b; 32])
    }

    fn hex_of(b: u8) -> String {
        hex::encode([b; 32])
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
        // The keyring reads the same single-line file.
        assert_eq!(Keyring::load_file(&path).unwrap().id_hex(), a.id_hex());
    }

    #[test]
    fn keyring_opens_with_the_key_named_in_the_ciphertext() {
        let old = key(1).seal(b"old secret", b"a").unwrap();
        let ring = Keyring::new(KeySet::new(key(2), [key(1)]));
        assert_eq!(ring.active_id_hex(), key(2).id_hex());
        assert_eq!(ring.open(&old, b"a").unwrap().as_slice(), b"old secret");
        let new = ring.seal(b"new secret", b"a").unwrap();
        assert_eq!(sealed_key_id_hex(&new).unwrap(), key(2).id_hex());
        assert!(matches!(ring.open(&new, b"b"), Err(CryptoError::Tampered)));
        let stranger = key(9).seal(b"x", b"a").unwrap();
        match ring.open(&stranger, b"a") {
            Err(CryptoError::UnknownKey(id)) => assert_eq!(id, key(9).id_hex()),
            other => panic!("expected UnknownKey, got {other:?}"),
        }
    }

    #[test]
    fn rewrap_moves_values_to_the_active_key_only_when_needed() {
        let ring = Keyring::new(KeySet::new(key(2), [key(1)]));
        let old = key(1).seal_secret(&Secret::new("tok"), b"a").unwrap();
        assert!(ring.needs_rewrap(&old));
        let new = ring.rewrap(&old, b"a").unwrap().unwrap();
        assert!(!ring.needs_rewrap(&new));
        assert_eq!(sealed_key_id_hex(&new).unwrap(), key(2).id_hex());
        assert_eq!(ring.open_secret(&new, b"a").unwrap().expose(), "tok");
        assert!(ring.rewrap(&new, b"a").unwrap().is_none());
        // The associated data is still checked when rewrapping.
        assert!(matches!(
            ring.rewrap(&old, b"other"),
            Err(CryptoError::Tampered)
        ));
        assert!(!ring.needs_rewrap(b"junk"));
        assert!(matches!(
            ring.rewrap(b"junk", b"a"),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn key_check_refuses_a_key_set_missing_a_key_in_use() {
        // A check made before rotation (MasterKey, legacy format) passes
        // with the rotated set, which still holds that key.
        let legacy = key(1).key_check().unwrap();
        let rotated = KeySet::new(key(2), [key(1)]);
        rotated.verify_check(&legacy).unwrap();
        assert!(KeySet::from(key(2)).verify_check(&legacy).is_err());

        // During re-encryption both keys are in use: dropping either fails.
        let during = rotated.key_check_all_keys().unwrap();
        rotated.verify_check(&during).unwrap();
        match KeySet::from(key(2)).verify_check(&during) {
            Err(CryptoError::UnknownKey(id)) => assert_eq!(id, key(1).id_hex()),
            other => panic!("expected UnknownKey, got {other:?}"),
        }
        assert!(KeySet::from(key(1)).verify_check(&during).is_err());
        assert!(key(2).verify_check(&during).is_err());

        // Once re-encryption finished, the old key may go.
        let after = rotated.key_check().unwrap();
        KeySet::from(key(2)).verify_check(&after).unwrap();
        key(2).verify_check(&after).unwrap();
        assert!(KeySet::from(key(1)).verify_check(&after).is_err());
    }

    #[test]
    fn key_file_lines_comments_and_errors() {
        let text = format!(
            "# rotated\n\n  {}  # active\n{}\n{}\n",
            hex_of(3),
            hex_of(2),
            hex_of(3)
        );
        let set = KeySet::from_hex_lines(&text).unwrap();
        assert_eq!(set.ids_hex(), vec![key(3).id_hex(), key(2).id_hex()]);
        assert!(set.contains(&key(2).id_hex()));
        assert!(!set.contains(&key(4).id_hex()));
        assert!(!set.contains("not hex"));

        let bad = format!("{}\n{}ff\n", hex_of(3), hex_of(2));
        let err = KeySet::from_hex_lines(&bad).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains(&hex_of(2)), "key material in error: {err}");
        assert!(KeySet::from_hex_lines("# nothing\n\n").is_err());
    }

    #[test]
    fn key_file_round_trip_is_atomic_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        fs::write(&path, "old contents").unwrap();
        let set = KeySet::new(key(5), [key(4)]).rotated();
        set.write_file(&path).unwrap();
        let back = KeySet::load_file(&path).unwrap();
        assert_eq!(back.ids_hex(), set.ids_hex());
        assert_eq!(back.ids_hex()[1..], [key(5).id_hex(), key(4).id_hex()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let (ring, created) = Keyring::load_or_create_file(&path).unwrap();
        assert!(!created);
        assert_eq!(ring.id_hex(), set.active_id_hex());
        let (fresh, created) = Keyring::load_or_create_file(&dir.path().join("new")).unwrap();
        assert!(created);
        assert_eq!(
            Keyring::load_file(&dir.path().join("new"))
                .unwrap()
                .id_hex(),
            fresh.id_hex()
        );
    }

    #[test]
    fn debug_prints_ids_never_keys() {
        let set = KeySet::new(key(6), [key(5)]);
        let text = format!("{:?} {:?}", Keyring::new(set), key(6));
        assert!(text.contains(&key(5).id_hex()), "{text}");
        assert!(!text.contains(&hex_of(6)) && !text.contains(&hex_of(5)));
    }
}
