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

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
/// Re-exported: [`Keyring::open`] returns it, and callers holding key
/// material need it without depending on `zeroize` themselves.
pub use zeroize::Zeroizing;

use crate::secret::Secret;

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

/// An active key, which seals, and older keys, which only open.
///
/// Immutable: a rotation builds a new set and swaps it into the [`Keyring`].
pub struct KeySet {
    active: MasterKey,
    /// Keys of earlier rotations, newest first, none equal to `active`.
    older: Vec<MasterKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("active", &self.active_id_hex())
            .field(
                "older",
                &self.older.iter().map(MasterKey::id_hex).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl From<MasterKey> for KeySet {
    fn from(active: MasterKey) -> Self {
        Self {
            active,
            older: Vec::new(),
        }
    }
}

impl KeySet {
    /// A set sealing with `active` and opening with it and `older`.
    /// Repeated keys are kept once.
    pub fn new(active: MasterKey, older: impl IntoIterator<Item = MasterKey>) -> Self {
        let mut set = Self::from(active);
        for key in older {
            if !set.contains_id(&key.id) {
                set.older.push(key);
            }
        }
        set
    }

    /// Parses key file text: one key per line (64 hex characters), the first
    /// active; blank lines and `#` comments ignored. Errors name the line,
    /// never its content.
    pub fn from_hex_lines(text: &str) -> Result<Self, CryptoError> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let key = MasterKey::from_hex(line).map_err(|e| match e {
                CryptoError::Key(why) => CryptoError::Key(format!("line {}: {why}", number + 1)),
                other => other,
            })?;
            keys.push(key);
        }
        let mut keys = keys.into_iter();
        let active = keys.next().ok_or_else(|| {
            CryptoError::Key("no key found (expected lines of 64 hex characters)".into())
        })?;
        Ok(Self::new(active, keys))
    }

    /// Reads a key file (see [`KeySet::from_hex_lines`]).
    pub fn load_file(path: &Path) -> Result<Self, CryptoError> {
        let text = read_key_file(path)?
            .ok_or_else(|| CryptoError::Key(format!("{} does not exist", path.display())))?;
        Self::parse_file(path, &text)
    }

    fn parse_file(path: &Path, text: &str) -> Result<Self, CryptoError> {
        Self::from_hex_lines(text)
            .map_err(|e| CryptoError::Key(format!("{}: {}", path.display(), inner_message(e))))
    }

    /// Writes this set as a key file, atomically and readable only by its
    /// owner (see [`write_private_file_atomic`]). Replaces an existing file.
    pub fn write_file(&self, path: &Path) -> Result<(), CryptoError> {
        write_private_file_atomic(path, self.to_file_text().as_bytes())
            .map_err(|e| CryptoError::Key(format!("cannot write {}: {e}", path.display())))
    }

    /// The key file text: a header comment, then each key under a comment
    /// giving its id.
    fn to_file_text(&self) -> Zeroizing<String> {
        // Sized up front so the buffer holding keys is never reallocated
        // (a reallocation would leave an unzeroed copy behind).
        let per_key = "# id  (active)\n".len() + 2 * KEY_ID_LEN + 2 * KEY_LEN + 1;
        let mut text = Zeroizing::new(String::with_capacity(
            KEY_FILE_HEADER.len() + per_key * (1 + self.older.len()),
        ));
        text.push_str(KEY_FILE_HEADER);
        for (n, key) in self.keys().enumerate() {
            text.push_str("# id ");
            text.push_str(&key.id_hex());
            text.push_str(if n == 0 { " (active)\n" } else { "\n" });
            text.push_str(&key.to_hex());
            text.push('\n');
        }
        text
    }

    /// This set after a rotation: a fresh random key active, every key of
    /// this set kept after it.
    pub fn rotated(&self) -> Self {
        let previous = self.keys().map(|k| MasterKey::from_bytes(&k.bytes));
        Self::new(MasterKey::generate(), previous)
    }

