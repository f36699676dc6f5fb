//! The records a [`super::Store`] keeps: apps, functions and their
//! versions, toolkits, connections, flows, leases and audit entries.
//! Sealed fields hold ciphertext only (see [`crate::crypto`]).

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

/// An app: the unit of isolation for functions, connections and keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRecord {
    /// App id, as in `/v1/{appId}/...`.
    pub id: String,
    /// SHA-256 (hex) of each admin API key; keys themselves are never stored.
    pub admin_key_hashes: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// End-user authentication and connect-flow settings.
    #[serde(default)]
    pub settings: AppSettings,
    /// Increases with every write (assigned by the store; records written
    /// before versions existed read as 0): read-modify-write callers use
    /// [`Store::put_app_if_version`] so concurrent changes are not lost.
    #[serde(default)]
    pub version: u64,
}

/// An app's settings, changed with `PATCH /v1/{appId}/settings`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSettings {
    /// How end-user JWTs are verified; without it, only admin keys are
    /// accepted.
    #[serde(default)]
    pub jwt: Option<JwtSettings>,
    /// Where the connect flow may send the user's browser afterwards.
    #[serde(default)]
    pub redirect_urls: Vec<String>,
}

/// How an app's end-user JWTs are verified (`sub` is the user id).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtSettings {
    /// The HS256 secret, sealed (hex).
    #[serde(default)]
    pub sealed_hs256_secret: Option<String>,
    /// A JWKS URL for asymmetric keys.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Required `iss`, if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    #[serde(default)]
    pub audience: Option<String>,
}

/// Versions kept per function (the current one included). Enough to roll
/// back through a day of busy redeploys; older ones are pruned so a function
/// redeployed on every save (`--watch`) does not fill the disk with
/// artifacts.
pub const MAX_VERSIONS: usize = 20;

/// A deployed function version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionRecord {
    /// Owning app.
    pub app: String,
    /// Function name, as in `/fn/{appId}/{name}`.
    pub name: String,
    /// Increases with every deploy of the same name.
    pub version: u64,
    /// The deployed manifest (defaults filled in).
    pub manifest: Manifest,
    /// SHA-256 (hex) of the component, which names its files on disk.
    pub component_sha256: String,
    /// Size of the component in bytes.
    pub component_size: u64,
    /// Unix seconds.
    pub deployed_at: u64,
}

/// An app's configuration of one toolkit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolkitRecord {
    /// Owning app.
    pub app: String,
    /// Connector slug.
    pub toolkit: String,
    /// Disabled toolkits keep their credential but every call is denied.
    pub enabled: bool,
    /// The shared credential, sealed (hex of the ciphertext).
    pub sealed_credential: Option<String>,
    /// Unix seconds.
    pub updated_at: u64,
    /// Increases with every write (assigned by the store; 0 for records
    /// written before versions existed): see
    /// [`Store::put_toolkit_if_version`].
    #[serde(default)]
    pub version: u64,
    /// Name shown to people, replacing the connector's.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Scopes asked for when connecting; `None` means the union of the
    /// connector's tools' scopes.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The app's own OAuth client id at the provider.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its client secret, sealed (hex).
    #[serde(default)]
    pub sealed_client_secret: Option<String>,
    /// One connection (the builder's) serves every caller of the app.
    #[serde(default)]
    pub shared: bool,
    /// Replaces the connector's API host and OAuth endpoints.
    #[serde(flatten, deserialize_with = "stored_endpoints")]
    pub endpoints: EndpointOverrides,
    /// Non-secret connector settings (a Snowflake warehouse, a Databricks
    /// warehouse id, a BigQuery project).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Data connectors: read-only, row, byte and time caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_policy: Option<crate::data::DataPolicy>,
    /// Tools of a shared or API-key toolkit that end users may call
    /// directly through the execute API with their own JWT (by default
    /// none: the app's credential serves end users only through functions
    /// whose manifest grants the tool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_tools: Vec<String>,
}

