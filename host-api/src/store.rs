//! Durable state: apps, deployed functions, toolkit configurations (with
//! sealed credentials), custom connectors and the audit trail.
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
}

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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Who the call ran as (`shared`, `user:<id>`, `admin`).
    pub identity: String,
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
    /// Creates or replaces an app.
    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError>;

    /// The current version of a function.
    async fn get_function(
        &self,
        app: &str,
        name: &str,
    ) -> Result<Option<FunctionRecord>, StoreError>;
    /// Current versions of all functions, optionally of one app.
    async fn list_functions(&self, app: Option<&str>) -> Result<Vec<FunctionRecord>, StoreError>;
    /// Makes `record` the current version.
    async fn put_function(&self, record: &FunctionRecord) -> Result<(), StoreError>;
    /// Removes a function; false if it did not exist.
    async fn delete_function(&self, app: &str, name: &str) -> Result<bool, StoreError>;

    /// An app's configuration of a toolkit.
    async fn get_toolkit(
        &self,
        app: &str,
        toolkit: &str,
    ) -> Result<Option<ToolkitRecord>, StoreError>;
    /// All toolkit configurations of an app.
    async fn list_toolkits(&self, app: &str) -> Result<Vec<ToolkitRecord>, StoreError>;
    /// Creates or replaces a toolkit configuration.
    async fn put_toolkit(&self, record: &ToolkitRecord) -> Result<(), StoreError>;

    /// Custom connectors of an app.
    async fn list_connectors(&self, app: &str) -> Result<Vec<ConnectorSpec>, StoreError>;
    /// Creates or replaces a custom connector.
    async fn put_connector(&self, app: &str, spec: &ConnectorSpec) -> Result<(), StoreError>;
    /// Removes a custom connector; false if it did not exist.
    async fn delete_connector(&self, app: &str, slug: &str) -> Result<bool, StoreError>;

    /// Appends to the audit trail.
    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// The newest audit records of an app, newest first.
    async fn list_audit(&self, app: &str, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
}

/// The embedded store: one sled database in the data directory.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    apps: sled::Tree,
    functions: sled::Tree,
    toolkits: sled::Tree,
    connectors: sled::Tree,
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

impl SledStore {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir.join("store.sled")).open()?;
        Ok(Self {
            meta: db.open_tree("meta")?,
            apps: db.open_tree("apps")?,
            functions: db.open_tree("functions")?,
            toolkits: db.open_tree("toolkits")?,
            connectors: db.open_tree("connectors")?,
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

    async fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.apps.insert(app.id.as_bytes(), encode("app", app)?)?;
        self.flush().await
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
        self.functions
            .insert(key(&record.app, &record.name), encode("function", record)?)?;
        self.flush().await
    }

    async fn delete_function(&self, app: &str, name: &str) -> Result<bool, StoreError> {
        let existed = self.functions.remove(key(app, name))?.is_some();
        self.flush().await?;
        Ok(existed)
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
        self.toolkits.insert(
            key(&record.app, &record.toolkit),
            encode("toolkit", record)?,
        )?;
        self.flush().await
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
}
