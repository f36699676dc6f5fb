//! Turns a tool call into the provider's HTTP request and its answer into a
//! result or a typed error.
//!
//! The host, scheme and port always come from the connector (or the admin's
//! configured override); a parameter can fill a path segment but never change
//! where the request goes. Credentials are added here and nowhere else.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};
use tracing::instrument;

use crate::catalog::{AuthScheme, Connector, Tool};
use crate::egress::EgressPolicy;
use crate::error::ToolError;
use crate::secret::Secret;

/// Largest provider response passed back to a function; larger answers are
/// refused rather than buffered without bound.
pub const MAX_PROVIDER_RESPONSE: usize = 8 * 1024 * 1024;
/// How much of an error body is returned in `upstream` errors.
const MAX_ERROR_BODY: usize = 4 * 1024;
/// Used when a provider says 429 without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Characters escaped in a path segment: everything but unreserved ones, so
/// `/`, `?`, `#` and `..` in a parameter cannot change the path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One provider request, ready to send.
#[derive(Debug)]
pub struct PreparedRequest {
    /// Method.
    pub method: http::Method,
    /// Full URL (never contains a credential).
    pub url: url::Url,
    /// JSON body, for body methods with parameters left over.
    pub body: Option<Value>,
}

/// Builds the provider request for `tool` with `params` against `base_url`.
pub fn prepare(
    tool: &Tool,
    base_url: &url::Url,
    params: &Map<String, Value>,
) -> Result<PreparedRequest, ToolError> {
    let mut rest = params.clone();
    let mut path = String::new();
    let mut template = tool.spec.path.as_str();
    while let Some(open) = template.find('{') {
        path.push_str(template.get(..open).unwrap_or_default());
        let after = template.get(open + 1..).unwrap_or_default();
        let close = after.find('}').unwrap_or(after.len());
        let name = after.get(..close).unwrap_or_default();
        let value = rest.remove(name).ok_or_else(|| {
            ToolError::InvalidParams(format!(
                "params.{name} is required (it is part of the URL path)"
            ))
        })?;
        let text = scalar_text(name, &value)?;
        if text.is_empty() || text == "." || text == ".." {
            return Err(ToolError::InvalidParams(format!(
                "params.{name} must be a non-empty path segment"
            )));
        }
        path.push_str(&utf8_percent_encode(&text, SEGMENT).to_string());
        template = after.get(close + 1..).unwrap_or_default();
    }
    path.push_str(template);

    let base_path = base_url.path().trim_end_matches('/');
    let mut url = base_url.clone();
    url.set_path(&format!("{base_path}{path}"));
    url.set_query(None);
    url.set_fragment(None);

    let method = tool.spec.method;
    let query_keys: Vec<String> = if method.params_in_query() {
        rest.keys().cloned().collect()
    } else {
        tool.spec
            .query
            .iter()
            .filter(|k| rest.contains_key(*k))
            .cloned()
            .collect()
    };
    if !query_keys.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for key in &query_keys {
            if let Some(value) = rest.remove(key) {
                match &value {
                    Value::Array(items) => {
                        for item in items {
                            pairs.append_pair(key, &scalar_text(key, item)?);
                        }
                    }
                    Value::Null => {}
                    other => {
                        pairs.append_pair(key, &scalar_text(key, other)?);
                    }
                }
            }
        }
    }
    // Body methods always carry a JSON object (`{}` when every parameter
    // went to the path or query): providers commonly reject an empty POST.
    let body = if method.params_in_query() {
        None
    } else {
        Some(Value::Object(rest))
    };
    Ok(PreparedRequest {
        method: method.as_http(),
        url,
        body,
    })
}

fn scalar_text(name: &str, value: &Value) -> Result<String, ToolError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ToolError::InvalidParams(format!(
            "params.{name} must be a string, number or boolean"
        ))),
    }
}

/// Why a provider call did not produce a result.
#[derive(Debug)]
pub enum SendError {
    /// The provider rejected the credential (401): the caller may refresh
    /// an OAuth token and retry once.
    Unauthorized,
    /// Any other failure, as the guest will see it.
    Tool(ToolError),
}

impl From<ToolError> for SendError {
    fn from(e: ToolError) -> Self {
        SendError::Tool(e)
    }
}

