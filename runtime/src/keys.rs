//! Master key rotation: `runtime keys rotate` and `runtime keys status`, and
//! the task of a running server that notices a rotated key file.
//!
//! Rotation is online. `runtime keys rotate` puts a new random key first in
//! the key file and keeps the previous keys below it; the server's
//! [`watch_key_file`] swaps the new set into its [`Keyring`] (new secrets are
//! sealed under the new key at once, old ones still open) and starts the
//! re-encryption of everything stored. Older keys can leave the file once the
//! server has logged that re-encryption finished.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use host_api::broker::rekey::KEY_CHECK_META;
use host_api::crypto::{CryptoError, KeySet, Keyring, Zeroizing};
use host_api::store::Store;
use sha2::{Digest, Sha256};

/// The key file of dev mode, inside the data directory.
pub const DEV_KEY_FILE: &str = "master.key";

/// How often the server looks at the key file. Rotation is rare and
/// reading a small file is cheap; two seconds keeps the wait short.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The key file the key verbs act on: `--master-key-file` if given,
/// otherwise dev mode's `<data-dir>/master.key`.
pub fn key_file_path(master_key_file: Option<&Path>, data_dir: &Path) -> PathBuf {
    match master_key_file {
        Some(path) => path.to_path_buf(),
        None => data_dir.join(DEV_KEY_FILE),
    }
}

/// What a rotation did (key ids only, never keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    /// The rotated file.
    pub path: PathBuf,
    /// The key that was active before.
    pub previous_active: String,
    /// The new active key.
    pub new_active: String,
    /// Every key id now in the file, the active one first.
    pub ids: Vec<String>,
}

/// Rotates a key file: a new random key becomes active (first line) and every
/// key of the file stays after it, so values sealed under them still open.
/// The file is replaced atomically and left readable by its owner only.
pub fn rotate_file(path: &Path) -> anyhow::Result<RotateReport> {
    let current = KeySet::load_file(path).with_context(|| {
        format!(
            "cannot rotate {}: it must hold the current master key (dev mode creates \
             <data-dir>/{DEV_KEY_FILE} at first start; otherwise pass --master-key-file)",
            path.display()
        )
    })?;
    let rotated = current.rotated();
    rotated.write_file(path)?;
    // Read back what the server will read.
    let written = KeySet::load_file(path)?;
    if written.ids_hex() != rotated.ids_hex() {
        bail!(
            "{} changed while it was being rotated; run `runtime keys status` and check it",
            path.display()
        );
    }
    Ok(RotateReport {
        path: path.to_path_buf(),
        previous_active: current.active_id_hex(),
        new_active: written.active_id_hex(),
        ids: written.ids_hex(),
    })
}

/// `runtime keys rotate`: rotates the key file and says what happens next.
pub fn run_rotate(master_key_file: Option<&Path>, data_dir: &Path) -> anyhow::Result<()> {
    let path = key_file_path(master_key_file, data_dir);
    if std::env::var_os("RUNTIME_MASTER_KEY").is_some() {
        eprintln!("warning: RUNTIME_MASTER_KEY is set; a server started with it ignores key files");
    }
    let report = rotate_file(&path)?;
    println!(
        "rotated {}: new active key {} (was {}); {} keys in the file",
        report.path.display(),
        report.new_active,
        report.previous_active,
        report.ids.len()
    );
    println!(
        "a running server picks the new key up within seconds and re-encrypts stored secrets; \
         keep the older keys in the file until it logs that re-encryption finished"
    );
    Ok(())
}

