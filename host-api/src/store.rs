//! Durable state: apps (with their settings), deployed functions, toolkit
//! configurations, OAuth connections and pending connect flows (tokens and
//! client secrets sealed), custom connectors, refresh leases and the audit
//! trail.
//!
//! [`Store`] is the seam for backends; [`SledStore`] is the embedded default.
//! Secrets reach a store only sealed (see [`crate::crypto`]); writes that
//! matter are flushed before the call returns.

use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::catalog::ConnectorSpec;
use crate::manifest::Manifest;

/// A store failure. Messages never include stored values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O, corruption, disk full).
    #[error("store backend: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// Decoder message.
        detail: String,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

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
    /// Replaces the connector's API base URL (GitHub Enterprise, regional
    /// hosts, local test providers).
    pub api_base_url: Option<String>,
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
    /// Replaces the connector's OAuth endpoints (self-hosted providers,
    /// local test servers).
    #[serde(default)]
    pub oauth_overrides: OAuthOverrides,
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

/// Per-app replacements of a connector's OAuth endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuthOverrides {
    /// Authorization endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    /// Token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Revocation endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
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

/// Run records kept per scheduled job; older ones are dropped.
pub const MAX_RUNS_PER_JOB: usize = 1000;

/// Attempts of a read-modify-write (read, change, compare-and-swap) before
/// a caller gives up: each failed attempt means another writer got in
/// between, so a handful covers any real contention on one admin record.
pub const MAX_CAS_ATTEMPTS: usize = 8;

