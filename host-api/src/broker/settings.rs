//! An app's settings: how its end users' JWTs are verified, and where the
//! connect flow may send their browser afterwards.
//!
//! The HS256 secret is stored sealed and never shown again; the redirect
//! allowlist is validated entry by entry ([`crate::redirect`]).

use serde::{Deserialize, Serialize};

use super::{AdminError, Broker};
use crate::jwt::{JwtError, JwtKeys, JwtRules};
use crate::redirect;
use crate::secret::Secret;
use crate::store::{AppSettings, JwtSettings};

/// Most redirect URLs an app may allow.
const MAX_REDIRECT_URLS: usize = 64;
/// Shortest HS256 secret accepted: RFC 7518 asks for a key at least as
/// long as the hash (256 bits).
const MIN_HS256_SECRET: usize = 32;
/// Longest HS256 secret accepted.
const MAX_HS256_SECRET: usize = 4096;

/// `PATCH /v1/{appId}/settings`: fields left out are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsPatch {
    /// How end-user JWTs are verified; `null` turns end-user access off.
    #[serde(default, with = "double_option")]
    pub jwt: Option<Option<JwtPatch>>,
    /// The full allowlist of post-connect redirect URLs.
    #[serde(default)]
    pub redirect_urls: Option<Vec<String>>,
}

/// JWT verification as an admin sends it: exactly one of the secret or the
/// JWKS URL.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtPatch {
    /// HS256 secret shared with the app's own backend.
    #[serde(default)]
    pub hs256_secret: Option<Secret>,
    /// JWKS URL of the app's identity provider.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Required issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required audience.
    #[serde(default)]
    pub audience: Option<String>,
}

/// Settings as shown to admins: never the secret.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    /// JWT verification, if configured.
    pub jwt: Option<JwtView>,
    /// Allowed post-connect redirect URLs.
    pub redirect_urls: Vec<String>,
    /// The OAuth redirect URI of this deployment (register it with
    /// providers).
    pub oauth_redirect_uri: String,
}

/// JWT verification as shown to admins.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtView {
    /// `hs256` or `jwks`.
    pub kind: &'static str,
    /// The JWKS URL, if that is the kind.
    pub jwks_url: Option<String>,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Required audience.
    pub audience: Option<String>,
}

/// Distinguishes "absent" from "null" for `jwt`.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

impl Broker {
    /// Applies a settings patch and returns the result.
    pub async fn update_settings(
        &self,
        app: &str,
        patch: SettingsPatch,
    ) -> Result<SettingsView, AdminError> {
        let (patches_urls, patches_jwt) = (patch.redirect_urls.is_some(), patch.jwt.is_some());
        let mut record = self
            .store
            .get_app(app)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no app `{app}`")))?;
        if let Some(urls) = patch.redirect_urls {
            if urls.len() > MAX_REDIRECT_URLS {
                return Err(AdminError::Invalid(format!(
                    "redirectUrls: at most {MAX_REDIRECT_URLS} entries"
                )));
            }
            let mut clean = Vec::with_capacity(urls.len());
            for u in &urls {
                let entry = redirect::validate_allowlist_entry(u, self.policy.allow_private)
                    .map_err(|e| AdminError::Invalid(format!("redirectUrls: {e}")))?;
                if !clean.contains(&entry) {
                    clean.push(entry);
                }
            }
            record.settings.redirect_urls = clean;
        }
        match patch.jwt {
            None => {}
            Some(None) => record.settings.jwt = None,
            Some(Some(j)) => record.settings.jwt = Some(self.jwt_settings(app, j)?),
        }
        // Compare-and-swap: if another write got in since the read (another
        // PATCH, a re-encryption, an admin key change), the patched fields
        // are set on the newer record and the swap is tried again.
        let patched = record.settings.clone();
        for _ in 0..crate::store::MAX_CAS_ATTEMPTS {
            if self
                .store
                .put_app_if_version(&record, Some(record.version))
                .await?
            {
                return Ok(self.settings_view(&record.settings));
            }
            record = self
                .store
                .get_app(app)
                .await?
                .ok_or_else(|| AdminError::NotFound(format!("no app `{app}`")))?;
            if patches_urls {
                record.settings.redirect_urls = patched.redirect_urls.clone();
            }
            if patches_jwt {
                record.settings.jwt = patched.jwt.clone();
            }
        }
        Err(AdminError::Busy(format!(
            "the settings of app `{app}` kept changing while being saved; try again"
        )))
    }

