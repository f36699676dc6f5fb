//! Re-encrypting stored secrets under the active master key, online, and
//! the stored key check that says which keys those secrets need.
//!
//! After a rotation ([`crate::crypto::Keyring`] holds a new active key and
//! the older ones), [`Broker::rekey`] walks every sealed value (toolkit API
//! keys and client secrets, apps' JWT secrets, connection tokens) and
//! re-seals those made with an older key. Every record is written back by
//! compare-and-swap on its version: a configure, disable, settings change or
//! token refresh racing the pass wins, and the pass re-seals the newer
//! record instead of writing the old one back. Pending connect flows are
//! not rewritten: they live at most 15 minutes, so older keys must stay in
//! the key file at least that long after a rotation.
//!
//! The key check ([`KEY_CHECK_META`]) names every key of the set while a
//! pass runs, and only the active key once a pass has re-encrypted every
//! record; a start or a key file reload with a set lacking a key it names
//! is refused.

use super::{AdminError, Broker};
use crate::crypto::{CryptoError, KeySet};
use crate::store::{AppRecord, ConnectionRecord, MAX_CAS_ATTEMPTS, ToolkitRecord};

/// Meta key of the stored key check (see [`KeySet::key_check_all_keys`]).
pub const KEY_CHECK_META: &str = "master-key-check";

/// What a re-encryption pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RekeyReport {
    /// Values re-sealed under the active key.
    pub rewrapped: usize,
    /// Values that could not be opened (missing key, tampering) or records
    /// that kept changing: left as they are and logged.
    pub failed: usize,
    /// Every record is sealed under the active key and the stored key check
    /// now names that key only: older keys may leave the key file (after
    /// the 15 minutes pending connect flows live).
    pub finished: bool,
}

impl Broker {
    /// Re-seals one hex value if an older key of `keys` sealed it.
    fn rewrap_hex(
        keys: &KeySet,
        value: &mut Option<String>,
        aad: &[u8],
        report: &mut RekeyReport,
        what: &str,
    ) -> bool {
        let Some(hex_text) = value.as_deref() else {
            return false;
        };
        let Ok(bytes) = hex::decode(hex_text) else {
            report.failed += 1;
            tracing::error!(what, "stored secret is not valid hex; left as is");
            return false;
        };
        if !keys.needs_rewrap(&bytes) {
            return false;
        }
        match keys.rewrap(&bytes, aad) {
            Ok(Some(new)) => {
                *value = Some(hex::encode(new));
                report.rewrapped += 1;
                true
            }
            Ok(None) => false,
            Err(
                e @ (CryptoError::UnknownKey(_) | CryptoError::Tampered | CryptoError::Malformed),
            ) => {
                report.failed += 1;
                tracing::error!(what, error = %e, "cannot re-encrypt a stored secret; left as is");
                false
            }
            Err(e) => {
                report.failed += 1;
                tracing::error!(what, error = %e, "cannot re-encrypt a stored secret");
                false
            }
        }
    }

    /// Re-encrypts every stored secret sealed with an older key, and keeps
    /// the stored key check truthful.
    ///
    /// One snapshot of the key set serves the whole pass. Before it, the
    /// check is rewritten to name every key of the set (refused if the
    /// stored check names a key the set lacks: those secrets would become
    /// unreadable). After it, the check names the active key only if every
    /// record was re-encrypted and the key set did not change meanwhile (a
    /// reload queues another pass); a pass that fails midway returns the
    /// error and leaves the check naming every key.
    pub async fn rekey(&self) -> Result<RekeyReport, AdminError> {
        let keys = self.key().current();
        if let Some(stored) = self.store.get_meta(KEY_CHECK_META).await? {
            keys.verify_check(&stored).map_err(|e| {
                AdminError::Invalid(format!(
                    "the loaded keys cannot replace the stored key check ({e}); put every key the data directory still uses back in the key file"
                ))
            })?;
        }
        self.store
            .put_meta(KEY_CHECK_META, &keys.key_check_all_keys()?)
            .await?;
        let mut report = self.rekey_with(&keys).await?;
        if report.failed == 0 && self.key().current().ids_hex() == keys.ids_hex() {
            self.store
                .put_meta(KEY_CHECK_META, &keys.key_check()?)
                .await?;
            report.finished = true;
        }
        Ok(report)
    }

    /// The pass itself: every app, toolkit and connection, re-sealed under
    /// `keys`' active key.
    async fn rekey_with(&self, keys: &KeySet) -> Result<RekeyReport, AdminError> {
        let mut report = RekeyReport::default();
        for app in self.store.list_apps().await? {
            let id = app.id.clone();
            self.rekey_app(keys, app, &mut report).await?;
            for t in self.store.list_toolkits(&id).await? {
                self.rekey_toolkit(keys, t, &mut report).await?;
            }
            for c in self.store.list_connections(&id).await? {
                self.rekey_connection(keys, &id, c, &mut report).await?;
            }
        }
        Ok(report)
    }