/// Per-app replacements of a connector's endpoints: its API host and its
/// OAuth endpoints (GitHub Enterprise, regional hosts, self-hosted
/// providers, local test servers). Declared once and flattened into the
/// configure request ([`crate::broker::ConfigureToolkit`]) and the stored
/// [`ToolkitRecord`], so each is a top-level field (`apiBaseUrl`,
/// `authorizeUrl`, `tokenUrl`, `revocationUrl`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOverrides {
    /// Replaces the connector's API base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// Replaces the authorization endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    /// Replaces the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Replaces the revocation endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
}

impl EndpointOverrides {
    /// Each endpoint with the name the API and errors use for it.
    pub fn named(&self) -> [(&'static str, &Option<String>); 4] {
        [
            ("apiBaseUrl", &self.api_base_url),
            ("authorizeUrl", &self.authorize_url),
            ("tokenUrl", &self.token_url),
            ("revocationUrl", &self.revocation_url),
        ]
    }

    /// Takes every endpoint `newer` names and keeps the others.
    pub fn update(&mut self, newer: &EndpointOverrides) {
        for (slot, value) in [
            (&mut self.api_base_url, &newer.api_base_url),
            (&mut self.authorize_url, &newer.authorize_url),
            (&mut self.token_url, &newer.token_url),
            (&mut self.revocation_url, &newer.revocation_url),
        ] {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
    }

    /// Whether an OAuth endpoint (not the API host) is named.
    pub fn names_oauth_endpoint(&self) -> bool {
        self.authorize_url.is_some() || self.token_url.is_some() || self.revocation_url.is_some()
    }
}

/// Toolkit records written before the overrides were flattened kept the
/// OAuth endpoints in a nested `oauthOverrides` object; both read the same.
fn stored_endpoints<'de, D>(d: D) -> Result<EndpointOverrides, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Stored {
        #[serde(flatten)]
        flat: EndpointOverrides,
        #[serde(default)]
        oauth_overrides: Option<EndpointOverrides>,
    }
    let Stored {
        mut flat,
        oauth_overrides,
    } = Stored::deserialize(d)?;
    if let Some(nested) = oauth_overrides {
        let mut merged = nested;
        merged.update(&flat);
        flat = merged;
    }
    Ok(flat)
}

/// The life of a connection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// The user has not finished the connect flow (shown for pending flows).
    Pending,
    /// Usable.
    Active,
    /// The grant was refused (`invalid_grant`, revoked upstream): the user
    /// must connect again, which keeps the connection id.
    NeedsReconnect,
    /// Disconnected.
    Revoked,
    /// The toolkit is disabled by the admin; calls are denied until it is
    /// enabled again.
    Disabled,
}

/// The upstream account a connection acts as.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    /// The provider's id of the account.
    #[serde(default)]
    pub id: Option<String>,
    /// A readable name (login, email).
    #[serde(default)]
    pub name: Option<String>,
}

/// An OAuth connection: one account at one provider, for the app (shared)
/// or for one end user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRecord {
    /// `conn_…`, stable across reconnects.
    pub id: String,
    /// Owning app.
    pub app: String,
    /// Connector slug.
    pub toolkit: String,
    /// The end user, or `None` for the app's shared connection.
    pub user_id: Option<String>,
    /// State.
    pub state: ConnectionState,
    /// Why the state is what it is, for people.
    #[serde(default)]
    pub reason: Option<String>,
    /// The connection calls use when the caller has several for a toolkit.
    pub is_default: bool,
    /// The upstream account, where the provider reports it.
    #[serde(default)]
    pub account: AccountInfo,
    /// Scopes the provider granted.
    pub scopes: Vec<String>,
    /// Access token, sealed (hex).
    pub sealed_access_token: Option<String>,
    /// Refresh token, sealed (hex).
    pub sealed_refresh_token: Option<String>,
    /// When the access token expires (Unix ms), if the provider said.
    pub expires_at_ms: Option<u64>,
    /// Increases with every write of the tokens: the fencing version that
    /// a refresh compares before it stores new tokens.
    pub version: u64,
    /// Unix ms.
    pub created_at_ms: u64,
    /// Unix ms.
    pub updated_at_ms: u64,
    /// When the current tokens were issued (connect or refresh; Unix ms).
    #[serde(default)]
    pub refreshed_at_ms: Option<u64>,
    /// The connection's own API host, when the provider named one in its
    /// token answer (Salesforce `instance_url`): replaces the connector's
    /// scheme, host and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
}

