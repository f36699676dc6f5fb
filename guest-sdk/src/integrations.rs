//! Brokered calls to third-party APIs: `runtime:integrations/integrations`.
//!
//! The function names a tool (`GITHUB_CREATE_ISSUE`) and passes its
//! parameters as JSON; the host chooses the connection, injects the
//! credential, calls the provider and hands back only the result.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::wit::runtime::integrations::integrations as wit;

/// The entry point for tool calls made as this invocation's own identity.
///
/// Cheap: it holds nothing, so call it wherever it is needed.
///
/// ```no_run
/// use serde_json::json;
///
/// let result = guest_sdk::integrations().execute(
///     "GITHUB_CREATE_ISSUE",
///     &json!({ "owner": "octo", "repo": "demo", "title": "It broke" }),
/// );
/// match result {
///     Ok(issue) => println!("created #{}", issue["number"]),
///     Err(err) => eprintln!("{} ({})", err, err.kind()),
/// }
/// ```
pub fn integrations() -> Integrations {
    Integrations { _private: () }
}

/// Tool calls made as this invocation's own identity: the app's shared
/// connection for HTTP requests. Obtained from [`integrations()`].
#[derive(Debug, Clone, Copy)]
pub struct Integrations {
    /// Keeps construction inside this crate, so fields can be added later.
    _private: (),
}

impl Integrations {
    /// Runs `tool` with `params` (normally a JSON object) and returns the
    /// tool's result.
    ///
    /// # Errors
    ///
    /// The host's [`Error`] for the call; a result that is not JSON is
    /// reported as [`Error::Unavailable`].
    pub fn execute(&self, tool: &str, params: &Value) -> Result<Value, Error> {
        let params_json = params_to_json(params)?;
        parse_result(wit::execute(tool, &params_json))
    }

    /// A handle for calls made as end user `user_id`, through that user's own
    /// connection.
    ///
    /// Only cron runs and admin-authenticated invocations of functions whose
    /// manifest allows it may act as a user; elsewhere every call through the
    /// handle fails with [`Error::Denied`].
    pub fn as_user(&self, user_id: &str) -> User {
        User {
            handle: wit::as_user(user_id),
            user_id: user_id.to_owned(),
        }
    }

    /// The tools this function is granted and that exist in the host's
    /// catalog.
    pub fn list_tools(&self) -> Vec<ToolInfo> {
        wit::list_tools()
            .into_iter()
            .map(|tool| ToolInfo {
                name: tool.name,
                toolkit: tool.toolkit,
                description: tool.description,
            })
            .collect()
    }
}

/// Tool calls made as one end user. Obtained from [`Integrations::as_user`].
pub struct User {
    /// The host's handle; dropping it releases the host-side resource.
    handle: wit::User,
    /// Kept only so `Debug` can say who this is.
    user_id: String,
}

impl User {
    /// Like [`Integrations::execute`], but resolves this user's connection
    /// (or the toolkit's shared one, where the toolkit is shared).
    ///
    /// # Errors
    ///
    /// As for [`Integrations::execute`].
    pub fn execute(&self, tool: &str, params: &Value) -> Result<Value, Error> {
        let params_json = params_to_json(params)?;
        parse_result(self.handle.execute(tool, &params_json))
    }

    /// The user id this handle acts for.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// A tool this function may call, as listed by [`Integrations::list_tools`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ToolInfo {
    /// The stable tool name, `TOOLKIT_ACTION` (e.g. `GITHUB_CREATE_ISSUE`).
    pub name: String,
    /// The toolkit (connector) the tool belongs to, e.g. `github`.
    pub toolkit: String,
    /// What the tool does, for humans and for AI agents.
    pub description: String,
}

/// Why a tool call did not produce a result.
///
/// Mirrors the WIT `error` variant; every case carries what is needed to
/// decide what to do next without parsing the message. New cases may be
/// added, so matches need a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No connection exists for the tool's toolkit for the identity the call
    /// runs as. The message names the toolkit and how to connect it.
    NotConnected(String),
    /// A connection exists but its grant is no longer usable (revoked,
    /// expired refresh token); the user must connect again.
    NeedsReconnect(String),
    /// The connection lacks scopes the tool requires.
    InsufficientScope {
        /// The missing scopes, in the provider's own spelling.
        missing: Vec<String>,
        /// Where they can be granted: present only when the caller may
        /// grant them (an admin for the app's shared connection, the
        /// connection's own user). Show it to that person only; it is never
        /// part of the error's `Display`.
        auth_url: Option<String>,
    },
    /// The provider (or the host) asked the function to slow down.
    RateLimited {
        /// How long to wait before retrying, in milliseconds.
        retry_after_ms: u64,
    },
    /// Policy refused the call: no grant for the tool, the toolkit is
    /// disabled, or acting as a user is not allowed here. The message says
    /// which and how to change it.
    Denied(String),
    /// The parameters are not valid for the tool. The message names the
    /// field.
    InvalidParams(String),
    /// The provider answered with a non-success status.
    Upstream {
        /// The HTTP status code the provider returned.
        status: u16,
        /// The provider's response body, truncated by the host; never a
        /// credential.
        body: String,
    },
    /// The call could not be made: unknown tool, provider unreachable, timed
    /// out, the host is shutting down, or the host's answer was unreadable.
    Unavailable(String),
}

