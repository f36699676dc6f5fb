//! A function's manifest: how it is triggered, what it may call, its limits.
//!
//! Every field has a default, so `{}` deploys a plain HTTP function that may
//! call no tools. Example:
//!
//! ```json
//! {
//!   "http": { "enabled": true },
//!   "grants": { "toolkits": ["slack"], "tools": ["GITHUB_CREATE_ISSUE"] },
//!   "allowAsUser": false,
//!   "cron": [{ "schedule": "0 17 * * MON-FRI", "timezone": "Europe/Paris", "payload": {"channel": "#team-updates"} }],
//!   "runAs": "shared",
//!   "retries": 3,
//!   "limits": { "timeoutMs": 30000, "memoryMb": 128, "maxConcurrency": 64 }
//! }
//! ```
//!
//! A cron run calls the function's ordinary `wasi:http` handler with
//! `POST /` and the trigger's payload as a JSON body; the host sets
//! `x-runtime-trigger` (`cron`, `manual`, `catch_up`), `x-runtime-run-id`,
//! `x-runtime-scheduled-for` (RFC 3339) and `x-runtime-principal: cron`, and
//! no outside caller can set them.

use serde::{Deserialize, Serialize};

/// Default wall-clock (and CPU) deadline of one invocation.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Longest deadline a manifest may ask for.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Default cap on all linear memories of one instance together.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// Largest memory cap a manifest may ask for (the pooling allocator reserves
/// address space for it per slot).
pub const MAX_MEMORY_MB: u64 = 1024;
/// Default cap on concurrent invocations of one function.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 64;
/// Largest per-function concurrency a manifest may ask for.
pub const MAX_CONCURRENCY: u32 = 1024;

/// A deployed function's declaration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// The function's name; when given, a deploy under another name is
    /// refused (and the CLI can take the name from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// HTTP trigger.
    #[serde(default)]
    pub http: HttpTrigger,
    /// Tools and toolkits the function may call.
    #[serde(default)]
    pub grants: Grants,
    /// Whether `as-user` may be used (only in admin-authenticated or cron
    /// invocations even then).
    #[serde(default)]
    pub allow_as_user: bool,
    /// Cron triggers (checked at deploy: expression, time zone).
    #[serde(default)]
    pub cron: Vec<CronSpec>,
    /// Whose connections cron runs use.
    #[serde(default)]
    pub run_as: RunAs,
    /// Retries of a failed cron run, with exponential back-off.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
}

/// Most cron triggers one function may have.
pub const MAX_CRON_TRIGGERS: usize = 16;
/// Most retries of a failed cron run.
pub const MAX_RETRIES: u32 = 10;
/// Default retries of a failed cron run.
pub const DEFAULT_RETRIES: u32 = 3;

/// One cron trigger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronSpec {
    /// Cron expression: 5 fields (minute hour day month weekday), or 6/7
    /// with seconds (and year).
    pub schedule: String,
    /// IANA time zone the expression is read in.
    #[serde(default = "utc")]
    pub timezone: String,
    /// JSON sent as the request body of each run.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// Path the run's `POST` goes to below the function (default `/`), so
    /// one function can serve several schedules on its own routes.
    #[serde(default = "root")]
    pub path: String,
}

fn root() -> String {
    "/".into()
}

fn utc() -> String {
    "UTC".into()
}

/// Whose connections a cron run uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RunAs {
    /// The app's shared connections (and, with `allowAsUser`, `as-user`).
    #[default]
    Shared,
    /// This end user's connections.
    User(String),
}

/// The HTTP trigger of a function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpTrigger {
    /// Serve `/fn/{appId}/{name}` and its sub-paths.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for HttpTrigger {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn yes() -> bool {
    true
}

/// What a function may call. Empty means nothing: grants are explicit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grants {
    /// Every tool of these toolkits (connector slugs).
    #[serde(default)]
    pub toolkits: Vec<String>,
    /// These tools by name.
    #[serde(default)]
    pub tools: Vec<String>,
}

