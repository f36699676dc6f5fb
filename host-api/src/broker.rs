//! The credential broker: every tool call, from a function or the API, goes
//! through [`Broker::execute`].
//!
//! In order: bounded parse of the parameters, find the tool, check the
//! function's grant, check `as-user` is allowed, find the toolkit's
//! configuration and connection, validate the parameters against the tool's
//! schema, unseal the credential, send the request to the connector's
//! declared host only, map the answer, write an audit record.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde_json::Value;
use tracing::instrument;

use crate::catalog::{Catalog, CatalogError, Connector, ConnectorSpec, Tool};
use crate::crypto::{MasterKey, aad};
use crate::egress::EgressPolicy;
use crate::error::ToolError;
use crate::manifest::Grants;
use crate::secret::Secret;
use crate::store::{AuditRecord, Store, StoreError, ToolkitRecord};
use crate::tools;

/// Largest parameters document a tool call may carry.
pub const MAX_PARAMS_BYTES: usize = 256 * 1024;
/// Deepest nesting accepted in parameters; bounds recursion in validation.
pub const MAX_PARAMS_DEPTH: usize = 32;
/// Longest tool name or user id accepted from a guest.
pub const MAX_NAME_LEN: usize = 256;
/// Longest credential an admin may store.
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;

/// Who an invocation runs as, established by the host, never by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An unauthenticated HTTP request.
    Anonymous,
    /// A caller holding the app's admin key.
    Admin,
    /// A verified end user of the app.
    User(String),
    /// A scheduled run.
    Cron,
}

/// The host-established facts of one invocation that the broker acts on.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The app whose connections may be used.
    pub app: String,
    /// The calling function, or `None` for API calls.
    pub function: Option<String>,
    /// Who the caller is.
    pub principal: Principal,
    /// What the function may call; `None` for admin API calls (everything).
    pub grants: Option<Grants>,
    /// Whether the function's manifest allows `as-user`.
    pub allow_as_user: bool,
}

/// A tool visible to an invocation.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolInfo {
    /// Tool name.
    pub name: String,
    /// Connector slug.
    pub toolkit: String,
    /// Description.
    pub description: String,
    /// JSON Schema of the parameters.
    pub parameters: Value,
    /// Required scopes.
    pub scopes: Vec<String>,
}

/// The outcome of one call, with its audit id.
#[derive(Debug)]
pub struct Outcome {
    /// Result or typed error.
    pub result: Result<Value, ToolError>,
    /// Audit record id.
    pub log_id: String,
}

/// What an admin sends to configure a toolkit.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigureToolkit {
    /// Connector slug.
    pub toolkit: String,
    /// The app's shared credential (API key or token) for the toolkit.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Overrides the connector's API base URL.
    #[serde(default)]
    pub api_base_url: Option<String>,
}

/// A configured toolkit as shown to admins: never the credential.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolkitView {
    /// Connector slug.
    pub toolkit: String,
    /// Whether calls are allowed.
    pub enabled: bool,
    /// Whether a credential is stored.
    pub has_credential: bool,
    /// Effective API base URL.
    pub api_base_url: String,
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
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CatalogError> for AdminError {
    fn from(e: CatalogError) -> Self {
        AdminError::Invalid(e.to_string())
    }
}

/// Resolves connections and makes brokered calls.
#[derive(Debug)]
pub struct Broker {
    store: Arc<dyn Store>,
    key: Arc<MasterKey>,
    builtin: Arc<Catalog>,
    /// Custom connectors per app, compiled once and dropped on change.
    custom: RwLock<HashMap<String, Arc<Catalog>>>,
    policy: EgressPolicy,
    client: reqwest::Client,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}

fn new_log_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("log_{}", hex::encode(bytes))
}

fn credential_aad(app: &str, toolkit: &str) -> Vec<u8> {
    aad(&["toolkit-credential", app, toolkit])
}

/// Depth of a JSON value, iteratively (no recursion on hostile input).
fn json_depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    max
}

