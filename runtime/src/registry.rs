//! The deployed functions of this process: deploy, load at start, look up
//! per request, roll back to a kept version, remove.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use host_api::Broker;
use host_api::manifest::{CronSpec, Manifest};
use host_api::store::{FunctionRecord, Store, StoreError};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::engine::{DeployError, Engine, HostState};
use crate::invoke::LoadedFunction;
use crate::scheduler::{CronTrigger, Schedule};

/// Longest function or app name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest a deploy may take to compile its component (waiting for a
/// compile slot included). Toolchain-built components of the largest size
/// accepted compile in seconds; one that takes minutes is pathological or
/// hostile, and would otherwise hold a core and the deploy lock for as long
/// as it likes.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Compiles running at once. A compile that outlived its deadline cannot be
/// stopped (Cranelift has no interruption point): it finishes in the
/// background, holding its slot, so deploys that time out cannot pile up
/// compiles; the second slot keeps one such compile from blocking the
/// next deploy.
const MAX_CONCURRENT_COMPILES: usize = 2;

/// Checks a function or app name: 1-64 of a-z, 0-9, `-` and `_`, starting
/// with a letter or digit.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name `{}` is invalid: use 1-{MAX_NAME_LEN} characters of a-z, 0-9, `-` and `_`, starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// Parses a manifest's cron trigger; the error says how to fix it.
pub fn parse_cron_trigger(spec: &CronSpec) -> Result<Schedule, String> {
    Schedule::parse(CronTrigger {
        expression: spec.schedule.clone(),
        timezone: spec.timezone.clone(),
        payload: spec.payload.clone(),
    })
    .map_err(|e| e.to_string())
}

/// A manifest that names its function must be deployed under that name.
fn check_manifest_name(name: &str, manifest: &Manifest) -> Result<(), RegistryError> {
    match &manifest.name {
        Some(n) if n != name => Err(RegistryError::Invalid(format!(
            "the manifest names the function `{n}` but it is being deployed as `{name}`; deploy it as `{n}` or change \"name\""
        ))),
        _ => Ok(()),
    }
}

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request is wrong; the message says how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// The component is refused.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Compilation could not run.
    #[error("internal error: {0}")]
    Internal(String),
    /// No such function or version; the message says how to list them.
    #[error("{0}")]
    NotFound(String),
    /// A kept version can no longer be loaded (its component is gone).
    #[error("{0}")]
    Unavailable(String),
    /// Compiling the component took longer than the deploy's deadline.
    #[error(
        "the component took longer than {} s to compile and was refused; deploy a smaller component (build with `--release`, strip debug info, drop unused dependencies)",
        .0.as_secs()
    )]
    CompileTimeout(Duration),
    /// Every compile slot stayed taken for the whole deadline.
    #[error(
        "earlier deploys are still compiling (components that took too long to compile); retry in a few minutes"
    )]
    CompileBusy,
}

/// Functions by app, then by name (looked up by `&str`, no allocation).
type Loaded = HashMap<String, HashMap<String, Arc<LoadedFunction>>>;

/// Functions by (app, name).
#[derive(Debug)]
pub struct Registry {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    /// The catalog and the apps' custom connectors, which a manifest's
    /// grants must name.
    broker: Arc<Broker>,
    loaded: RwLock<Loaded>,
    /// Serializes deploys, rollbacks and removals: version numbers are read
    /// then written, and artifact collection must not race a deploy that is
    /// about to reference the same component.
    changes: tokio::sync::Mutex<()>,
    /// Compile slots ([`MAX_CONCURRENT_COMPILES`]); a compile holds one
    /// until it ends, also after its deploy gave up on it.
    compiles: Arc<tokio::sync::Semaphore>,
    /// The compile deadline in milliseconds ([`COMPILE_TIMEOUT`] unless a
    /// test sets another).
    compile_timeout_ms: AtomicU64,
}

