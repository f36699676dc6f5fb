//! Re-encrypting stored secrets under the active master key, online.
//!
//! After a rotation ([`crate::crypto::Keyring`] holds a new active key and
//! the older ones), [`Broker::rekey`] walks every sealed value (toolkit API
//! keys and client secrets, apps' JWT secrets, connection tokens) and
//! re-seals those made with an older key. Connection tokens are written
//! back with a compare-and-swap on their version, so a refresh racing the
//! pass keeps its newer tokens. Pending connect flows are not rewritten:
//! they live at most 15 minutes, so older keys must stay in the key file at
//! least that long after a rotation (the pass reports them).

use crate::broker::{AdminError, Broker, credential_aad};
use crate::connections::{client_secret_aad, connection_aad};
use crate::crypto::CryptoError;
use crate::settings::jwt_secret_aad;

/// What a re-encryption pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RekeyReport {
    /// Values re-sealed under the active key.
    pub rewrapped: usize,
    /// Values that could not be opened (missing key, tampering): left as
    /// they are and logged.
    pub failed: usize,
}

impl Broker {
    /// Re-seals one hex value if an older key sealed it.
    fn rewrap_hex(
        &self,
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
        if !self.key().needs_rewrap(&bytes) {
            return false;
        }
        match self.key().rewrap(&bytes, aad) {
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

    /// Re-encrypts every stored secret sealed with an older key.
    pub async fn rekey(&self) -> Result<RekeyReport, AdminError> {
        let mut report = RekeyReport::default();
        for mut app in self.store.list_apps().await? {
            let id = app.id.clone();
            if let Some(jwt) = app.settings.jwt.as_mut()
                && self.rewrap_hex(
                    &mut jwt.sealed_hs256_secret,
                    &jwt_secret_aad(&id),
                    &mut report,
                    "app jwt secret",
                )
            {
                self.store.put_app(&app).await?;
            }
            for mut t in self.store.list_toolkits(&id).await? {
                let a = self.rewrap_hex(
                    &mut t.sealed_credential,
                    &credential_aad(&id, &t.toolkit),
                    &mut report,
                    "toolkit api key",
                );
                let b = self.rewrap_hex(
                    &mut t.sealed_client_secret,
                    &client_secret_aad(&id, &t.toolkit),
                    &mut report,
                    "toolkit client secret",
                );
                if a || b {
                    self.store.put_toolkit(&t).await?;
                }
            }
            for c in self.store.list_connections(&id).await? {
                self.rekey_connection(&id, c, &mut report).await?;
            }
        }
        Ok(report)
    }

    async fn rekey_connection(
        &self,
        app: &str,
        mut c: crate::store::ConnectionRecord,
        report: &mut RekeyReport,
    ) -> Result<(), AdminError> {
        // A refresh may write between the read and the swap: then read the
        // newer record (sealed with the active key already) and look again.
        for _ in 0..8 {
            let expected = c.version;
            let mut next = c.clone();
            let mut local = RekeyReport::default();
            let a = self.rewrap_hex(
                &mut next.sealed_access_token,
                &connection_aad(app, &c.id, "access_token"),
                &mut local,
                "access token",
            );
            let b = self.rewrap_hex(
                &mut next.sealed_refresh_token,
                &connection_aad(app, &c.id, "refresh_token"),
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
