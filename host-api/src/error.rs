//! Why a tool call failed, as the broker reports it.
//!
//! One case per case of the WIT `error` variant, so the mapping to what the
//! guest sees is one-to-one and total.

/// A failed tool call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// No connection for the toolkit and identity.
    #[error("not connected: {0}")]
    NotConnected(String),
    /// The connection's grant is no longer usable.
    #[error("needs reconnect: {0}")]
    NeedsReconnect(String),
    /// The connection lacks scopes.
    #[error("insufficient scope: missing {}; {hint}", missing.join(", "))]
    InsufficientScope {
        /// Scopes the tool needs that were not granted.
        missing: Vec<String>,
        /// Where to grant them: only for a caller who may (an admin for a
        /// shared connection, the connection's own user or an admin for a
        /// user's).
        auth_url: Option<String>,
        /// Who must grant them and how.
        hint: String,
    },
    /// Slow down and retry after the delay.
    #[error("rate limited: retry after {retry_after_ms} ms")]
    RateLimited {
        /// Milliseconds to wait.
        retry_after_ms: u64,
    },
    /// Policy refused the call.
    #[error("denied: {0}")]
    Denied(String),
    /// The parameters are not valid for the tool.
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// The provider answered with a non-success status.
    #[error("upstream returned {status}")]
    Upstream {
        /// HTTP status.
        status: u16,
        /// Truncated body, credentials scrubbed.
        body: String,
    },
    /// The call could not be made.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ToolError {
    /// The WIT case name, used in audit records and API responses.
    pub fn kind(&self) -> &'static str {
        match self {
            ToolError::NotConnected(_) => "not-connected",
            ToolError::NeedsReconnect(_) => "needs-reconnect",
            ToolError::InsufficientScope { .. } => "insufficient-scope",
            ToolError::RateLimited { .. } => "rate-limited",
            ToolError::Denied(_) => "denied",
            ToolError::InvalidParams(_) => "invalid-params",
            ToolError::Upstream { .. } => "upstream",
            ToolError::Unavailable(_) => "unavailable",
        }
    }
}
