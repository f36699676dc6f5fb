//! Where the scheduler keeps what must survive a restart: the
//! [`ScheduleStore`] trait (last fire times and run history) and an
//! in-memory implementation. The runtime's own, backed by its durable
//! store, is in `triggers/cron.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::run::RunRecord;

/// Run records kept per job by [`MemoryScheduleStore`], oldest dropped
/// first: enough history for development without growing forever.
pub const MAX_MEMORY_RUNS_PER_JOB: usize = 1000;

/// A [`ScheduleStore`] backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend's own error.
    #[error("schedule store failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where the scheduler keeps what must survive a restart.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// The latest fire time of `job` that has been handled (run, skipped or
    /// declared missed), or when the job was first scheduled.
    async fn last_fire(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Records that every fire time of `job` up to `at` is handled. Must be
    /// durable when it returns: it is written before the run starts.
    async fn set_last_fire(&self, job: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Forgets `job`'s last fire time (the job was removed).
    async fn clear_last_fire(&self, job: &str) -> Result<(), StoreError>;
    /// Appends to `record.job`'s run history.
    async fn append_run(&self, record: RunRecord) -> Result<(), StoreError>;
    /// Claims the fire of `job` at `at` for this process: true for exactly
    /// one scheduler per (job, time) among all that share the store, so
    /// several nodes fire each tick once. A store one scheduler uses alone
    /// needs no claim: the default always grants it.
    async fn claim_fire(&self, _job: &str, _at: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Up to `limit` most recent records of `job`, newest first.
    async fn recent_runs(&self, job: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
}

/// A [`ScheduleStore`] in memory, for tests and throwaway development.
#[derive(Debug, Default)]
pub struct MemoryScheduleStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    last_fire: HashMap<String, DateTime<Utc>>,
    runs: HashMap<String, VecDeque<RunRecord>>,
}

impl MemoryScheduleStore {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ScheduleStore for MemoryScheduleStore {
    async fn last_fire(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.state().last_fire.get(job).copied())
    }

    async fn set_last_fire(&self, job: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.state().last_fire.insert(job.to_owned(), at);
        Ok(())
    }

    async fn clear_last_fire(&self, job: &str) -> Result<(), StoreError> {
        self.state().last_fire.remove(job);
        Ok(())
    }

    async fn append_run(&self, record: RunRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        let runs = state.runs.entry(record.job.clone()).or_default();
        if runs.len() >= MAX_MEMORY_RUNS_PER_JOB {
            runs.pop_front();
        }
        runs.push_back(record);
        Ok(())
    }

    async fn recent_runs(&self, job: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        Ok(self
            .state()
            .runs
            .get(job)
            .map(|runs| runs.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default())
    }
}
