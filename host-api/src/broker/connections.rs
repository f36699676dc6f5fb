//! A caller's connections: listing, choosing the default, disconnecting
//! (revoking upstream first), and picking the connection a tool call uses.

use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::{AdminError, Broker};
use crate::error::ToolError;
use crate::invocation::Principal;
use crate::store::{AccountInfo, ConnectionRecord, ConnectionState, ToolkitRecord};

/// A connection as shown to callers: never a token.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    /// Connection id.
    pub id: String,
    /// Connector slug.
    pub toolkit: String,
    /// End user, or null for the shared connection.
    pub user_id: Option<String>,
    /// `pending`, `active`, `needs_reconnect`, `revoked`, `disabled`.
    pub state: ConnectionState,
    /// Why.
    pub reason: Option<String>,
    /// Whether calls use it when the owner has several.
    pub is_default: bool,
    /// The upstream account.
    pub account: AccountInfo,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When the access token expires (Unix ms).
    pub expires_at: Option<u64>,
    /// For pending flows: the request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_request_id: Option<String>,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms.
    pub updated_at: u64,
}

/// Filters of `GET .../connections` (admins; users always see their own).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionFilter {
    /// Only this toolkit.
    pub toolkit: Option<String>,
    /// Only this end user.
    pub user_id: Option<String>,
    /// Only this state.
    pub state: Option<ConnectionState>,
}