    /// All keys, the active one first.
    fn keys(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.active).chain(&self.older)
    }

    fn get(&self, id: &[u8]) -> Option<&MasterKey> {
        self.keys().find(|k| k.id.as_slice() == id)
    }

    fn contains_id(&self, id: &[u8]) -> bool {
        self.get(id).is_some()
    }

    /// Whether the set holds the key with this id (hex).
    pub fn contains(&self, id_hex: &str) -> bool {
        hex::decode(id_hex).is_ok_and(|id| self.contains_id(&id))
    }

    /// The active key's id, as hex.
    pub fn active_id_hex(&self) -> String {
        self.active.id_hex()
    }

    /// Every key id, as hex, the active one first.
    pub fn ids_hex(&self) -> Vec<String> {
        self.keys().map(MasterKey::id_hex).collect()
    }

    /// Seals under the active key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.active.seal(plaintext, aad)
    }

    /// Opens with whichever key of the set sealed the value.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let parts = Sealed::parse(sealed)?;
        self.get(parts.id)
            .ok_or_else(|| CryptoError::UnknownKey(hex::encode(parts.id)))?
            .open_parts(&parts, aad)
    }

    /// Whether `sealed` was sealed under a key other than the active one.
    /// False for malformed values (rewrapping cannot help them).
    pub fn needs_rewrap(&self, sealed: &[u8]) -> bool {
        Sealed::parse(sealed).is_ok_and(|p| p.id != self.active.id.as_slice())
    }

    /// Re-seals a value under the active key: `Some(new)` if it was sealed
    /// under an older key, `None` if it already is under the active one.
    pub fn rewrap(&self, sealed: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, CryptoError> {
        if !self.needs_rewrap(sealed) {
            // Malformed values fail here rather than being reported as done.
            Sealed::parse(sealed)?;
            return Ok(None);
        }
        let plaintext = self.open(sealed, aad)?;
        self.seal(&plaintext, aad).map(Some)
    }

    /// A key check made with the active key, naming no other key: store it
    /// at first start and once re-encryption after a rotation has finished.
    pub fn key_check(&self) -> Result<Vec<u8>, CryptoError> {
        self.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD)
    }

    /// A key check made with the active key that also names every older key
    /// of the set as still in use: store it when a rotation starts, so that
    /// until [`KeySet::key_check`] replaces it, a restart is refused both
    /// with the old keys only (values already sealed under the new key would
    /// not open) and with the new key only (values not yet re-encrypted would
    /// not open).
    pub fn key_check_all_keys(&self) -> Result<Vec<u8>, CryptoError> {
        let mut plaintext =
            Vec::with_capacity(KEY_CHECK_PLAINTEXT.len() + KEY_ID_LEN * self.older.len());
        plaintext.extend_from_slice(KEY_CHECK_PLAINTEXT);
        for key in &self.older {
            plaintext.extend_from_slice(&key.id);
        }
        self.seal(&plaintext, KEY_CHECK_AAD)
    }

    /// Verifies a stored key check value: the set must hold the key that
    /// made it and every key it names as in use. The error names the first
    /// missing key id.
    pub fn verify_check(&self, stored: &[u8]) -> Result<(), CryptoError> {
        let opened = self.open(stored, KEY_CHECK_AAD)?;
        match check_extra_ids(&opened)?.find(|id| !self.contains_id(id)) {
            Some(missing) => Err(CryptoError::UnknownKey(hex::encode(missing))),
            None => Ok(()),
        }
    }
}

/// The master keys of a running process, shared as `Arc<Keyring>`.
///
/// Seal and open take a snapshot of the current [`KeySet`] (a read lock held
/// only to clone an `Arc`), so [`Keyring::replace`] can swap in a rotated
/// set while other tasks keep sealing and opening; each call sees either the
/// old set or the new one, never a mix.
pub struct Keyring {
    keys: RwLock<Arc<KeySet>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Keyring").field(&self.current()).finish()
    }
}

impl From<KeySet> for Keyring {
    fn from(keys: KeySet) -> Self {
        Self {
            keys: RwLock::new(Arc::new(keys)),
        }
    }
}

impl From<MasterKey> for Keyring {
    fn from(key: MasterKey) -> Self {
        Self::from(KeySet::from(key))
    }
}

impl Keyring {
    /// A keyring holding `keys`.
    pub fn new(keys: KeySet) -> Self {
        Self::from(keys)
    }

