//! The invocation log behind `runtime logs NAME`: one record per run of a
//! function (HTTP or cron) with its trigger, status, duration, tool calls
//! and the lines it printed.
//!
//! Records are buffered and written in batches (every 200 ms, one store
//! flush per batch), so an HTTP request pays for a push, not a disk sync;
//! reading the log writes the buffer first. The newest
//! [`host_api::store::MAX_RUNS_PER_JOB`] records per function are kept.
//!
//! [`Retention`] bounds what every app keeps of it, of its cron run history
//! and of its audit trail, by age and by count; [`spawn_retention`]
//! enforces it in the background.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use host_api::store::{Store, StoreError};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// How often buffered records are written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Records of one function buffered between writes; under heavier traffic
/// the oldest are dropped (only the newest are kept in the store anyway),
/// so a busy function costs a bounded amount of writing.
const MAX_BUFFERED_PER_FUNCTION: usize = 200;

/// Buffered records by function key.
type Pending = HashMap<String, VecDeque<InvocationRecord>>;

/// How often [`spawn_retention`] prunes (and once at start). Retention is
/// counted in days: ten minutes late costs nothing, and a pass over apps
/// with nothing to prune reads a few keys each.
pub const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// What each app keeps of its audit trail and of its run and invocation
/// history (`--retention-days`, `--retention-max-records`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Older records are removed.
    pub max_age: Duration,
    /// Per app, the audit trail keeps its newest this many records, and the
    /// run and invocation history (cron runs and invocations together)
    /// its newest this many.
    pub max_records: usize,
}

impl Default for Retention {
    /// 30 days and 100,000 records: a month of history to look back on,
    /// and a bound on the disk a busy app can take (an audit record is
    /// about 300 bytes).
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_records: 100_000,
        }
    }
}

impl Retention {
    /// One pass over every app at time `now_ms` (Unix ms); returns how many
    /// records were removed.
    pub async fn enforce(&self, store: &dyn Store, now_ms: u64) -> Result<usize, StoreError> {
        let max_age_ms = u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX);
        let older_than = now_ms.saturating_sub(max_age_ms);
        let mut removed = 0;
        for app in store.list_apps().await? {
            removed += store
                .prune_audit(&app.id, older_than, self.max_records)
                .await?;
            // Job ids and invocation keys both start with `{app}/`.
            removed += store
                .prune_runs(&format!("{}/", app.id), older_than, self.max_records)
                .await?;
        }
        Ok(removed)
    }
}

/// The background task of [`spawn_retention`]; dropping it stops the task
/// (at its next await: a pass removes records in atomic batches, so
/// stopping midway leaves nothing half-done).
#[derive(Debug)]
pub struct RetentionTask(tokio::task::JoinHandle<()>);

impl Drop for RetentionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Enforces `retention` on `store` now and then every `every`, until the
/// returned [`RetentionTask`] is dropped.
pub fn spawn_retention(
    store: Arc<dyn Store>,
    retention: Retention,
    every: Duration,
) -> RetentionTask {
    RetentionTask(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match retention.enforce(store.as_ref(), now_ms()).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "retention removed old records"),
                Err(e) => tracing::error!(error = %e, "retention pass failed; retried later"),
            }
        }
    }))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One invocation of a function.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    /// Unique id.
    pub id: String,
    /// `http`, `cron`, `manual` or `catch_up`.
    pub trigger: String,
    /// HTTP method.
    pub method: String,
    /// Path below the function's route (no query string: it may carry
    /// secrets).
    pub path: String,
    /// `admin`, `user` or `anonymous` for HTTP; `cron` for scheduled runs.
    pub principal: String,
    /// The function's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it produced no answer (limit, trap, busy).
    pub error: Option<String>,
    /// Unix ms.
    pub started_at_ms: u64,
    /// Wall-clock duration.
    pub duration_ms: u64,
    /// `TOOL: outcome (logId)` per brokered call.
    pub tool_calls: Vec<String>,
    /// What the function printed (`stdout: …`, `stderr: …`).
    pub log_lines: Vec<String>,
}

impl InvocationRecord {
    /// A fresh random id.
    pub fn new_id() -> String {
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        format!("inv_{}", hex::encode(bytes))
    }
}

fn key(app: &str, name: &str) -> String {
    format!("{app}/{name}@")
}

/// Buffered writer and reader of invocation records.
#[derive(Debug)]
pub struct InvocationLog {
    store: Arc<dyn Store>,
    pending: Arc<Mutex<Pending>>,
    writer: std::sync::OnceLock<()>,
}