/// `runtime keys status`: the key ids in the key file (never the keys).
pub fn run_status(master_key_file: Option<&Path>, data_dir: &Path) -> anyhow::Result<()> {
    let path = key_file_path(master_key_file, data_dir);
    let keys = KeySet::load_file(&path)?;
    println!("{}", path.display());
    for (n, id) in keys.ids_hex().iter().enumerate() {
        println!(
            "  {id}  {}",
            if n == 0 {
                "active (seals new secrets)"
            } else {
                "older (opens secrets sealed before a rotation)"
            }
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            println!(
                "warning: {} has mode {mode:o}; others may read it: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// What a changed key file means for a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileChange {
    /// The same keys in the same order (only comments or spacing changed).
    Unchanged,
    /// Another key is active: swap it in and re-encrypt.
    Rotated {
        /// The key active until now.
        from: String,
        /// The new active key.
        to: String,
    },
    /// Same active key, older keys added or removed: swap the set in.
    OlderKeysChanged,
}

/// Decides whether a running server may take `new` in place of `current`.
///
/// Refused if `new` lacks the key active now: values sealed under it since
/// the last rotation would no longer open. The operator must keep old keys
/// in the file until re-encryption has finished.
pub fn judge_key_file(current: &KeySet, new: &KeySet) -> anyhow::Result<KeyFileChange> {
    let active = current.active_id_hex();
    if !new.contains(&active) {
        bail!(
            "the key file no longer holds key {active}, which seals the secrets stored since \
             the last rotation; keep it below the new key until re-encryption has finished"
        );
    }
    Ok(if new.ids_hex() == current.ids_hex() {
        KeyFileChange::Unchanged
    } else if new.active_id_hex() != active {
        KeyFileChange::Rotated {
            from: active,
            to: new.active_id_hex(),
        }
    } else {
        KeyFileChange::OlderKeysChanged
    })
}

/// Refuses a key set lacking a key the stored key check (in `store` under
/// [`KEY_CHECK_META`]) names as still in use: secrets sealed under it
/// would no longer open. The check names every older key until a
/// re-encryption pass has moved every record to the active key.
pub fn check_keys_in_use(new: &KeySet, stored_check: Option<&[u8]>) -> anyhow::Result<()> {
    match stored_check.map(|check| new.verify_check(check)) {
        None | Some(Ok(())) => Ok(()),
        Some(Err(CryptoError::UnknownKey(id))) => bail!(
            "the key file lacks key {id}, which stored secrets still use (re-encryption has not \
             finished); keep it in the file until the server logs that re-encryption finished"
        ),
        Some(Err(e)) => bail!("the stored key check does not open with the key file: {e}"),
    }
}

/// Watches a key file and swaps each valid new key set into `keyring`.
///
/// Polls every 2 seconds and compares the content (a hash), not the mtime:
/// mounted secrets are replaced through symlinks, and editors may keep the
/// mtime. A file that does not parse, drops the active key, or drops a key
/// the key check stored in `store` names as in use, is refused with an
/// error log and the loaded keys stay (a file refused for a key in use is
/// looked at again when the check changes, e.g. when re-encryption
/// finishes). After each swap `on_change` runs (to re-encrypt stored
/// secrets; a pass with nothing to do is cheap, and one after older keys
/// were added retries values that failed before). Runs until its task is
/// aborted.
pub async fn watch_key_file(
    path: PathBuf,
    keyring: Arc<Keyring>,
    store: Arc<dyn Store>,
    on_change: impl Fn() + Send + Sync + 'static,
) {
    watch_every(path, keyring, store, on_change, POLL_INTERVAL).await;
}

async fn watch_every(
    path: PathBuf,
    keyring: Arc<Keyring>,
    store: Arc<dyn Store>,
    on_change: impl Fn() + Send + Sync + 'static,
    period: Duration,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen: Option<[u8; 32]> = None;
    let mut unreadable = false;
    loop {
        ticker.tick().await;
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) => {
                if !unreadable {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the master key file; keeping the loaded keys");
                }
                unreadable = true;
                continue;
            }
        };
        unreadable = false;
        let check = match store.get_meta(KEY_CHECK_META).await {
            Ok(check) => check,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored key check; keeping the loaded keys");
                continue;
            }
        };
        let hash: [u8; 32] = Sha256::new()
            .chain_update(bytes.as_slice())
            .chain_update(check.as_deref().unwrap_or_default())
            .finalize()
            .into();
        if last_seen == Some(hash) {
            continue;
        }
        last_seen = Some(hash);
        apply_key_file(&path, &bytes, &keyring, check.as_deref(), &on_change);
    }
}

