//! The HTTPS exchange the cloud platforms (Snowflake, Databricks, BigQuery)
//! share, on top of the one outbound sender ([`crate::outbound`]: egress
//! check, bearer credential, bounded and scrubbed answers, 401 and 429):
//! URLs below the account's host, deadlines, and their error messages.

use std::time::Duration;

use serde_json::Value;
use tracing::instrument;

use super::{Ctx, DataError, Platform};
use crate::catalog::AuthScheme;
use crate::error::ToolError;
use crate::outbound::{SendError, Sender};
use crate::secret::Secret;

/// Largest answer read from a platform (one page, chunk or partition): more
/// than the largest byte cap plus JSON punctuation; larger answers are
/// refused rather than buffered without bound.
const MAX_RESPONSE_BYTES: u64 = 96 * 1024 * 1024;
/// How much of an error body is passed on.
const MAX_ERROR_TEXT: usize = 2 * 1024;
/// Time allowed for a request beyond the statement's deadline (the answer
/// to a request sent just before it).
const DEADLINE_GRACE: Duration = Duration::from_secs(5);
/// How long a cancel request may take: it is sent after the deadline.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// The `User-Agent` every platform request carries.
const USER_AGENT: &str = concat!("runtime/", env!("CARGO_PKG_VERSION"));

/// A platform's answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON (a string when it is not JSON, null when empty),
    /// credentials scrubbed.
    pub body: Value,
}

/// One platform's REST API, with the credential to present.
#[derive(Debug)]
pub struct Api<'a> {
    pub ctx: &'a Ctx<'a>,
    /// Sent as `Authorization: Bearer …`.
    pub bearer: Secret,
    /// Further headers (never credentials).
    pub headers: Vec<(&'static str, String)>,
}

impl Api<'_> {
    fn platform(&self) -> Platform {
        self.ctx.target.platform
    }

    /// A URL below the target's base: `segments` are appended as path
    /// segments (each percent-encoded, so an id can never change the path),
    /// `query` as query pairs.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<url::Url, ToolError> {
        for s in segments {
            if s.is_empty() || *s == "." || *s == ".." {
                return Err(ToolError::InvalidParams(format!(
                    "`{s}` is not a valid name or id here"
                )));
            }
        }
        let mut url = self.ctx.target.base_url.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| {
                ToolError::NotConnected(format!(
                    "the {} API base URL cannot take a path; an admin must configure an https URL",
                    self.platform().display_name()
                ))
            })?;
            path.pop_if_empty().extend(segments);
        }
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends a request timed to end by the statement's deadline.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&Value>,
    ) -> Result<Reply, DataError> {
        let timeout = self.ctx.limits.remaining() + DEADLINE_GRACE;
        self.send_with_timeout(method, url, body, timeout).await
    }

    /// Sends a request and reads the answer through the one outbound sender
    /// ([`crate::outbound`]); 401 and 429 are mapped there, every other
    /// status is the caller's to interpret.
    #[instrument(skip_all, fields(platform = ?self.platform(), method = %method, path = %url.path()))]
    pub async fn send_with_timeout(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Reply, DataError> {
        let sender = Sender {
            client: self.ctx.client,
            policy: self.ctx.egress,
            name: self.platform().display_name(),
            max_bytes: MAX_RESPONSE_BYTES,
            too_big_hint: " at once; select fewer columns or rows",
        };
        let build = |mut builder: reqwest::RequestBuilder| {
            builder = builder
                .timeout(timeout)
                .header(reqwest::header::ACCEPT, "application/json")
                .header(reqwest::header::USER_AGENT, USER_AGENT);
            for (name, value) in &self.headers {
                builder = builder.header(*name, value);
            }
            match body {
                Some(body) => builder.json(body),
                None => builder,
            }
        };
        let reply = sender
            .send(
                method,
                url,
                build,
                &AuthScheme::Bearer,
                &self.bearer,
                &[self.ctx.target.credential],
            )
            .await
            .map_err(|e| match e {
                SendError::Unauthorized => DataError::Unauthorized,
                SendError::Transient(e) | SendError::Tool(e) => DataError::Tool(e),
            })?;
        Ok(Reply {
            status: reply.status,
            body: reply.into_json(),
        })
    }

    /// The error for a status the platform module did not expect: 4xx with
    /// the platform's message, 5xx as upstream failures.
    pub fn failure(&self, reply: &Reply) -> ToolError {
        let name = self.platform().display_name();
        let message = error_message(&reply.body);
        match reply.status {
            400 | 404 | 409 | 422 => {
                ToolError::InvalidParams(format!("{name} rejected the request: {message}"))
            }
            403 => ToolError::Denied(format!(
                "{name} refused access: {message}; the connection's user or role needs the privilege"
            )),
            status => ToolError::Upstream {
                status,
                body: message,
            },
        }
    }
}

/// The message in a platform's error body: `message`, `error.message`,
/// `status.error.message`, else the body's text (shortened).
pub fn error_message(body: &Value) -> String {
    let found = ["/message", "/error/message", "/status/error/message"]
        .iter()
        .find_map(|p| body.pointer(p).and_then(Value::as_str));
    let text = match (found, body) {
        (Some(m), _) => m.to_string(),
        (None, Value::String(s)) => s.clone(),
        (None, Value::Null) => "(no details)".to_string(),
        (None, other) => other.to_string(),
    };
    truncate(&text, MAX_ERROR_TEXT)
}

pub use crate::outbound::truncate;

/// Waits between polls: 100 ms, doubling up to 1 s, never past the
/// deadline.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }

    /// Sleeps for the next interval (or until the deadline); `false` when the
    /// deadline has passed.
    pub async fn wait(&mut self, ctx: &Ctx<'_>) -> bool {
        let remaining = ctx.limits.remaining();
        if remaining.is_zero() {
            return false;
        }
        tokio::time::sleep(self.next.min(remaining)).await;
        self.next = (self.next * 2).min(Duration::from_secs(1));
        !ctx.limits.remaining().is_zero()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_messages_are_found_and_bounded() {
        assert_eq!(error_message(&json!({"message": "bad"})), "bad");
        assert_eq!(
            error_message(&json!({"error": {"code": 400, "message": "nope"}})),
            "nope"
        );
        assert_eq!(
            error_message(&json!({"status": {"error": {"message": "failed"}}})),
            "failed"
        );
        assert!(error_message(&json!("x".repeat(10_000))).ends_with("(truncated)"));
    }
}