impl Grants {
    /// Whether `tool` of `toolkit` is granted.
    pub fn allows(&self, toolkit: &str, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool) || self.toolkits.iter().any(|t| t == toolkit)
    }
}

/// Resource limits of one invocation; unset fields take the defaults above.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Deadline in milliseconds (CPU and wall clock).
    pub timeout_ms: Option<u64>,
    /// Memory cap in MiB across all memories of the instance.
    pub memory_mb: Option<u64>,
    /// Concurrent invocations of this function; more get 503.
    pub max_concurrency: Option<u32>,
}

impl Limits {
    /// The deadline in effect.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }

    /// The memory cap in effect, in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB) * 1024 * 1024)
            .unwrap_or(usize::MAX)
    }

    /// The concurrency cap in effect.
    pub fn max_concurrency(&self) -> u32 {
        self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY)
    }
}

impl Manifest {
    /// Checks values a schema cannot; the message says how to fix it.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if let Some(t) = l.timeout_ms
            && !(1..=MAX_TIMEOUT_MS).contains(&t)
        {
            return Err(format!(
                "limits.timeoutMs must be between 1 and {MAX_TIMEOUT_MS}, got {t}"
            ));
        }
        if let Some(m) = l.memory_mb
            && !(1..=MAX_MEMORY_MB).contains(&m)
        {
            return Err(format!(
                "limits.memoryMb must be between 1 and {MAX_MEMORY_MB}, got {m}"
            ));
        }
        if let Some(c) = l.max_concurrency
            && !(1..=MAX_CONCURRENCY).contains(&c)
        {
            return Err(format!(
                "limits.maxConcurrency must be between 1 and {MAX_CONCURRENCY}, got {c}"
            ));
        }
        if self.cron.len() > MAX_CRON_TRIGGERS {
            return Err(format!(
                "cron: at most {MAX_CRON_TRIGGERS} triggers per function"
            ));
        }
        for (i, c) in self.cron.iter().enumerate() {
            let ok = c.path.starts_with('/')
                && c.path.len() <= 1024
                && c.path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
            if !ok {
                return Err(format!(
                    "cron[{i}].path must be a path starting with `/` (no spaces, no fragment), like \"/daily-digest\""
                ));
            }
        }
        if let Some(r) = self.retries
            && r > MAX_RETRIES
        {
            return Err(format!("retries must be at most {MAX_RETRIES}, got {r}"));
        }
        if let RunAs::User(u) = &self.run_as
            && (u.is_empty() || u.len() > 256)
        {
            return Err("runAs.user must be 1 to 256 bytes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_manifest_is_a_plain_http_function() {
        let m: Manifest = serde_json::from_str("{}").unwrap();
        assert!(m.http.enabled);
        assert!(!m.grants.allows("github", "GITHUB_CREATE_ISSUE"));
        assert_eq!(m.limits.timeout_ms(), DEFAULT_TIMEOUT_MS);
        assert_eq!(m.limits.memory_bytes(), 128 * 1024 * 1024);
    }

    #[test]
    fn cron_triggers_and_run_as_parse() {
        let m: Manifest = serde_json::from_str(
            r#"{"cron": [{"schedule": "0 17 * * *", "payload": {"a": 1}}], "runAs": {"user": "u1"}, "retries": 2}"#,
        )
        .unwrap();
        assert_eq!(m.cron[0].timezone, "UTC");
        assert_eq!(m.run_as, RunAs::User("u1".into()));
        m.validate().unwrap();
        let m: Manifest = serde_json::from_str(r#"{"runAs": "shared", "retries": 99}"#).unwrap();
        assert!(m.validate().unwrap_err().contains("retries"));
        assert!(serde_json::from_str::<Manifest>(r#"{"cron": [{"expr": "x"}]}"#).is_err());
    }

    #[test]
    fn unknown_fields_and_bad_limits_are_refused() {
        assert!(serde_json::from_str::<Manifest>(r#"{"grantz": {}}"#).is_err());
        let m: Manifest = serde_json::from_str(r#"{"limits": {"memoryMb": 100000}}"#).unwrap();
        assert!(m.validate().unwrap_err().contains("memoryMb"));
    }
}