/// A connect flow waiting for the provider's callback. Stored under a hash
/// of its `state`, taken (and so consumed) exactly once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowRecord {
    /// `connectionRequestId`, shown to the caller.
    pub request_id: String,
    /// Owning app.
    pub app: String,
    /// Connector slug.
    pub toolkit: String,
    /// The end user, or `None` for the shared connection.
    pub user_id: Option<String>,
    /// The connection this flow creates or re-authorizes.
    pub connection_id: String,
    /// Whether it re-authorizes an existing connection.
    pub reconnect: bool,
    /// Where the browser goes afterwards (checked against the allowlist).
    pub redirect_url: Option<String>,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// PKCE verifier, sealed (hex).
    pub sealed_pkce_verifier: Option<String>,
    /// The token endpoint, fixed when the flow started.
    pub token_url: String,
    /// The redirect URI sent to the authorization endpoint.
    pub redirect_uri: String,
    /// Unix ms.
    pub created_at_ms: u64,
    /// Unix ms; the flow is refused after this.
    pub expires_at_ms: u64,
    /// Started by an admin to move the connection to another upstream
    /// account; without it a reconnect must come back with the same one.
    #[serde(default)]
    pub switch_account: bool,
    /// SHA-256 (hex) of the cookie that binds the flow to the browser that
    /// confirmed it on the connect page; the callback requires it.
    #[serde(default)]
    pub browser_binding: Option<String>,
    /// The provider's authorization URL (it carries the state), sealed
    /// (hex); the connect page sends the confirming browser there.
    #[serde(default)]
    pub sealed_provider_url: Option<String>,
}

/// A refresh lease: who may refresh a connection's tokens right now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The process holding it.
    pub holder: String,
    /// Unix ms; an expired lease may be taken over.
    pub expires_at_ms: u64,
    /// Increases with every acquisition.
    pub fence: u64,
}

/// One brokered tool call, as recorded for the audit trail. Holds no
/// parameters, results or credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Returned to callers as `logId`.
    pub log_id: String,
    /// App.
    pub app: String,
    /// Calling function, if the call came from one.
    pub function: Option<String>,
    /// The verified principal the call came from (`admin`, `cron`,
    /// `anonymous`, `user:<id>`), never a guest-supplied value.
    pub identity: String,
    /// The end user a call asked to act as (`as-user` or the API's
    /// `userId`), recorded apart from the principal whether or not it was
    /// allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_user: Option<String>,
    /// The connection whose credential was used, if one was.
    #[serde(default)]
    pub connection: Option<String>,
    /// Tool name.
    pub tool: String,
    /// `ok` or the error kind.
    pub outcome: String,
    /// Provider status, where one was received.
    pub status: Option<u16>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_overrides_are_flat_and_older_nested_records_still_read() {
        let record = ToolkitRecord {
            app: "a".into(),
            toolkit: "github".into(),
            endpoints: EndpointOverrides {
                api_base_url: Some("https://ghe.example/api/v3".into()),
                token_url: Some("https://ghe.example/token".into()),
                ..EndpointOverrides::default()
            },
            ..ToolkitRecord::default()
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["apiBaseUrl"], "https://ghe.example/api/v3");
        assert_eq!(json["tokenUrl"], "https://ghe.example/token");
        assert!(json.get("oauthOverrides").is_none());
        let back: ToolkitRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.endpoints, record.endpoints);

        // Written before the flattening: OAuth endpoints nested.
        let old: ToolkitRecord = serde_json::from_value(serde_json::json!({
            "app": "a", "toolkit": "github", "enabled": true, "updatedAt": 1,
            "apiBaseUrl": "https://ghe.example/api/v3",
            "sealedCredential": null,
            "oauthOverrides": {"authorizeUrl": "https://ghe.example/authorize",
                               "tokenUrl": "https://ghe.example/token"}
        }))
        .unwrap();
        assert_eq!(
            old.endpoints,
            EndpointOverrides {
                api_base_url: Some("https://ghe.example/api/v3".into()),
                authorize_url: Some("https://ghe.example/authorize".into()),
                token_url: Some("https://ghe.example/token".into()),
                revocation_url: None,
            }
        );
    }
}
