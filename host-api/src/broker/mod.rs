//! The credential broker: every tool call, from a function or the API, goes
//! through [`Broker::execute`], and every credential lives behind it.
//!
//! This file is the execute pipeline, in order: bounded parse of the
//! parameters ([`params`]), find the tool, check the function's grant, check
//! `as-user` is allowed, find the toolkit's configuration, validate the
//! parameters against the tool's schema, pick the connection (the app's
//! shared one, or the caller's own: [`connections`]), check its scopes, get a
//! fresh token ([`refresh`]), send the request to the connector's declared
//! host only (refreshing once and retrying on a 401), map the answer, write
//! an audit record (`audit`).
//!
//! The other rooms of the broker:
//!
//! * [`connect`]: the connect flow, from `POST .../connect` to the callback;
//! * `account`: which upstream account a grant belongs to;
//! * `grant`: the app's OAuth client and the one place a token answer
//!   becomes stored tokens (shared by connect and refresh);
//! * [`refresh`]: where a token is refreshed, single-flight;
//! * [`admin`]: configure, disable and custom connectors;
//! * `data`: data connectors' SQL and listing tools;
//! * [`settings`]: an app's JWT and redirect settings;
//! * [`rekey`]: re-encrypting every sealed field after a key rotation.
//!
//! The [`Broker`]'s fields are private to this folder.

mod account;
pub mod admin;
mod audit;
pub mod connect;
pub mod connections;
mod data;
mod grant;
pub mod params;
pub mod refresh;
pub mod rekey;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::RngCore;
use serde_json::Value;
use tracing::instrument;

pub use self::admin::{AdminError, ConfigureToolkit, ToolkitView};
pub use self::params::{
    MAX_CREDENTIAL_LEN, MAX_NAME_LEN, MAX_PARAMS_BYTES, MAX_PARAMS_DEPTH, parse_params,
};
use self::refresh::RefreshState;
use crate::catalog::{Catalog, Connector, Tool};
use crate::crypto::Keyring;
use crate::egress::EgressPolicy;
use crate::error::ToolError;
use crate::invocation::{Clock, SystemClock};
pub use crate::invocation::{Invocation, Principal};
use crate::oauth::TokenHttp;
use crate::secret::Secret;
use crate::store::{AppSettings, AuditRecord, Store, StoreError, ToolkitRecord};
use crate::tools::{self, SendError};

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

/// Resolves connections and makes brokered calls.
#[derive(Debug)]
pub struct Broker {
    store: Arc<dyn Store>,
    key: Arc<Keyring>,
    builtin: Arc<Catalog>,
    /// Custom connectors per app, compiled once and dropped on change.
    custom: RwLock<HashMap<String, Arc<Catalog>>>,
    policy: EgressPolicy,
    client: reqwest::Client,
    /// Token, revocation and account requests (same pool and policy).
    token_http: TokenHttp,
    /// Names this process as a refresh lease holder.
    node_id: String,
    /// Per-connection refresh locks and back-off.
    refresh: RefreshState,
    /// Public base URL of this deployment; the OAuth redirect URI is built
    /// from it.
    public_url: RwLock<url::Url>,
    /// Verifies end users' JWTs (JWKS cached).
    jwt: crate::jwt::JwtVerifier,
    /// Tool-call rate limits per app and per end user.
    limits: RwLock<Arc<crate::ratelimit::RateLimits>>,
    /// Audit records not yet in the store: written in batches by a
    /// periodic task (started on first use), so a tool call costs a push,
    /// not a store insert.
    audit_batch: Arc<Mutex<Vec<AuditRecord>>>,
    audit_writer: std::sync::OnceLock<()>,
    /// Where expiry, back-off and leases read the time.
    clock: Arc<dyn Clock>,
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
            clock: Arc::new(SystemClock),
        })
    }

    /// Reads the time from `clock` instead of the wall clock (tests of
    /// expiry, back-off and leases without sleeping).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends token, revocation and account requests through `http`
    /// instead of the egress client (a provider fake in tests).
    pub fn with_token_http(mut self, http: TokenHttp) -> Self {
        self.token_http = http;
        self
    }

    /// The broker's clock, in milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Sets the public base URL (from `--public-url`, or the bound address).
    pub fn set_public_url(&self, url: url::Url) {
        if let Ok(mut u) = self.public_url.write() {
            *u = url;
        }
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
        match &record.endpoints.api_base_url {
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
        let started = std::time::Instant::now();
        let log_id = audit::new_log_id();
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
            at_ms: self.now_ms(),
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
                    let tool_error = error.into_tool_error(&connector.spec.display_name);
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
}
