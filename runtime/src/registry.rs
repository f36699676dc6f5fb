//! The deployed functions of this process: deploy, load at start, look up
//! per request, remove.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use host_api::manifest::Manifest;
use host_api::store::{FunctionRecord, Store, StoreError};

use crate::engine::{DeployError, Engine};
use crate::invoke::LoadedFunction;

/// Longest function or app name.
pub const MAX_NAME_LEN: usize = 64;

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
}

/// Functions by app, then by name (looked up by `&str`, no allocation).
type Loaded = HashMap<String, HashMap<String, Arc<LoadedFunction>>>;

/// Functions by (app, name).
#[derive(Debug)]
pub struct Registry {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    loaded: RwLock<Loaded>,
}

impl Registry {
    /// An empty registry.
    pub fn new(engine: Arc<Engine>, store: Arc<dyn Store>) -> Self {
        Self {
            engine,
            store,
            loaded: RwLock::new(HashMap::new()),
        }
    }

    /// Loads every stored function (artifacts are reused, not recompiled).
    /// A function that cannot be loaded is logged and skipped.
    pub async fn load_all(&self) -> Result<usize, StoreError> {
        let records = self.store.list_functions(None).await?;
        let mut count = 0;
        for record in records {
            let engine = self.engine.clone();
            let sha = record.component_sha256.clone();
            match tokio::task::spawn_blocking(move || engine.load(&sha)).await {
                Ok(Ok(pre)) => {
                    self.insert(LoadedFunction::new(record, pre));
                    count += 1;
                }
                Ok(Err(e)) => {
                    tracing::error!(app = %record.app, function = %record.name, error = %format!("{e:#}"), "cannot load function")
                }
                Err(e) => tracing::error!(error = %e, "load task failed"),
            }
        }
        Ok(count)
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

    /// Deploys `component` as `app/name`; a new version if it existed.
    /// Deploying identical bytes and manifest again is a no-op.
    pub async fn deploy(
        &self,
        app: &str,
        name: &str,
        component: Vec<u8>,
        manifest: Manifest,
    ) -> Result<FunctionRecord, RegistryError> {
        check_name("function", name).map_err(RegistryError::Invalid)?;
        manifest
            .validate()
            .map_err(|e| RegistryError::Invalid(format!("manifest: {e}")))?;
        let engine = self.engine.clone();
        let size = component.len() as u64;
        let (sha, pre) = tokio::task::spawn_blocking(move || engine.deploy(&component))
            .await
            .map_err(|e| RegistryError::Internal(e.to_string()))??;
        let previous = self.store.get_function(app, name).await?;
        if let Some(prev) = &previous
            && prev.component_sha256 == sha
            && prev.manifest == manifest
        {
            return Ok(prev.clone());
        }
        let record = FunctionRecord {
            app: app.to_string(),
            name: name.to_string(),
            version: previous.as_ref().map_or(1, |p| p.version + 1),
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
        if let Some(prev) = previous {
            self.collect_artifacts(&prev.component_sha256).await;
        }
        Ok(record)
    }

    /// Removes a function; false if it did not exist.
    pub async fn remove(&self, app: &str, name: &str) -> Result<bool, StoreError> {
        let record = self.store.get_function(app, name).await?;
        let existed = self.store.delete_function(app, name).await?;
        if let Ok(mut map) = self.loaded.write()
            && let Some(functions) = map.get_mut(app)
        {
            functions.remove(name);
        }
        if let Some(r) = record {
            self.collect_artifacts(&r.component_sha256).await;
        }
        Ok(existed)
    }

    /// Deletes a component's files when no function uses it any more.
    async fn collect_artifacts(&self, sha: &str) {
        match self.store.list_functions(None).await {
            Ok(all) if all.iter().all(|f| f.component_sha256 != sha) => {
                self.engine.remove_artifacts(sha)
            }
            _ => {}
        }
    }
}
