//! Cron scheduling: when a cron-triggered function runs, and what happens when
//! it fails, overruns, or the runtime was down.
//!
//! The module has layers, each in its own file and tested on its own:
//!
//! 1. [`schedule`]: a [`CronTrigger`] (what a manifest says) is validated
//!    into a [`Schedule`] once, at deploy: an expression that does not
//!    parse, an unknown time zone or a schedule that can never fire is
//!    refused with a message that says how to fix it.
//!    [`Schedule::next_after`] answers "when next?" in UTC, computed on the
//!    wall clock of the trigger's time zone.
//! 2. [`policy`]: [`decide`] is the catch-up policy as a pure function of
//!    the schedule, the persisted last fire time and the current time:
//!    nothing due, fire now, or fire times were missed while nobody was
//!    looking; [`RetryPolicy`] is the backoff of failed attempts.
//! 3. [`run`]: what one run is told, reports and leaves in the history.
//! 4. [`store`] and [`clock`]: persistence goes through a [`ScheduleStore`]
//!    (an in-memory one is here; the runtime's, on its durable store, is in
//!    `triggers/cron.rs`) and wall-clock time through a [`Clock`], so tests
//!    drive everything with `tokio::time::pause` and never sleep.
//! 5. This file: [`Scheduler`] runs one small tokio task per job that
//!    sleeps until the next fire time and hands runs to a [`Runner`]; it
//!    applies the overlap, retry and catch-up rules.
//!
//! # Expressions
//!
//! Five fields (`minute hour day-of-month month day-of-week`) fire at second
//! 0; six fields put seconds first and a seventh names years, as the `cron`
//! crate parses them; `@daily`, `@hourly` and friends work too. Day-of-week
//! numbers follow Unix cron whatever the field count (0 and 7 are Sunday,
//! 1 is Monday), because the `cron` crate's own numbering (1 is Sunday)
//! would silently turn `0 17 * * 1-5` into Sunday-to-Thursday. Restricting
//! both the day of month and the day of week is refused: Unix cron fires
//! when *either* matches, the `cron` crate only when *both* do, and a user
//! cannot tell which one they get.
//!
//! # Daylight-saving time
//!
//! A schedule is evaluated on the local wall clock of its time zone, so
//! `0 9 * * *` in Europe/Berlin runs at 09:00 in winter and in summer. Clock
//! changes follow cron(8), which is what people who write cron expressions
//! expect:
//!
//! - Schedules with a fixed hour (`30 2 * * *`, `0 */6 * * *`) follow the
//!   wall clock. A time skipped by a spring-forward gap fires once, at the
//!   first instant after the gap (02:30 on the night Berlin jumps from 02:00
//!   to 03:00 fires at 03:00 CEST); several skipped times collapse into that
//!   one run. A time repeated by a fall-back change fires once, at its first
//!   occurrence.
//! - Schedules that fire every hour (`*/15 * * * *`, `0 * * * *`) follow
//!   elapsed time: a skipped wall-clock time is simply not there, and the
//!   repeated hour runs again, so a job every 15 minutes keeps running
//!   every 15 real minutes through both changes instead of pausing for an
//!   hour or bunching up.
//!
//! Offsets come from chrono-tz, which compiles the IANA database into the
//! binary, so every machine gives the same answers.
//!
//! # Running
//!
//! - At most one run of a job at a time. A fire time that finds the previous
//!   run still going is recorded as [`Outcome::Skipped`], not queued: a queue
//!   behind a slow job only grows.
//! - Each attempt has a deadline. The [`Runner`] is told it, and the
//!   scheduler also stops waiting at it and records [`Outcome::TimedOut`].
//! - A failed or timed-out attempt is retried with exponential backoff
//!   ([`RetryPolicy`]), unless the retry could still be running at the next
//!   fire time: then the fire supersedes it, so retries never cause skips.
//! - The fire time is persisted *before* the run starts. A crash during a
//!   run therefore never re-runs it on restart, let alone in a burst.
//! - After downtime, missed fire times are caught up with one run for the
//!   whole missed window ([`CatchUpPolicy::RunOnce`], the default), or
//!   skipped ([`CatchUpPolicy::Skip`]); never one run per missed time.
//! - A stop ([`Scheduler::drain`]) starts nothing new and waits for the runs
//!   in progress; those still going when the caller gives up are recorded
//!   as [`Outcome::Interrupted`], so no run vanishes from the history.
pub mod clock;
pub mod policy;
pub mod run;
pub mod schedule;
pub mod store;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle};

pub use clock::{Clock, SystemClock, TokioClock};
pub use policy::{CatchUpPolicy, Decision, MissedWindow, ON_TIME_GRACE, RetryPolicy, decide};
pub use run::{Outcome, RunContext, RunOutcome, RunRecord, RunTrigger, Runner};
pub use schedule::{CronTrigger, MAX_EXPRESSION_LEN, MAX_PAYLOAD_BYTES, Schedule, ScheduleError};
pub use store::{MAX_MEMORY_RUNS_PER_JOB, MemoryScheduleStore, ScheduleStore, StoreError};

/// Longest the job loop sleeps before looking at the wall clock again, so a
/// clock correction or a suspended machine delays a fire by at most this.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Commands queued for one job (updates, manual triggers). They are rare
/// administrative calls; a full queue makes the caller wait.
const COMMAND_QUEUE: usize = 8;

