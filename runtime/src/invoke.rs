//! Running a function: one path that owns the deadline, the memory cap, the
//! concurrency limits, the caller's identity and the mapping of traps to
//! answers a person can act on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use host_api::broker::{Broker, Invocation, Principal};
use host_api::integrations::IntegrationsCtx;
use host_api::manifest::RunAs;
use host_api::store::FunctionRecord;
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::engine::{Engine, HostState};
use crate::invocations::{InvocationLog, InvocationRecord};
use crate::logs::FunctionOutput;
use crate::scheduler::RunTrigger;

/// Largest response body a function may return; it is buffered so a trap
/// mid-body still yields a clean 500.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// A deployed function, ready to instantiate.
pub struct LoadedFunction {
    /// The deployed version.
    pub record: FunctionRecord,
    /// Linked and type-checked once at deploy/load.
    pub pre: ProxyPre<HostState>,
    /// The function's own concurrency limit.
    pub permits: Arc<Semaphore>,
    /// App and name, shared with each invocation's log lines.
    app: Arc<str>,
    name: Arc<str>,
}

impl std::fmt::Debug for LoadedFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFunction")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl LoadedFunction {
    /// Wraps a prepared component with its record.
    pub fn new(record: FunctionRecord, pre: ProxyPre<HostState>) -> Self {
        let limit = usize::try_from(record.manifest.limits.max_concurrency()).unwrap_or(1);
        let (app, name) = (
            Arc::from(record.app.as_str()),
            Arc::from(record.name.as_str()),
        );
        Self {
            record,
            pre,
            permits: Arc::new(Semaphore::new(limit)),
            app,
            name,
        }
    }
}

/// What started an invocation: a typed value the triggers build, from
/// which the invocation's principal, its log record and the guest's
/// `x-runtime-*` headers (`triggers/headers.rs`) all follow.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// A request to the function's HTTP route, by this caller.
    Http(Principal),
    /// One attempt of a cron run; runs as [`Principal::Cron`] with the
    /// manifest's `runAs` user.
    Cron(CronRun),
}

/// The cron run an invocation is an attempt of.
#[derive(Debug, Clone, PartialEq)]
pub struct CronRun {
    /// A fire time, a manual run or the catch-up after downtime.
    pub started_by: RunTrigger,
    /// The run's id in the run history.
    pub run_id: String,
    /// The fire time the run is for.
    pub scheduled_for: DateTime<Utc>,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
}

impl Trigger {
    /// Who the function runs as.
    pub fn principal(&self) -> Principal {
        match self {
            Trigger::Http(principal) => principal.clone(),
            Trigger::Cron(_) => Principal::Cron,
        }
    }

    /// The trigger's name in the invocation log and the guest's
    /// `x-runtime-trigger` header: `http`, `cron`, `manual` or `catch_up`.
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Http(_) => "http",
            Trigger::Cron(run) => match run.started_by {
                RunTrigger::Cron => "cron",
                RunTrigger::Manual => "manual",
                RunTrigger::CatchUp => "catch_up",
            },
        }
    }
}

/// Why an invocation produced no response of the function's own. Each
/// message names the limit hit and how to raise it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// The function is at its own concurrency limit; retry shortly.
    #[error(
        "function `{function}` is at its concurrency limit ({limit}); retry shortly or raise limits.maxConcurrency"
    )]
    FunctionBusy {
        /// The function's name.
        function: String,
        /// Its `limits.maxConcurrency`.
        limit: u32,
    },
    /// Every instance of the runtime is in use; retry shortly.
    #[error("the runtime is at its instance limit; retry shortly")]
    RuntimeBusy,
    /// The wall-clock deadline passed; the guest was stopped.
    #[error(
        "the function exceeded its time limit of {timeout_ms} ms (wall clock) and was stopped; raise limits.timeoutMs in its manifest if it needs longer"
    )]
    TimedOut {
        /// The manifest's `limits.timeoutMs`.
        timeout_ms: u64,
    },
    /// The CPU budget (the same `limits.timeoutMs`) was spent.
    #[error(
        "the function exceeded its CPU time limit of {timeout_ms} ms and was stopped; raise limits.timeoutMs in its manifest if it needs longer"
    )]
    CpuTimeExceeded {
        /// The manifest's `limits.timeoutMs`.
        timeout_ms: u64,
    },
    /// The guest grew past its memory cap.
    #[error(
        "the function exceeded its memory limit of {memory_mb} MiB and was stopped; raise limits.memoryMb in its manifest if it needs more"
    )]
    MemoryExceeded {
        /// The manifest's memory cap in MiB.
        memory_mb: usize,
    },
    /// The guest overflowed its stack.
    #[error("the function overflowed its stack (recursion too deep) and was stopped")]
    StackOverflow,
    /// The guest trapped, failed or answered badly; the message says how.
    #[error("{0}")]
    Failed(String),
}