    fn jwt_settings(&self, app: &str, j: JwtPatch) -> Result<JwtSettings, AdminError> {
        let sealed_hs256_secret = match (&j.hs256_secret, &j.jwks_url) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(AdminError::Invalid(
                    "jwt: give exactly one of hs256Secret (a shared secret) or jwksUrl (your identity provider's keys)".into(),
                ));
            }
            (Some(s), None) => {
                let len = s.expose().len();
                if !(MIN_HS256_SECRET..=MAX_HS256_SECRET).contains(&len) {
                    return Err(AdminError::Invalid(format!(
                        "jwt.hs256Secret must be {MIN_HS256_SECRET} to {MAX_HS256_SECRET} bytes (at least 256 bits)"
                    )));
                }
                Some(self.seal_hex(s, &crate::crypto::aad::jwt_secret(app))?)
            }
            (None, Some(_)) => None,
        };
        if j.jwks_url.is_some() && (j.issuer.is_none() || j.audience.is_none()) {
            // A JWKS endpoint may serve many tenants (Firebase, Azure's common
            // endpoint): its signature alone admits every tenant's tokens.
            let missing = match (&j.issuer, &j.audience) {
                (None, None) => "issuer and audience",
                (None, Some(_)) => "issuer",
                _ => "audience",
            };
            return Err(AdminError::Invalid(format!(
                "jwt: with jwksUrl, give {missing} too (the `iss` and `aud` your identity provider puts in your app's tokens, for example \"issuer\": \"https://securetoken.google.com/PROJECT\", \"audience\": \"PROJECT\"); a JWKS endpoint may sign other tenants' tokens as well"
            )));
        }
        if let Some(u) = &j.jwks_url {
            let parsed = url::Url::parse(u)
                .map_err(|e| AdminError::Invalid(format!("jwt.jwksUrl `{u}` is not a URL: {e}")))?;
            self.policy
                .check_url(&parsed)
                .map_err(|e| AdminError::Invalid(format!("jwt.jwksUrl: {e}")))?;
        }
        for (what, v) in [("issuer", &j.issuer), ("audience", &j.audience)] {
            if v.as_ref().is_some_and(|v| v.is_empty() || v.len() > 1024) {
                return Err(AdminError::Invalid(format!(
                    "jwt.{what} must be 1 to 1024 bytes"
                )));
            }
        }
        Ok(JwtSettings {
            sealed_hs256_secret,
            jwks_url: j.jwks_url,
            issuer: j.issuer,
            audience: j.audience,
        })
    }

    /// The settings of an app as shown to admins.
    pub fn settings_view(&self, s: &AppSettings) -> SettingsView {
        SettingsView {
            jwt: s.jwt.as_ref().map(|j| JwtView {
                kind: if j.jwks_url.is_some() {
                    "jwks"
                } else {
                    "hs256"
                },
                jwks_url: j.jwks_url.clone(),
                issuer: j.issuer.clone(),
                audience: j.audience.clone(),
            }),
            redirect_urls: s.redirect_urls.clone(),
            oauth_redirect_uri: self.callback_url().to_string(),
        }
    }

    /// Verifies an end user's JWT for `app`; `Ok(None)` when the app does
    /// not accept end-user tokens.
    pub async fn verify_user(&self, app: &str, token: &str) -> Result<Option<String>, JwtError> {
        let settings = self
            .app_settings(app)
            .await
            .map_err(|_| JwtError::JwksUnavailable("the app's settings cannot be read".into()))?;
        let Some(j) = settings.jwt else {
            return Ok(None);
        };
        let keys = match (&j.sealed_hs256_secret, &j.jwks_url) {
            (Some(sealed), _) => JwtKeys::Hs256(
                self.open_hex(sealed, &crate::crypto::aad::jwt_secret(app))
                    .map_err(|_| {
                        JwtError::JwksUnavailable("the app's JWT secret cannot be unsealed".into())
                    })?,
            ),
            (None, Some(u)) => {
                JwtKeys::Jwks(url::Url::parse(u).map_err(|_| {
                    JwtError::JwksUnavailable("the app's jwksUrl is invalid".into())
                })?)
            }
            (None, None) => return Ok(None),
        };
        let rules = JwtRules {
            keys,
            issuer: j.issuer,
            audience: j.audience,
        };
        self.jwt.verify(&rules, token).await.map(Some)
    }
}