/// How long [`Scheduler::drain`] still waits, after giving up on the runs in
/// progress, for those that were already writing their own record (a store
/// write: milliseconds).
const RECORD_WRITE_WAIT: Duration = Duration::from_secs(5);

/// Everything the scheduler needs to know about one job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// When it fires, and the payload each run gets.
    pub schedule: Schedule,
    /// Retries of failed attempts.
    pub retry: RetryPolicy,
    /// Longest one attempt may take.
    pub deadline: Duration,
    /// What to do about fire times missed during downtime.
    pub catch_up: CatchUpPolicy,
}

impl JobSpec {
    /// A job with the default retry and catch-up policies.
    pub fn new(schedule: Schedule, deadline: Duration) -> Self {
        Self {
            schedule,
            retry: RetryPolicy::default(),
            deadline,
            catch_up: CatchUpPolicy::default(),
        }
    }
}

/// Why a [`Scheduler`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// No job with this id is scheduled.
    #[error("no scheduled job `{0}`: deploy a function with a cron trigger, or check the name")]
    UnknownJob(String),
    /// A manual trigger found a run in progress.
    #[error("job `{0}` is running; wait for the run to finish, then trigger it again")]
    AlreadyRunning(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs cron jobs: one task per job, driven by tokio time.
///
/// Cloning gives another handle to the same scheduler. Dropping the last
/// handle (or calling [`Scheduler::shutdown`]) stops every job; runs in
/// progress finish and are recorded.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

struct Shared {
    deps: Deps,
    jobs: Mutex<HashMap<String, JobHandle>>,
}

/// What every job task needs; cheap to clone.
#[derive(Clone)]
struct Deps {
    store: Arc<dyn ScheduleStore>,
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    in_flight: Arc<InFlight>,
}

/// The attempts in progress, across jobs, so a stop can wait for them and
/// record the ones it cuts off. An attempt's record is written by exactly
/// one side: the attempt claims its entry before writing, a stop takes the
/// unclaimed ones.
#[derive(Default)]
struct InFlight {
    runs: Mutex<HashMap<String, InFlightRun>>,
    /// Notified whenever an entry leaves `runs`.
    left: tokio::sync::Notify,
}

struct InFlightRun {
    /// The record to write if the run is cut off.
    record: RunRecord,
    /// The attempt is writing its own record.
    claimed: bool,
    /// Stops the attempt's task.
    abort: Option<tokio::task::AbortHandle>,
}

impl InFlight {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, InFlightRun>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The attempt `run_id` is about to write its record: false if a stop
    /// already recorded it as interrupted.
    fn claim(&self, run_id: &str) -> bool {
        match self.runs().get_mut(run_id) {
            Some(run) if !run.claimed => {
                run.claimed = true;
                true
            }
            _ => false,
        }
    }

    /// The attempt `run_id` is over and recorded.
    fn done(&self, run_id: &str) {
        self.runs().remove(run_id);
        self.left.notify_waiters();
    }

    /// Waits until no attempt is in progress, or `until` resolves.
    async fn wait_empty(&self, until: &mut (impl Future<Output = ()> + Unpin)) -> bool {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if self.runs().is_empty() {
                return true;
            }
            tokio::select! {
                () = &mut left => {}
                () = &mut *until => return false,
            }
        }
    }
}

struct JobHandle {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Command {
    Update(Box<JobSpec>),
    TriggerNow(oneshot::Sender<Result<String, SchedulerError>>),
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("jobs", &self.jobs())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler with no jobs yet.
    pub fn new(
        store: Arc<dyn ScheduleStore>,
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                deps: Deps {
                    store,
                    runner,
                    clock,
                    in_flight: Arc::default(),
                },
                jobs: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn jobs_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, JobHandle>> {
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Schedules `job`, or changes its spec.
    ///
    /// A job new to this scheduler resumes from its persisted last fire time,
    /// so the fire times it missed while the runtime was down are caught up
    /// per its [`CatchUpPolicy`]. When an existing job's times change, the
    /// new schedule starts from now: nothing is caught up under it.
    pub async fn upsert(&self, job: &str, spec: JobSpec) {
        let existing = self
            .jobs_map()
            .get(job)
            .map(|handle| handle.commands.clone());
        let spec = match existing {
            Some(commands) => match commands.send(Command::Update(Box::new(spec))).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(Command::Update(spec))) => *spec,
                Err(mpsc::error::SendError(Command::TriggerNow(_))) => return,
            },
            None => spec,
        };
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let job_loop = JobLoop {
            job: job.to_owned(),
            spec,
            deps: self.shared.deps.clone(),
            commands: receiver,
            last_fire: DateTime::<Utc>::MIN_UTC,
            next_fire: None,
            running: None,
            retry: None,
        };
        let task = tokio::spawn(job_loop.run());
        self.jobs_map()
            .insert(job.to_owned(), JobHandle { commands, task });
    }

    /// Stops scheduling `job` and forgets its last fire time (its run
    /// history stays). A run in progress finishes but is not retried.
    /// Returns whether the job was scheduled.
    pub async fn remove(&self, job: &str) -> Result<bool, SchedulerError> {
        let removed = self.jobs_map().remove(job).is_some();
        if removed {
            self.shared.deps.store.clear_last_fire(job).await?;
        }
        Ok(removed)
    }