impl Error {
    /// The WIT case name: `"not-connected"`, `"needs-reconnect"`,
    /// `"insufficient-scope"`, `"rate-limited"`, `"denied"`,
    /// `"invalid-params"`, `"upstream"` or `"unavailable"`.
    ///
    /// Stable and machine-readable, e.g. for an `"error"` field in a JSON
    /// response.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotConnected(_) => "not-connected",
            Self::NeedsReconnect(_) => "needs-reconnect",
            Self::InsufficientScope { .. } => "insufficient-scope",
            Self::RateLimited { .. } => "rate-limited",
            Self::Denied(_) => "denied",
            Self::InvalidParams(_) => "invalid-params",
            Self::Upstream { .. } => "upstream",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConnected(message) => {
                write!(f, "the tool's toolkit is not connected: {message}")
            }
            Self::NeedsReconnect(message) => {
                write!(f, "the connection must be connected again: {message}")
            }
            // Never the link itself: error text ends up in responses and
            // logs that anyone may read, and the link re-authorizes the
            // connection. Code that means to show it uses `auth_url`.
            Self::InsufficientScope { missing, auth_url } => {
                write!(f, "the connection lacks the scopes {}", missing.join(", "))?;
                match auth_url {
                    Some(_) => write!(
                        f,
                        "; the error's auth_url lets the connection's owner grant them"
                    ),
                    None => write!(
                        f,
                        "; the connection's owner (an admin, for a shared connection) must grant them"
                    ),
                }
            }
            Self::RateLimited { retry_after_ms } => {
                write!(f, "rate limited: retry after {retry_after_ms} ms")
            }
            Self::Denied(message) => write!(f, "the call was denied: {message}"),
            Self::InvalidParams(message) => write!(f, "invalid parameters: {message}"),
            Self::Upstream { status, body } => {
                write!(f, "the provider answered with HTTP status {status}")?;
                if body.is_empty() {
                    Ok(())
                } else {
                    write!(f, ": {body}")
                }
            }
            Self::Unavailable(message) => write!(f, "the tool is unavailable: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(error: wit::Error) -> Self {
        match error {
            wit::Error::NotConnected(message) => Self::NotConnected(message),
            wit::Error::NeedsReconnect(message) => Self::NeedsReconnect(message),
            wit::Error::InsufficientScope(scope) => Self::InsufficientScope {
                missing: scope.missing,
                auth_url: scope.auth_url,
            },
            wit::Error::RateLimited(retry_after_ms) => Self::RateLimited { retry_after_ms },
            wit::Error::Denied(message) => Self::Denied(message),
            wit::Error::InvalidParams(message) => Self::InvalidParams(message),
            wit::Error::Upstream(upstream) => Self::Upstream {
                status: upstream.status,
                body: upstream.body,
            },
            wit::Error::Unavailable(message) => Self::Unavailable(message),
        }
    }
}

/// Serializes the parameters to the JSON text the WIT call takes.
fn params_to_json(params: &Value) -> Result<String, Error> {
    // A `Value` always serializes (its map keys are strings), but the API
    // returns a `Result`, and an error is better than a panic.
    serde_json::to_string(params)
        .map_err(|err| Error::InvalidParams(format!("parameters could not be serialized: {err}")))
}

/// Turns the WIT call's answer into the SDK's.
fn parse_result(result: Result<String, wit::Error>) -> Result<Value, Error> {
    let text = result.map_err(Error::from)?;
    serde_json::from_str(&text).map_err(|err| {
        Error::Unavailable(format!(
            "the host returned a tool result that is not JSON: {err}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_wit_case_names() {
        let cases = [
            (Error::NotConnected(String::new()), "not-connected"),
            (Error::NeedsReconnect(String::new()), "needs-reconnect"),
            (
                Error::InsufficientScope {
                    missing: vec![],
                    auth_url: None,
                },
                "insufficient-scope",
            ),
            (Error::RateLimited { retry_after_ms: 1 }, "rate-limited"),
            (Error::Denied(String::new()), "denied"),
            (Error::InvalidParams(String::new()), "invalid-params"),
            (
                Error::Upstream {
                    status: 500,
                    body: String::new(),
                },
                "upstream",
            ),
            (Error::Unavailable(String::new()), "unavailable"),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind);
        }
    }

    #[test]
    fn wit_errors_convert_with_their_fields() {
        let scope = Error::from(wit::Error::InsufficientScope(wit::ScopeError {
            missing: vec!["repo".into(), "read:org".into()],
            auth_url: Some("https://example.test/grant".into()),
        }));
        assert_eq!(
            scope.to_string(),
            "the connection lacks the scopes repo, read:org; the error's auth_url lets the connection's owner grant them"
        );
        assert!(!scope.to_string().contains("https://"));
        assert!(matches!(
            &scope,
            Error::InsufficientScope { auth_url: Some(url), .. } if url == "https://example.test/grant"
        ));
        let upstream = Error::from(wit::Error::Upstream(wit::UpstreamError {
            status: 422,
            body: "Validation Failed".into(),
        }));
        assert_eq!(
            upstream,
            Error::Upstream {
                status: 422,
                body: "Validation Failed".into()
            }
        );
        assert_eq!(
            Error::from(wit::Error::RateLimited(1500)).to_string(),
            "rate limited: retry after 1500 ms"
        );
    }

    #[test]
    fn results_must_be_json() {
        assert_eq!(
            parse_result(Ok(r#"{"number": 7}"#.into())),
            Ok(serde_json::json!({"number": 7}))
        );
        assert!(matches!(
            parse_result(Ok("<html>".into())),
            Err(Error::Unavailable(_))
        ));
        assert_eq!(
            parse_result(Err(wit::Error::Denied("no grant".into()))),
            Err(Error::Denied("no grant".into()))
        );
    }
}