impl InvokeError {
    /// Whether the function ran out of time (wall clock or CPU): the
    /// deadline, answered 504 over HTTP.
    pub fn is_deadline(&self) -> bool {
        matches!(
            self,
            InvokeError::TimedOut { .. } | InvokeError::CpuTimeExceeded { .. }
        )
    }
}

/// Runs functions.
#[derive(Debug)]
pub struct Invoker {
    engine: Arc<Engine>,
    broker: Arc<Broker>,
    /// Where each invocation is recorded (`runtime logs`), if anywhere.
    log: Option<Arc<InvocationLog>>,
    /// Instances across all functions: the pooling allocator's capacity.
    global: Arc<Semaphore>,
}

struct Permits {
    _global: OwnedSemaphorePermit,
    _function: OwnedSemaphorePermit,
}

impl Invoker {
    /// An invoker allowing `max_instances` concurrent instances in all.
    pub fn new(
        engine: Arc<Engine>,
        broker: Arc<Broker>,
        max_instances: u32,
        log: Option<Arc<InvocationLog>>,
    ) -> Self {
        let n = usize::try_from(max_instances).unwrap_or(1);
        Self {
            engine,
            broker,
            log,
            global: Arc::new(Semaphore::new(n)),
        }
    }

    fn permits(&self, f: &LoadedFunction) -> Result<Permits, InvokeError> {
        // A full pool fails fast rather than queueing: the caller retries.
        let function =
            f.permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| InvokeError::FunctionBusy {
                    function: f.record.name.clone(),
                    limit: f.record.manifest.limits.max_concurrency(),
                })?;
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| InvokeError::RuntimeBusy)?;
        Ok(Permits {
            _global: global,
            _function: function,
        })
    }

    /// Handles one HTTP request with `f`. `request`'s URI is what the guest
    /// sees (the path below the function's route).
    pub async fn invoke_http(
        &self,
        f: Arc<LoadedFunction>,
        principal: Principal,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, InvokeError> {
        self.invoke(f, Trigger::Http(principal), request).await.0
    }

    /// Runs `f` for one request started by `trigger` and also returns the
    /// tool calls it made (`TOOL: outcome (logId)`). A cron trigger runs as
    /// [`Principal::Cron`] with the manifest's `runAs` user. The request's
    /// `x-runtime-*` headers are the trigger's to set
    /// (`triggers/headers.rs`).
    pub async fn invoke(
        &self,
        f: Arc<LoadedFunction>,
        trigger: Trigger,
        request: http::Request<Bytes>,
    ) -> (Result<http::Response<Bytes>, InvokeError>, Vec<String>) {
        let principal = trigger.principal();
        let run_as = match (&trigger, &f.record.manifest.run_as) {
            (Trigger::Cron(_), RunAs::User(user)) => Some(user.clone()),
            _ => None,
        };
        let Some(log) = &self.log else {
            let (result, calls, _) = self.run(f, principal, run_as, request).await;
            return (result, calls);
        };
        let started = std::time::Instant::now();
        let started_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let who = match &principal {
            Principal::Admin => "admin",
            Principal::User(_) => "user",
            Principal::Cron => "cron",
            Principal::Anonymous => "anonymous",
        };
        let method = request.method().to_string();
        let path: String = request.uri().path().chars().take(256).collect();
        let (app, name) = (f.record.app.clone(), f.record.name.clone());
        let (result, calls, lines) = self.run(f, principal, run_as, request).await;
        let record = InvocationRecord {
            id: InvocationRecord::new_id(),
            trigger: trigger.name().to_string(),
            method,
            path,
            principal: who.to_string(),
            status: result.as_ref().ok().map(|r| r.status().as_u16()),
            error: result.as_ref().err().map(ToString::to_string),
            started_at_ms,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            tool_calls: calls.clone(),
            log_lines: lines,
        };
        log.record(&app, &name, record);
        (result, calls)
    }

    /// One invocation: the answer, the tool calls made, the lines printed.
    async fn run(
        &self,
        f: Arc<LoadedFunction>,
        principal: Principal,
        run_as: Option<String>,
        request: http::Request<Bytes>,
    ) -> (
        Result<http::Response<Bytes>, InvokeError>,
        Vec<String>,
        Vec<String>,
    ) {
        let permits = match self.permits(&f) {
            Ok(p) => p,
            Err(e) => return (Err(e), Vec::new(), Vec::new()),
        };
        let limits = &f.record.manifest.limits;
        let deadline = Duration::from_millis(limits.timeout_ms());
        let invocation = Invocation {
            app: f.record.app.clone(),
            function: Some(f.record.name.clone()),
            principal,
            grants: Some(f.record.manifest.grants.clone()),
            allow_as_user: f.record.manifest.allow_as_user,
            run_as,
        };
        let output = FunctionOutput::pair(f.app.clone(), f.name.clone());
        let captured = output.0.captured();
        let state = HostState::new(
            IntegrationsCtx::new(self.broker.clone(), Arc::new(invocation)),
            output,
            limits.memory_bytes(),
            deadline,
        );
        let mut store = Store::new(self.engine.wasmtime(), state);
        store.limiter(|s| &mut s.limiter);
        // Every tick: yield so other guests on this worker run, and trap once
        // the CPU budget is spent.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if state.ticks_left == 0 {
                return Err(Trap::Interrupt.into());
            }
            state.ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });

        let (parts, body) = request.into_parts();
        let body = Full::new(body).map_err(|never| -> hyper::Error { match never {} });
        let guest_request = http::Request::from_parts(parts, body);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let setup = (|| {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, guest_request)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            anyhow::Ok((req, out))
        })();
        let (req, out) = match setup {
            Ok(pair) => pair,
            Err(e) => {
                return (
                    Err(InvokeError::Failed(format!(
                        "could not pass the request to the function: {e:#}"
                    ))),
                    Vec::new(),
                    Vec::new(),
                );
            }
        };

        // The guest call and the collection of its response run in this
        // task: no spawn, no cross-thread hand-off. The wall-clock timeout
        // covers both; on expiry the store (and the guest) are dropped, which
        // wasmtime supports at any await point (the epoch callback yields
        // every tick, so even a spinning guest reaches one).
        let guest = async {
            let proxy = f.pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        };
        let response = async {
            match receiver.await {
                Ok(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    match Limited::new(body, MAX_RESPONSE_BODY).collect().await {
                        Ok(collected) => {
                            Ok(http::Response::from_parts(parts, collected.to_bytes()))
                        }
                        // The body failed: usually the guest trapped mid-body.
                        Err(body_error) => Err(Some(body_error.to_string())),
                    }
                }
                Ok(Err(code)) => Err(Some(format!("the function reported an error: {code:?}"))),
                // The guest returned or trapped without answering.
                Err(_) => Err(None),
            }
        };
        let timeout_ms = limits.timeout_ms();
        let memory_mb = limits.memory_bytes() / (1024 * 1024);
        let both = async {
            tokio::pin!(guest, response);
            tokio::select! {
                response = &mut response => ((&mut guest).await, response),
                result = &mut guest => match result {
                    // Returned: the answer (or the dropped outparam) follows.
                    Ok(()) => (Ok(()), response.await),
                    // Trapped: the outparam stays in the poisoned store, so
                    // no answer will come; do not wait for one.
                    Err(e) => (Err(e), Err(None)),
                },
            }
        };
        let outcome = tokio::time::timeout(deadline, both).await;
        let memory_exhausted = store.data().limiter.memory_exhausted;
        let calls = store.data().integrations.calls().to_vec();
        drop(store);
        drop(permits);
        let result = match outcome {
            Err(_elapsed) => Err(InvokeError::TimedOut { timeout_ms }),
            Ok((Ok(()), Ok(response))) => Ok(response),
            Ok((guest_result, response_result)) => {
                let body_error = response_result.err().flatten();
                Err(explain(
                    guest_result.err(),
                    memory_exhausted,
                    body_error,
                    timeout_ms,
                    memory_mb,
                ))
            }
        };
        // The store (and its output streams) are gone: every line is in.
        let lines = captured.lock().map(|l| l.clone()).unwrap_or_default();
        (result, calls, lines)
    }
}