    /// Runs `job` now, whatever its schedule (for development). The run is
    /// not retried, replaces a retry that is waiting, and does not move the
    /// job's last fire time. Returns the run id; the record appears in the
    /// history when the run ends.
    pub async fn trigger_now(&self, job: &str) -> Result<String, SchedulerError> {
        let commands = self
            .jobs_map()
            .get(job)
            .map(|handle| handle.commands.clone())
            .ok_or_else(|| SchedulerError::UnknownJob(job.to_owned()))?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::TriggerNow(reply))
            .await
            .map_err(|_| SchedulerError::UnknownJob(job.to_owned()))?;
        answer
            .await
            .map_err(|_| SchedulerError::UnknownJob(job.to_owned()))?
    }

    /// The most recent run records of `job`, newest first.
    pub async fn recent_runs(
        &self,
        job: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, SchedulerError> {
        Ok(self.shared.deps.store.recent_runs(job, limit).await?)
    }

    /// The scheduled jobs, sorted.
    pub fn jobs(&self) -> Vec<String> {
        let mut jobs: Vec<String> = self.jobs_map().keys().cloned().collect();
        jobs.sort();
        jobs
    }

    /// Stops every job. Runs in progress finish and are recorded.
    pub fn shutdown(&self) {
        self.jobs_map().clear();
    }

    /// Stops every job, as [`Scheduler::shutdown`], then waits for the runs in
    /// progress to finish and be recorded, until `give_up` resolves (the
    /// end of a grace period, a second stop signal). Runs still going then
    /// are stopped and recorded as [`Outcome::Interrupted`]. Returns how
    /// many were.
    pub async fn drain(&self, give_up: impl Future<Output = ()>) -> usize {
        self.shutdown();
        let in_flight = &self.shared.deps.in_flight;
        let mut give_up = std::pin::pin!(give_up);
        if in_flight.wait_empty(&mut give_up).await {
            return 0;
        }
        let cut: Vec<InFlightRun> = {
            let mut runs = in_flight.runs();
            let ids: Vec<String> = runs
                .iter()
                .filter(|(_, run)| !run.claimed)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| runs.remove(id)).collect()
        };
        let now = self.shared.deps.clock.now();
        for run in &cut {
            if let Some(abort) = &run.abort {
                abort.abort();
            }
            let mut record = run.record.clone();
            record.ended_at = now;
            tracing::warn!(job = %record.job, run_id = %record.run_id, "run interrupted by the stop");
            if let Err(error) = self.shared.deps.store.append_run(record).await {
                tracing::error!(%error, "cannot record an interrupted run");
            }
        }
        // Attempts that were writing their own record: let them finish.
        let mut write_wait = std::pin::pin!(tokio::time::sleep(RECORD_WRITE_WAIT));
        if !in_flight.wait_empty(&mut write_wait).await {
            tracing::error!("run records still being written when the scheduler stopped");
        }
        cut.len()
    }
}

/// One fire time being worked on.
#[derive(Debug, Clone, Copy)]
struct Fire {
    trigger: RunTrigger,
    scheduled_for: DateTime<Utc>,
    attempt: u32,
}

struct Running {
    fire: Fire,
    run_id: String,
    started_at: DateTime<Utc>,
    handle: JoinHandle<Outcome>,
}

struct PendingRetry {
    at: DateTime<Utc>,
    fire: Fire,
}

/// The task behind one job: sleeps until something is due, starts attempts
/// as tasks of their own and decides about retries when they end.
struct JobLoop {
    job: String,
    spec: JobSpec,
    deps: Deps,
    commands: mpsc::Receiver<Command>,
    /// Every fire time up to here is handled (mirrors the store).
    last_fire: DateTime<Utc>,
    /// The next fire time after `last_fire`.
    next_fire: Option<DateTime<Utc>>,
    running: Option<Running>,
    retry: Option<PendingRetry>,
}

