//! Apps and their admin API keys (stored as SHA-256, compared in constant time).

use std::time::{SystemTime, UNIX_EPOCH};

use host_api::store::{AppRecord, Store, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of generated admin keys, so they are recognisable in a leak scan.
const KEY_PREFIX: &str = "rk_";

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random admin key (256 bits).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// Makes sure `app` exists. With `key` given, that key becomes its admin
/// key; without, a new app gets a generated key, returned so it can be
/// printed once. Returns `None` when nothing needs printing.
pub async fn ensure_app(
    store: &dyn Store,
    app: &str,
    key: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let existing = store.get_app(app).await?;
    let (hashes, generated) = match (key, &existing) {
        (Some(k), Some(rec)) if rec.admin_key_hashes == [hash_key(k)] => return Ok(None),
        (Some(k), _) => (vec![hash_key(k)], None),
        (None, Some(_)) => return Ok(None),
        (None, None) => {
            let k = generate_key();
            (vec![hash_key(&k)], Some(k))
        }
    };
    let settings = existing
        .as_ref()
        .map(|r| r.settings.clone())
        .unwrap_or_default();
    let created_at = existing.map(|r| r.created_at).unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    store
        .put_app(&AppRecord {
            id: app.to_string(),
            admin_key_hashes: hashes,
            created_at,
            settings,
        })
        .await?;
    Ok(generated)
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
