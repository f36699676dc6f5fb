//! An app admin's management of its toolkits: configure (OAuth client or
//! API key, scopes, endpoints, data policy), disable, list, and custom
//! connectors.

use serde_json::Value;

use super::{Broker, MAX_CREDENTIAL_LEN, MAX_NAME_LEN};
use crate::catalog::{Catalog, CatalogError, Connector, ConnectorSpec};
use crate::secret::Secret;
use crate::store::{EndpointOverrides, StoreError, ToolkitRecord};

/// The members a configure request may carry, for the unknown-field error.
const CONFIGURE_FIELDS: &str = "toolkit, displayName, scopes, clientId, clientSecret, shared, apiKey, apiBaseUrl, authorizeUrl, tokenUrl, revocationUrl, settings, dataPolicy, userTools";

/// What an admin sends to configure a toolkit. Fields left out keep their
/// stored value.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigureToolkit {
    /// Connector slug.
    pub toolkit: String,
    /// Name shown to people.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Scopes to ask for when connecting (default: what the tools need).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The app's OAuth client id at the provider.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its client secret (stored sealed, never shown again).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// One connection for the whole app instead of one per end user.
    #[serde(default)]
    pub shared: Option<bool>,
    /// The app's shared credential (API key or token) for the toolkit.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Overrides of the connector's API host and OAuth endpoints
    /// (`apiBaseUrl`, `authorizeUrl`, `tokenUrl`, `revocationUrl`).
    #[serde(flatten)]
    pub endpoints: EndpointOverrides,
    /// Non-secret settings of the connector (data platforms: warehouse,
    /// project, account, user…); replaces the stored ones.
    #[serde(default)]
    pub settings: Option<serde_json::Map<String, Value>>,
    /// Data connectors' policy: `{readOnly, maxRows, maxBytes,
    /// statementTimeoutMs}`.
    #[serde(default)]
    pub data_policy: Option<crate::data::DataPolicy>,
    /// Tools of a shared or API-key toolkit that end users may call
    /// directly through the execute API (replaces the stored list; `[]`
    /// closes them all again). Named one by one: nothing, not the proxy
    /// nor the data tools, is open unless listed.
    #[serde(default)]
    pub user_tools: Option<Vec<String>>,
    /// Names of members the request carried that are none of the above
    /// (their values are dropped unread, so a mistyped secret is not
    /// kept); refused by [`Broker::configure`] naming them, since serde
    /// cannot deny unknown fields next to a flattened struct.
    #[serde(flatten)]
    pub unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

