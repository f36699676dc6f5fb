//! Apps and their admin API keys (stored as SHA-256, compared in constant time).
//!
//! Each app has its own admin key. `RUNTIME_ADMIN_KEY` is the key of the one
//! app served with it; when several `--app` are served (outside `--dev`),
//! each gets a key derived from it ([`derive_key`]), so the key handed to
//! one app's team does not open another app.

use std::time::{SystemTime, UNIX_EPOCH};

use host_api::store::{AppRecord, MAX_CAS_ATTEMPTS, Store, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of generated admin keys, so they are recognisable in a leak scan.
const KEY_PREFIX: &str = "rk_";
/// Domain of [`derive_key`]: binds the derived value to this use, so it
/// equals no other HMAC of the operator's key.
const DERIVE_CONTEXT: &[u8] = b"runtime app admin key v1\0";
/// SHA-256's block size, in bytes (HMAC pads the key to it).
const SHA256_BLOCK: usize = 64;

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random admin key (256 bits).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let hashed;
    let key = if key.len() > SHA256_BLOCK {
        hashed = Sha256::digest(key);
        hashed.as_slice()
    } else {
        key
    };
    let mut block = [0u8; SHA256_BLOCK];
    for (b, k) in block.iter_mut().zip(key) {
        *b = *k;
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The admin key of `app` derived from the operator's `RUNTIME_ADMIN_KEY`
/// (HMAC-SHA256 of the app id), used when one server serves several apps:
/// distinct per app, the same at every start, and recomputable with
/// `runtime keys admin-key --app APP`. Knowing one app's key reveals
/// neither the operator's key nor another app's.
pub fn derive_key(operator_key: &str, app: &str) -> String {
    let mut message = DERIVE_CONTEXT.to_vec();
    message.extend_from_slice(app.as_bytes());
    format!(
        "{KEY_PREFIX}{}",
        hex::encode(hmac_sha256(operator_key.as_bytes(), &message))
    )
}

/// Where an app's admin key comes from at start.
#[derive(Debug, Clone, Copy)]
pub enum KeyChoice<'a> {
    /// Keep the stored key; a new app gets a generated one, printed once.
    KeepOrGenerate,
    /// The operator's own key (`RUNTIME_ADMIN_KEY` with one app, or any
    /// number of apps in `--dev`): they know it, nothing is printed.
    Given(&'a str),
    /// A key derived for this app ([`derive_key`]): printed when it becomes
    /// the app's key (the first start with it: a new app, a changed
    /// `RUNTIME_ADMIN_KEY`, or a server going from one app to several).
    Derived(&'a str),
}

/// Makes sure `app` exists with the admin key `choice` says. Returns the
/// key to print once, if there is one: a generated key of a new app, or a
/// derived key that just became the app's.
pub async fn ensure_app(
    store: &dyn Store,
    app: &str,
    choice: KeyChoice<'_>,
) -> Result<Option<String>, StoreError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let existing = store.get_app(app).await?;
        let (key, print) = match (choice, &existing) {
            (KeyChoice::Given(k), _) => (k.to_string(), false),
            (KeyChoice::Derived(k), _) => (k.to_string(), true),
            (KeyChoice::KeepOrGenerate, Some(_)) => return Ok(None),
            (KeyChoice::KeepOrGenerate, None) => (generate_key(), true),
        };
        let hashes = vec![hash_key(&key)];
        if existing
            .as_ref()
            .is_some_and(|r| r.admin_key_hashes == hashes)
        {
            return Ok(None);
        }
        let record = match existing.clone() {
            Some(r) => AppRecord {
                admin_key_hashes: hashes,
                ..r
            },
            None => AppRecord {
                id: app.to_string(),
                admin_key_hashes: hashes,
                created_at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                settings: Default::default(),
                version: 0,
            },
        };
        // Compare-and-swap: a settings change made meanwhile is kept.
        if store
            .put_app_if_version(&record, existing.as_ref().map(|r| r.version))
            .await?
        {
            return Ok(print.then_some(key));
        }
    }
    Err(StoreError::Backend(format!(
        "app `{app}` kept changing while its admin key was being set; start again"
    )))
}

/// Whether `presented` is an admin key of `app`.
pub async fn verify(store: &dyn Store, app: &str, presented: &str) -> Result<bool, StoreError> {
    let Some(record) = store.get_app(app).await? else {
        return Ok(false);
    };
    let presented = hash_key(presented);
    let mut ok = subtle::Choice::from(0);
    for stored in &record.admin_key_hashes {
        ok |= stored.as_bytes().ct_eq(presented.as_bytes());
    }
    Ok(bool::from(ok))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2: a short key.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn derived_keys_differ_per_app_and_per_operator_key() {
        let a = derive_key("operator-key-0123456789", "a");
        assert_eq!(a, derive_key("operator-key-0123456789", "a"));
        assert_ne!(a, derive_key("operator-key-0123456789", "b"));
        assert_ne!(a, derive_key("operator-key-9876543210", "a"));
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        assert!(!a.contains("operator-key"));
    }
}