impl Registry {
    /// An empty registry.
    pub fn new(engine: Arc<Engine>, store: Arc<dyn Store>, broker: Arc<Broker>) -> Self {
        Self {
            engine,
            store,
            broker,
            loaded: RwLock::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
            compiles: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_COMPILES)),
            compile_timeout_ms: AtomicU64::new(millis(COMPILE_TIMEOUT)),
        }
    }

    /// Changes the compile deadline of deploys (default [`COMPILE_TIMEOUT`]).
    pub fn set_compile_timeout(&self, timeout: Duration) {
        self.compile_timeout_ms
            .store(millis(timeout), Ordering::Relaxed);
    }

    /// Compiles `component` off the async pool within the compile deadline.
    async fn compile(
        &self,
        component: Vec<u8>,
    ) -> Result<(String, ProxyPre<HostState>), RegistryError> {
        let timeout = Duration::from_millis(self.compile_timeout_ms.load(Ordering::Relaxed));
        let deadline = tokio::time::Instant::now() + timeout;
        let slot = tokio::time::timeout_at(deadline, self.compiles.clone().acquire_owned())
            .await
            .map_err(|_| RegistryError::CompileBusy)?
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        let engine = self.engine.clone();
        let size = component.len();
        let compile = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            engine.deploy(&component)
        });
        match tokio::time::timeout_at(deadline, compile).await {
            Ok(joined) => Ok(joined.map_err(|e| RegistryError::Internal(e.to_string()))??),
            Err(_) => {
                tracing::warn!(
                    bytes = size,
                    timeout_secs = timeout.as_secs(),
                    "deploy refused: the component took too long to compile (the compile finishes in the background)"
                );
                Err(RegistryError::CompileTimeout(timeout))
            }
        }
    }

    /// (app, name) of every loaded function.
    pub fn names(&self) -> Vec<(String, String)> {
        let Ok(loaded) = self.loaded.read() else {
            return Vec::new();
        };
        loaded
            .iter()
            .flat_map(|(app, fns)| fns.keys().map(move |n| (app.clone(), n.clone())))
            .collect()
    }

    /// Loads every stored function (artifacts are reused, not recompiled).
    /// A function that cannot be loaded is logged and skipped.
    pub async fn load_all(&self) -> Result<usize, StoreError> {
        let records = self.store.list_functions(None).await?;
        let mut count = 0;
        for record in records {
            match self.load_component(&record.component_sha256).await {
                Ok(pre) => {
                    self.insert(LoadedFunction::new(record, pre));
                    count += 1;
                }
                Err(e) => {
                    tracing::error!(app = %record.app, function = %record.name, error = %format!("{e:#}"), "cannot load function")
                }
            }
        }
        Ok(count)
    }

    /// A deployed component ready to instantiate: this node's compiled
    /// artifact when it has one, else compiled (once) from the bytes the
    /// shared store keeps, which were deployed on another node.
    async fn load_component(&self, sha: &str) -> anyhow::Result<ProxyPre<HostState>> {
        let engine = self.engine.clone();
        let owned = sha.to_string();
        let local = tokio::task::spawn_blocking(move || engine.load(&owned)).await?;
        let local_error = match local {
            Ok(pre) => return Ok(pre),
            Err(e) => e,
        };
        let Some(bytes) = self.store.get_component(sha).await? else {
            return Err(local_error);
        };
        let engine = self.engine.clone();
        let (got, pre) = tokio::task::spawn_blocking(move || engine.deploy(&bytes))
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            got == sha,
            "the store's component {sha} has another digest ({got}); deploy the function again"
        );
        Ok(pre)
    }

    /// Brings the loaded functions in line with the store: deploys,
    /// rollbacks and deletes made on other nodes. Returns the (app, name)
    /// of every function that changed, so its cron triggers can follow.
    pub async fn reconcile(&self) -> Result<Vec<(String, String)>, StoreError> {
        let _changes = self.changes.lock().await;
        let records = self.store.list_functions(None).await?;
        let mut changed = Vec::new();
        let mut present = std::collections::HashSet::new();
        for record in records {
            present.insert((record.app.clone(), record.name.clone()));
            let same = self.get(&record.app, &record.name).is_some_and(|f| {
                f.record.version == record.version
                    && f.record.component_sha256 == record.component_sha256
                    && f.record.manifest == record.manifest
            });
            if same {
                continue;
            }
            match self.load_component(&record.component_sha256).await {
                Ok(pre) => {
                    tracing::info!(app = %record.app, function = %record.name, version = record.version, "picked up a change made on another node");
                    changed.push((record.app.clone(), record.name.clone()));
                    self.insert(LoadedFunction::new(record, pre));
                }
                Err(e) => {
                    tracing::error!(app = %record.app, function = %record.name, error = %format!("{e:#}"), "cannot load a function deployed on another node")
                }
            }
        }
        if let Ok(mut map) = self.loaded.write() {
            for (app, functions) in map.iter_mut() {
                functions.retain(|name, _| {
                    let keep = present.contains(&(app.clone(), name.clone()));
                    if !keep {
                        changed.push((app.clone(), name.clone()));
                    }
                    keep
                });
            }
        }
        Ok(changed)
    }

    fn insert(&self, f: LoadedFunction) {
        if let Ok(mut map) = self.loaded.write() {
            map.entry(f.record.app.clone())
                .or_default()
                .insert(f.record.name.clone(), Arc::new(f));
        }
    }

    /// The current version of a function.
    pub fn get(&self, app: &str, name: &str) -> Option<Arc<LoadedFunction>> {
        self.loaded.read().ok()?.get(app)?.get(name).cloned()
    }

    /// Deploys `component` as `app/name`; a new version if it existed
    /// (numbers only increase, also after a rollback). Deploying identical
    /// bytes and manifest again is a no-op. Every deploy (API, dev mode,
    /// watch) is validated here alike: the name, the manifest (its name,
    /// fields, cron triggers and grants against the catalog) and the
    /// component (imports and exports, at compile).
    pub async fn deploy(
        &self,
        app: &str,
        name: &str,
        component: Vec<u8>,
        manifest: Manifest,
    ) -> Result<FunctionRecord, RegistryError> {
        check_name("function", name).map_err(RegistryError::Invalid)?;
        check_manifest_name(name, &manifest)?;
        manifest
            .validate()
            .map_err(|e| RegistryError::Invalid(format!("manifest: {e}")))?;
        for (i, trigger) in manifest.cron.iter().enumerate() {
            parse_cron_trigger(trigger)
                .map_err(|e| RegistryError::Invalid(format!("manifest: cron[{i}]: {e}")))?;
        }
        self.check_grants(app, &manifest).await?;
        let _changes = self.changes.lock().await;
        let size = component.len() as u64;
        // Kept for the shared store, which other nodes load it from.
        let shared_copy = component.clone();
        let (sha, pre) = self.compile(component).await?;
        let previous = self.store.get_function(app, name).await?;
        if let Some(prev) = &previous
            && prev.component_sha256 == sha
            && prev.manifest == manifest
        {
            return Ok(prev.clone());
        }
        self.store.put_component(&sha, &shared_copy).await?;
        drop(shared_copy);
        let versions = self.store.list_function_versions(app, name).await?;
        let newest = versions
            .iter()
            .chain(&previous)
            .map(|v| v.version)
            .max()
            .unwrap_or(0);
        let record = FunctionRecord {
            app: app.to_string(),
            name: name.to_string(),
            version: newest + 1,
            manifest,
            component_sha256: sha,
            component_size: size,
            deployed_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        self.store.put_function(&record).await?;
        self.insert(LoadedFunction::new(record.clone(), pre));
        // Versions pruned beyond the store's limit may leave components
        // nothing uses.
        let kept = self.store.list_function_versions(app, name).await?;
        let mut pruned: Vec<&str> = versions
            .iter()
            .filter(|v| kept.iter().all(|k| k.version != v.version))
            .map(|v| v.component_sha256.as_str())
            .collect();
        pruned.sort_unstable();
        pruned.dedup();
        for sha in pruned {
            self.collect_artifacts(sha).await;
        }
        Ok(record)
    }

    /// Refuses grants naming toolkits or tools that do not exist for the
    /// app, so a typo fails the deploy instead of every call.
    async fn check_grants(&self, app: &str, manifest: &Manifest) -> Result<(), RegistryError> {
        for toolkit in &manifest.grants.toolkits {
            if self.broker.find_connector(app, toolkit).await?.is_none() {
                return Err(RegistryError::Invalid(format!(
                    "manifest: grants.toolkits names `{toolkit}`, which is not a connector of app `{app}`; GET /v1/{app}/integrations/available lists them"
                )));
            }
        }
        for tool in &manifest.grants.tools {
            if self.broker.find_tool_info(app, tool).await?.is_none() {
                return Err(RegistryError::Invalid(format!(
                    "manifest: grants.tools names `{tool}`, which is not a tool of app `{app}`; GET /v1/{app}/integrations/tools lists them"
                )));
            }
        }
        Ok(())
    }

    /// Makes a kept version current again: `version`, or by default the
    /// newest one older than the current. Its compiled artifact is loaded,
    /// not rebuilt (it is recompiled from the kept component only if the
    /// artifact is missing or was built by another engine).
    pub async fn rollback(
        &self,
        app: &str,
        name: &str,
        version: Option<u64>,
    ) -> Result<FunctionRecord, RegistryError> {
        let _changes = self.changes.lock().await;
        let current = self.store.get_function(app, name).await?.ok_or_else(|| {
            RegistryError::NotFound(format!(
                "no function `{name}` in app `{app}`; list them with `runtime functions list`"
            ))
        })?;
        let versions = self.store.list_function_versions(app, name).await?;
        let target = match version {
            Some(v) => versions.iter().find(|r| r.version == v).ok_or_else(|| {
                let kept: Vec<String> = versions.iter().map(|r| r.version.to_string()).collect();
                RegistryError::NotFound(format!(
                    "function `{name}` has no kept version {v} (kept: {}); list them with `runtime functions versions {name}`",
                    kept.join(", ")
                ))
            })?,
            None => versions
                .iter()
                .find(|r| r.version < current.version)
                .ok_or_else(|| {
                    RegistryError::Invalid(format!(
                        "function `{name}` is at version {}, the oldest kept: there is no earlier version to roll back to; name a version to go forward (`runtime functions versions {name}` lists them)",
                        current.version
                    ))
                })?,
        };
        if target.version == current.version {
            return Ok(current);
        }
        let pre = self
            .load_component(&target.component_sha256)
            .await
            .map_err(|e| {
                RegistryError::Unavailable(format!(
                    "version {} of `{name}` cannot be loaded: neither its compiled artifact nor its kept component could be used ({e:#}); deploy that component again with `runtime deploy`",
                    target.version
                ))
            })?;
        self.store.put_function(target).await?;
        self.insert(LoadedFunction::new(target.clone(), pre));
        Ok(target.clone())
    }

    /// Removes a function; false if it did not exist.
    pub async fn remove(&self, app: &str, name: &str) -> Result<bool, StoreError> {
        let _changes = self.changes.lock().await;
        let record = self.store.get_function(app, name).await?;
        let versions = self.store.list_function_versions(app, name).await?;
        let existed = self.store.delete_function(app, name).await?;
        if let Ok(mut map) = self.loaded.write()
            && let Some(functions) = map.get_mut(app)
        {
            functions.remove(name);
        }
        let mut shas: Vec<&str> = record
            .iter()
            .chain(&versions)
            .map(|r| r.component_sha256.as_str())
            .collect();
        shas.sort_unstable();
        shas.dedup();
        for sha in shas {
            self.collect_artifacts(sha).await;
        }
        Ok(existed)
    }

    /// Deletes a component's files when no kept version of any function
    /// uses it any more (so a rollback finds its artifact).
    async fn collect_artifacts(&self, sha: &str) {
        match self.is_referenced(sha).await {
            Ok(false) => {
                self.engine.remove_artifacts(sha);
                if let Err(e) = self.store.delete_component(sha).await {
                    tracing::warn!(component = sha, error = %e, "cannot drop the unused component from the store");
                }
            }
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(component = sha, error = %e, "artifacts kept: cannot tell whether they are used")
            }
        }
    }

    /// Whether a current or kept version of any function uses `sha`.
    async fn is_referenced(&self, sha: &str) -> Result<bool, StoreError> {
        for f in self.store.list_functions(None).await? {
            if f.component_sha256 == sha
                || self
                    .store
                    .list_function_versions(&f.app, &f.name)
                    .await?
                    .iter()
                    .any(|v| v.component_sha256 == sha)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
