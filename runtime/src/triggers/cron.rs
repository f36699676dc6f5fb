//! The cron trigger of deployed functions: the [`Scheduler`] fed from the
//! functions' manifests, run through the same invocation path as HTTP.
//!
//! Each trigger of a function is one job, `{app}/{name}#{index}`. A run
//! calls the function's `wasi:http` handler with `POST /`, the trigger's
//! payload as JSON, and headers naming the trigger, so any HTTP function
//! can also be a cron function and no second export is needed. The
//! principal is `Principal::Cron`; the manifest's `runAs` names the end
//! user whose connections the run uses (default: the app's shared ones).
//! Last fire times and run history live in the [`Store`], so a restart keeps
//! the schedule and catches up once for a missed window.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use host_api::manifest::DEFAULT_RETRIES;
use host_api::store::Store;

use crate::invoke::{CronRun, Invoker, Trigger};
use crate::registry::{Registry, parse_cron_trigger};
use crate::scheduler::{
    self, JobSpec, RetryPolicy, RunContext, RunOutcome, RunRecord, Runner, ScheduleStore,
    Scheduler, SchedulerError, SystemClock,
};
use crate::triggers::headers;

/// How much of a failed run's answer is kept as its error.
const MAX_ERROR_TEXT: usize = 1024;

fn job_id(app: &str, name: &str, index: usize) -> String {
    format!("{app}/{name}#{index}")
}

fn job_prefix(app: &str, name: &str) -> String {
    format!("{app}/{name}#")
}

/// The trigger index of a job id.
fn job_index(job: &str) -> usize {
    job.rsplit_once('#')
        .and_then(|(_, i)| i.parse().ok())
        .unwrap_or(0)
}

/// Splits a job id into app and function name.
fn parse_job(job: &str) -> Option<(&str, &str)> {
    let (function, _) = job.rsplit_once('#')?;
    function.split_once('/')
}

/// Run history and last fire times in the runtime's store.
#[derive(Debug)]
struct StoreBackedSchedule {
    store: Arc<dyn Store>,
    /// Names this process in fire claims.
    node: String,
}

/// How long a fire claim is kept: far longer than any clock skew between
/// nodes or catch-up window needs.
const FIRE_CLAIM_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> scheduler::StoreError {
    scheduler::StoreError::Backend(Box::new(e))
}

#[async_trait]
impl ScheduleStore for StoreBackedSchedule {
    async fn last_fire(&self, job: &str) -> Result<Option<DateTime<Utc>>, scheduler::StoreError> {
        let Some(bytes) = self
            .store
            .get_meta(&format!("cron-last-fire:{job}"))
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        if text.is_empty() {
            return Ok(None);
        }
        Ok(DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|t| t.with_timezone(&Utc)))
    }

    async fn set_last_fire(
        &self,
        job: &str,
        at: DateTime<Utc>,
    ) -> Result<(), scheduler::StoreError> {
        self.store
            .put_meta(&format!("cron-last-fire:{job}"), at.to_rfc3339().as_bytes())
            .await
            .map_err(backend)
    }

    async fn clear_last_fire(&self, job: &str) -> Result<(), scheduler::StoreError> {
        self.store
            .put_meta(&format!("cron-last-fire:{job}"), b"")
            .await
            .map_err(backend)
    }

    async fn claim_fire(
        &self,
        job: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, scheduler::StoreError> {
        let at_ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        let kept = u64::try_from(FIRE_CLAIM_KEPT.as_millis()).unwrap_or(u64::MAX);
        self.store
            .claim_fire(job, at_ms, &self.node, at_ms.saturating_sub(kept))
            .await
            .map_err(backend)
    }

    async fn append_run(&self, record: RunRecord) -> Result<(), scheduler::StoreError> {
        let value = serde_json::to_value(&record).map_err(backend)?;
        let at = u64::try_from(record.started_at.timestamp_millis()).unwrap_or(0);
        self.store
            .append_run(&record.job, at, &record.run_id, &value)
            .await
            .map_err(backend)
    }

    async fn recent_runs(
        &self,
        job: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, scheduler::StoreError> {
        let values = self.store.list_runs(job, limit).await.map_err(backend)?;
        Ok(values
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .filter(|r: &RunRecord| r.job == job)
            .collect())
    }
}

/// Runs a job: finds the function and invokes it like an HTTP request.
#[derive(Debug)]
struct FunctionRunner {
    registry: Arc<Registry>,
    invoker: Arc<Invoker>,
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_ERROR_TEXT).collect()
}

#[async_trait]
impl Runner for FunctionRunner {
    async fn run(&self, job: &str, ctx: RunContext) -> RunOutcome {
        let Some((app, name)) = parse_job(job) else {
            return RunOutcome::error(format!("malformed job id `{job}`"), Vec::new());
        };
        let Some(f) = self.registry.get(app, name) else {
            return RunOutcome::error(
                format!("function `{name}` is no longer deployed"),
                Vec::new(),
            );
        };
        let body = ctx
            .payload
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "{}".into());
        let trigger = Trigger::Cron(CronRun {
            started_by: ctx.trigger,
            run_id: ctx.run_id,
            scheduled_for: ctx.scheduled_for,
            attempt: ctx.attempt,
        });
        let path = f
            .record
            .manifest
            .cron
            .get(job_index(job))
            .map_or("/", |c| c.path.as_str());
        let request = http::Request::post(format!("http://localhost{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(Bytes::from(body));
        let mut request = match request {
            Ok(r) => r,
            Err(e) => {
                return RunOutcome::error(
                    format!("could not build the run's request: {e}"),
                    Vec::new(),
                );
            }
        };
        headers::set(request.headers_mut(), &trigger);
        let (result, calls) = self.invoker.invoke(f, trigger, request).await;
        let result = match result {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!(
                "the function answered {}: {}",
                response.status(),
                truncate(&String::from_utf8_lossy(response.body()))
            )),
            Err(e) => Err(truncate(&e.to_string())),
        };
        RunOutcome {
            result,
            tool_calls: calls,
        }
    }
}