    /// Re-seals an app's JWT secret. `app` is the record as read; if it
    /// changed before the write, the newer record is re-sealed instead.
    pub(crate) async fn rekey_app(
        &self,
        keys: &KeySet,
        mut app: AppRecord,
        report: &mut RekeyReport,
    ) -> Result<(), AdminError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut local = RekeyReport::default();
            let changed = match app.settings.jwt.as_mut() {
                Some(jwt) => Self::rewrap_hex(
                    keys,
                    &mut jwt.sealed_hs256_secret,
                    &crate::crypto::aad::jwt_secret(&app.id),
                    &mut local,
                    "app jwt secret",
                ),
                None => false,
            };
            if !changed
                || self
                    .store
                    .put_app_if_version(&app, Some(app.version))
                    .await?
            {
                report.rewrapped += local.rewrapped;
                report.failed += local.failed;
                return Ok(());
            }
            match self.store.get_app(&app.id).await? {
                Some(latest) => app = latest,
                None => return Ok(()),
            }
        }
        report.failed += 1;
        tracing::warn!(app = %app.id, "app changed too often during re-encryption; the next pass retries");
        Ok(())
    }

    /// Re-seals a toolkit's API key and client secret, as
    /// [`Broker::rekey_app`]: a configure or disable that got in first is
    /// kept, never reverted.
    pub(crate) async fn rekey_toolkit(
        &self,
        keys: &KeySet,
        mut t: ToolkitRecord,
        report: &mut RekeyReport,
    ) -> Result<(), AdminError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut local = RekeyReport::default();
            let a = Self::rewrap_hex(
                keys,
                &mut t.sealed_credential,
                &crate::crypto::aad::credential(&t.app, &t.toolkit),
                &mut local,
                "toolkit api key",
            );
            let b = Self::rewrap_hex(
                keys,
                &mut t.sealed_client_secret,
                &crate::crypto::aad::client_secret(&t.app, &t.toolkit),
                &mut local,
                "toolkit client secret",
            );
            if !(a || b)
                || self
                    .store
                    .put_toolkit_if_version(&t, Some(t.version))
                    .await?
            {
                report.rewrapped += local.rewrapped;
                report.failed += local.failed;
                return Ok(());
            }
            match self.store.get_toolkit(&t.app, &t.toolkit).await? {
                Some(latest) => t = latest,
                None => return Ok(()),
            }
        }
        report.failed += 1;
        tracing::warn!(app = %t.app, toolkit = %t.toolkit, "toolkit changed too often during re-encryption; the next pass retries");
        Ok(())
    }

    async fn rekey_connection(
        &self,
        keys: &KeySet,
        app: &str,
        mut c: ConnectionRecord,
        report: &mut RekeyReport,
    ) -> Result<(), AdminError> {
        // A refresh may write between the read and the swap: then read the
        // newer record (sealed with the active key already) and look again.
        for _ in 0..MAX_CAS_ATTEMPTS {
            let expected = c.version;
            let mut next = c.clone();
            let mut local = RekeyReport::default();
            let a = Self::rewrap_hex(
                keys,
                &mut next.sealed_access_token,
                &crate::crypto::aad::connection(app, &c.id, "access_token"),
                &mut local,
                "access token",
            );
            let b = Self::rewrap_hex(
                keys,
                &mut next.sealed_refresh_token,
                &crate::crypto::aad::connection(app, &c.id, "refresh_token"),
                &mut local,
                "refresh token",
            );
            if !(a || b) {
                report.failed += local.failed;
                return Ok(());
            }
            if self
                .store
                .put_connection_if_version(&next, expected)
                .await?
            {
                report.rewrapped += local.rewrapped;
                report.failed += local.failed;
                return Ok(());
            }
            match self.store.get_connection(app, &c.id).await? {
                Some(latest) => c = latest,
                None => return Ok(()),
            }
        }
        report.failed += 1;
        tracing::warn!(connection = %c.id, "connection changed too often during re-encryption; next pass retries");
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::broker::ConfigureToolkit;
    use crate::broker::settings::{JwtPatch, SettingsPatch};
    use crate::catalog::Catalog;
    use crate::crypto::{Keyring, MasterKey, sealed_key_id_hex};
    use crate::egress::EgressPolicy;
    use crate::store::{AppSettings, SledStore, Store};
    use crate::{Broker, Secret};

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes(&[b; 32])
    }

    /// A broker over a fresh store with app `a`, sealing with key 1.
    async fn broker(dir: &std::path::Path) -> (Broker, Arc<Keyring>, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).unwrap());
        store
            .put_app(&AppRecord {
                id: "a".into(),
                admin_key_hashes: vec![],
                created_at: 1,
                settings: AppSettings::default(),
                version: 0,
            })
            .await
            .unwrap();
        let ring = Arc::new(Keyring::from(key(1)));
        let broker = Broker::new(
            store.clone(),
            ring.clone(),
            Arc::new(Catalog::builtin().unwrap()),
            EgressPolicy::default(),
        )
        .unwrap();
        (broker, ring, store)
    }

    /// An API-key toolkit of the built-in catalog.
    async fn configure(broker: &Broker) -> ToolkitRecord {
        broker
            .configure(
                "a",
                ConfigureToolkit {
                    toolkit: "linear".into(),
                    api_key: Some(Secret::new("lin_api_key_0123456789")),
                    ..ConfigureToolkit::default()
                },
            )
            .await
            .unwrap();
        broker
            .store
            .get_toolkit("a", "linear")
            .await
            .unwrap()
            .unwrap()
    }

    fn sealed_by(hex_value: Option<&str>) -> String {
        sealed_key_id_hex(&hex::decode(hex_value.unwrap()).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_disable_between_the_passs_read_and_write_survives() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, ring, store) = broker(dir.path()).await;
        // What the pass read, before the rotation and the disable.
        let read = configure(&broker).await;
        ring.replace(KeySet::new(key(2), [key(1)]));
        broker.disable("a", "linear").await.unwrap();

        // The pass writes what it read, re-sealed: the swap fails, the newer
        // record is read and re-sealed instead.
        let mut report = RekeyReport::default();
        broker
            .rekey_toolkit(&ring.current(), read, &mut report)
            .await
            .unwrap();
        assert_eq!((report.rewrapped, report.failed), (1, 0));
        let stored = store.get_toolkit("a", "linear").await.unwrap().unwrap();
        assert!(!stored.enabled, "the disable was reverted");
        assert_eq!(
            sealed_by(stored.sealed_credential.as_deref()),
            key(2).id_hex()
        );
        assert_eq!(stored.version, 3);
    }

    #[tokio::test]
    async fn a_configure_between_the_passs_read_and_write_survives() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, ring, store) = broker(dir.path()).await;
        let read = configure(&broker).await;
        let app = store.get_app("a").await.unwrap().unwrap();
        ring.replace(KeySet::new(key(2), [key(1)]));
        // A new API key, and new settings, while the pass holds old copies.
        broker
            .configure(
                "a",
                ConfigureToolkit {
                    toolkit: "linear".into(),
                    api_key: Some(Secret::new("lin_api_key_NEW_456789")),
                    ..ConfigureToolkit::default()
                },
            )
            .await
            .unwrap();
        let newer = store.get_toolkit("a", "linear").await.unwrap().unwrap();
        broker
            .update_settings(
                "a",
                SettingsPatch {
                    redirect_urls: Some(vec!["https://app.example.com/done".into()]),
                    ..SettingsPatch::default()
                },
            )
            .await
            .unwrap();

        let keys = ring.current();
        let mut report = RekeyReport::default();
        broker
            .rekey_toolkit(&keys, read, &mut report)
            .await
            .unwrap();
        // The app had no JWT secret when read: nothing to write, nothing
        // reverted.
        broker.rekey_app(&keys, app, &mut report).await.unwrap();
        let stored = store.get_toolkit("a", "linear").await.unwrap().unwrap();
        assert_eq!(stored.sealed_credential, newer.sealed_credential);
        assert_eq!(
            store
                .get_app("a")
                .await
                .unwrap()
                .unwrap()
                .settings
                .redirect_urls,
            ["https://app.example.com/done"]
        );
        assert_eq!((report.rewrapped, report.failed), (0, 0));
    }

    #[tokio::test]
    async fn a_settings_change_between_the_passs_read_and_write_survives() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, ring, store) = broker(dir.path()).await;
        let jwt = |secret: &str| SettingsPatch {
            jwt: Some(Some(JwtPatch {
                hs256_secret: Some(Secret::new(secret)),
                ..JwtPatch::default()
            })),
            ..SettingsPatch::default()
        };
        broker
            .update_settings("a", jwt("old-secret-0123456789-0123456789-01"))
            .await
            .unwrap();
        let read = store.get_app("a").await.unwrap().unwrap();
        ring.replace(KeySet::new(key(2), [key(1)]));
        broker
            .update_settings("a", jwt("new-secret-0123456789-0123456789-01"))
            .await
            .unwrap();
        let newer = store.get_app("a").await.unwrap().unwrap();

        let mut report = RekeyReport::default();
        broker
            .rekey_app(&ring.current(), read, &mut report)
            .await
            .unwrap();
        let stored = store.get_app("a").await.unwrap().unwrap();
        let secret = |a: &AppRecord| a.settings.jwt.clone().unwrap().sealed_hs256_secret;
        // The new secret (sealed under key 2 already) is kept, not the old
        // one re-sealed.
        assert_eq!(secret(&stored), secret(&newer));
        assert_eq!(sealed_by(secret(&stored).as_deref()), key(2).id_hex());
        assert_eq!(report.failed, 0);
    }

    #[tokio::test]
    async fn the_key_check_names_the_active_key_only_after_every_record_moved() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, ring, store) = broker(dir.path()).await;
        configure(&broker).await;
        store
            .put_meta(KEY_CHECK_META, &ring.key_check().unwrap())
            .await
            .unwrap();
        ring.replace(KeySet::new(key(2), [key(1)]));

        let report = broker.rekey().await.unwrap();
        assert!(report.finished);
        assert_eq!((report.rewrapped, report.failed), (1, 0));
        let check = store.get_meta(KEY_CHECK_META).await.unwrap().unwrap();
        // Key 1 may go now.
        KeySet::from(key(2)).verify_check(&check).unwrap();
        assert!(KeySet::from(key(1)).verify_check(&check).is_err());
    }

    #[tokio::test]
    async fn the_key_check_keeps_naming_old_keys_when_re_encryption_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, ring, store) = broker(dir.path()).await;
        let t = configure(&broker).await;
        // A value sealed under a key nobody holds any more cannot move.
        let mut other = t.clone();
        other.toolkit = "notion".into();
        other.sealed_credential = Some(hex::encode(
            key(9)
                .seal(b"x", &crate::crypto::aad::credential("a", "notion"))
                .unwrap(),
        ));
        store.put_toolkit(&other).await.unwrap();
        ring.replace(KeySet::new(key(2), [key(1)]));

        let report = broker.rekey().await.unwrap();
        assert!(!report.finished);
        assert_eq!((report.rewrapped, report.failed), (1, 1));
        let check = store.get_meta(KEY_CHECK_META).await.unwrap().unwrap();
        // Starting with the new key alone is still refused.
        match KeySet::from(key(2)).verify_check(&check) {
            Err(CryptoError::UnknownKey(id)) => assert_eq!(id, key(1).id_hex()),
            other => panic!("expected UnknownKey, got {other:?}"),
        }
        KeySet::new(key(2), [key(1)]).verify_check(&check).unwrap();
    }

    #[tokio::test]
    async fn a_pass_that_fails_midway_leaves_the_key_check_naming_every_key() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (broker, ring, store) = broker(dir.path()).await;
            configure(&broker).await;
            store
                .put_meta(KEY_CHECK_META, &ring.key_check().unwrap())
                .await
                .unwrap();
        }
        // A connection record that does not decode: the pass stops with an
        // error after re-sealing the toolkit.
        {
            let db = sled::open(dir.path().join("store.sled")).unwrap();
            db.open_tree("connections")
                .unwrap()
                .insert(b"a\0conn_bad", b"not json".as_slice())
                .unwrap();
            db.flush().unwrap();
        }
        let (broker, ring, store) = broker(dir.path()).await;
        ring.replace(KeySet::new(key(2), [key(1)]));
        assert!(broker.rekey().await.is_err());
        let t = store.get_toolkit("a", "linear").await.unwrap().unwrap();
        assert_eq!(sealed_by(t.sealed_credential.as_deref()), key(2).id_hex());
        let check = store.get_meta(KEY_CHECK_META).await.unwrap().unwrap();
        assert!(KeySet::from(key(2)).verify_check(&check).is_err());
        KeySet::new(key(2), [key(1)]).verify_check(&check).unwrap();
    }

    #[tokio::test]
    async fn a_pass_refuses_a_key_set_lacking_a_key_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, ring, store) = broker(dir.path()).await;
        configure(&broker).await;
        // A rotation under way: the check names key 1.
        ring.replace(KeySet::new(key(2), [key(1)]));
        store
            .put_meta(KEY_CHECK_META, &ring.key_check_all_keys().unwrap())
            .await
            .unwrap();
        ring.replace(KeySet::from(key(2)));
        let before = store.get_meta(KEY_CHECK_META).await.unwrap();
        let err = broker.rekey().await.unwrap_err();
        assert!(err.to_string().contains(&key(1).id_hex()), "{err}");
        assert_eq!(store.get_meta(KEY_CHECK_META).await.unwrap(), before);
    }
}
