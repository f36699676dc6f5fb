//! The invocation log behind `runtime logs NAME`: one record per run of a
//! function (HTTP or cron) with its trigger, status, duration, tool calls
//! and the lines it printed.
//!
//! Records are buffered and written in batches (every 200 ms, one store
//! flush per batch), so an HTTP request pays for a push, not a disk sync;
//! reading the log writes the buffer first. The newest
//! [`host_api::store::MAX_RUNS_PER_JOB`] records per function are kept.

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