/// Parses a guest's parameters within the size and depth bounds.
pub fn parse_params(params_json: &str) -> Result<serde_json::Map<String, Value>, ToolError> {
    if params_json.len() > MAX_PARAMS_BYTES {
        return Err(ToolError::InvalidParams(format!(
            "params are {} bytes; the limit is {MAX_PARAMS_BYTES}",
            params_json.len()
        )));
    }
    let text = if params_json.trim().is_empty() {
        "{}"
    } else {
        params_json
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ToolError::InvalidParams(format!("params are not valid JSON: {e}")))?;
    if json_depth(&value) > MAX_PARAMS_DEPTH {
        return Err(ToolError::InvalidParams(format!(
            "params nest deeper than {MAX_PARAMS_DEPTH} levels"
        )));
    }
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ToolError::InvalidParams(
            "params must be a JSON object".into(),
        )),
    }
}

impl Broker {
    /// A broker over `store`, sealing with `key`, calling out under `policy`.
    pub fn new(
        store: Arc<dyn Store>,
        key: Arc<MasterKey>,
        builtin: Arc<Catalog>,
        policy: EgressPolicy,
    ) -> Result<Self, String> {
        let client = policy
            .client()
            .map_err(|e| format!("cannot build the provider HTTP client: {e}"))?;
        Ok(Self {
            store,
            key,
            builtin,
            custom: RwLock::new(HashMap::new()),
            policy,
            client,
        })
    }

    /// The built-in catalog.
    pub fn builtin(&self) -> &Arc<Catalog> {
        &self.builtin
    }