impl JobLoop {
    async fn run(mut self) {
        self.last_fire = self.initial_last_fire().await;
        loop {
            let now = self.deps.clock.now();
            self.tick(now).await;
            if self.running.is_none()
                && let Some(retry) = self.retry.take_if(|retry| retry.at <= now)
            {
                self.start(retry.fire);
            }
            let wake = [self.next_fire, self.retry.as_ref().map(|retry| retry.at)]
                .into_iter()
                .flatten()
                .min()
                .and_then(|at| at.signed_duration_since(now).to_std().ok())
                .map_or(MAX_SLEEP, |wait| wait.min(MAX_SLEEP));
            tokio::select! {
                biased;
                ended = wait_for(&mut self.running) => self.attempt_ended(ended).await,
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => return,
                },
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    async fn initial_last_fire(&self) -> DateTime<Utc> {
        let now = self.deps.clock.now();
        match self.deps.store.last_fire(&self.job).await {
            Ok(Some(at)) => at,
            Ok(None) => {
                // Start the record now, so a downtime before the first fire
                // is caught up too.
                self.persist_last_fire(now).await;
                now
            }
            Err(error) => {
                tracing::error!(job = %self.job, %error, "cannot read the last fire time; starting from now");
                now
            }
        }
    }

    async fn persist_last_fire(&self, at: DateTime<Utc>) {
        if let Err(error) = self.deps.store.set_last_fire(&self.job, at).await {
            // Running anyway is the lesser evil: a restart catches up once.
            tracing::error!(job = %self.job, %error, "cannot persist the last fire time");
        }
    }

    /// Handles whatever fire time is due at `now`.
    async fn tick(&mut self, now: DateTime<Utc>) {
        let decision = decide(&self.spec.schedule, self.spec.catch_up, self.last_fire, now);
        match decision {
            Decision::Wait { next } => self.next_fire = next,
            Decision::Fire {
                scheduled_for,
                next,
            } => {
                self.next_fire = next;
                self.fire(RunTrigger::Cron, scheduled_for).await;
            }
            Decision::CatchUp { missed, next } => {
                tracing::warn!(job = %self.job, first = %missed.first, last = %missed.last, "fire times were missed; running once to catch up");
                self.next_fire = next;
                self.fire(RunTrigger::CatchUp, missed.last).await;
            }
            Decision::SkipMissed { missed, next } => {
                tracing::warn!(job = %self.job, first = %missed.first, last = %missed.last, "fire times were missed; skipping them");
                self.next_fire = next;
                self.last_fire = missed.last;
                self.persist_last_fire(missed.last).await;
                let reason = format!(
                    "fire times from {} to {} were missed while the scheduler was not running, \
                     and the job's catch-up policy is to skip them",
                    missed.first, missed.last
                );
                self.record_skip(RunTrigger::CatchUp, missed.last, reason)
                    .await;
            }
        }
    }

    async fn fire(&mut self, trigger: RunTrigger, scheduled_for: DateTime<Utc>) {
        self.last_fire = scheduled_for;
        self.persist_last_fire(scheduled_for).await;
        if trigger != RunTrigger::Manual {
            // Schedulers on other nodes see the same fire time: one runs it.
            match self.deps.store.claim_fire(&self.job, scheduled_for).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(job = %self.job, at = %scheduled_for, "another node runs this fire");
                    return;
                }
                Err(error) => {
                    // Running unclaimed could run it twice; a lost tick is
                    // the lesser evil, and is logged.
                    tracing::error!(job = %self.job, at = %scheduled_for, %error, "cannot claim the fire; not running it");
                    return;
                }
            }
        }
        // A run that has already ended does not make this fire a skip.
        if self
            .running
            .as_ref()
            .is_some_and(|running| running.handle.is_finished())
        {
            let ended = wait_for(&mut self.running).await;
            self.attempt_ended(ended).await;
        }
        if let Some(running) = &self.running {
            let reason = format!(
                "the previous run (for {}) was still going",
                running.fire.scheduled_for
            );
            self.record_skip(trigger, scheduled_for, reason).await;
            return;
        }
        self.retry = None;
        self.start(Fire {
            trigger,
            scheduled_for,
            attempt: 1,
        });
    }

    async fn record_skip(&self, trigger: RunTrigger, scheduled_for: DateTime<Utc>, reason: String) {
        let now = self.deps.clock.now();
        tracing::warn!(job = %self.job, %scheduled_for, %reason, "fire skipped");
        let record = RunRecord {
            run_id: new_run_id(),
            job: self.job.clone(),
            trigger,
            scheduled_for,
            started_at: now,
            ended_at: now,
            outcome: Outcome::Skipped,
            error: Some(reason),
            attempt: 0,
            tool_calls: Vec::new(),
        };
        if let Err(error) = self.deps.store.append_run(record).await {
            tracing::error!(job = %self.job, %error, "cannot record a skipped fire");
        }
    }

    /// Starts an attempt as a task of its own; returns its run id.
    fn start(&mut self, fire: Fire) -> String {
        let run_id = new_run_id();
        let started_at = self.deps.clock.now();
        let deadline = self.spec.deadline;
        let ctx = RunContext {
            run_id: run_id.clone(),
            trigger: fire.trigger,
            scheduled_for: fire.scheduled_for,
            attempt: fire.attempt,
            payload: self.spec.schedule.trigger().payload.clone(),
            deadline,
        };
        let deps = self.deps.clone();
        let job = self.job.clone();
        let record_id = run_id.clone();
        // Registered before the task exists, so the task always finds it.
        deps.in_flight.runs().insert(
            run_id.clone(),
            InFlightRun {
                record: RunRecord {
                    run_id: run_id.clone(),
                    job: job.clone(),
                    trigger: fire.trigger,
                    scheduled_for: fire.scheduled_for,
                    started_at,
                    ended_at: started_at,
                    outcome: Outcome::Interrupted,
                    error: Some(
                        "the runtime stopped before the run finished (its shutdown grace period \
                         ran out); the run is not retried: run it again if it must complete"
                            .into(),
                    ),
                    attempt: fire.attempt,
                    tool_calls: Vec::new(),
                },
                claimed: false,
                abort: None,
            },
        );
        let handle = tokio::spawn(async move {
            let result = tokio::time::timeout(deadline, deps.runner.run(&job, ctx)).await;
            let (outcome, error, tool_calls) = match result {
                Ok(RunOutcome {
                    result: Ok(()),
                    tool_calls,
                }) => (Outcome::Ok, None, tool_calls),
                Ok(RunOutcome {
                    result: Err(message),
                    tool_calls,
                }) => (Outcome::Error, Some(message), tool_calls),
                Err(_) => (
                    Outcome::TimedOut,
                    Some(format!(
                        "the run did not finish within its deadline of {deadline:?}; make it \
                         faster or raise the function's deadline"
                    )),
                    Vec::new(),
                ),
            };
            let record = RunRecord {
                run_id: record_id.clone(),
                job,
                trigger: fire.trigger,
                scheduled_for: fire.scheduled_for,
                started_at,
                ended_at: deps.clock.now(),
                outcome,
                error,
                attempt: fire.attempt,
                tool_calls,
            };
            if !deps.in_flight.claim(&record.run_id) {
                // A stop recorded this run as interrupted already.
                return Outcome::Interrupted;
            }
            if let Err(error) = deps.store.append_run(record).await {
                tracing::error!(%error, "cannot record a run");
            }
            deps.in_flight.done(&record_id);
            outcome
        });
        if let Some(run) = self.deps.in_flight.runs().get_mut(&run_id) {
            run.abort = Some(handle.abort_handle());
        }
        self.running = Some(Running {
            fire,
            run_id: run_id.clone(),
            started_at,
            handle,
        });
        run_id
    }