    /// Parses one key or several, one per line, the first active (see
    /// [`KeySet::from_hex_lines`]). Same name as [`MasterKey::from_hex`], for
    /// `RUNTIME_MASTER_KEY`.
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        Self::from_hex_lines(text)
    }

    /// Parses key file text (see [`KeySet::from_hex_lines`]).
    pub fn from_hex_lines(text: &str) -> Result<Self, CryptoError> {
        KeySet::from_hex_lines(text).map(Self::from)
    }

    /// Reads a key file (see [`KeySet::from_hex_lines`]).
    pub fn load_file(path: &Path) -> Result<Self, CryptoError> {
        KeySet::load_file(path).map(Self::from)
    }

    /// Reads a key file, or creates one (mode 0600) holding a fresh random
    /// key. Used by dev mode only: production refuses to start without a key.
    pub fn load_or_create_file(path: &Path) -> Result<(Self, bool), CryptoError> {
        if let Some(text) = read_key_file(path)? {
            return Ok((Self::from(KeySet::parse_file(path, &text)?), false));
        }
        let keys = KeySet::from(MasterKey::generate());
        write_private_file(path, keys.to_file_text().as_bytes())
            .map_err(|e| CryptoError::Key(format!("cannot create {}: {e}", path.display())))?;
        Ok((Self::from(keys), true))
    }

    /// The current key set (a snapshot: later swaps do not change it).
    pub fn current(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole `Arc` (a swap cannot be torn).
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Swaps in a new key set and returns the previous one. Checking that
    /// the new set still holds every key in use is the caller's job.
    pub fn replace(&self, new: KeySet) -> Arc<KeySet> {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *keys, Arc::new(new))
    }

    /// The active key's id, as hex.
    pub fn active_id_hex(&self) -> String {
        self.current().active_id_hex()
    }

    /// The active key's id, as hex (same as [`MasterKey::id_hex`]).
    pub fn id_hex(&self) -> String {
        self.active_id_hex()
    }

    /// Seals `plaintext` under the active key, binding it to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.current().seal(plaintext, aad)
    }

    /// Opens a value sealed under any key of the ring, with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.current().open(sealed, aad)
    }

    /// Seals a secret string.
    pub fn seal_secret(&self, secret: &Secret, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal(secret.expose().as_bytes(), aad)
    }

    /// Opens a sealed secret string.
    pub fn open_secret(&self, sealed: &[u8], aad: &[u8]) -> Result<Secret, CryptoError> {
        open_utf8(&self.open(sealed, aad)?)
    }

    /// Whether `sealed` is under a key other than the active one.
    pub fn needs_rewrap(&self, sealed: &[u8]) -> bool {
        self.current().needs_rewrap(sealed)
    }

    /// Re-seals under the active key: `Some(new)` if `sealed` was under an
    /// older key, `None` if already under the active one.
    pub fn rewrap(&self, sealed: &[u8], aad: &[u8]) -> Result<Option<Vec<u8>>, CryptoError> {
        self.current().rewrap(sealed, aad)
    }

    /// See [`KeySet::key_check`].
    pub fn key_check(&self) -> Result<Vec<u8>, CryptoError> {
        self.current().key_check()
    }

    /// See [`KeySet::key_check_all_keys`].
    pub fn key_check_all_keys(&self) -> Result<Vec<u8>, CryptoError> {
        self.current().key_check_all_keys()
    }

    /// See [`KeySet::verify_check`].
    pub fn verify_check(&self, stored: &[u8]) -> Result<(), CryptoError> {
        self.current().verify_check(stored)
    }
}

/// The text of a key file, or `None` if it does not exist.
fn read_key_file(path: &Path) -> Result<Option<Zeroizing<String>>, CryptoError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(Zeroizing::new(text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CryptoError::Key(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The message of a `Key` error without its `master key:` prefix.
fn inner_message(e: CryptoError) -> String {
    match e {
        CryptoError::Key(why) => why,
        other => other.to_string(),
    }
}

/// Writes a file readable only by its owner (0600 on Unix), failing if it exists.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = private_options().open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn private_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Writes or replaces a file readable only by its owner (0600 on Unix) so
/// that a reader or a crash sees the old contents or the new, never a part:
/// a temporary file in the same directory is written and synced, renamed
/// over `path`, and the directory synced.
pub fn write_private_file_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", hex::encode(suffix)));
    let temp = dir.join(temp_name);
    let written = write_private_file(&temp, contents).and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    Ok(())
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
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

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