impl Broker {
    /// Connections visible to `caller`, pending flows included.
    pub async fn list_connections(
        &self,
        app: &str,
        caller: &Principal,
        filter: &ConnectionFilter,
    ) -> Result<Vec<ConnectionView>, AdminError> {
        let only_user = match caller {
            Principal::User(u) => Some(u.as_str()),
            Principal::Admin => None,
            _ => {
                return Err(AdminError::Forbidden(
                    "listing connections needs an admin key or an end user's JWT".into(),
                ));
            }
        };
        let disabled: Vec<String> = self
            .store
            .list_toolkits(app)
            .await?
            .into_iter()
            .filter(|t| !t.enabled)
            .map(|t| t.toolkit)
            .collect();
        let visible = |toolkit: &str, user: Option<&str>| {
            only_user.is_none_or(|u| user == Some(u))
                && filter.toolkit.as_deref().is_none_or(|t| t == toolkit)
                && filter.user_id.as_deref().is_none_or(|u| user == Some(u))
        };
        let mut out = Vec::new();
        for c in self.store.list_connections(app).await? {
            if !visible(&c.toolkit, c.user_id.as_deref()) {
                continue;
            }
            let (state, reason) =
                if disabled.contains(&c.toolkit) && c.state == ConnectionState::Active {
                    (
                        ConnectionState::Disabled,
                        Some("the toolkit is disabled by the app's admin".to_string()),
                    )
                } else {
                    (c.state, c.reason.clone())
                };
            out.push(ConnectionView {
                id: c.id,
                toolkit: c.toolkit,
                user_id: c.user_id,
                state,
                reason,
                is_default: c.is_default,
                account: c.account,
                scopes: c.scopes,
                expires_at: c.expires_at_ms,
                connection_request_id: None,
                created_at: c.created_at_ms,
                updated_at: c.updated_at_ms,
            });
        }
        let now = self.now_ms();
        for f in self.store.list_flows(app).await? {
            if f.reconnect || f.expires_at_ms <= now || !visible(&f.toolkit, f.user_id.as_deref()) {
                continue;
            }
            out.push(ConnectionView {
                id: f.connection_id,
                toolkit: f.toolkit,
                user_id: f.user_id,
                state: ConnectionState::Pending,
                reason: Some("waiting for the user to finish connecting".into()),
                is_default: false,
                account: AccountInfo::default(),
                scopes: f.scopes,
                expires_at: None,
                connection_request_id: Some(f.request_id),
                created_at: f.created_at_ms,
                updated_at: f.created_at_ms,
            });
        }
        out.retain(|v| filter.state.is_none_or(|s| s == v.state));
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn owned_connection(
        &self,
        app: &str,
        caller: &Principal,
        id: &str,
    ) -> Result<ConnectionRecord, AdminError> {
        let c = self.store.get_connection(app, id).await?;
        match (c, caller) {
            (Some(c), Principal::Admin) => Ok(c),
            (Some(c), Principal::User(u)) if c.user_id.as_deref() == Some(u.as_str()) => Ok(c),
            // Another user's connection is reported as missing.
            _ => Err(AdminError::NotFound(format!(
                "no connection `{id}` visible to this caller in app `{app}`"
            ))),
        }
    }

    /// Makes a connection the one its owner's calls use for its toolkit.
    pub async fn set_default_connection(
        &self,
        app: &str,
        caller: &Principal,
        id: &str,
    ) -> Result<(), AdminError> {
        let target = self.owned_connection(app, caller, id).await?;
        for mut c in self
            .store
            .list_connections_for(app, &target.toolkit, target.user_id.as_deref())
            .await?
        {
            let want = c.id == target.id;
            if c.is_default != want {
                c.is_default = want;
                c.updated_at_ms = self.now_ms();
                self.store.put_connection(&c).await?;
            }
        }
        Ok(())
    }

    /// Disconnects: revokes upstream where the connector can, then deletes
    /// the connection whatever the provider said.
    #[instrument(skip_all, fields(app, connection = id))]
    pub async fn disconnect(
        &self,
        app: &str,
        caller: &Principal,
        id: &str,
    ) -> Result<bool, AdminError> {
        let c = self.owned_connection(app, caller, id).await?;
        let mut revoked = false;
        if let Ok(Some(connector)) = self.find_connector(app, &c.toolkit).await
            && let Ok(Some(record)) = self.store.get_toolkit(app, &c.toolkit).await
            && let Ok(client) = self.oauth_client(app, &connector, &record)
            && client.revocation_url.is_some()
        {
            let (sealed, field, hint) = match (&c.sealed_refresh_token, &c.sealed_access_token) {
                (Some(r), _) => (Some(r), "refresh_token", "refresh_token"),
                (None, a) => (a.as_ref(), "access_token", "access_token"),
            };
            if let Some(sealed) = sealed
                && let Ok(token) =
                    self.open_hex(sealed, &crate::crypto::aad::connection(app, id, field))
            {
                match client.revoke(&self.token_http, &token, hint).await {
                    Ok(()) => revoked = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "upstream revocation failed; deleting locally anyway")
                    }
                }
            }
        }
        self.store.delete_connection(app, id).await?;
        self.refresh.clear(id);
        // If the default went and one connection is left, it becomes the
        // default; with several left, the owner chooses.
        if c.is_default {
            let rest = self
                .store
                .list_connections_for(app, &c.toolkit, c.user_id.as_deref())
                .await?;
            if let [only] = rest.as_slice() {
                let mut only = only.clone();
                only.is_default = true;
                self.store.put_connection(&only).await?;
            }
        }
        tracing::info!(revoked_upstream = revoked, "connection deleted");
        Ok(revoked)
    }

    /// The connection a call uses: the shared one for shared toolkits,
    /// otherwise `user`'s default (or only) connection; `explicit` names
    /// one directly.
    pub(crate) async fn resolve_connection(
        &self,
        app: &str,
        record: &ToolkitRecord,
        user: Option<&str>,
        explicit: Option<&str>,
    ) -> Result<ConnectionRecord, ToolError> {
        let slug = record.toolkit.as_str();
        let unavailable =
            |e: crate::store::StoreError| ToolError::Unavailable(format!("store: {e}"));
        let owner: Option<&str> = if record.shared {
            None
        } else {
            Some(user.ok_or_else(|| {
                ToolError::NotConnected(format!(
                    "`{slug}` uses each end user's own account and this call has no end user: call the function with the user's JWT, or use as-user(id) from a cron run or an admin call"
                ))
            })?)
        };
        let whose = || match owner {
            None => format!("app `{app}`'s shared `{slug}` account"),
            Some(u) => format!("user `{u}`"),
        };
        if let Some(id) = explicit {
            return self
                .store
                .get_connection(app, id)
                .await
                .map_err(unavailable)?
                .filter(|c| c.toolkit == slug && c.user_id.as_deref() == owner)
                .ok_or_else(|| {
                    ToolError::NotConnected(format!(
                        "connection `{id}` is not a `{slug}` connection of {}",
                        whose()
                    ))
                });
        }
        let candidates: Vec<ConnectionRecord> = self
            .store
            .list_connections_for(app, slug, owner)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|c| c.state != ConnectionState::Revoked)
            .collect();
        if let Some(c) = candidates.iter().find(|c| c.is_default) {
            return Ok(c.clone());
        }
        match candidates.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ToolError::NotConnected(match owner {
                None => format!(
                    "`{slug}` has no shared connection: an admin must POST /v1/{app}/integrations/connect with {{\"toolkit\": \"{slug}\", \"shared\": true}}"
                ),
                Some(u) => format!(
                    "user `{u}` has not connected `{slug}`: start the connect flow with POST /v1/{app}/integrations/connect {{\"toolkit\": \"{slug}\"}} using the user's JWT"
                ),
            })),
            several => Err(ToolError::Denied(format!(
                "{} has {} `{slug}` connections and none is the default: choose one with PATCH /v1/{app}/integrations/connections/{{id}} {{\"default\": true}}",
                whose(),
                several.len()
            ))),
        }
    }
}