/// Why a manual run could not start.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// The function does not exist or has no cron trigger.
    #[error("{0}")]
    NotFound(String),
    /// A run is in progress.
    #[error("{0}")]
    Busy(String),
    /// Storage failed.
    #[error("{0}")]
    Store(String),
}

/// The cron side of the runtime.
#[derive(Debug)]
pub struct Cron {
    scheduler: Scheduler,
    registry: Arc<Registry>,
}

impl Cron {
    /// Starts the scheduler (no jobs until [`Cron::sync_all`]).
    pub fn new(store: Arc<dyn Store>, registry: Arc<Registry>, invoker: Arc<Invoker>) -> Self {
        let scheduler = Scheduler::new(
            Arc::new(StoreBackedSchedule {
                store,
                node: crate::node::name().to_string(),
            }),
            Arc::new(FunctionRunner {
                registry: registry.clone(),
                invoker,
            }),
            Arc::new(SystemClock),
        );
        Self {
            scheduler,
            registry,
        }
    }

    /// Schedules every deployed function's triggers.
    pub async fn sync_all(&self) {
        for (app, name) in self.registry.names() {
            self.sync(&app, &name).await;
        }
    }

    /// Makes the jobs of one function match its current manifest (none if
    /// it was removed).
    pub async fn sync(&self, app: &str, name: &str) {
        let prefix = job_prefix(app, name);
        let function = self.registry.get(app, name);
        let wanted = function
            .as_ref()
            .map_or(0, |f| f.record.manifest.cron.len());
        for job in self.scheduler.jobs() {
            let index = job
                .strip_prefix(&prefix)
                .and_then(|i| i.parse::<usize>().ok());
            if index.is_some_and(|i| i >= wanted) {
                let _ = self.scheduler.remove(&job).await;
            }
        }
        let Some(f) = function else { return };
        let manifest = &f.record.manifest;
        let deadline = Duration::from_millis(manifest.limits.timeout_ms());
        let retry = RetryPolicy {
            max_retries: manifest.retries.unwrap_or(DEFAULT_RETRIES),
            ..RetryPolicy::default()
        };
        for (i, spec) in manifest.cron.iter().enumerate() {
            match parse_cron_trigger(spec) {
                Ok(schedule) => {
                    let mut job = JobSpec::new(schedule, deadline);
                    job.retry = retry;
                    self.scheduler.upsert(&job_id(app, name, i), job).await;
                }
                // Checked at deploy; a stored manifest that no longer parses
                // (a time zone removed from the database) is skipped.
                Err(e) => {
                    tracing::error!(app, function = name, trigger = i, error = %e, "cron trigger skipped")
                }
            }
        }
    }

    /// Runs a function's first cron trigger now (development).
    pub async fn run_now(&self, app: &str, name: &str) -> Result<String, CronError> {
        let f = self
            .registry
            .get(app, name)
            .ok_or_else(|| CronError::NotFound(format!("no function `{name}` in app `{app}`")))?;
        if f.record.manifest.cron.is_empty() {
            return Err(CronError::NotFound(format!(
                "function `{name}` has no cron trigger: add \"cron\": [{{\"schedule\": \"0 9 * * *\"}}] to its manifest, or call it over HTTP"
            )));
        }
        match self.scheduler.trigger_now(&job_id(app, name, 0)).await {
            Ok(run_id) => Ok(run_id),
            Err(SchedulerError::AlreadyRunning(_)) => Err(CronError::Busy(format!(
                "function `{name}` is running for its schedule; try again when it finishes"
            ))),
            Err(SchedulerError::UnknownJob(_)) => Err(CronError::NotFound(format!(
                "function `{name}` has no scheduled job yet"
            ))),
            Err(e) => Err(CronError::Store(e.to_string())),
        }
    }

    /// Stops scheduling and waits for the runs in progress until `give_up`
    /// resolves; runs still going then are recorded as interrupted (see
    /// [`Scheduler::drain`]). Returns how many were.
    pub async fn shutdown(&self, give_up: impl Future<Output = ()>) -> usize {
        self.scheduler.drain(give_up).await
    }

    /// A function's run history across its triggers, newest first.
    pub async fn runs(
        &self,
        app: &str,
        name: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, CronError> {
        let mut out = Vec::new();
        for job in self.scheduler.jobs() {
            if job.starts_with(&job_prefix(app, name)) {
                out.extend(
                    self.scheduler
                        .recent_runs(&job, limit)
                        .await
                        .map_err(|e| CronError::Store(e.to_string()))?,
                );
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        out.truncate(limit);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip() {
        let id = job_id("app", "daily-digest", 2);
        assert_eq!(parse_job(&id), Some(("app", "daily-digest")));
        assert!(id.starts_with(&job_prefix("app", "daily-digest")));
        assert!(!job_id("app", "daily-digest2", 0).starts_with(&job_prefix("app", "daily-digest")));
    }
}