/// Storage backend. Implementations must make a write durable before its
/// future resolves.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// A process-level value (e.g. the master key check).
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a process-level value.
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// An app by id.
    async fn get_app(&self, id: &str) -> Result<Option<AppRecord>, StoreError>;
    /// All apps.
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError>;
    /// Creates or replaces an app, unconditionally (for creating one; a
    /// change to an existing app goes through [`Store::put_app_if_version`]).
    /// The stored version becomes the previous one plus one.
    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError>;
    /// Compare-and-swap: writes `app` only if the stored app has version
    /// `expected` (`None`: only if there is no such app yet), with the next
    /// version (`app.version` is ignored). False if another write got in
    /// between: re-read, re-apply the change and try again.
    async fn put_app_if_version(
        &self,
        app: &AppRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError>;

    /// The current version of a function.
    async fn get_function(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Option<FunctionRecord>, StoreError>;
    /// Current versions of all functions, optionally of one app.
    async fn list_functions(&self, app: Option<&str>) -> Result<Vec<FunctionRecord>, StoreError>;
    /// Makes `record` the current version, and keeps it among the
    /// function's versions (pruning the oldest beyond [`MAX_VERSIONS`]).
    async fn put_function(&self, record: &FunctionRecord) -> Result<(), StoreError>;
    /// Removes a function and all its kept versions; false if it did not
    /// exist.
    async fn delete_function(&self, app: &str, name: &str) -> Result<bool, StoreError>;
    /// The kept versions of a function, newest first.
    async fn list_function_versions(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Vec<FunctionRecord>, StoreError>;
    /// One kept version of a function.
    async fn get_function_version(
        &self,
        app: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<FunctionRecord>, StoreError>;

    /// An app's configuration of a toolkit.
    async fn get_toolkit(
        &self,
        app: &str,
        toolkit: &str,
    ) -> Result<Option<ToolkitRecord>, StoreError>;
    /// All toolkit configurations of an app.
    async fn list_toolkits(&self, app: &str) -> Result<Vec<ToolkitRecord>, StoreError>;
    /// Creates or replaces a toolkit configuration, unconditionally; the
    /// stored version becomes the previous one plus one. Changes made from
    /// a record read earlier go through [`Store::put_toolkit_if_version`].
    async fn put_toolkit(&self, record: &ToolkitRecord) -> Result<(), StoreError>;
    /// Compare-and-swap, as [`Store::put_app_if_version`]: writes `record`
    /// with the next version only if the stored one has version `expected`
    /// (`None`: none stored yet); false if it changed meanwhile.
    async fn put_toolkit_if_version(
        &self,
        record: &ToolkitRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError>;

    /// Custom connectors of an app.
    async fn list_connectors(&self, app: &str) -> Result<Vec<ConnectorSpec>, StoreError>;
    /// Creates or replaces a custom connector.
    async fn put_connector(&self, app: &str, spec: &ConnectorSpec) -> Result<(), StoreError>;
    /// Removes a custom connector; false if it did not exist.
    async fn delete_connector(&self, app: &str, slug: &str) -> Result<bool, StoreError>;

    /// A connection by id.
    async fn get_connection(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError>;
    /// All connections of an app.
    async fn list_connections(&self, app: &str) -> Result<Vec<ConnectionRecord>, StoreError>;
    /// Connections of one owner (`user_id` `None`: the app's shared ones)
    /// for one toolkit.
    async fn list_connections_for(
        &self,
        app: &str,
        toolkit: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<ConnectionRecord>, StoreError>;
    /// Creates or replaces a connection, durably.
    async fn put_connection(&self, record: &ConnectionRecord) -> Result<(), StoreError>;
    /// Replaces a connection only if the stored one still has version
    /// `expected` (compare-and-swap); false if it changed or vanished.
    async fn put_connection_if_version(
        &self,
        record: &ConnectionRecord,
        expected: u64,
    ) -> Result<bool, StoreError>;
    /// Removes a connection; false if it did not exist.
    async fn delete_connection(&self, app: &str, id: &str) -> Result<bool, StoreError>;

    /// Stores a pending connect flow under the hash of its state.
    async fn put_flow(&self, state_hash: &str, flow: &FlowRecord) -> Result<(), StoreError>;
    /// A pending flow, left in place (the connect page reads it).
    async fn get_flow(&self, state_hash: &str) -> Result<Option<FlowRecord>, StoreError>;
    /// Removes and returns a flow: a state can be redeemed once.
    async fn take_flow(&self, state_hash: &str) -> Result<Option<FlowRecord>, StoreError>;
    /// Pending flows of an app.
    async fn list_flows(&self, app: &str) -> Result<Vec<FlowRecord>, StoreError>;
    /// Drops flows that expired before `now_ms`; returns how many.
    async fn purge_flows(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// Takes the refresh lease of a connection for `ttl_ms` unless another
    /// holder has an unexpired one; returns the new lease.
    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError>;
    /// Gives a lease back (only if `holder` still holds it).
    async fn release_lease(&self, connection: &str, holder: &str) -> Result<(), StoreError>;

    /// Appends a scheduled run's record (JSON) to a job's history, keeping
    /// the newest [`MAX_RUNS_PER_JOB`].
    async fn append_run(
        &self,
        job: &str,
        at_ms: u64,
        run_id: &str,
        record: &serde_json::Value,
    ) -> Result<(), StoreError>;
    /// Appends several records (job, Unix ms, id, JSON) with one durable
    /// write, keeping the newest [`MAX_RUNS_PER_JOB`] of each job.
    async fn append_records(
        &self,
        records: &[(String, u64, String, serde_json::Value)],
    ) -> Result<(), StoreError>;
    /// The newest run records of every job whose id starts with `prefix`,
    /// newest first.
    async fn list_runs(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, StoreError>;

    /// Appends to the audit trail.
    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// The newest audit records of an app, newest first.
    async fn list_audit(&self, app: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// Retention: removes an app's audit records older than
    /// `older_than_ms` (Unix ms) and all but its `keep_newest` newest;
    /// returns how many went. Records are ordered by time, so this removes
    /// a range rather than testing each record.
    async fn prune_audit(
        &self,
        app: &str,
        older_than_ms: u64,
        keep_newest: usize,
    ) -> Result<usize, StoreError>;
    /// Retention of run records (as [`Store::prune_audit`]) over every job
    /// whose id starts with `prefix`: those older than `older_than_ms`, and
    /// all but the `keep_newest` newest across those jobs, are removed.
    async fn prune_runs(
        &self,
        prefix: &str,
        older_than_ms: u64,
        keep_newest: usize,
    ) -> Result<usize, StoreError>;
}

/// The embedded store: one sled database in the data directory.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    apps: sled::Tree,
    functions: sled::Tree,
    /// Every kept version: (app, name, version big-endian) -> record, so a
    /// prefix scan lists a function's versions in order.
    function_versions: sled::Tree,
    toolkits: sled::Tree,
    connectors: sled::Tree,
    connections: sled::Tree,
    /// Index: (app, toolkit, owner, id) -> (), for picking a caller's
    /// connection without scanning the app's.
    connection_owners: sled::Tree,
    flows: sled::Tree,
    leases: sled::Tree,
    runs: sled::Tree,
    audit: sled::Tree,
}

fn key(app: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(app.len() + name.len() + 1);
    k.extend_from_slice(app.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

fn prefix(app: &str) -> Vec<u8> {
    key(app, "")
}

/// Key prefix of a function's versions.
fn versions_prefix(app: &str, name: &str) -> Vec<u8> {
    let mut k = key(app, name);
    k.push(0);
    k
}

fn version_key(app: &str, name: &str, version: u64) -> Vec<u8> {
    let mut k = versions_prefix(app, name);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Key prefix of the owner index for (app, toolkit, owner).
fn owner_prefix(app: &str, toolkit: &str, user_id: Option<&str>) -> Vec<u8> {
    let mut k = key(app, toolkit);
    k.push(0);
    match user_id {
        None => k.push(b's'),
        Some(u) => {
            k.push(b'u');
            k.extend_from_slice(u.as_bytes());
        }
    }
    k.push(0);
    k
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// A record whose `version` the store assigns on every write.
trait Versioned: Serialize + Clone {
    fn set_version(&mut self, version: u64);
}

impl Versioned for AppRecord {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

impl Versioned for ToolkitRecord {
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

/// Only the version of a stored record (the rest is not decoded).
#[derive(Deserialize)]
struct StoredVersion {
    #[serde(default)]
    version: u64,
}

/// Keys one batch of a prune removes. A batch of 1,000 takes about 10 ms
/// on sled, about as long as a prune keeps a worker thread before it
/// yields to other tasks (larger batches were no faster).
const PRUNE_BATCH: usize = 1_000;

/// The time (big-endian Unix ms) and id of a run key: what follows the
/// job id and its 0 byte.
fn run_key_tail(k: &[u8]) -> &[u8] {
    k.iter()
        .position(|b| *b == 0)
        .and_then(|i| k.get(i + 1..))
        .unwrap_or_default()
}

impl SledStore {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir.join("store.sled")).open()?;
        let functions = db.open_tree("functions")?;
        let function_versions = db.open_tree("function_versions")?;
        // Stores written before versions were kept: the current version of
        // each function becomes its first kept version.
        for item in functions.iter() {
            let (_, bytes) = item?;
            // An undecodable record is reported when it is loaded.
            let Ok(f) = decode::<FunctionRecord>("function", &bytes) else {
                continue;
            };
            let k = version_key(&f.app, &f.name, f.version);
            if !function_versions.contains_key(&k)? {
                function_versions.insert(k, bytes)?;
            }
        }
        Ok(Self {
            meta: db.open_tree("meta")?,
            apps: db.open_tree("apps")?,
            functions,
            function_versions,
            toolkits: db.open_tree("toolkits")?,
            connectors: db.open_tree("connectors")?,
            connections: db.open_tree("connections")?,
            connection_owners: db.open_tree("connection_owners")?,
            flows: db.open_tree("flows")?,
            leases: db.open_tree("leases")?,
            runs: db.open_tree("runs")?,
            audit: db.open_tree("audit")?,
            db,
        })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(
        tree: &sled::Tree,
        what: &'static str,
        p: &[u8],
    ) -> Result<Vec<T>, StoreError> {
        tree.scan_prefix(p)
            .map(|item| decode(what, &item?.1))
            .collect()
    }

    /// Writes `record` under `k` with the version after the stored one,
    /// unconditionally (`expected` `None`) or only if the stored version is
    /// the expected one (`Some(None)`: nothing stored). The check and the
    /// write are one compare-and-swap of the stored bytes.
    async fn write_versioned<T: Versioned>(
        &self,
        tree: &sled::Tree,
        what: &'static str,
        k: &[u8],
        record: &T,
        expected: Option<Option<u64>>,
    ) -> Result<bool, StoreError> {
        let mut record = record.clone();
        loop {
            let current = tree.get(k)?;
            // An undecodable record counts as version 0: replacing it is
            // how an admin repairs it.
            let stored = current
                .as_ref()
                .map(|v| decode::<StoredVersion>(what, v).map_or(0, |s| s.version));
            if expected.is_some_and(|e| e != stored) {
                return Ok(false);
            }
            record.set_version(stored.map_or(1, |v| v.saturating_add(1)));
            let bytes = encode(what, &record)?;
            if tree.compare_and_swap(k, current, Some(bytes))?.is_ok() {
                break;
            }
            // Written between the read and the swap: look again.
        }
        self.flush().await?;
        Ok(true)
    }

    /// Removes the keys of `tree` in `start..end`, in atomic batches.
    async fn remove_range(
        tree: &sled::Tree,
        start: &[u8],
        end: &[u8],
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for k in tree.range(start..end).keys().take(PRUNE_BATCH) {
                batch.remove(k?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            tree.apply_batch(batch)?;
            removed += n;
            if n < PRUNE_BATCH {
                break;
            }
            // Other tasks of this worker run between batches.
            tokio::task::yield_now().await;
        }
        Ok(removed)
    }

    /// Retention of the keys under `p`, each `p`, a big-endian Unix ms and
    /// an id (so they are ordered by time): removes those older than
    /// `older_than_ms` and all but the `keep_newest` newest. Both bounds end
    /// one range starting at `p`; only the kept newest and the removed keys
    /// are read.
    async fn prune_timed(
        tree: &sled::Tree,
        p: &[u8],
        older_than_ms: u64,
        keep_newest: usize,
    ) -> Result<usize, StoreError> {
        let mut end = p.to_vec();
        end.extend_from_slice(&older_than_ms.to_be_bytes());
        if let Some(boundary) = tree.scan_prefix(p).keys().rev().nth(keep_newest) {
            // The key right after the newest one to go, so the range
            // includes it.
            let mut past = boundary?.to_vec();
            past.push(0);
            end = end.max(past);
        }
        Self::remove_range(tree, p, &end).await
    }
}

#[async_trait]
impl Store for SledStore {
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key, value)?;
        self.flush().await
    }

    async fn get_app(&self, id: &str) -> Result<Option<AppRecord>, StoreError> {
        self.apps.get(id)?.map(|v| decode("app", &v)).transpose()
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        Self::scan(&self.apps, "app", &[])
    }

    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.write_versioned(&self.apps, "app", app.id.as_bytes(), app, None)
            .await
            .map(|_| ())
    }

    async fn put_app_if_version(
        &self,
        app: &AppRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.write_versioned(&self.apps, "app", app.id.as_bytes(), app, Some(expected))
            .await
    }

    async fn get_function(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Option<FunctionRecord>, StoreError> {
        self.functions
            .get(key(app, name))?
            .map(|v| decode("function", &v))
            .transpose()
    }

    async fn list_functions(&self, app: Option<&str>) -> Result<Vec<FunctionRecord>, StoreError> {
        let p = app.map(prefix).unwrap_or_default();
        Self::scan(&self.functions, "function", &p)
    }

    async fn put_function(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        let bytes = encode("function", record)?;
        // The version first: a crash between the writes leaves an extra
        // kept version, never a current one that is not kept.
        self.function_versions.insert(
            version_key(&record.app, &record.name, record.version),
            bytes.clone(),
        )?;
        let kept: Vec<sled::IVec> = self
            .function_versions
            .scan_prefix(versions_prefix(&record.app, &record.name))
            .keys()
            .collect::<Result<_, _>>()?;
        let own = version_key(&record.app, &record.name, record.version);
        // Oldest first; the version being made current is never pruned.
        let excess = kept.len().saturating_sub(MAX_VERSIONS);
        for k in kept
            .iter()
            .filter(|k| k.as_ref() != own.as_slice())
            .take(excess)
        {
            self.function_versions.remove(k)?;
        }
        self.functions
            .insert(key(&record.app, &record.name), bytes)?;
        self.flush().await
    }

    async fn delete_function(&self, app: &str, name: &str) -> Result<bool, StoreError> {
        let existed = self.functions.remove(key(app, name))?.is_some();
        let versions: Vec<sled::IVec> = self
            .function_versions
            .scan_prefix(versions_prefix(app, name))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in versions {
            self.function_versions.remove(k)?;
        }
        self.flush().await?;
        Ok(existed)
    }

    async fn list_function_versions(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Vec<FunctionRecord>, StoreError> {
        self.function_versions
            .scan_prefix(versions_prefix(app, name))
            .rev()
            .map(|item| decode("function version", &item?.1))
            .collect()
    }

    async fn get_function_version(
        &self,
        app: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<FunctionRecord>, StoreError> {
        self.function_versions
            .get(version_key(app, name, version))?
            .map(|v| decode("function version", &v))
            .transpose()
    }

    async fn get_toolkit(
        &self,
        app: &str,
        toolkit: &str,
    ) -> Result<Option<ToolkitRecord>, StoreError> {
        self.toolkits
            .get(key(app, toolkit))?
            .map(|v| decode("toolkit", &v))
            .transpose()
    }

    async fn list_toolkits(&self, app: &str) -> Result<Vec<ToolkitRecord>, StoreError> {
        Self::scan(&self.toolkits, "toolkit", &prefix(app))
    }

    async fn put_toolkit(&self, record: &ToolkitRecord) -> Result<(), StoreError> {
        let k = key(&record.app, &record.toolkit);
        self.write_versioned(&self.toolkits, "toolkit", &k, record, None)
            .await
            .map(|_| ())
    }

    async fn put_toolkit_if_version(
        &self,
        record: &ToolkitRecord,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let k = key(&record.app, &record.toolkit);
        self.write_versioned(&self.toolkits, "toolkit", &k, record, Some(expected))
            .await
    }

    async fn list_connectors(&self, app: &str) -> Result<Vec<ConnectorSpec>, StoreError> {
        Self::scan(&self.connectors, "connector", &prefix(app))
    }

    async fn put_connector(&self, app: &str, spec: &ConnectorSpec) -> Result<(), StoreError> {
        self.connectors
            .insert(key(app, &spec.slug), encode("connector", spec)?)?;
        self.flush().await
    }

    async fn delete_connector(&self, app: &str, slug: &str) -> Result<bool, StoreError> {
        let existed = self.connectors.remove(key(app, slug))?.is_some();
        self.flush().await?;
        Ok(existed)
    }

    async fn get_connection(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        self.connections
            .get(key(app, id))?
            .map(|v| decode("connection", &v))
            .transpose()
    }

    async fn list_connections(&self, app: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        Self::scan(&self.connections, "connection", &prefix(app))
    }

    async fn list_connections_for(
        &self,
        app: &str,
        toolkit: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let p = owner_prefix(app, toolkit, user_id);
        let mut out = Vec::new();
        for item in self.connection_owners.scan_prefix(&p) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(k.get(p.len()..).unwrap_or_default()).into_owned();
            // An index entry without its record (a crash between the two
            // writes) is skipped.
            if let Some(c) = self.get_connection(app, &id).await?
                && c.toolkit == toolkit
                && c.user_id.as_deref() == user_id
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn put_connection(&self, record: &ConnectionRecord) -> Result<(), StoreError> {
        let mut index = owner_prefix(&record.app, &record.toolkit, record.user_id.as_deref());
        index.extend_from_slice(record.id.as_bytes());
        self.connection_owners.insert(index, &[])?;
        self.connections
            .insert(key(&record.app, &record.id), encode("connection", record)?)?;
        self.flush().await
    }

    async fn put_connection_if_version(
        &self,
        record: &ConnectionRecord,
        expected: u64,
    ) -> Result<bool, StoreError> {
        let k = key(&record.app, &record.id);
        let new = encode("connection", record)?;
        loop {
            let Some(current) = self.connections.get(&k)? else {
                return Ok(false);
            };
            let stored: ConnectionRecord = decode("connection", &current)?;
            if stored.version != expected {
                return Ok(false);
            }
            match self
                .connections
                .compare_and_swap(&k, Some(current), Some(new.clone()))?
            {
                Ok(()) => break,
                // Changed between the read and the swap: look again.
                Err(_) => continue,
            }
        }
        self.flush().await?;
        Ok(true)
    }

    async fn delete_connection(&self, app: &str, id: &str) -> Result<bool, StoreError> {
        let removed = self.connections.remove(key(app, id))?;
        let existed = removed.is_some();
        if let Some(bytes) = removed
            && let Ok(c) = decode::<ConnectionRecord>("connection", &bytes)
        {
            let mut index = owner_prefix(app, &c.toolkit, c.user_id.as_deref());
            index.extend_from_slice(id.as_bytes());
            self.connection_owners.remove(index)?;
        }
        self.flush().await?;
        Ok(existed)
    }

    async fn put_flow(&self, state_hash: &str, flow: &FlowRecord) -> Result<(), StoreError> {
        self.flows
            .insert(state_hash.as_bytes(), encode("flow", flow)?)?;
        self.flush().await
    }

    async fn get_flow(&self, state_hash: &str) -> Result<Option<FlowRecord>, StoreError> {
        self.flows
            .get(state_hash.as_bytes())?
            .map(|v| decode("flow", &v))
            .transpose()
    }

    async fn take_flow(&self, state_hash: &str) -> Result<Option<FlowRecord>, StoreError> {
        // `remove` is atomic: of two callbacks racing with one state, one
        // gets the record and the other nothing.
        let taken = self.flows.remove(state_hash.as_bytes())?;
        self.flush().await?;
        taken.map(|v| decode("flow", &v)).transpose()
    }

    async fn list_flows(&self, app: &str) -> Result<Vec<FlowRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.flows.iter() {
            let flow: FlowRecord = decode("flow", &item?.1)?;
            if flow.app == app {
                out.push(flow);
            }
        }
        Ok(out)
    }

    async fn purge_flows(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut expired = Vec::new();
        for item in self.flows.iter() {
            let (k, v) = item?;
            // An undecodable flow can never be redeemed either.
            let keep = decode::<FlowRecord>("flow", &v).is_ok_and(|f| f.expires_at_ms > now_ms);
            if !keep {
                expired.push(k);
            }
        }
        for k in &expired {
            self.flows.remove(k)?;
        }
        if !expired.is_empty() {
            self.flush().await?;
        }
        Ok(expired.len())
    }

    async fn acquire_lease(
        &self,
        connection: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        loop {
            let current = self.leases.get(connection.as_bytes())?;
            let previous: Option<Lease> =
                current.as_ref().map(|v| decode("lease", v)).transpose()?;
            if let Some(p) = &previous
                && p.holder != holder
                && p.expires_at_ms > now_ms
            {
                return Ok(None);
            }
            let lease = Lease {
                holder: holder.to_string(),
                expires_at_ms: now_ms.saturating_add(ttl_ms),
                fence: previous.map_or(1, |p| p.fence + 1),
            };
            if self
                .leases
                .compare_and_swap(
                    connection.as_bytes(),
                    current,
                    Some(encode("lease", &lease)?),
                )?
                .is_ok()
            {
                return Ok(Some(lease));
            }
        }
    }

    async fn release_lease(&self, connection: &str, holder: &str) -> Result<(), StoreError> {
        let Some(current) = self.leases.get(connection.as_bytes())? else {
            return Ok(());
        };
        let lease: Lease = decode("lease", &current)?;
        if lease.holder == holder {
            // If someone took it over meanwhile, the swap fails and their
            // lease stays.
            let _ = self.leases.compare_and_swap(
                connection.as_bytes(),
                Some(current),
                None::<Vec<u8>>,
            )?;
        }
        Ok(())
    }

    async fn append_run(
        &self,
        job: &str,
        at_ms: u64,
        run_id: &str,
        record: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.append_records(&[(job.to_string(), at_ms, run_id.to_string(), record.clone())])
            .await
    }

    async fn append_records(
        &self,
        records: &[(String, u64, String, serde_json::Value)],
    ) -> Result<(), StoreError> {
        let mut jobs: Vec<&str> = Vec::new();
        for (job, at_ms, id, record) in records {
            let mut k = prefix(job);
            k.extend_from_slice(&at_ms.to_be_bytes());
            k.extend_from_slice(id.as_bytes());
            self.runs.insert(k, encode("run record", record)?)?;
            if !jobs.contains(&job.as_str()) {
                jobs.push(job);
            }
        }
        for job in jobs {
            let p = prefix(job);
            let count = self.runs.scan_prefix(&p).count();
            if count > MAX_RUNS_PER_JOB {
                let old: Vec<sled::IVec> = self
                    .runs
                    .scan_prefix(&p)
                    .keys()
                    .take(count - MAX_RUNS_PER_JOB)
                    .collect::<Result<_, _>>()?;
                for k in old {
                    self.runs.remove(k)?;
                }
            }
        }
        self.flush().await
    }

    async fn list_runs(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out: Vec<(Vec<u8>, serde_json::Value)> = Vec::new();
        for item in self.runs.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            // Order by time across jobs: the key's tail after the job id.
            let at = k
                .iter()
                .position(|b| *b == 0)
                .and_then(|i| k.get(i + 1..))
                .unwrap_or_default()
                .to_vec();
            out.push((at, decode("run record", &v)?));
        }
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out.into_iter().take(limit).map(|(_, v)| v).collect())
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        // Key: app, then time and id so a prefix scan in reverse is newest first.
        let mut k = prefix(&record.app);
        k.extend_from_slice(&record.at_ms.to_be_bytes());
        k.extend_from_slice(record.log_id.as_bytes());
        self.audit.insert(k, encode("audit record", record)?)?;
        // Audit records are not flushed per call: sled flushes every 500 ms,
        // and a tool call must not wait on a disk sync for its audit line.
        Ok(())
    }

    async fn list_audit(&self, app: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit
            .scan_prefix(prefix(app))
            .rev()
            .take(limit)
            .map(|item| decode("audit record", &item?.1))
            .collect()
    }

    async fn prune_audit(
        &self,
        app: &str,
        older_than_ms: u64,
        keep_newest: usize,
    ) -> Result<usize, StoreError> {
        let removed =
            Self::prune_timed(&self.audit, &prefix(app), older_than_ms, keep_newest).await?;
        if removed > 0 {
            self.flush().await?;
        }
        Ok(removed)
    }

    async fn prune_runs(
        &self,
        prefix: &str,
        older_than_ms: u64,
        keep_newest: usize,
    ) -> Result<usize, StoreError> {
        let p = prefix.as_bytes();
        let mut removed = 0;
        let mut left = 0;
        // By age, job by job: each job's old records are a range at the
        // start of its keys. The cursor jumps from one job to the next.
        let mut cursor = p.to_vec();
        while let Some(first) = self.runs.range(cursor.as_slice()..).keys().next() {
            let first = first?;
            if !first.starts_with(p) {
                break;
            }
            let job_len = first.len() - run_key_tail(&first).len();
            let job = first.get(..job_len).unwrap_or_default();
            if !job.ends_with(&[0]) {
                // Not a run key: step over it.
                cursor = first.to_vec();
                cursor.push(0);
                continue;
            }
            removed += Self::prune_timed(&self.runs, job, older_than_ms, usize::MAX).await?;
            left += self.runs.scan_prefix(job).keys().count();
            // Past every key of this job (`job id` then 0): `job id` then 1.
            cursor = job.to_vec();
            if let Some(last) = cursor.last_mut() {
                *last = 1;
            }
        }
        // By count, across the jobs: the oldest beyond `keep_newest` go.
        if left > keep_newest {
            let mut keys: Vec<sled::IVec> =
                self.runs.scan_prefix(p).keys().collect::<Result<_, _>>()?;
            keys.sort_unstable_by(|a, b| run_key_tail(b).cmp(run_key_tail(a)));
            for chunk in keys
                .get(keep_newest..)
                .unwrap_or_default()
                .chunks(PRUNE_BATCH)
            {
                let mut batch = sled::Batch::default();
                for k in chunk {
                    batch.remove(k.clone());
                }
                self.runs.apply_batch(batch)?;
                removed += chunk.len();
                tokio::task::yield_now().await;
            }
        }
        if removed > 0 {
            self.flush().await?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_reopen_and_apps_are_isolated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            for app in ["a", "ab"] {
                s.put_toolkit(&ToolkitRecord {
                    app: app.into(),
                    toolkit: "github".into(),
                    enabled: true,
                    api_base_url: None,
                    sealed_credential: None,
                    updated_at: 1,
                    ..ToolkitRecord::default()
                })
                .await
                .unwrap();
            }
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.list_toolkits("a").await.unwrap().len(), 1);
        assert!(s.get_toolkit("ab", "github").await.unwrap().is_some());
        assert!(s.get_toolkit("b", "github").await.unwrap().is_none());
    }

    fn function(name: &str, version: u64) -> FunctionRecord {
        FunctionRecord {
            app: "a".into(),
            name: name.into(),
            version,
            manifest: Manifest::default(),
            component_sha256: format!("sha{version}"),
            component_size: 1,
            deployed_at: version,
        }
    }

    #[tokio::test]
    async fn versions_are_kept_newest_first_pruned_and_deleted_with_the_function() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        // A name that extends another must not share its versions.
        s.put_function(&function("hello-x", 1)).await.unwrap();
        for v in 1..=3 {
            s.put_function(&function("hello", v)).await.unwrap();
        }
        let versions: Vec<u64> = s
            .list_function_versions("a", "hello")
            .await
            .unwrap()
            .iter()
            .map(|f| f.version)
            .collect();
        assert_eq!(versions, [3, 2, 1]);
        // Making an older version current again keeps the others.
        s.put_function(&function("hello", 1)).await.unwrap();
        assert_eq!(
            s.get_function("a", "hello").await.unwrap().unwrap().version,
            1
        );
        assert_eq!(
            s.list_function_versions("a", "hello").await.unwrap().len(),
            3
        );
        let v2 = s
            .get_function_version("a", "hello", 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v2.component_sha256, "sha2");

        for v in 4..=(MAX_VERSIONS as u64 + 5) {
            s.put_function(&function("hello", v)).await.unwrap();
        }
        let kept = s.list_function_versions("a", "hello").await.unwrap();
        assert_eq!(kept.len(), MAX_VERSIONS);
        assert_eq!(kept.first().unwrap().version, MAX_VERSIONS as u64 + 5);
        assert!(
            s.get_function_version("a", "hello", 5)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.get_function_version("a", "hello", 6)
                .await
                .unwrap()
                .is_some()
        );

        assert!(s.delete_function("a", "hello").await.unwrap());
        assert!(
            s.list_function_versions("a", "hello")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.list_function_versions("a", "hello-x")
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_store_without_versions_keeps_its_current_functions_as_versions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            // As written before versions were kept: the current record only.
            let f = function("hello", 4);
            s.functions
                .insert(key("a", "hello"), encode("function", &f).unwrap())
                .unwrap();
            s.flush().await.unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let kept = s.list_function_versions("a", "hello").await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept.first().unwrap().version, 4);
    }

    fn audit(app: &str, at_ms: u64, n: usize) -> AuditRecord {
        serde_json::from_value(serde_json::json!({
            "logId": format!("log_{n:06}"),
            "app": app,
            "function": null,
            "identity": "admin",
            "tool": "T",
            "outcome": "ok",
            "status": null,
            "durationMs": 1,
            "atMs": at_ms,
        }))
        .unwrap()
    }

    fn times(records: &[AuditRecord]) -> Vec<u64> {
        records.iter().map(|r| r.at_ms).collect()
    }

    #[tokio::test]
    async fn audit_retention_drops_old_records_keeps_the_newest_and_spares_other_apps() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        // "a" and "ab": an app whose id extends another's is not touched.
        for app in ["a", "ab"] {
            for (n, at) in (1000..1010).enumerate() {
                s.append_audit(&audit(app, at, n)).await.unwrap();
            }
        }
        // Two records in the same millisecond, told apart by their ids.
        s.append_audit(&audit("a", 1009, 99)).await.unwrap();

        // By age: everything before 1004 goes.
        assert_eq!(s.prune_audit("a", 1004, 100).await.unwrap(), 4);
        let left = s.list_audit("a", 100).await.unwrap();
        assert_eq!(times(&left), [1009, 1009, 1008, 1007, 1006, 1005, 1004]);
        // Nothing left to do is a no-op.
        assert_eq!(s.prune_audit("a", 1004, 100).await.unwrap(), 0);

        // By count: the newest three stay, whatever their age.
        assert_eq!(s.prune_audit("a", 0, 3).await.unwrap(), 4);
        let left = s.list_audit("a", 100).await.unwrap();
        assert_eq!(times(&left), [1009, 1009, 1008]);
        assert_eq!(left.last().unwrap().log_id, "log_000008");

        // Both bounds at once: the stricter wins.
        assert_eq!(s.prune_audit("a", 1009, 2).await.unwrap(), 1);
        assert_eq!(s.prune_audit("a", 0, 0).await.unwrap(), 2);
        assert!(s.list_audit("a", 100).await.unwrap().is_empty());

        assert_eq!(s.list_audit("ab", 100).await.unwrap().len(), 10);
        assert_eq!(s.prune_audit("b", u64::MAX, 0).await.unwrap(), 0);
    }

    async fn run(s: &SledStore, job: &str, at_ms: u64) {
        let record = serde_json::json!({ "job": job, "at": at_ms });
        s.append_run(job, at_ms, &format!("run_{at_ms}"), &record)
            .await
            .unwrap();
    }

    fn run_times(runs: &[serde_json::Value]) -> Vec<u64> {
        runs.iter().map(|r| r["at"].as_u64().unwrap()).collect()
    }

    #[tokio::test]
    async fn run_retention_prunes_each_job_by_age_and_the_prefix_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        for at in [10, 20, 30, 40] {
            run(&s, "a/cron#0", at).await;
        }
        for at in [15, 25, 35] {
            run(&s, "a/web@", at).await;
        }
        for at in [5, 50] {
            run(&s, "ab/web@", at).await;
        }

        // By age, in every job of app `a`.
        assert_eq!(s.prune_runs("a/", 21, 100).await.unwrap(), 3);
        assert_eq!(
            run_times(&s.list_runs("a/", 100).await.unwrap()),
            [40, 35, 30, 25]
        );

        // By count, across its jobs: the newest three of the app stay.
        assert_eq!(s.prune_runs("a/", 0, 3).await.unwrap(), 1);
        assert_eq!(
            run_times(&s.list_runs("a/", 100).await.unwrap()),
            [40, 35, 30]
        );
        assert_eq!(run_times(&s.list_runs("a/web@", 100).await.unwrap()), [35]);

        // Another app's history is untouched.
        assert_eq!(run_times(&s.list_runs("ab/", 100).await.unwrap()), [50, 5]);
        assert_eq!(s.prune_runs("a/", 0, 3).await.unwrap(), 0);
        assert_eq!(s.prune_runs("ab/", 6, 0).await.unwrap(), 2);
        assert!(s.list_runs("ab/", 100).await.unwrap().is_empty());
        assert_eq!(s.list_runs("a/", 100).await.unwrap().len(), 3);
    }

    fn app(id: &str) -> AppRecord {
        AppRecord {
            id: id.into(),
            admin_key_hashes: vec![],
            created_at: 1,
            settings: AppSettings::default(),
            version: 0,
        }
    }

    #[tokio::test]
    async fn app_and_toolkit_writes_compare_and_swap_on_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();

        // Creating only if absent.
        assert!(s.put_app_if_version(&app("a"), None).await.unwrap());
        assert!(!s.put_app_if_version(&app("a"), None).await.unwrap());
        let read = s.get_app("a").await.unwrap().unwrap();
        assert_eq!(read.version, 1);

        // Two writers read version 1; the second one's swap is refused.
        let mut first = read.clone();
        first.admin_key_hashes = vec!["first".into()];
        let mut second = read.clone();
        second.admin_key_hashes = vec!["second".into()];
        assert!(s.put_app_if_version(&first, Some(1)).await.unwrap());
        assert!(!s.put_app_if_version(&second, Some(1)).await.unwrap());
        let stored = s.get_app("a").await.unwrap().unwrap();
        assert_eq!(stored.admin_key_hashes, ["first"]);
        assert_eq!(stored.version, 2);
        // An unconditional write still moves the version on.
        s.put_app(&stored).await.unwrap();
        assert_eq!(s.get_app("a").await.unwrap().unwrap().version, 3);
        assert!(!s.put_app_if_version(&app("b"), Some(0)).await.unwrap());

        let toolkit = ToolkitRecord {
            app: "a".into(),
            toolkit: "github".into(),
            enabled: true,
            ..ToolkitRecord::default()
        };
        assert!(s.put_toolkit_if_version(&toolkit, None).await.unwrap());
        let disabled = ToolkitRecord {
            enabled: false,
            ..toolkit.clone()
        };
        assert!(s.put_toolkit_if_version(&disabled, Some(1)).await.unwrap());
        // A writer still holding version 1 cannot re-enable it.
        assert!(!s.put_toolkit_if_version(&toolkit, Some(1)).await.unwrap());
        let stored = s.get_toolkit("a", "github").await.unwrap().unwrap();
        assert!(!stored.enabled);
        assert_eq!(stored.version, 2);
    }

    #[tokio::test]
    async fn records_written_before_versions_load_as_version_0() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.apps
            .insert(
                "a",
                br#"{"id":"a","adminKeyHashes":[],"createdAt":1}"#.as_slice(),
            )
            .unwrap();
        s.toolkits
            .insert(
                key("a", "github"),
                br#"{"app":"a","toolkit":"github","enabled":true,"apiBaseUrl":null,"sealedCredential":null,"updatedAt":1}"#.as_slice(),
            )
            .unwrap();
        assert_eq!(s.get_app("a").await.unwrap().unwrap().version, 0);
        let t = s.get_toolkit("a", "github").await.unwrap().unwrap();
        assert_eq!(t.version, 0);
        assert!(s.put_toolkit_if_version(&t, Some(0)).await.unwrap());
        assert_eq!(
            s.get_toolkit("a", "github").await.unwrap().unwrap().version,
            1
        );
    }
}
