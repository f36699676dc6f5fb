//! The embedded backend: one sled database in the data directory, a tree
//! per record kind; read-modify-writes are compare-and-swaps of the stored
//! bytes.

use std::path::Path;

use async_trait::async_trait;

use crate::catalog::ConnectorSpec;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::*;

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// The embedded store: one sled database in the data directory.
#[derive(Debug)]
pub struct SledStore {
    db: ::sled::Db,
    meta: ::sled::Tree,
    apps: ::sled::Tree,
    functions: ::sled::Tree,
    /// Every kept version: (app, name, version big-endian) -> record, so a
    /// prefix scan lists a function's versions in order.
    function_versions: ::sled::Tree,
    toolkits: ::sled::Tree,
    connectors: ::sled::Tree,
    connections: ::sled::Tree,
    /// Index: (app, toolkit, owner, id) -> (), for picking a caller's
    /// connection without scanning the app's.
    connection_owners: ::sled::Tree,
    flows: ::sled::Tree,
    leases: ::sled::Tree,
    runs: ::sled::Tree,
    audit: ::sled::Tree,
    /// Claimed cron fires: (job, time big-endian) -> holder.
    fires: ::sled::Tree,
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
        let db = ::sled::Config::new().path(dir.join("store.sled")).open()?;
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
            fires: db.open_tree("fires")?,
            db,
        })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(
        tree: &::sled::Tree,
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
        tree: &::sled::Tree,
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
        tree: &::sled::Tree,
        start: &[u8],
        end: &[u8],
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let mut batch = ::sled::Batch::default();
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
        tree: &::sled::Tree,
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
        let kept: Vec<::sled::IVec> = self
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
        let versions: Vec<::sled::IVec> = self
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
            // Expired rather than removed, so the fencing number keeps
            // growing. If someone took it over meanwhile, the swap fails
            // and their lease stays.
            let released = Lease {
                expires_at_ms: 0,
                ..lease
            };
            let _ = self.leases.compare_and_swap(
                connection.as_bytes(),
                Some(current),
                Some(encode("lease", &released)?),
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
                let old: Vec<::sled::IVec> = self
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
        // Key: app, time, a sequence number, then the id, so a prefix scan
        // in reverse is newest first, and records of the same millisecond
        // keep the order they were appended in.
        let mut k = prefix(&record.app);
        k.extend_from_slice(&record.at_ms.to_be_bytes());
        k.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
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

    async fn claim_fire(
        &self,
        job: &str,
        at_ms: u64,
        holder: &str,
        forget_before_ms: u64,
    ) -> Result<bool, StoreError> {
        let p = prefix(job);
        let mut end = p.clone();
        end.extend_from_slice(&forget_before_ms.to_be_bytes());
        Self::remove_range(&self.fires, &p, &end).await?;
        let mut k = p;
        k.extend_from_slice(&at_ms.to_be_bytes());
        let won = self
            .fires
            .compare_and_swap(k, None::<&[u8]>, Some(holder.as_bytes()))?
            .is_ok();
        if won {
            self.flush().await?;
        }
        Ok(won)
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
            let mut keys: Vec<::sled::IVec> =
                self.runs.scan_prefix(p).keys().collect::<Result<_, _>>()?;
            keys.sort_unstable_by(|a, b| run_key_tail(b).cmp(run_key_tail(a)));
            for chunk in keys
                .get(keep_newest..)
                .unwrap_or_default()
                .chunks(PRUNE_BATCH)
            {
                let mut batch = ::sled::Batch::default();
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
    use crate::manifest::Manifest;

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
