//! Durable state: apps (with their settings), deployed functions, toolkit
//! configurations, OAuth connections and pending connect flows (tokens and
//! client secrets sealed), custom connectors, refresh leases and the audit
//! trail.
//!
//! [`Store`] is the seam for backends: [`SledStore`] is the embedded default
//! for one node and `--dev`; [`PostgresStore`] is shared by several nodes.
//! Secrets reach a store only sealed (see [`crate::crypto`]); writes that
//! matter are flushed before the call returns.
//!
//! The records themselves are in `records.rs`; `sled.rs` and `postgres/`
//! hold the backends, and `host-api/tests/store_contract.rs` runs one
//! contract suite against both.

use async_trait::async_trait;

use crate::catalog::ConnectorSpec;

mod postgres;
mod records;
mod sled;

pub use self::postgres::PostgresStore;
pub use self::sled::SledStore;
pub use records::*;

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
    /// Claims the fire of cron job `job` scheduled at `at_ms` for `holder`:
    /// true for exactly one caller per (job, time), on whichever node.
    /// Claims older than `forget_before_ms` are dropped on the way.
    async fn claim_fire(
        &self,
        job: &str,
        at_ms: u64,
        holder: &str,
        forget_before_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Keeps a deployed component's bytes where every node can read them.
    /// A single-node backend leaves them to the node's own artifact
    /// directory: the default does nothing.
    async fn put_component(&self, _sha256: &str, _bytes: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    /// A component's bytes, when this backend keeps them.
    async fn get_component(&self, _sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    /// Drops a component no function version uses any more.
    async fn delete_component(&self, _sha256: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// Changes committed by any node, as they happen: each message names
    /// the kind of record changed (`runtime_functions`, `runtime_toolkits`,
    /// `runtime_connectors`, `runtime_apps`, or `reconnected` after the
    /// feed was interrupted and changes may have been missed). `None`: the
    /// store serves one node, which sees its own changes.
    async fn watch_changes(&self) -> Option<tokio::sync::mpsc::Receiver<String>> {
        None
    }

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