async fn write(store: &dyn Store, pending: &Mutex<Pending>) {
    let batch = match pending.lock() {
        Ok(mut p) => std::mem::take(&mut *p),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    if batch.is_empty() {
        return;
    }
    let records: Vec<(String, u64, String, serde_json::Value)> = batch
        .into_iter()
        .flat_map(|(k, records)| records.into_iter().map(move |r| (k.clone(), r)))
        .filter_map(|(k, r)| {
            let v = serde_json::to_value(&r).ok()?;
            Some((k, r.started_at_ms, r.id, v))
        })
        .collect();
    if let Err(e) = store.append_records(&records).await {
        tracing::error!(error = %e, "could not write invocation records");
    }
}

impl InvocationLog {
    /// A log over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            pending: Arc::default(),
            writer: std::sync::OnceLock::new(),
        }
    }

    /// Records one invocation of `app/name`.
    pub fn record(&self, app: &str, name: &str, record: InvocationRecord) {
        self.writer.get_or_init(|| {
            let store = self.store.clone();
            let pending = Arc::downgrade(&self.pending);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(FLUSH_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(pending) = pending.upgrade() else {
                        break;
                    };
                    write(store.as_ref(), &pending).await;
                }
            });
        });
        if let Ok(mut p) = self.pending.lock() {
            let queue = p.entry(key(app, name)).or_default();
            queue.push_back(record);
            if queue.len() > MAX_BUFFERED_PER_FUNCTION {
                queue.pop_front();
            }
        }
    }

    /// Writes buffered records now.
    pub async fn flush(&self) {
        write(self.store.as_ref(), &self.pending).await;
    }

    /// The newest invocations of `app/name`, newest first.
    pub async fn list(
        &self,
        app: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        self.flush().await;
        Ok(self
            .store
            .list_runs(&key(app, name), limit)
            .await?
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use host_api::store::{AppRecord, AuditRecord, SledStore};

    use super::*;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    async fn store_with_apps(dir: &std::path::Path) -> Arc<dyn Store> {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).unwrap());
        for id in ["a", "b"] {
            let app: AppRecord = serde_json::from_value(serde_json::json!({
                "id": id, "adminKeyHashes": [], "createdAt": 1
            }))
            .unwrap();
            store.put_app(&app).await.unwrap();
        }
        store
    }

    async fn add(store: &dyn Store, app: &str, at_ms: u64) {
        let audit: AuditRecord = serde_json::from_value(serde_json::json!({
            "logId": format!("log_{at_ms}"), "app": app, "function": null,
            "identity": "cron", "tool": "T", "outcome": "ok", "status": null,
            "durationMs": 1, "atMs": at_ms
        }))
        .unwrap();
        store.append_audit(&audit).await.unwrap();
        let record = serde_json::json!({ "at": at_ms });
        store
            .append_run(
                &format!("{app}/f#0"),
                at_ms,
                &format!("run_{at_ms}"),
                &record,
            )
            .await
            .unwrap();
        store
            .append_records(&[(key(app, "f"), at_ms, format!("inv_{at_ms}"), record)])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn one_pass_removes_what_is_too_old_or_too_many_in_every_app() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_apps(dir.path()).await;
        let now = 100 * DAY_MS;
        for days_ago in [40, 31, 29, 2, 1] {
            add(store.as_ref(), "a", now - days_ago * DAY_MS).await;
        }
        for days_ago in [50, 3] {
            add(store.as_ref(), "b", now - days_ago * DAY_MS).await;
        }
        let retention = Retention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_records: 4,
        };
        // App a: two audit records and four runs and invocations too old;
        // of the six runs and invocations left, the oldest two beyond four.
        // App b: one audit record, a run and an invocation too old.
        assert_eq!(
            retention.enforce(store.as_ref(), now).await.unwrap(),
            2 + 4 + 2 + 1 + 2
        );
        assert_eq!(store.list_audit("a", 100).await.unwrap().len(), 3);
        let runs = store.list_runs("a/", 100).await.unwrap();
        let ages: Vec<u64> = runs
            .iter()
            .map(|r| (now - r["at"].as_u64().unwrap()) / DAY_MS)
            .collect();
        assert_eq!(ages, [1, 1, 2, 2]);
        assert_eq!(store.list_audit("b", 100).await.unwrap().len(), 1);
        assert_eq!(store.list_runs("b/", 100).await.unwrap().len(), 2);
        // A second pass has nothing left to do.
        assert_eq!(retention.enforce(store.as_ref(), now).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_prunes_at_start_and_every_period_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_apps(dir.path()).await;
        add(store.as_ref(), "a", 1).await;
        let every = Duration::from_secs(600);
        let task = spawn_retention(store.clone(), Retention::default(), every);
        let settle = || async {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert!(store.list_audit("a", 10).await.unwrap().is_empty());

        add(store.as_ref(), "a", 2).await;
        tokio::time::advance(every).await;
        settle().await;
        assert!(store.list_audit("a", 10).await.unwrap().is_empty());

        drop(task);
        add(store.as_ref(), "a", 3).await;
        tokio::time::advance(every * 2).await;
        settle().await;
        assert_eq!(store.list_audit("a", 10).await.unwrap().len(), 1);
    }
}