    /// An attempt ended: schedule a retry if it failed and one fits.
    async fn attempt_ended(&mut self, ended: Result<Outcome, JoinError>) {
        let Some(running) = self.running.take() else {
            return;
        };
        let outcome = match ended {
            Ok(outcome) => outcome,
            Err(error) => {
                // The runner panicked: its task never wrote the record.
                if !self.deps.in_flight.claim(&running.run_id) {
                    return;
                }
                let record = RunRecord {
                    run_id: running.run_id.clone(),
                    job: self.job.clone(),
                    trigger: running.fire.trigger,
                    scheduled_for: running.fire.scheduled_for,
                    started_at: running.started_at,
                    ended_at: self.deps.clock.now(),
                    outcome: Outcome::Error,
                    error: Some(format!("the run crashed: {error}")),
                    attempt: running.fire.attempt,
                    tool_calls: Vec::new(),
                };
                if let Err(error) = self.deps.store.append_run(record).await {
                    tracing::error!(job = %self.job, %error, "cannot record a run");
                }
                self.deps.in_flight.done(&running.run_id);
                Outcome::Error
            }
        };
        let fire = running.fire;
        if matches!(outcome, Outcome::Ok | Outcome::Skipped)
            || fire.trigger == RunTrigger::Manual
            || fire.attempt > self.spec.retry.max_retries
        {
            return;
        }
        let backoff = self.spec.retry.backoff(fire.attempt);
        let Some(at) = TimeDelta::from_std(backoff)
            .ok()
            .and_then(|backoff| self.deps.clock.now().checked_add_signed(backoff))
        else {
            return;
        };
        // The retry must be over (deadline included) by the next fire time.
        let over_by = TimeDelta::from_std(self.spec.deadline)
            .ok()
            .and_then(|deadline| at.checked_add_signed(deadline));
        if let Some(next) = self.next_fire
            && over_by.is_none_or(|over_by| over_by > next)
        {
            tracing::info!(job = %self.job, %next, "retry dropped: it could overlap the next fire time");
            return;
        }
        self.retry = Some(PendingRetry {
            at,
            fire: Fire {
                attempt: fire.attempt.saturating_add(1),
                ..fire
            },
        });
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Update(spec) => {
                if !spec.schedule.same_times_as(&self.spec.schedule) {
                    // Nothing is caught up under a schedule that did not exist.
                    let now = self.deps.clock.now();
                    if now > self.last_fire {
                        self.last_fire = now;
                        self.persist_last_fire(now).await;
                    }
                    self.retry = None;
                }
                self.spec = *spec;
            }
            Command::TriggerNow(reply) => {
                let answer = if self.running.is_some() {
                    Err(SchedulerError::AlreadyRunning(self.job.clone()))
                } else {
                    self.retry = None;
                    Ok(self.start(Fire {
                        trigger: RunTrigger::Manual,
                        scheduled_for: self.deps.clock.now(),
                        attempt: 1,
                    }))
                };
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(answer);
            }
        }
    }
}

/// Waits for the running attempt, or forever if there is none.
async fn wait_for(running: &mut Option<Running>) -> Result<Outcome, JoinError> {
    match running {
        Some(running) => (&mut running.handle).await,
        None => std::future::pending().await,
    }
}