/// Checks the `userTools` of a configure request against the connector's
/// tools.
fn checked_user_tools(
    connector: &Connector,
    tools: Vec<String>,
) -> Result<Vec<String>, AdminError> {
    let slug = &connector.spec.slug;
    if tools.len() > 256 {
        return Err(AdminError::Invalid(
            "userTools: at most 256 tool names".into(),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tools.len());
    for name in tools {
        if !connector.tools.contains_key(&name) {
            return Err(AdminError::Invalid(format!(
                "userTools: `{name}` is not a tool of `{slug}`; GET .../integrations/tools?toolkit={slug} lists them"
            )));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// A configured toolkit as shown to admins: never a secret.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolkitView {
    /// Connector slug.
    pub toolkit: String,
    /// Name shown to people.
    pub display_name: String,
    /// Whether calls are allowed.
    pub enabled: bool,
    /// Whether an API key is stored.
    pub has_credential: bool,
    /// `oauth` (connections through the connect flow) or `api_key`.
    pub auth: &'static str,
    /// One connection for the whole app.
    pub shared: bool,
    /// OAuth client id (not secret).
    pub client_id: Option<String>,
    /// Whether an OAuth client secret is stored.
    pub has_client_secret: bool,
    /// Tools of this (shared or API-key) toolkit that end users may call
    /// directly.
    pub user_tools: Vec<String>,
    /// Scopes a new connection asks for.
    pub scopes: Vec<String>,
    /// The redirect URI to register with the provider (OAuth toolkits).
    pub redirect_uri: Option<String>,
    /// Effective API base URL.
    pub api_base_url: String,
    /// The endpoint overrides in force (only those the admin set).
    pub endpoint_overrides: EndpointOverrides,
    /// Unix seconds.
    pub updated_at: u64,
}

/// Errors of the broker's management operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The request is invalid; the message says how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist (or is not the caller's to see).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Too much is pending; retry later.
    #[error("{0}")]
    Busy(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::crypto::CryptoError> for AdminError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        AdminError::Store(StoreError::Backend(format!("sealing: {e}")))
    }
}

impl From<CatalogError> for AdminError {
    fn from(e: CatalogError) -> Self {
        AdminError::Invalid(e.to_string())
    }
}

impl Broker {
    /// Enables (or re-enables) a toolkit for an app: an API key, or the
    /// app's own OAuth client. Secrets are stored sealed.
    pub async fn configure(
        &self,
        app: &str,
        req: ConfigureToolkit,
    ) -> Result<ToolkitView, AdminError> {
        let connector = self.find_connector(app, &req.toolkit).await?.ok_or_else(|| {
            AdminError::NotFound(format!(
                "no connector `{}`; GET /v1/{app}/integrations/available lists them, or define a custom one",
                req.toolkit
            ))
        })?;
        if let Some(name) = req.unknown.keys().next() {
            return Err(AdminError::Invalid(format!(
                "unknown field `{name}` in the configure request; expected {CONFIGURE_FIELDS}"
            )));
        }
        let check_endpoint = |what: &str, u: &str| -> Result<(), AdminError> {
            let parsed = url::Url::parse(u)
                .map_err(|e| AdminError::Invalid(format!("{what} `{u}` is not a URL: {e}")))?;
            self.policy
                .check_url(&parsed)
                .map_err(|e| AdminError::Invalid(format!("{what}: {e}")))?;
            if !parsed.username().is_empty()
                || parsed.password().is_some()
                || parsed.fragment().is_some()
            {
                return Err(AdminError::Invalid(format!(
                    "{what} must not carry credentials or a fragment"
                )));
            }
            Ok(())
        };
        for (what, u) in req.endpoints.named() {
            if let Some(u) = u {
                check_endpoint(what, u)?;
            }
        }
        if req
            .endpoints
            .api_base_url
            .as_ref()
            .is_some_and(|u| u.contains('?'))
        {
            return Err(AdminError::Invalid(
                "apiBaseUrl must not carry a query".into(),
            ));
        }
        if let Some(o) = &connector.oauth
            && req.endpoints.authorize_url.is_none()
            && req.endpoints.token_url.is_none()
        {
            // A custom connector was checked when posted; this catches a
            // built-in one pointed at by an insecure policy change.
            for u in o.all() {
                self.policy
                    .check_url(u)
                    .map_err(|e| AdminError::Invalid(format!("connector endpoint: {e}")))?;
            }
        }
        let oauth_fields = req.client_id.is_some()
            || req.client_secret.is_some()
            || req.endpoints.names_oauth_endpoint();
        if oauth_fields && connector.oauth.is_none() {
            return Err(AdminError::Invalid(format!(
                "`{}` connects with an API key, not OAuth: send apiKey instead of clientId/clientSecret",
                req.toolkit
            )));
        }
        if let Some(scopes) = &req.scopes
            && (scopes.len() > 256
                || scopes
                    .iter()
                    .any(|s| s.is_empty() || s.len() > MAX_NAME_LEN))
        {
            return Err(AdminError::Invalid(format!(
                "scopes: at most 256, each 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        if let Some(id) = &req.client_id
            && (id.is_empty() || id.len() > MAX_CREDENTIAL_LEN)
        {
            return Err(AdminError::Invalid(format!(
                "clientId must be 1 to {MAX_CREDENTIAL_LEN} bytes"
            )));
        }
        for (what, secret) in [
            ("apiKey", &req.api_key),
            ("clientSecret", &req.client_secret),
        ] {
            if let Some(s) = secret
                && (s.is_empty() || s.expose().len() > MAX_CREDENTIAL_LEN)
            {
                return Err(AdminError::Invalid(format!(
                    "{what} must be 1 to {MAX_CREDENTIAL_LEN} bytes"
                )));
            }
        }
        // Compare-and-swap: a write between the read and this one (another
        // configure, a disable, a re-encryption) fails the swap, and the
        // request is applied again to what is stored then, so neither change
        // is lost (a disable is undone only by a configure that follows it).
        for _ in 0..crate::store::MAX_CAS_ATTEMPTS {
            let existing = self.store.get_toolkit(app, &req.toolkit).await?;
            let expected = existing.as_ref().map(|r| r.version);
            let mut record = existing.unwrap_or_else(|| ToolkitRecord {
                app: app.to_string(),
                toolkit: req.toolkit.clone(),
                // A bot or service account serves everyone unless told otherwise.
                shared: connector.spec.kind == crate::catalog::ConnectorKind::Shared,
                ..ToolkitRecord::default()
            });
            record.enabled = true;
            if let Some(key) = &req.api_key {
                record.sealed_credential =
                    Some(self.seal_hex(key, &crate::crypto::aad::credential(app, &req.toolkit))?);
            }
            if let Some(secret) = &req.client_secret {
                record.sealed_client_secret = Some(self.seal_hex(
                    secret,
                    &crate::crypto::aad::client_secret(app, &req.toolkit),
                )?);
            }
            if req.client_id.is_some() {
                record.client_id = req.client_id.clone();
            }
            if req.display_name.is_some() {
                record.display_name = req.display_name.clone();
            }
            if req.scopes.is_some() {
                record.scopes = req.scopes.clone();
            }
            if let Some(shared) = req.shared {
                record.shared = shared;
            }
            if let Some(settings) = &req.settings {
                let too_big = settings.len() > 32
                    || settings
                        .iter()
                        .any(|(k, v)| k.len() > 64 || v.to_string().len() > 1024);
                if too_big {
                    return Err(AdminError::Invalid(
                        "settings: at most 32 entries, names up to 64 bytes, values up to 1 KiB (secrets go in apiKey or clientSecret)".into(),
                    ));
                }
                record.settings = settings.clone();
            }
            if let Some(tools) = &req.user_tools {
                record.user_tools = checked_user_tools(&connector, tools.clone())?;
            }
            if let Some(policy) = &req.data_policy {
                if connector.spec.data.is_none() {
                    return Err(AdminError::Invalid(format!(
                        "dataPolicy applies to data connectors; `{}` is not one",
                        req.toolkit
                    )));
                }
                record.data_policy = Some(policy.clone().checked().map_err(AdminError::Invalid)?);
            }
            record.endpoints.update(&req.endpoints);
            if connector.oauth.is_some()
                && record.sealed_credential.is_none()
                && (record.client_id.is_none() || record.sealed_client_secret.is_none())
            {
                return Err(AdminError::Invalid(format!(
                    "`{}` connects through OAuth: send the app's clientId and clientSecret (register {} as the redirect URI at the provider), or an apiKey for a static token",
                    req.toolkit,
                    self.callback_url()
                )));
            }
            record.updated_at = self.now_ms() / 1000;
            if self.store.put_toolkit_if_version(&record, expected).await? {
                return Ok(self.view(&record, &connector));
            }
        }
        Err(AdminError::Busy(format!(
            "toolkit `{}` kept changing while it was being configured; try again",
            req.toolkit
        )))
    }

    /// Disables a toolkit; its credentials and connections are kept for
    /// re-enabling, and every call is denied meanwhile.
    pub async fn disable(&self, app: &str, toolkit: &str) -> Result<(), AdminError> {
        // Compare-and-swap, as in `configure`: a concurrent write (a
        // re-encryption re-sealing the credential) is re-read, never undone.
        for _ in 0..crate::store::MAX_CAS_ATTEMPTS {
            let mut record = self.store.get_toolkit(app, toolkit).await?.ok_or_else(|| {
                AdminError::NotFound(format!(
                    "toolkit `{toolkit}` is not configured for app `{app}`"
                ))
            })?;
            let expected = record.version;
            record.enabled = false;
            record.updated_at = self.now_ms() / 1000;
            if self
                .store
                .put_toolkit_if_version(&record, Some(expected))
                .await?
            {
                return Ok(());
            }
        }
        Err(AdminError::Busy(format!(
            "toolkit `{toolkit}` kept changing while it was being disabled; try again"
        )))
    }

    /// Configured toolkits of an app.
    pub async fn list_configured(&self, app: &str) -> Result<Vec<ToolkitView>, AdminError> {
        let mut out = Vec::new();
        for record in self.store.list_toolkits(app).await? {
            if let Some(connector) = self.find_connector(app, &record.toolkit).await? {
                out.push(self.view(&record, &connector));
            }
        }
        Ok(out)
    }

    fn view(&self, record: &ToolkitRecord, connector: &Connector) -> ToolkitView {
        let oauth = connector.oauth.is_some() && record.sealed_credential.is_none();
        ToolkitView {
            toolkit: record.toolkit.clone(),
            display_name: record
                .display_name
                .clone()
                .unwrap_or_else(|| connector.spec.display_name.clone()),
            enabled: record.enabled,
            has_credential: record.sealed_credential.is_some(),
            auth: if oauth { "oauth" } else { "api_key" },
            shared: record.shared || !oauth,
            client_id: record.client_id.clone(),
            has_client_secret: record.sealed_client_secret.is_some(),
            user_tools: record.user_tools.clone(),
            scopes: record
                .scopes
                .clone()
                .unwrap_or_else(|| connector.scopes_for_tools()),
            redirect_uri: oauth.then(|| self.callback_url().to_string()),
            api_base_url: record
                .endpoints
                .api_base_url
                .clone()
                .unwrap_or_else(|| connector.spec.api_base_url.clone()),
            endpoint_overrides: record.endpoints.clone(),
            updated_at: record.updated_at,
        }
    }

    /// Defines or replaces a custom connector for an app.
    pub async fn put_connector(&self, app: &str, spec: ConnectorSpec) -> Result<(), AdminError> {
        if self.builtin.connector(&spec.slug).is_some() {
            return Err(AdminError::Invalid(format!(
                "`{}` is a built-in connector; choose another slug for a custom one",
                spec.slug
            )));
        }
        let compiled = Connector::compile(spec.clone())?;
        self.policy.check_url(&compiled.base_url).map_err(|e| {
            AdminError::Invalid(format!("connector `{}` apiBaseUrl: {e}", spec.slug))
        })?;
        if let Some(o) = &compiled.oauth {
            for u in o.all() {
                self.policy.check_url(u).map_err(|e| {
                    AdminError::Invalid(format!(
                        "connector `{}` OAuth endpoint {u}: {e}",
                        spec.slug
                    ))
                })?;
            }
        }
        // Check tool names against the app's other connectors and built-ins.
        let mut trial = Catalog::default();
        for other in self.store.list_connectors(app).await? {
            if other.slug != spec.slug
                && let Ok(c) = Connector::compile(other)
            {
                trial.insert(c)?;
            }
        }
        for name in compiled.tools.keys() {
            if self.builtin.tool(name).is_some() {
                return Err(AdminError::Invalid(format!(
                    "tool `{name}` is a built-in tool name"
                )));
            }
        }
        trial.insert(compiled)?;
        self.store.put_connector(app, &spec).await?;
        self.invalidate(app);
        Ok(())
    }

    /// Removes a custom connector.
    pub async fn delete_connector(&self, app: &str, slug: &str) -> Result<(), AdminError> {
        if !self.store.delete_connector(app, slug).await? {
            return Err(AdminError::NotFound(format!(
                "no custom connector `{slug}` in app `{app}`"
            )));
        }
        self.invalidate(app);
        Ok(())
    }

    /// Drops every app's compiled custom connectors, so the next call reads
    /// them again (another node changed them).
    pub fn forget_custom_connectors(&self) {
        if let Ok(mut map) = self.custom.write() {
            map.clear();
        }
    }

    fn invalidate(&self, app: &str) {
        if let Ok(mut map) = self.custom.write() {
            map.remove(app);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_configure_request_takes_flat_endpoints_and_keeps_unknown_members_apart() {
        let req: ConfigureToolkit = serde_json::from_value(serde_json::json!({
            "toolkit": "github",
            "apiBaseUrl": "https://ghe.example/api/v3",
            "revocationUrl": "https://ghe.example/revoke",
            "clientSecrt": "typo"
        }))
        .unwrap();
        assert_eq!(
            req.endpoints.api_base_url.as_deref(),
            Some("https://ghe.example/api/v3")
        );
        assert_eq!(
            req.endpoints.revocation_url.as_deref(),
            Some("https://ghe.example/revoke")
        );
        assert!(req.endpoints.names_oauth_endpoint());
        assert_eq!(req.unknown.keys().collect::<Vec<_>>(), ["clientSecrt"]);
        assert!(CONFIGURE_FIELDS.contains("clientSecret"));
    }
}
