//! One run as the scheduler sees it: what started it ([`RunTrigger`]), what
//! an attempt is told ([`RunContext`]) and reports ([`RunOutcome`]), who
//! runs it ([`Runner`]), and the [`RunRecord`] it leaves in the history.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// A fire time of the schedule.
    Cron,
    /// [`Scheduler::trigger_now`], for development.
    Manual,
    /// The one run for fire times missed during downtime.
    CatchUp,
}

/// What one attempt is told.
#[derive(Debug, Clone, PartialEq)]
pub struct RunContext {
    /// The id of this attempt's [`RunRecord`].
    pub run_id: String,
    /// What started the run.
    pub trigger: RunTrigger,
    /// The fire time this run is for (for a manual run, when it was asked).
    pub scheduled_for: DateTime<Utc>,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
    /// The trigger's payload.
    pub payload: Option<serde_json::Value>,
    /// How long the attempt may take. The scheduler stops waiting at this
    /// point and records it as timed out, so honour it as a hard limit.
    pub deadline: Duration,
}

/// What a [`Runner`] reports about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// `Err` with a message a person can act on if the run failed.
    pub result: Result<(), String>,
    /// The tools the run called, in order, for the run history.
    pub tool_calls: Vec<String>,
}

impl RunOutcome {
    /// A successful run.
    pub fn ok(tool_calls: Vec<String>) -> Self {
        Self {
            result: Ok(()),
            tool_calls,
        }
    }

    /// A failed run; it will be retried per the job's [`RetryPolicy`].
    pub fn error(message: impl Into<String>, tool_calls: Vec<String>) -> Self {
        Self {
            result: Err(message.into()),
            tool_calls,
        }
    }
}

/// Runs a job: in the server, instantiates the function and calls its
/// `scheduled` export through the one invocation path.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs one attempt of `job`.
    async fn run(&self, job: &str, ctx: RunContext) -> RunOutcome;
}

/// How a run (or a fire time without a run) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The run succeeded.
    Ok,
    /// The run failed; `error` says why.
    Error,
    /// No run: the previous one was still going, or a missed window was
    /// skipped by [`CatchUpPolicy::Skip`].
    Skipped,
    /// The run did not finish within its deadline.
    TimedOut,
    /// The runtime stopped before the run finished (its grace period ran
    /// out); it is not retried.
    Interrupted,
}

/// One entry of a job's run history: an attempt, or a fire time skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Unique id (16 hex digits).
    pub run_id: String,
    /// The job.
    pub job: String,
    /// What started it.
    pub trigger: RunTrigger,
    /// The fire time it was for.
    pub scheduled_for: DateTime<Utc>,
    /// When the attempt started (for a skip: when it was decided).
    pub started_at: DateTime<Utc>,
    /// When the attempt ended.
    pub ended_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed, timed out or was skipped.
    pub error: Option<String>,
    /// 1 for the first attempt, 2 for the first retry; 0 for a skip.
    pub attempt: u32,
    /// Tools called by the attempt, in order (empty when it timed out).
    pub tool_calls: Vec<String>,
}