fn new_run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn schedule(expression: &str, timezone: &str) -> Schedule {
        Schedule::parse(CronTrigger::new(expression).in_timezone(timezone)).unwrap()
    }

    fn times(texts: &[&str]) -> Vec<DateTime<Utc>> {
        texts.iter().map(|text| at(text)).collect()
    }

    // --- The scheduler, on paused tokio time ---

    /// What the scripted runner does on its n-th call (1-based).
    type Script = Box<dyn Fn(u32) -> (Duration, RunOutcome) + Send + Sync>;

    struct ScriptedRunner {
        clock: Arc<TokioClock>,
        store: Arc<MemoryScheduleStore>,
        script: Script,
        calls: Mutex<Vec<Call>>,
    }

    #[derive(Debug, Clone)]
    struct Call {
        at: DateTime<Utc>,
        ctx: RunContext,
        last_fire_seen: Option<DateTime<Utc>>,
    }

    #[async_trait]
    impl Runner for ScriptedRunner {
        async fn run(&self, _job: &str, ctx: RunContext) -> RunOutcome {
            let last_fire_seen = self.store.last_fire("job").await.unwrap();
            let number = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Call {
                    at: self.clock.now(),
                    ctx,
                    last_fire_seen,
                });
                u32::try_from(calls.len()).unwrap()
            };
            let (takes, outcome) = (self.script)(number);
            tokio::time::sleep(takes).await;
            outcome
        }
    }

    struct Harness {
        scheduler: Scheduler,
        store: Arc<MemoryScheduleStore>,
        runner: Arc<ScriptedRunner>,
        clock: Arc<TokioClock>,
    }

    impl Harness {
        fn new(start: &str, script: Script) -> Self {
            Self::with_store(start, script, Arc::new(MemoryScheduleStore::default()))
        }

        fn with_store(start: &str, script: Script, store: Arc<MemoryScheduleStore>) -> Self {
            let clock = Arc::new(TokioClock::starting_at(at(start)));
            let runner = Arc::new(ScriptedRunner {
                clock: clock.clone(),
                store: store.clone(),
                script,
                calls: Mutex::new(Vec::new()),
            });
            let scheduler = Scheduler::new(store.clone(), runner.clone(), clock.clone());
            Self {
                scheduler,
                store,
                runner,
                clock,
            }
        }

        /// Lets tokio time run until the wall clock reads `until`.
        async fn run_until(&self, until: &str) {
            let wait = at(until).signed_duration_since(self.clock.now());
            tokio::time::sleep(wait.to_std().unwrap()).await;
        }

        fn calls(&self) -> Vec<Call> {
            self.runner.calls.lock().unwrap().clone()
        }

        fn call_times(&self) -> Vec<DateTime<Utc>> {
            self.calls().iter().map(|call| call.at).collect()
        }

        /// The run history, oldest fire (then attempt) first.
        async fn records(&self) -> Vec<RunRecord> {
            let mut records = self.store.recent_runs("job", 1000).await.unwrap();
            records.sort_by_key(|record| (record.scheduled_for, record.attempt));
            records
        }
    }

    fn quick_ok() -> Script {
        Box::new(|_| {
            (
                Duration::ZERO,
                RunOutcome::ok(vec!["SLACK_SEND_MESSAGE".into()]),
            )
        })
    }

    fn job(expression: &str, timezone: &str) -> JobSpec {
        JobSpec::new(schedule(expression, timezone), Duration::from_secs(30))
    }

    fn summary(records: &[RunRecord]) -> Vec<(DateTime<Utc>, RunTrigger, Outcome, u32)> {
        records
            .iter()
            .map(|r| (r.scheduled_for, r.trigger, r.outcome, r.attempt))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_right_instants_across_a_dst_change() {
        let harness = Harness::new("2026-03-27T12:00:00Z", quick_ok());
        let spec = JobSpec::new(
            Schedule::parse(
                CronTrigger::new("30 2 * * *")
                    .in_timezone("Europe/Berlin")
                    .with_payload(json!({ "channel": "#team-updates" })),
            )
            .unwrap(),
            Duration::from_secs(30),
        );
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-30T12:00:00Z").await;

        let expected = times(&[
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z",
        ]);
        assert_eq!(harness.call_times(), expected);
        for call in harness.calls() {
            assert_eq!(call.ctx.scheduled_for, call.at);
            assert_eq!(
                call.ctx.payload,
                Some(json!({ "channel": "#team-updates" }))
            );
            assert_eq!(call.ctx.deadline, Duration::from_secs(30));
            // Persisted before the run started.
            assert_eq!(call.last_fire_seen, Some(call.ctx.scheduled_for));
        }
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            expected
                .iter()
                .map(|&at| (at, RunTrigger::Cron, Outcome::Ok, 1))
                .collect::<Vec<_>>()
        );
        assert!(
            records
                .iter()
                .all(|r| r.started_at == r.scheduled_for && r.tool_calls == ["SLACK_SEND_MESSAGE"])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fire_that_finds_the_previous_run_going_is_skipped() {
        // The first run takes 150 s of a job that fires every minute.
        let slow_first: Script = Box::new(|call| {
            let takes = if call == 1 { 150 } else { 1 };
            (Duration::from_secs(takes), RunOutcome::ok(Vec::new()))
        });
        let harness = Harness::new("2026-03-10T12:00:30Z", slow_first);
        let spec = JobSpec {
            deadline: Duration::from_secs(600),
            ..job("* * * * *", "UTC")
        };
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-10T12:04:30Z").await;

        assert_eq!(
            harness.call_times(),
            times(&["2026-03-10T12:01:00Z", "2026-03-10T12:04:00Z"])
        );
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![
                (at("2026-03-10T12:01:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
                (
                    at("2026-03-10T12:02:00Z"),
                    RunTrigger::Cron,
                    Outcome::Skipped,
                    0
                ),
                (
                    at("2026-03-10T12:03:00Z"),
                    RunTrigger::Cron,
                    Outcome::Skipped,
                    0
                ),
                (at("2026-03-10T12:04:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
            ]
        );
        assert_eq!(records[0].ended_at, at("2026-03-10T12:03:30Z"));
        assert!(records[1].error.as_deref().unwrap().contains("still going"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_exponential_backoff() {
        let always_fails: Script = Box::new(|_| {
            (
                Duration::ZERO,
                RunOutcome::error("Slack said 503", Vec::new()),
            )
        });
        let harness = Harness::new("2026-03-10T08:00:00Z", always_fails);
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-10T10:00:00Z").await;

        assert_eq!(
            harness.call_times(),
            times(&[
                "2026-03-10T09:00:00Z",
                "2026-03-10T09:00:01Z",
                "2026-03-10T09:00:03Z",
                "2026-03-10T09:00:07Z",
            ])
        );
        let attempts: Vec<u32> = harness.calls().iter().map(|c| c.ctx.attempt).collect();
        assert_eq!(attempts, [1, 2, 3, 4]);
        let records = harness.records().await;
        assert_eq!(records.len(), 4);
        assert!(records.iter().all(|r| r.outcome == Outcome::Error
            && r.scheduled_for == at("2026-03-10T09:00:00Z")
            && r.error.as_deref() == Some("Slack said 503")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_attempt_is_recorded_and_retried() {
        let hangs_once: Script = Box::new(|call| {
            let takes = if call == 1 { 3600 } else { 1 };
            (Duration::from_secs(takes), RunOutcome::ok(Vec::new()))
        });
        let harness = Harness::new("2026-03-10T08:00:00Z", hangs_once);
        let spec = JobSpec {
            deadline: Duration::from_secs(5),
            ..job("0 9 * * *", "UTC")
        };
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-10T10:00:00Z").await;

        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![
                (
                    at("2026-03-10T09:00:00Z"),
                    RunTrigger::Cron,
                    Outcome::TimedOut,
                    1
                ),
                (at("2026-03-10T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 2),
            ]
        );
        assert_eq!(records[0].ended_at, at("2026-03-10T09:00:05Z"));
        assert!(records[0].error.as_deref().unwrap().contains("deadline"));
        assert_eq!(records[1].started_at, at("2026-03-10T09:00:06Z"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_would_overlap_the_next_fire_is_dropped() {
        let always_fails: Script =
            Box::new(|_| (Duration::ZERO, RunOutcome::error("boom", Vec::new())));
        let harness = Harness::new("2026-03-10T12:00:30Z", always_fails);
        let spec = JobSpec {
            retry: RetryPolicy {
                max_retries: 5,
                initial_backoff: Duration::from_secs(20),
                max_backoff: Duration::from_secs(3600),
            },
            ..job("* * * * *", "UTC")
        };
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-10T12:02:30Z").await;

        // 12:01:20 + 30 s deadline fits before 12:02; 12:02:00 would not.
        assert_eq!(
            harness.call_times(),
            times(&[
                "2026-03-10T12:01:00Z",
                "2026-03-10T12:01:20Z",
                "2026-03-10T12:02:00Z",
                "2026-03-10T12:02:20Z",
            ])
        );
        let records = harness.records().await;
        assert!(records.iter().all(|r| r.outcome == Outcome::Error));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_after_downtime_catches_up_once_then_runs_normally() {
        let store = Arc::new(MemoryScheduleStore::default());
        store
            .set_last_fire("job", at("2026-03-07T09:00:00Z"))
            .await
            .unwrap();
        let harness = Harness::with_store("2026-03-10T12:00:00Z", quick_ok(), store);
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-12T12:00:00Z").await;

        assert_eq!(
            harness.call_times(),
            times(&[
                "2026-03-10T12:00:00Z",
                "2026-03-11T09:00:00Z",
                "2026-03-12T09:00:00Z"
            ])
        );
        assert_eq!(
            summary(&harness.records().await),
            vec![
                (
                    at("2026-03-10T09:00:00Z"),
                    RunTrigger::CatchUp,
                    Outcome::Ok,
                    1
                ),
                (at("2026-03-11T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
                (at("2026-03-12T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
            ]
        );
        assert_eq!(
            harness.store.last_fire("job").await.unwrap(),
            Some(at("2026-03-12T09:00:00Z"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_scheduler_on_the_same_store_resumes_after_downtime() {
        let harness = Harness::new("2026-03-10T08:00:00Z", quick_ok());
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-10T10:00:00Z").await;
        harness.scheduler.shutdown();
        // Down for three days.
        harness.run_until("2026-03-13T12:00:00Z").await;
        let restarted = Scheduler::new(
            harness.store.clone(),
            harness.runner.clone(),
            harness.clock.clone(),
        );
        restarted.upsert("job", job("0 9 * * *", "UTC")).await;
        harness.run_until("2026-03-14T12:00:00Z").await;

        assert_eq!(
            summary(&harness.records().await),
            vec![
                (at("2026-03-10T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
                (
                    at("2026-03-13T09:00:00Z"),
                    RunTrigger::CatchUp,
                    Outcome::Ok,
                    1
                ),
                (at("2026-03-14T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_skip_policy_records_the_missed_window_without_running() {
        let store = Arc::new(MemoryScheduleStore::default());
        store
            .set_last_fire("job", at("2026-03-07T09:00:00Z"))
            .await
            .unwrap();
        let harness = Harness::with_store("2026-03-10T12:00:00Z", quick_ok(), store);
        let spec = JobSpec {
            catch_up: CatchUpPolicy::Skip,
            ..job("0 9 * * *", "UTC")
        };
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-11T12:00:00Z").await;

        assert_eq!(harness.call_times(), times(&["2026-03-11T09:00:00Z"]));
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![
                (
                    at("2026-03-10T09:00:00Z"),
                    RunTrigger::CatchUp,
                    Outcome::Skipped,
                    0
                ),
                (at("2026-03-11T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
            ]
        );
        assert!(records[0].error.as_deref().unwrap().contains("missed"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_trigger_runs_now_once() {
        let fails_slowly: Script = Box::new(|_| {
            (
                Duration::from_secs(10),
                RunOutcome::error("boom", Vec::new()),
            )
        });
        let harness = Harness::new("2026-03-10T12:00:00Z", fails_slowly);
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;

        let run_id = harness.scheduler.trigger_now("job").await.unwrap();
        let again = harness.scheduler.trigger_now("job").await.unwrap_err();
        assert!(
            matches!(again, SchedulerError::AlreadyRunning(_)),
            "{again}"
        );
        let unknown = harness.scheduler.trigger_now("nope").await.unwrap_err();
        assert!(
            matches!(unknown, SchedulerError::UnknownJob(_)),
            "{unknown}"
        );
        harness.run_until("2026-03-10T13:00:00Z").await;

        // One attempt: manual runs are not retried.
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![(
                at("2026-03-10T12:00:00Z"),
                RunTrigger::Manual,
                Outcome::Error,
                1
            )]
        );
        assert_eq!(records[0].run_id, run_id);
        assert_eq!(harness.calls()[0].ctx.run_id, run_id);
        // The schedule is untouched: the next fire is still tomorrow's.
        assert_eq!(
            harness.store.last_fire("job").await.unwrap(),
            Some(at("2026-03-10T12:00:00Z"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn remove_stops_firing() {
        let harness = Harness::new("2026-03-10T12:00:30Z", quick_ok());
        harness
            .scheduler
            .upsert("job", job("* * * * *", "UTC"))
            .await;
        harness.run_until("2026-03-10T12:02:30Z").await;
        assert_eq!(harness.scheduler.jobs(), ["job"]);
        assert!(harness.scheduler.remove("job").await.unwrap());
        assert!(!harness.scheduler.remove("job").await.unwrap());
        harness.run_until("2026-03-10T12:10:00Z").await;

        assert_eq!(
            harness.call_times(),
            times(&["2026-03-10T12:01:00Z", "2026-03-10T12:02:00Z"])
        );
        assert!(harness.scheduler.jobs().is_empty());
        assert_eq!(harness.store.last_fire("job").await.unwrap(), None);
        assert_eq!(harness.records().await.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn changing_a_schedule_does_not_catch_up_under_the_new_one() {
        let harness = Harness::new("2026-03-10T08:00:00Z", quick_ok());
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-10T12:00:00Z").await;
        // 10:00 today has passed, but the new schedule did not exist then.
        harness
            .scheduler
            .upsert("job", job("0 10 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-11T12:00:00Z").await;

        assert_eq!(
            harness.call_times(),
            times(&["2026-03-10T09:00:00Z", "2026-03-11T10:00:00Z"])
        );
    }

    fn slow_ok(takes: Duration) -> Script {
        Box::new(move |_| (takes, RunOutcome::ok(vec!["SLACK_SEND_MESSAGE".into()])))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_waits_for_the_run_in_progress_and_records_it() {
        let harness = Harness::new("2026-03-10T12:00:00Z", slow_ok(Duration::from_secs(20)));
        harness
            .scheduler
            .upsert("job", job("* * * * *", "UTC"))
            .await;
        let run_id = harness.scheduler.trigger_now("job").await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;

        let interrupted = harness
            .scheduler
            .drain(tokio::time::sleep(Duration::from_secs(60)))
            .await;
        assert_eq!(interrupted, 0);
        // It returned when the run ended, not at the end of the grace.
        assert_eq!(harness.clock.now(), at("2026-03-10T12:00:20Z"));
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![(
                at("2026-03-10T12:00:00Z"),
                RunTrigger::Manual,
                Outcome::Ok,
                1
            )]
        );
        assert_eq!(records[0].run_id, run_id);
        // Nothing fires after a stop.
        harness.run_until("2026-03-10T12:10:00Z").await;
        assert_eq!(harness.calls().len(), 1);
        assert!(harness.scheduler.jobs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_outlasting_the_grace_is_recorded_as_interrupted_once() {
        let harness = Harness::new("2026-03-10T12:00:00Z", slow_ok(Duration::from_secs(25)));
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        let run_id = harness.scheduler.trigger_now("job").await.unwrap();

        let interrupted = harness
            .scheduler
            .drain(tokio::time::sleep(Duration::from_secs(10)))
            .await;
        assert_eq!(interrupted, 1);
        assert_eq!(harness.clock.now(), at("2026-03-10T12:00:10Z"));
        // Past the moment the run would have ended: still one record.
        harness.run_until("2026-03-10T12:01:00Z").await;
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![(
                at("2026-03-10T12:00:00Z"),
                RunTrigger::Manual,
                Outcome::Interrupted,
                1
            )]
        );
        assert_eq!(records[0].run_id, run_id);
        assert_eq!(records[0].ended_at, at("2026-03-10T12:00:10Z"));
        assert!(
            records[0]
                .error
                .as_deref()
                .unwrap()
                .contains("grace period"),
            "{records:?}"
        );
        assert_eq!(
            serde_json::to_value(Outcome::Interrupted).unwrap(),
            "interrupted"
        );
        // With nothing running, a stop returns at once.
        assert_eq!(harness.scheduler.drain(std::future::pending()).await, 0);
    }
}
