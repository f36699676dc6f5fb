//! The credential broker: every tool call, from a function or the API, goes
//! through [`Broker::execute`].
//!
//! In order: bounded parse of the parameters, find the tool, check the
//! function's grant, check `as-user` is allowed, find the toolkit's
//! configuration, validate the parameters against the tool's schema, pick
//! the connection (the app's shared one, or the caller's own), check its
//! scopes, get a fresh token ([`crate::tokens`]), send the request to the
//! connector's declared host only (refreshing once and retrying on a 401),
//! map the answer, write an audit record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde_json::Value;
use tracing::instrument;

use crate::catalog::{Catalog, CatalogError, Connector, ConnectorSpec, Tool};
use crate::crypto::Keyring;
use crate::egress::EgressPolicy;
use crate::error::ToolError;
use crate::manifest::Grants;
use crate::oauth::TokenHttp;
use crate::secret::Secret;
use crate::store::{AppSettings, AuditRecord, OAuthOverrides, Store, StoreError, ToolkitRecord};
use crate::tokens::RefreshState;
use crate::tools::{self, SendError};

/// Largest parameters document a tool call may carry.
pub const MAX_PARAMS_BYTES: usize = 256 * 1024;
/// Deepest nesting accepted in parameters; bounds recursion in validation.
pub const MAX_PARAMS_DEPTH: usize = 32;
/// Longest tool name or user id accepted from a guest.
pub const MAX_NAME_LEN: usize = 256;
/// Longest credential an admin may store.
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;
/// Largest result one tool call hands back, as JSON text: the pages a
/// paginated call collects together, a data query's rows. The host holds
/// it while the call runs and the guest copies it into its own memory, so
/// it is bounded well below a function's default memory (128 MiB).
pub const MAX_RESULT_BYTES: usize = 32 * 1024 * 1024;

/// The length of a value's JSON text, without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

fn result_too_large(what: &str, hint: &str) -> ToolError {
    ToolError::Unavailable(format!(
        "{what} exceeds the {} MiB a tool call may return; {hint}",
        MAX_RESULT_BYTES / (1024 * 1024)
    ))
}

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
    /// The end user whose connections calls use when the caller is not an
    /// end user (cron runs with `runAs: {"user": ...}`).
    pub run_as: Option<String>,
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
    /// Whether repeating the call is harmless (only such calls are retried).
    pub idempotent: bool,
    /// Whether the tool takes `maxPages` to collect several pages.
    pub paginated: bool,
}

/// The outcome of one call, with its audit id.
#[derive(Debug)]
pub struct Outcome {
    /// Result or typed error.
    pub result: Result<Value, ToolError>,
    /// Audit record id.
    pub log_id: String,
}

/// What an admin sends to configure a toolkit. Fields left out keep their
/// stored value.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
    /// Overrides the connector's API base URL.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Overrides the connector's authorization endpoint.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Overrides the connector's token endpoint.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Overrides the connector's revocation endpoint.
    #[serde(default)]
    pub revocation_url: Option<String>,
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
    /// Endpoint overrides in force.
    pub oauth_overrides: OAuthOverrides,
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

/// Resolves connections and makes brokered calls.
#[derive(Debug)]
pub struct Broker {
    pub(crate) store: Arc<dyn Store>,
    key: Arc<Keyring>,
    builtin: Arc<Catalog>,
    /// Custom connectors per app, compiled once and dropped on change.
    custom: RwLock<HashMap<String, Arc<Catalog>>>,
    pub(crate) policy: EgressPolicy,
    pub(crate) client: reqwest::Client,
    /// Token, revocation and account requests (same pool and policy).
    pub(crate) token_http: TokenHttp,
    /// Names this process as a refresh lease holder.
    pub(crate) node_id: String,
    /// Per-connection refresh locks and back-off.
    pub(crate) refresh: RefreshState,
    /// Public base URL of this deployment; the OAuth redirect URI is built
    /// from it.
    public_url: RwLock<url::Url>,
    /// Verifies end users' JWTs (JWKS cached).
    pub(crate) jwt: crate::jwt::JwtVerifier,
    /// Tool-call rate limits per app and per end user.
    limits: RwLock<Arc<crate::ratelimit::RateLimits>>,
    /// Audit records not yet in the store: written in batches by a
    /// periodic task (started on first use), so a tool call costs a push,
    /// not a store insert.
    audit_batch: Arc<Mutex<Vec<AuditRecord>>>,
    audit_writer: std::sync::OnceLock<()>,
}