/// Sends a prepared request with the credential and maps the answer.
#[instrument(skip_all, fields(connector = %connector.spec.slug, method = %request.method, path = %request.url.path()))]
pub async fn send(
    client: &reqwest::Client,
    policy: &EgressPolicy,
    connector: &Connector,
    request: &PreparedRequest,
    credential: &Secret,
) -> Result<Value, SendError> {
    policy.check_url(&request.url).map_err(ToolError::Denied)?;
    let mut builder = client.request(request.method.clone(), request.url.clone());
    for (name, value) in &connector.spec.headers {
        builder = builder.header(name, value);
    }
    builder = match &connector.spec.auth {
        AuthScheme::Bearer => builder.bearer_auth(credential.expose()),
        AuthScheme::Header { name, prefix } => {
            builder.header(name, format!("{prefix}{}", credential.expose()))
        }
    };
    if let Some(body) = &request.body {
        builder = builder.json(body);
    }
    let mut response = builder.send().await.map_err(|e| {
        // reqwest errors carry the URL, never headers; keep only the kind.
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        ToolError::Unavailable(format!("{}: {what}", connector.spec.display_name))
    })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);

    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_PROVIDER_RESPONSE {
                    return Err(ToolError::Unavailable(format!(
                        "{} answered with more than {} bytes; ask for less (paging, filters)",
                        connector.spec.display_name, MAX_PROVIDER_RESPONSE
                    ))
                    .into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => {
                return Err(ToolError::Unavailable(format!(
                    "{}: response was cut off",
                    connector.spec.display_name
                ))
                .into());
            }
        }
    }
    let text = scrub(&String::from_utf8_lossy(&body), credential);

    if status.is_success() {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)));
    }
    match status.as_u16() {
        429 => Err(ToolError::RateLimited {
            retry_after_ms: u64::try_from(retry_after.unwrap_or(DEFAULT_RETRY_AFTER).as_millis())
                .unwrap_or(u64::MAX),
        }
        .into()),
        401 => Err(SendError::Unauthorized),
        code => Err(ToolError::Upstream {
            status: code,
            body: truncate(&text, MAX_ERROR_BODY),
        }
        .into()),
    }
}

/// Removes any echo of the credential from provider text before it reaches a
/// function, a log or an audit record.
fn scrub(text: &str, credential: &Secret) -> String {
    if credential.expose().len() < 4 {
        return text.to_string();
    }
    text.replace(credential.expose(), "[redacted]")
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (truncated)", text.get(..end).unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn path_params_are_encoded_and_cannot_move_the_request() {
        let catalog = Catalog::builtin().unwrap();
        let (c, t) = catalog.tool("GITHUB_CREATE_ISSUE").unwrap();
        let req = prepare(
            t,
            &c.base_url,
            &map(json!({"owner": "a/../../x?y#", "repo": "r", "title": "t"})),
        )
        .unwrap();
        assert_eq!(req.url.host_str(), Some("api.github.com"));
        assert_eq!(req.url.path(), "/repos/a%2F..%2F..%2Fx%3Fy%23/r/issues");
        assert_eq!(req.body, Some(json!({"title": "t"})));
        assert!(matches!(
            prepare(t, &c.base_url, &map(json!({"owner": "..", "repo": "r"}))),
            Err(ToolError::InvalidParams(_))
        ));
    }

    #[test]
    fn get_params_go_to_the_query_and_base_paths_are_kept() {
        let catalog = Catalog::builtin().unwrap();
        let (_, t) = catalog.tool("GITHUB_LIST_ISSUES").unwrap();
        let base: url::Url = "https://ghe.example.com/api/v3/".parse().unwrap();
        let req = prepare(
            t,
            &base,
            &map(json!({"owner": "o", "repo": "r", "state": "open", "per_page": 5})),
        )
        .unwrap();
        assert_eq!(
            req.url.as_str(),
            "https://ghe.example.com/api/v3/repos/o/r/issues?per_page=5&state=open"
        );
        assert!(req.body.is_none());
    }

    #[test]
    fn credentials_are_scrubbed_and_errors_truncated() {
        let s = Secret::new("tok_abcdef");
        assert_eq!(scrub("echo tok_abcdef!", &s), "echo [redacted]!");
        let long = "é".repeat(10);
        assert!(truncate(&long, 5).starts_with("éé"));
    }
}