    async fn custom_catalog(&self, app: &str) -> Result<Arc<Catalog>, StoreError> {
        if let Ok(map) = self.custom.read()
            && let Some(c) = map.get(app)
        {
            return Ok(c.clone());
        }
        let mut catalog = Catalog::default();
        for spec in self.store.list_connectors(app).await? {
            let slug = spec.slug.clone();
            // Stored connectors were validated when posted; one that no
            // longer compiles is skipped with a warning rather than taking
            // the app's other connectors down.
            match Connector::compile(spec).and_then(|c| catalog.insert(c)) {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(app, connector = %slug, error = %e, "skipping stored connector")
                }
            }
        }
        let catalog = Arc::new(catalog);
        if let Ok(mut map) = self.custom.write() {
            map.insert(app.to_string(), catalog.clone());
        }
        Ok(catalog)
    }

    /// Finds a tool among the built-in and the app's custom connectors.
    async fn find_tool(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Option<(Arc<Connector>, Arc<Tool>)>, StoreError> {
        if let Some((c, t)) = self.builtin.tool(name) {
            return Ok(Some((c.clone(), t.clone())));
        }
        let custom = self.custom_catalog(app).await?;
        Ok(custom.tool(name).map(|(c, t)| (c.clone(), t.clone())))
    }

    /// Finds a connector among the built-in and the app's custom ones.
    pub async fn find_connector(
        &self,
        app: &str,
        slug: &str,
    ) -> Result<Option<Arc<Connector>>, StoreError> {
        if let Some(c) = self.builtin.connector(slug) {
            return Ok(Some(c.clone()));
        }
        Ok(self.custom_catalog(app).await?.connector(slug).cloned())
    }

    /// Runs one tool call and records it.
    #[instrument(skip_all, fields(app = %inv.app, function = ?inv.function, tool = %tool))]
    pub async fn execute(
        &self,
        inv: &Invocation,
        tool: &str,
        params_json: &str,
        as_user: Option<&str>,
    ) -> Outcome {
        let started = Instant::now();
        let log_id = new_log_id();
        let identity = match (as_user, &inv.principal) {
            (Some(u), _) => format!("user:{u}"),
            (None, Principal::User(u)) => format!("user:{u}"),
            (None, Principal::Admin) => "admin".to_string(),
            (None, _) => "shared".to_string(),
        };
        let result = self.execute_inner(inv, tool, params_json, as_user).await;
        let status = match &result {
            Err(ToolError::Upstream { status, .. }) => Some(*status),
            _ => None,
        };
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.kind().to_string(),
        };
        let record = AuditRecord {
            log_id: log_id.clone(),
            app: inv.app.clone(),
            function: inv.function.clone(),
            identity,
            tool: tool.chars().take(MAX_NAME_LEN).collect(),
            outcome,
            status,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            at_ms: now_ms(),
        };
        if let Err(e) = self.store.append_audit(&record).await {
            tracing::error!(error = %e, "could not write audit record");
        }
        tracing::info!(log_id = %record.log_id, outcome = %record.outcome, duration_ms = record.duration_ms, "tool call");
        Outcome { result, log_id }
    }

    async fn execute_inner(
        &self,
        inv: &Invocation,
        tool_name: &str,
        params_json: &str,
        as_user: Option<&str>,
    ) -> Result<Value, ToolError> {
        if tool_name.len() > MAX_NAME_LEN {
            return Err(ToolError::InvalidParams(format!(
                "tool name is longer than {MAX_NAME_LEN} bytes"
            )));
        }
        let params = parse_params(params_json)?;
        let unavailable = |e: StoreError| ToolError::Unavailable(format!("store: {e}"));
        let (connector, tool) = self
            .find_tool(&inv.app, tool_name)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                ToolError::Unavailable(format!(
                    "unknown tool `{tool_name}`; GET /v1/{}/integrations/tools lists the tools",
                    inv.app
                ))
            })?;
        let slug = connector.spec.slug.as_str();

        if let Some(grants) = &inv.grants
            && !grants.allows(slug, tool_name)
        {
            let function = inv.function.as_deref().unwrap_or("this function");
            return Err(ToolError::Denied(format!(
                "function `{function}` has no grant for `{tool_name}`: add \"{tool_name}\" to grants.tools (or \"{slug}\" to grants.toolkits) in its manifest and deploy again"
            )));
        }
        if let Some(user) = as_user {
            if user.is_empty() || user.len() > MAX_NAME_LEN {
                return Err(ToolError::InvalidParams(format!(
                    "user id must be 1 to {MAX_NAME_LEN} bytes"
                )));
            }
            if !inv.allow_as_user {
                return Err(ToolError::Denied(
                    "as-user is not allowed for this function: set \"allowAsUser\": true in its manifest".into(),
                ));
            }
            if !matches!(inv.principal, Principal::Admin | Principal::Cron) {
                return Err(ToolError::Denied(
                    "as-user is only allowed in cron runs and admin-authenticated invocations"
                        .into(),
                ));
            }
        }

        let record = self.store.get_toolkit(&inv.app, slug).await.map_err(unavailable)?.ok_or_else(|| {
            ToolError::NotConnected(format!(
                "toolkit `{slug}` is not configured for app `{}`: an admin must POST /v1/{}/integrations/configure with {{\"toolkit\": \"{slug}\", \"apiKey\": ...}}",
                inv.app, inv.app
            ))
        })?;
        if !record.enabled {
            return Err(ToolError::Denied(format!(
                "toolkit `{slug}` is disabled for app `{}`; an admin can enable it again with POST /v1/{}/integrations/configure",
                inv.app, inv.app
            )));
        }
        // API-key toolkits hold one shared credential for the whole app; it
        // serves every identity, including `as-user` calls.
        let sealed = record.sealed_credential.as_deref().ok_or_else(|| {
            ToolError::NotConnected(format!(
                "toolkit `{slug}` has no credential; an admin must configure one"
            ))
        })?;
        tool.validate(&Value::Object(params.clone()))
            .map_err(ToolError::InvalidParams)?;

        let sealed = hex::decode(sealed).map_err(|_| {
            ToolError::Unavailable(format!("stored credential for `{slug}` is corrupt"))
        })?;
        let credential = self
            .key
            .open_secret(&sealed, &credential_aad(&inv.app, slug))
            .map_err(|e| {
                tracing::error!(toolkit = slug, error = %e, "cannot unseal credential");
                ToolError::Unavailable(format!("stored credential for `{slug}` cannot be unsealed"))
            })?;
        let base_url = match &record.api_base_url {
            Some(u) => url::Url::parse(u).map_err(|_| {
                ToolError::Unavailable(format!("configured apiBaseUrl for `{slug}` is invalid"))
            })?,
            None => connector.base_url.clone(),
        };
        let request = tools::prepare(&tool, &base_url, &params)?;
        tools::send(&self.client, &self.policy, &connector, request, &credential).await
    }

    /// Tools an invocation may call, with their schemas.
    pub async fn list_tools(&self, inv: &Invocation) -> Result<Vec<ToolInfo>, StoreError> {
        let custom = self.custom_catalog(&inv.app).await?;
        let mut out = Vec::new();
        for connector in self.builtin.connectors().chain(custom.connectors()) {
            for tool in connector.tools.values() {
                let granted = inv
                    .grants
                    .as_ref()
                    .is_none_or(|g| g.allows(&connector.spec.slug, &tool.spec.name));
                if granted {
                    out.push(ToolInfo {
                        name: tool.spec.name.clone(),
                        toolkit: connector.spec.slug.clone(),
                        description: tool.spec.description.clone(),
                        parameters: tool.spec.parameters.clone(),
                        scopes: tool.spec.scopes.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Enables a toolkit for an app, storing its credential sealed.
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
        if let Some(u) = &req.api_base_url {
            let parsed = url::Url::parse(u)
                .map_err(|e| AdminError::Invalid(format!("apiBaseUrl `{u}` is not a URL: {e}")))?;
            self.policy
                .check_url(&parsed)
                .map_err(|e| AdminError::Invalid(format!("apiBaseUrl: {e}")))?;
            if !parsed.username().is_empty()
                || parsed.password().is_some()
                || parsed.query().is_some()
            {
                return Err(AdminError::Invalid(
                    "apiBaseUrl must not carry credentials or a query".into(),
                ));
            }
        }
        let existing = self.store.get_toolkit(app, &req.toolkit).await?;
        let sealed_credential = match &req.api_key {
            Some(key) if key.is_empty() || key.expose().len() > MAX_CREDENTIAL_LEN => {
                return Err(AdminError::Invalid(format!(
                    "apiKey must be 1 to {MAX_CREDENTIAL_LEN} bytes"
                )));
            }
            Some(key) => {
                let sealed = self
                    .key
                    .seal_secret(key, &credential_aad(app, &req.toolkit))
                    .map_err(|e| AdminError::Invalid(e.to_string()))?;
                Some(hex::encode(sealed))
            }
            None => existing.as_ref().and_then(|r| r.sealed_credential.clone()),
        };
        let record = ToolkitRecord {
            app: app.to_string(),
            toolkit: req.toolkit.clone(),
            enabled: true,
            api_base_url: req
                .api_base_url
                .or_else(|| existing.and_then(|r| r.api_base_url)),
            sealed_credential,
            updated_at: now_ms() / 1000,
        };
        self.store.put_toolkit(&record).await?;
        Ok(Self::view(&record, &connector))
    }

    /// Disables a toolkit; its credential is kept for re-enabling.
    pub async fn disable(&self, app: &str, toolkit: &str) -> Result<(), AdminError> {
        let mut record = self.store.get_toolkit(app, toolkit).await?.ok_or_else(|| {
            AdminError::NotFound(format!(
                "toolkit `{toolkit}` is not configured for app `{app}`"
            ))
        })?;
        record.enabled = false;
        record.updated_at = now_ms() / 1000;
        self.store.put_toolkit(&record).await?;
        Ok(())
    }

    /// Configured toolkits of an app.
    pub async fn list_configured(&self, app: &str) -> Result<Vec<ToolkitView>, AdminError> {
        let mut out = Vec::new();
        for record in self.store.list_toolkits(app).await? {
            if let Some(connector) = self.find_connector(app, &record.toolkit).await? {
                out.push(Self::view(&record, &connector));
            }
        }
        Ok(out)
    }

    fn view(record: &ToolkitRecord, connector: &Connector) -> ToolkitView {
        ToolkitView {
            toolkit: record.toolkit.clone(),
            enabled: record.enabled,
            has_credential: record.sealed_credential.is_some(),
            api_base_url: record
                .api_base_url
                .clone()
                .unwrap_or_else(|| connector.spec.api_base_url.clone()),
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
    fn params_are_bounded() {
        assert!(parse_params("").unwrap().is_empty());
        assert!(matches!(
            parse_params("[1]"),
            Err(ToolError::InvalidParams(_))
        ));
        assert!(matches!(
            parse_params("{"),
            Err(ToolError::InvalidParams(_))
        ));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        assert!(
            parse_params(&deep)
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_PARAMS_BYTES));
        assert!(
            parse_params(&big)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
    }
}