/// How often buffered audit records are written.
const AUDIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// Buffered records at which the calling task writes the batch itself.
const AUDIT_BATCH: usize = 4096;

async fn write_audit(store: &dyn Store, batch: &Mutex<Vec<AuditRecord>>) {
    let records = match batch.lock() {
        Ok(mut b) => std::mem::take(&mut *b),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    for r in &records {
        if let Err(e) = store.append_audit(r).await {
            tracing::error!(error = %e, log_id = %r.log_id, "could not write audit record");
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
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

/// Retries of an idempotent call after transient failures.
const MAX_RETRIES: u32 = 2;
/// First retry delay, doubled for each further retry.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// The credential a call is made with.
#[derive(Debug)]
enum Credential {
    /// The app's configured API key (or static token).
    ApiKey(Secret),
    /// A connection's access token, refreshable once on a 401.
    OAuth {
        token: Secret,
        connection: Box<crate::store::ConnectionRecord>,
        refreshed: bool,
    },
}

impl Broker {
    /// A broker over `store`, sealing with `key`, calling out under `egress`
    /// (an [`EgressPolicy`], or one with an outbound proxy).
    pub fn new(
        store: Arc<dyn Store>,
        key: Arc<Keyring>,
        builtin: Arc<Catalog>,
        egress: impl Into<crate::egress::Egress>,
    ) -> Result<Self, String> {
        let egress = egress.into();
        let policy = egress.policy;
        let client = egress
            .client()
            .map_err(|e| format!("cannot build the provider HTTP client: {e}"))?;
        let mut node = [0u8; 8];
        rand::rng().fill_bytes(&mut node);
        let public_url = url::Url::parse("http://127.0.0.1:8080/").map_err(|e| e.to_string())?;
        Ok(Self {
            store,
            key,
            builtin,
            custom: RwLock::new(HashMap::new()),
            policy,
            token_http: TokenHttp::new(client.clone(), policy),
            jwt: crate::jwt::JwtVerifier::new(client.clone(), policy),
            limits: RwLock::new(Arc::default()),
            audit_batch: Arc::default(),
            audit_writer: std::sync::OnceLock::new(),
            client,
            node_id: format!("node_{}", hex::encode(node)),
            refresh: RefreshState::default(),
            public_url: RwLock::new(public_url),
        })
    }

    /// Sets the public base URL (from `--public-url`, or the bound address).
    pub fn set_public_url(&self, url: url::Url) {
        if let Ok(mut u) = self.public_url.write() {
            *u = url;
        }
    }

    /// Buffers an audit record; the writer task stores it within
    /// [`AUDIT_INTERVAL`], or this call does when the buffer is full.
    async fn record_audit(&self, record: AuditRecord) {
        self.audit_writer.get_or_init(|| {
            let store = self.store.clone();
            let batch = Arc::downgrade(&self.audit_batch);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(AUDIT_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // The broker is gone: nothing more will come.
                    let Some(batch) = batch.upgrade() else { break };
                    write_audit(store.as_ref(), &batch).await;
                }
            });
        });
        let full = match self.audit_batch.lock() {
            Ok(mut b) => {
                b.push(record);
                b.len() >= AUDIT_BATCH
            }
            Err(p) => {
                p.into_inner().push(record);
                true
            }
        };
        if full {
            write_audit(self.store.as_ref(), &self.audit_batch).await;
        }
    }

    /// Writes buffered audit records now (at shutdown).
    pub async fn flush_audit(&self) {
        write_audit(self.store.as_ref(), &self.audit_batch).await;
    }

    /// The newest audit records of an app, including every call that has
    /// returned before this one was made.
    pub async fn audit_log(&self, app: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        write_audit(self.store.as_ref(), &self.audit_batch).await;
        self.store.list_audit(app, limit).await
    }

    /// Sets the tool-call rate limits (unlimited until called).
    pub fn set_rate_limits(&self, limits: crate::ratelimit::RateLimits) {
        if let Ok(mut l) = self.limits.write() {
            *l = Arc::new(limits);
        }
    }

    /// The public base URL of this deployment.
    pub fn public_url(&self) -> url::Url {
        match self.public_url.read() {
            Ok(u) => u.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The keyring sealing secrets at rest.
    pub fn key(&self) -> &Arc<Keyring> {
        &self.key
    }

    /// Seals a secret for storage, as hex.
    pub(crate) fn seal_hex(
        &self,
        secret: &Secret,
        aad: &[u8],
    ) -> Result<String, crate::crypto::CryptoError> {
        Ok(hex::encode(self.key.seal_secret(secret, aad)?))
    }

    /// Opens a sealed hex value.
    pub(crate) fn open_hex(
        &self,
        sealed: &str,
        aad: &[u8],
    ) -> Result<Secret, crate::crypto::CryptoError> {
        let bytes = hex::decode(sealed).map_err(|_| crate::crypto::CryptoError::Malformed)?;
        self.key.open_secret(&bytes, aad)
    }

    /// An app's settings (defaults if the app has none).
    pub async fn app_settings(&self, app: &str) -> Result<AppSettings, StoreError> {
        Ok(self
            .store
            .get_app(app)
            .await?
            .map(|a| a.settings)
            .unwrap_or_default())
    }

    /// The API base URL of a toolkit: the admin's override or the
    /// connector's.
    pub(crate) fn api_base_url(
        &self,
        connector: &Connector,
        record: &ToolkitRecord,
    ) -> Result<url::Url, ToolError> {
        match &record.api_base_url {
            Some(u) => url::Url::parse(u).map_err(|_| {
                ToolError::Unavailable(format!(
                    "configured apiBaseUrl for `{}` is invalid",
                    connector.spec.slug
                ))
            }),
            None => Ok(connector.base_url.clone()),
        }
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

    /// Whether `name` is a tool of the app (built-in or custom), with its
    /// connector's slug.
    pub async fn find_tool_info(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .find_tool(app, name)
            .await?
            .map(|(c, _)| c.spec.slug.clone()))
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

    /// Runs one tool call and records it. `as_user` acts for that end user
    /// (where allowed); `connection` names one of the caller's connections
    /// explicitly (API calls).
    #[instrument(skip_all, fields(app = %inv.app, function = ?inv.function, tool = %tool))]
    pub async fn execute(
        &self,
        inv: &Invocation,
        tool: &str,
        params_json: &str,
        as_user: Option<&str>,
        connection: Option<&str>,
    ) -> Outcome {
        let started = Instant::now();
        let log_id = new_log_id();
        // The principal as the host verified it; what the call asked to act
        // as is recorded apart, whether or not it was allowed.
        let identity = match &inv.principal {
            Principal::User(u) => format!("user:{u}"),
            Principal::Admin => "admin".to_string(),
            Principal::Cron => "cron".to_string(),
            Principal::Anonymous => "anonymous".to_string(),
        };
        let target_user = as_user
            .or(inv.run_as.as_deref())
            .map(|u| u.chars().take(MAX_NAME_LEN).collect());
        let mut used = None;
        let result = self
            .execute_inner(inv, tool, params_json, as_user, connection, &mut used)
            .await;
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
            identity: identity.chars().take(MAX_NAME_LEN + 8).collect(),
            as_user: target_user,
            connection: used,
            tool: tool.chars().take(MAX_NAME_LEN).collect(),
            outcome,
            status,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            at_ms: now_ms(),
        };
        tracing::info!(log_id = %record.log_id, outcome = %record.outcome, connection = ?record.connection, duration_ms = record.duration_ms, "tool call");
        self.record_audit(record).await;
        Outcome { result, log_id }
    }

    async fn execute_inner(
        &self,
        inv: &Invocation,
        tool_name: &str,
        params_json: &str,
        as_user: Option<&str>,
        explicit_connection: Option<&str>,
        used: &mut Option<String>,
    ) -> Result<Value, ToolError> {
        if tool_name.len() > MAX_NAME_LEN {
            return Err(ToolError::InvalidParams(format!(
                "tool name is longer than {MAX_NAME_LEN} bytes"
            )));
        }
        let caller_user = as_user
            .or(match &inv.principal {
                Principal::User(u) => Some(u.as_str()),
                _ => None,
            })
            .or(inv.run_as.as_deref());
        let limits = match self.limits.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let anonymous = inv.principal == Principal::Anonymous && caller_user.is_none();
        if let Err(wait) = limits.check(&inv.app, caller_user, anonymous) {
            return Err(ToolError::RateLimited {
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            });
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
                "toolkit `{slug}` is not configured for app `{}`: an admin must POST /v1/{}/integrations/configure with {{\"toolkit\": \"{slug}\", ...}}",
                inv.app, inv.app
            ))
        })?;
        if !record.enabled {
            return Err(ToolError::Denied(format!(
                "toolkit `{slug}` is disabled for app `{}`; an admin can enable it again with POST /v1/{}/integrations/configure",
                inv.app, inv.app
            )));
        }
        // An end user calling the API directly acts with their own
        // connections only: the app's credential (a shared connection or
        // an API key) serves end users through functions whose manifest
        // grants the tool, or through tools the admin opened to them.
        let direct_user = inv.function.is_none() && matches!(inv.principal, Principal::User(_));
        let app_credential =
            record.shared || record.sealed_credential.is_some() || connector.oauth.is_none();
        if direct_user && app_credential && !record.user_tools.iter().any(|t| t == tool_name) {
            return Err(ToolError::Denied(format!(
                "`{tool_name}` would run with app `{}`'s own `{slug}` credential, which end users cannot use directly: call it from a function whose manifest grants it, or an admin can open it to end users with POST /v1/{}/integrations/configure {{\"toolkit\": \"{slug}\", \"userTools\": [\"{tool_name}\"]}}",
                inv.app, inv.app
            )));
        }
        let mut params = params;
        tool.validate(&Value::Object(params.clone()))
            .map_err(ToolError::InvalidParams)?;
        let max_pages = params
            .remove("maxPages")
            .and_then(|v| v.as_u64())
            .unwrap_or(1);

        // An API key configured by the admin serves every identity.
        if let Some(sealed) = record.sealed_credential.as_deref() {
            let credential = self
                .open_hex(sealed, &crate::crypto::aad::credential(&inv.app, slug))
                .map_err(|e| {
                    tracing::error!(toolkit = slug, error = %e, "cannot unseal credential");
                    ToolError::Unavailable(format!(
                        "stored credential for `{slug}` cannot be unsealed"
                    ))
                })?;
            let base_url = self.tool_base_url(&connector, &tool, &record, None)?;
            let mut credential = Credential::ApiKey(credential);
            return self
                .call_tool(
                    &connector,
                    &tool,
                    &base_url,
                    params,
                    max_pages,
                    &record,
                    &mut credential,
                )
                .await;
        }
        if connector.oauth.is_none() {
            return Err(ToolError::NotConnected(format!(
                "toolkit `{slug}` has no API key: an admin must POST /v1/{}/integrations/configure with {{\"toolkit\": \"{slug}\", \"apiKey\": ...}}",
                inv.app
            )));
        }

        // OAuth: the shared connection, or the caller's own.
        let connection = self
            .resolve_connection(&inv.app, &record, caller_user, explicit_connection)
            .await?;
        *used = Some(connection.id.clone());
        match connection.state {
            crate::store::ConnectionState::Active => {}
            _ => {
                return Err(ToolError::NeedsReconnect(format!(
                    "{}; reconnect with POST /v1/{}/integrations/connect {{\"toolkit\": \"{slug}\", \"connectionId\": \"{}\"}}",
                    connection
                        .reason
                        .clone()
                        .unwrap_or_else(|| "the connection is not active".into()),
                    inv.app,
                    connection.id
                )));
            }
        }
        let missing: Vec<String> = tool
            .spec
            .scopes
            .iter()
            .filter(|s| !connector.scope_granted(s, &connection.scopes))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(self
                .insufficient_scope(inv, &connector, &record, &connection, missing)
                .await);
        }

        let (token, connection) = self.access_token(connection).await?;
        let base_url = self.tool_base_url(&connector, &tool, &record, Some(&connection))?;
        let mut credential = Credential::OAuth {
            token,
            connection: Box::new(connection),
            refreshed: false,
        };
        self.call_tool(
            &connector,
            &tool,
            &base_url,
            params,
            max_pages,
            &record,
            &mut credential,
        )
        .await
    }

    /// The `insufficient-scope` error of a call: a step-up link only for a
    /// caller who may re-authorize the connection (an admin for the app's
    /// shared one, its own end user or an admin for a user's); anyone
    /// else learns who must approve the scopes.
    async fn insufficient_scope(
        &self,
        inv: &Invocation,
        connector: &Connector,
        record: &ToolkitRecord,
        connection: &crate::store::ConnectionRecord,
        missing: Vec<String>,
    ) -> ToolError {
        let app = &inv.app;
        let slug = &connector.spec.slug;
        let may_grant = match (&inv.principal, &connection.user_id) {
            (Principal::Admin, _) => true,
            (Principal::User(caller), Some(owner)) => caller == owner,
            _ => false,
        };
        let reconnect = format!(
            "POST /v1/{app}/integrations/connect {{\"toolkit\": \"{slug}\", \"connectionId\": \"{}\", \"scopes\": {}}}",
            connection.id,
            serde_json::Value::from(missing.clone())
        );
        if !may_grant {
            let hint = match &connection.user_id {
                None => format!(
                    "an admin of app `{app}` must approve them for the shared `{slug}` connection ({reconnect} with the admin key)"
                ),
                Some(owner) => format!(
                    "user `{owner}` must grant them by reconnecting ({reconnect} with their JWT)"
                ),
            };
            return ToolError::InsufficientScope {
                missing,
                auth_url: None,
                hint,
            };
        }
        let auth_url = self
            .step_up_url(connector, record, connection, &missing)
            .await;
        let hint = match auth_url {
            Some(_) => {
                "send the person who owns the connection to authUrl to grant them".to_string()
            }
            None => format!("reconnect with {reconnect}"),
        };
        ToolError::InsufficientScope {
            missing,
            auth_url,
            hint,
        }
    }

    /// The base URL a tool call goes to: a named host of the connector, or
    /// the connection's own instance (Salesforce), or the app's configured
    /// override, or the connector's (with the deployment's overrides).
    fn tool_base_url(
        &self,
        connector: &Connector,
        tool: &Tool,
        record: &ToolkitRecord,
        connection: Option<&crate::store::ConnectionRecord>,
    ) -> Result<url::Url, ToolError> {
        if tool.spec.base.is_some() {
            return Ok(connector.tool_base(tool).clone());
        }
        let base = self.api_base_url(connector, record)?;
        let Some(instance) = connection.and_then(|c| c.api_base_url.as_deref()) else {
            return Ok(base);
        };
        let instance = url::Url::parse(instance).map_err(|_| {
            ToolError::Unavailable("the connection's stored instance URL is invalid".into())
        })?;
        let mut out = base;
        let moved = out.set_scheme(instance.scheme()).is_ok()
            && out.set_host(instance.host_str()).is_ok()
            && out.set_port(instance.port()).is_ok();
        if !moved {
            return Err(ToolError::Unavailable(
                "the connection's instance URL cannot be applied".into(),
            ));
        }
        Ok(out)
    }

    /// Runs a tool: one request, or up to `max_pages` for paginated tools.
    #[allow(clippy::too_many_arguments)]
    async fn call_tool(
        &self,
        connector: &Connector,
        tool: &Tool,
        base_url: &url::Url,
        params: serde_json::Map<String, Value>,
        max_pages: u64,
        record: &ToolkitRecord,
        credential: &mut Credential,
    ) -> Result<Value, ToolError> {
        if let Some(kind) = tool.data {
            return self
                .call_data(connector, kind, base_url, &params, record, credential)
                .await;
        }
        let request = tools::prepare(tool, base_url, &params)?;
        let answer = self.send_request(connector, &request, credential).await?;
        let pagination = match &tool.spec.pagination {
            Some(p) if max_pages > 1 => p,
            _ => return Ok(answer.value),
        };
        let first = answer.value.clone();
        let mut items = tools::page_items(pagination, &answer.value)
            .cloned()
            .unwrap_or_default();
        let mut collected = json_len(&answer.value);
        let (mut params, mut request, mut answer) = (params, request, answer);
        for _ in 1..max_pages.min(crate::catalog::MAX_PAGES) {
            match tools::next_page(pagination, &params, &request, &answer) {
                None => break,
                Some(tools::NextPage::Params(next)) => {
                    request = tools::prepare(tool, base_url, &next)?;
                    params = next;
                }
                Some(tools::NextPage::Url(url)) => {
                    request = tools::PreparedRequest {
                        url,
                        body: None,
                        method: http::Method::GET,
                        ..request
                    };
                }
            }
            answer = self.send_request(connector, &request, credential).await?;
            collected = collected.saturating_add(json_len(&answer.value));
            if collected > MAX_RESULT_BYTES {
                return Err(result_too_large(
                    "the pages collected so far",
                    "ask for fewer pages (maxPages) or narrow the query",
                ));
            }
            match tools::page_items(pagination, &answer.value) {
                Some(more) => items.extend(more.iter().cloned()),
                None => break,
            }
        }
        Ok(tools::merge_pages(pagination, first, items))
    }

    /// Runs a generated data tool (query, listing) on the connector's
    /// platform under the app's data policy.
    async fn call_data(
        &self,
        connector: &Connector,
        kind: crate::catalog::DataTool,
        base_url: &url::Url,
        params: &serde_json::Map<String, Value>,
        record: &ToolkitRecord,
        credential: &mut Credential,
    ) -> Result<Value, ToolError> {
        use crate::catalog::{DataPlatform, DataTool};
        use crate::data::{DataError, DataOp, DataTarget, Platform, QueryRequest};
        let slug = &connector.spec.slug;
        let Some(data) = &connector.spec.data else {
            return Err(ToolError::Unavailable(format!(
                "`{slug}` is not a data connector"
            )));
        };
        if data.per_app_host && record.api_base_url.is_none() {
            return Err(ToolError::NotConnected(format!(
                "every `{slug}` account has its own host: an admin must configure apiBaseUrl for it (POST /v1/{}/integrations/configure)",
                record.app
            )));
        }
        let text = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_string);
        let op = || match kind {
            DataTool::Query => DataOp::Query(QueryRequest {
                sql: text("sql").unwrap_or_default(),
                params: params
                    .get("params")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                max_rows: params.get("maxRows").and_then(Value::as_u64),
                timeout_ms: params.get("timeoutMs").and_then(Value::as_u64),
            }),
            DataTool::ListDatabases => DataOp::ListDatabases,
            DataTool::ListSchemas => DataOp::ListSchemas {
                database: text("database"),
            },
            DataTool::ListTables => DataOp::ListTables {
                database: text("database"),
                schema: text("schema"),
            },
            DataTool::DescribeTable => DataOp::DescribeTable {
                database: text("database"),
                schema: text("schema"),
                table: text("table").unwrap_or_default(),
            },
        };
        let platform = match data.platform {
            DataPlatform::Postgres => Platform::Postgres,
            DataPlatform::Snowflake => Platform::Snowflake,
            DataPlatform::Databricks => Platform::Databricks,
            DataPlatform::BigQuery => Platform::BigQuery,
        };
        let policy = record.data_policy.clone().unwrap_or_default();
        loop {
            let secret = match &*credential {
                Credential::ApiKey(k) => k,
                Credential::OAuth { token, .. } => token,
            };
            let target = DataTarget {
                platform,
                base_url,
                credential: secret,
                settings: &record.settings,
            };
            match crate::data::run(&self.client, &self.policy, &target, &policy, op()).await {
                Ok(result) => {
                    let value = serde_json::to_value(result)
                        .map_err(|e| ToolError::Unavailable(format!("result: {e}")))?;
                    if json_len(&value) > MAX_RESULT_BYTES {
                        return Err(result_too_large(
                            "the query's result",
                            "lower maxRows, or the toolkit's dataPolicy maxBytes",
                        ));
                    }
                    return Ok(value);
                }
                Err(DataError::Tool(e)) => return Err(e),
                Err(DataError::Unauthorized) => match credential {
                    Credential::OAuth {
                        token,
                        connection,
                        refreshed,
                    } if !*refreshed => {
                        let (fresh, latest) = self.force_refresh(connection).await?;
                        *token = fresh;
                        **connection = latest;
                        *refreshed = true;
                    }
                    _ => {
                        return Err(ToolError::NeedsReconnect(format!(
                            "{} refused the credential; an admin must configure a valid one, or the user must connect again",
                            connector.spec.display_name
                        )));
                    }
                },
            }
        }
    }

    /// Sends one request: an OAuth 401 refreshes once and retries once (a
    /// 401 means the request was not acted on); an idempotent request is
    /// retried after transient failures.
    async fn send_request(
        &self,
        connector: &Connector,
        request: &tools::PreparedRequest,
        credential: &mut Credential,
    ) -> Result<tools::Answer, ToolError> {
        let mut attempt = 0u32;
        loop {
            let secret = match &*credential {
                Credential::ApiKey(k) => k,
                Credential::OAuth { token, .. } => token,
            };
            let result = tools::send(&self.client, &self.policy, connector, request, secret).await;
            let error = match result {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            match (error, &mut *credential) {
                (SendError::Unauthorized, Credential::ApiKey(_)) => {
                    return Err(ToolError::NeedsReconnect(format!(
                        "{} rejected the app's API key (401); an admin must configure a valid one",
                        connector.spec.display_name
                    )));
                }
                (
                    SendError::Unauthorized,
                    Credential::OAuth {
                        token,
                        connection,
                        refreshed,
                    },
                ) => {
                    if *refreshed {
                        return Err(ToolError::NeedsReconnect(format!(
                            "{} rejected a freshly refreshed token (401); the user may need to connect again",
                            connector.spec.display_name
                        )));
                    }
                    let (fresh, latest) = self.force_refresh(connection).await?;
                    *token = fresh;
                    **connection = latest;
                    *refreshed = true;
                }
                (error, _) => {
                    let wait = error.retryable();
                    let SendError::Tool(tool_error) = error else {
                        continue;
                    };
                    match wait {
                        Some(wait) if request.idempotent && attempt < MAX_RETRIES => {
                            attempt += 1;
                            let backoff = RETRY_BACKOFF * 2u32.pow(attempt - 1);
                            tracing::info!(attempt, error = %tool_error, "retrying an idempotent call");
                            tokio::time::sleep(wait.max(backoff)).await;
                        }
                        _ => return Err(tool_error),
                    }
                }
            }
        }
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
                        idempotent: tool.spec.idempotent,
                        paginated: tool.spec.pagination.is_some(),
                    });
                }
            }
        }
        Ok(out)
    }

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
        if let Some(u) = &req.api_base_url {
            check_endpoint("apiBaseUrl", u)?;
            if u.contains('?') {
                return Err(AdminError::Invalid(
                    "apiBaseUrl must not carry a query".into(),
                ));
            }
        }
        for (what, u) in [
            ("authorizeUrl", &req.authorize_url),
            ("tokenUrl", &req.token_url),
            ("revocationUrl", &req.revocation_url),
        ] {
            if let Some(u) = u {
                check_endpoint(what, u)?;
            }
        }
        if let Some(o) = &connector.oauth
            && req.authorize_url.is_none()
            && req.token_url.is_none()
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
            || req.authorize_url.is_some()
            || req.token_url.is_some()
            || req.revocation_url.is_some();
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
            if req.api_base_url.is_some() {
                record.api_base_url = req.api_base_url.clone();
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
            let o = &mut record.oauth_overrides;
            for (slot, value) in [
                (&mut o.authorize_url, req.authorize_url.clone()),
                (&mut o.token_url, req.token_url.clone()),
                (&mut o.revocation_url, req.revocation_url.clone()),
            ] {
                if value.is_some() {
                    *slot = value;
                }
            }
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
            record.updated_at = now_ms() / 1000;
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
            record.updated_at = now_ms() / 1000;
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
                .api_base_url
                .clone()
                .unwrap_or_else(|| connector.spec.api_base_url.clone()),
            oauth_overrides: record.oauth_overrides.clone(),
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
