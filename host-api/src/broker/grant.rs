//! What the connect flow and a refresh share: the app's OAuth client for a
//! toolkit, and the one place a token answer becomes a stored connection's
//! sealed tokens.

use super::Broker;
use crate::catalog::Connector;
use crate::crypto::CryptoError;
use crate::oauth::{OAuthClient, Tokens};
use crate::store::{ConnectionRecord, ConnectionState, ToolkitRecord};

impl Broker {
    /// The OAuth client of a configured toolkit, endpoints overridden where
    /// the admin said so.
    pub(super) fn oauth_client(
        &self,
        app: &str,
        connector: &Connector,
        record: &ToolkitRecord,
    ) -> Result<OAuthClient, String> {
        let slug = &connector.spec.slug;
        let (Some(spec), Some(endpoints)) = (&connector.spec.oauth, &connector.oauth) else {
            return Err(format!(
                "`{slug}` is not an OAuth connector; configure an apiKey instead"
            ));
        };
        let (Some(client_id), Some(sealed)) = (&record.client_id, &record.sealed_client_secret)
        else {
            return Err(format!(
                "toolkit `{slug}` has no OAuth client: an admin must POST /v1/{app}/integrations/configure with clientId and clientSecret"
            ));
        };
        if connector.spec.data.as_ref().is_some_and(|d| d.per_app_host)
            && (record.endpoints.authorize_url.is_none()
                || record.endpoints.token_url.is_none()
                || record.endpoints.api_base_url.is_none())
        {
            return Err(format!(
                "every `{slug}` account has its own host: an admin must configure apiBaseUrl, authorizeUrl and tokenUrl on it first (see the connector's description)"
            ));
        }
        let client_secret = self
            .open_hex(sealed, &crate::crypto::aad::client_secret(app, slug))
            .map_err(|_| format!("the stored client secret of `{slug}` cannot be unsealed"))?;
        let pick = |over: &Option<String>, default: &url::Url| -> Result<url::Url, String> {
            match over {
                Some(u) => url::Url::parse(u)
                    .map_err(|_| format!("configured endpoint `{u}` of `{slug}` is not a URL")),
                None => Ok(default.clone()),
            }
        };
        let o = &record.endpoints;
        Ok(OAuthClient {
            client_id: client_id.clone(),
            client_secret,
            authorize_url: pick(&o.authorize_url, &endpoints.authorize)?,
            token_url: pick(&o.token_url, &endpoints.token)?,
            revocation_url: match (&o.revocation_url, &endpoints.revocation) {
                (Some(u), _) => Some(pick(&Some(u.clone()), &endpoints.token)?),
                (None, r) => r.clone(),
            },
            client_auth: spec.client_auth,
            client_id_param: spec.client_id_param.clone(),
        })
    }

    /// Puts a token answer (from a code exchange or a refresh) into `next`:
    /// the access token and any new refresh token sealed under the
    /// connection's associated data (no new refresh token keeps the old
    /// one), expiry, granted scopes and the connection's own API host when
    /// the answer names them, the refresh time, and the next version. The
    /// caller stores it.
    pub(super) fn apply_tokens(
        &self,
        next: &mut ConnectionRecord,
        tokens: &Tokens,
        now: u64,
    ) -> Result<(), CryptoError> {
        let (app, id) = (next.app.clone(), next.id.clone());
        next.sealed_access_token = Some(self.seal_hex(
            &tokens.access_token,
            &crate::crypto::aad::connection(&app, &id, "access_token"),
        )?);
        if let Some(rt) = &tokens.refresh_token {
            next.sealed_refresh_token = Some(self.seal_hex(
                rt,
                &crate::crypto::aad::connection(&app, &id, "refresh_token"),
            )?);
        }
        next.expires_at_ms = tokens
            .expires_in
            .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
        if let Some(scopes) = &tokens.scopes {
            next.scopes.clone_from(scopes);
        }
        if let Some(instance) = &tokens.instance_url {
            next.api_base_url = Some(instance.to_string());
        }
        next.state = ConnectionState::Active;
        next.reason = None;
        next.version += 1;
        next.updated_at_ms = now;
        next.refreshed_at_ms = Some(now);
        Ok(())
    }
}