/// Turns a trap (or its absence) into the error naming the limit hit.
fn explain(
    error: Option<wasmtime::Error>,
    memory_exhausted: bool,
    body_error: Option<String>,
    timeout_ms: u64,
    memory_mb: usize,
) -> InvokeError {
    let Some(error) = error else {
        return InvokeError::Failed(match body_error {
            Some(b) => format!("the function's response body failed: {b}"),
            None => "the function returned without sending a response".into(),
        });
    };
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvokeError::CpuTimeExceeded { timeout_ms },
        Some(Trap::StackOverflow) => InvokeError::StackOverflow,
        _ if memory_exhausted => InvokeError::MemoryExceeded { memory_mb },
        Some(Trap::UnreachableCodeReached) => InvokeError::Failed(
            "the function trapped (wasm `unreachable`: a Rust panic aborts this way; its panic message is in the runtime's log, under this function's name)".into(),
        ),
        Some(trap) => InvokeError::Failed(format!("the function trapped: {trap}")),
        None => {
            let text = format!("{error:#}");
            InvokeError::Failed(
                if text.contains("guest limit") || text.contains("resource table has no free keys")
                {
                    format!("the function exceeded a resource limit: {text}")
                } else {
                    format!("the function failed: {text}")
                },
            )
        }
    }
}
