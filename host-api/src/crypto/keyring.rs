//! The key set of a master-key file and the shared, swappable [`Keyring`]
//! every sealed value is opened with.

use std::fs;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use super::*;

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
pub(super) fn read_key_file(path: &Path) -> Result<Option<Zeroizing<String>>, CryptoError> {
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