/// Parses, judges and swaps in a key file's new contents; logs the outcome.
fn apply_key_file(
    path: &Path,
    bytes: &[u8],
    keyring: &Keyring,
    stored_check: Option<&[u8]>,
    on_change: &dyn Fn(),
) {
    let parsed = std::str::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("not UTF-8 text"))
        .and_then(|text| KeySet::from_hex_lines(text).map_err(anyhow::Error::from));
    let new = match parsed {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "master key file changed but is unusable; keeping the loaded keys");
            return;
        }
    };
    if let Err(e) = check_keys_in_use(&new, stored_check) {
        tracing::error!(path = %path.display(), error = %e, "master key file refused; keeping the loaded keys");
        return;
    }
    match judge_key_file(&keyring.current(), &new) {
        Ok(KeyFileChange::Unchanged) => {}
        Ok(KeyFileChange::Rotated { from, to }) => {
            keyring.replace(new);
            tracing::info!(key_id = %to, previous_key_id = %from, "master key rotated; re-encrypting secrets");
            on_change();
        }
        Ok(KeyFileChange::OlderKeysChanged) => {
            let key_ids = new.ids_hex().join(",");
            keyring.replace(new);
            tracing::info!(key_ids = %key_ids, "master key file reloaded: older keys changed");
            on_change();
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "master key file refused; keeping the loaded keys");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use host_api::crypto::{MasterKey, sealed_key_id_hex};
    use host_api::store::SledStore;

    use super::*;

    fn write_single_key(dir: &Path) -> (PathBuf, MasterKey) {
        let path = dir.join("master.key");
        let hex = hex::encode([7u8; 32]);
        std::fs::write(&path, format!("{hex}\n")).unwrap();
        (path, MasterKey::from_hex(&hex).unwrap())
    }

    #[test]
    fn rotating_twice_keeps_every_key_behind_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (path, first) = write_single_key(dir.path());
        let one = rotate_file(&path).unwrap();
        assert_eq!(one.previous_active, first.id_hex());
        assert_eq!(one.ids, vec![one.new_active.clone(), first.id_hex()]);
        let two = rotate_file(&path).unwrap();
        assert_eq!(two.previous_active, one.new_active);
        assert_eq!(
            two.ids,
            vec![two.new_active.clone(), one.new_active, first.id_hex()]
        );
        assert_eq!(KeySet::load_file(&path).unwrap().ids_hex(), two.ids);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The file never shows up in what is printed.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!format!("{two:?}").contains(&hex::encode([7u8; 32])));
        assert!(text.contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn rotating_a_missing_file_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = rotate_file(&dir.path().join("none")).unwrap_err();
        assert!(format!("{err:#}").contains("--master-key-file"), "{err:#}");
        assert!(run_status(None, dir.path()).is_err());
    }

    #[test]
    fn old_ciphertexts_open_after_two_rotations_and_rewrap_to_the_active_key() {
        let dir = tempfile::tempdir().unwrap();
        let (path, first) = write_single_key(dir.path());
        let sealed = first.seal(b"refresh-token", b"app\0conn\0refresh").unwrap();
        rotate_file(&path).unwrap();
        let report = rotate_file(&path).unwrap();
        let ring = Keyring::load_file(&path).unwrap();
        assert_eq!(ring.active_id_hex(), report.new_active);
        assert_eq!(
            ring.open(&sealed, b"app\0conn\0refresh")
                .unwrap()
                .as_slice(),
            b"refresh-token"
        );
        assert!(ring.needs_rewrap(&sealed));
        let moved = ring
            .rewrap(&sealed, b"app\0conn\0refresh")
            .unwrap()
            .unwrap();
        assert_eq!(sealed_key_id_hex(&moved).unwrap(), report.new_active);
        assert!(!ring.needs_rewrap(&moved));
        assert_eq!(
            ring.open(&moved, b"app\0conn\0refresh").unwrap().as_slice(),
            b"refresh-token"
        );
        // Once everything is rewrapped, the new key alone opens it.
        let only_new = KeySet::new(
            MasterKey::from_hex(&hex_line(&path, 0)).unwrap(),
            Vec::new(),
        );
        assert_eq!(
            only_new
                .open(&moved, b"app\0conn\0refresh")
                .unwrap()
                .as_slice(),
            b"refresh-token"
        );
    }

    /// The n-th key line of a key file.
    fn hex_line(path: &Path, n: usize) -> String {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .nth(n)
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_key_file_missing_the_active_key_is_refused() {
        let a = || MasterKey::from_bytes(&[1; 32]);
        let b = || MasterKey::from_bytes(&[2; 32]);
        let c = || MasterKey::from_bytes(&[3; 32]);
        let current = KeySet::new(b(), [a()]);

        // A new key on top of the current ones: a rotation.
        let rotated = KeySet::new(c(), [b(), a()]);
        assert_eq!(
            judge_key_file(&current, &rotated).unwrap(),
            KeyFileChange::Rotated {
                from: b().id_hex(),
                to: c().id_hex()
            }
        );
        // The new key alone, or the old key alone, drops the active one.
        let err = judge_key_file(&current, &KeySet::from(c())).unwrap_err();
        assert!(err.to_string().contains(&b().id_hex()), "{err}");
        assert!(judge_key_file(&current, &KeySet::from(a())).is_err());
        // Pruning an older key after re-encryption is allowed.
        assert_eq!(
            judge_key_file(&current, &KeySet::from(b())).unwrap(),
            KeyFileChange::OlderKeysChanged
        );
        assert_eq!(
            judge_key_file(&current, &KeySet::new(b(), [a()])).unwrap(),
            KeyFileChange::Unchanged
        );
    }

    #[test]
    fn apply_swaps_valid_sets_and_keeps_the_old_one_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (path, first) = write_single_key(dir.path());
        let ring = Keyring::load_file(&path).unwrap();
        let calls = AtomicUsize::new(0);
        let on_change = || {
            calls.fetch_add(1, Ordering::SeqCst);
        };

        apply_key_file(&path, b"not a key\n", &ring, None, &on_change);
        let lone = format!("{}\n", hex::encode([9u8; 32]));
        apply_key_file(&path, lone.as_bytes(), &ring, None, &on_change);
        assert_eq!(ring.active_id_hex(), first.id_hex());
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let report = rotate_file(&path).unwrap();
        let text = std::fs::read(&path).unwrap();
        apply_key_file(&path, &text, &ring, None, &on_change);
        assert_eq!(ring.active_id_hex(), report.new_active);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        apply_key_file(&path, &text, &ring, None, &on_change);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_reloaded_key_file_dropping_a_key_still_in_use_is_refused() {
        let a = || MasterKey::from_bytes(&[1; 32]);
        let b = || MasterKey::from_bytes(&[2; 32]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let ring = Keyring::new(KeySet::new(b(), [a()]));
        let calls = AtomicUsize::new(0);
        let on_change = || {
            calls.fetch_add(1, Ordering::SeqCst);
        };
        let only_b = format!("{}\n", hex::encode([2u8; 32]));

        // Re-encryption under way: the check names key a as in use.
        let during = ring.key_check_all_keys().unwrap();
        apply_key_file(&path, only_b.as_bytes(), &ring, Some(&during), &on_change);
        assert!(ring.current().contains(&a().id_hex()));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let err = check_keys_in_use(&KeySet::from(b()), Some(&during)).unwrap_err();
        assert!(err.to_string().contains(&a().id_hex()), "{err}");

        // Re-encryption finished: the check names b only, a may go.
        let after = ring.key_check().unwrap();
        apply_key_file(&path, only_b.as_bytes(), &ring, Some(&after), &on_change);
        assert_eq!(ring.current().ids_hex(), [b().id_hex()]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_watcher_picks_up_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (path, first) = write_single_key(dir.path());
        let ring = Arc::new(Keyring::load_file(&path).unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let store = Arc::new(SledStore::open(&dir.path().join("data")).unwrap());
        let task = tokio::spawn(watch_every(
            path.clone(),
            ring.clone(),
            store,
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            Duration::from_millis(10),
        ));
        let report = rotate_file(&path).unwrap();
        for _ in 0..500 {
            if calls.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(ring.active_id_hex(), report.new_active);
        assert!(ring.current().contains(&first.id_hex()));
    }

    #[test]
    fn sealing_and_opening_never_fail_while_keys_are_swapped() {
        let a = || MasterKey::from_bytes(&[1; 32]);
        let b = || MasterKey::from_bytes(&[2; 32]);
        let ring = Arc::new(Keyring::new(KeySet::new(a(), [b()])));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|n| {
                let ring = ring.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let aad = format!("app\0conn{n}\0access").into_bytes();
                    let mut rounds = 0u32;
                    while !stop.load(Ordering::Relaxed) || rounds < 100 {
                        let sealed = ring.seal(b"token", &aad).unwrap();
                        assert_eq!(ring.open(&sealed, &aad).unwrap().as_slice(), b"token");
                        if let Some(moved) = ring.rewrap(&sealed, &aad).unwrap() {
                            assert_eq!(ring.open(&moved, &aad).unwrap().as_slice(), b"token");
                        }
                        rounds += 1;
                    }
                    rounds
                })
            })
            .collect();
        for i in 0..2000 {
            let set = if i % 2 == 0 {
                KeySet::new(b(), [a()])
            } else {
                KeySet::new(a(), [b()])
            };
            ring.replace(set);
        }
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            assert!(worker.join().unwrap() >= 100);
        }
    }
}
