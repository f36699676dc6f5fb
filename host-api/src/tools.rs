//! Turns a tool call into the provider's HTTP request and its answer into a
//! result or a typed error.
//!
//! The host, scheme and port always come from the connector (or the admin's
//! configured override); a parameter can fill a path segment but never change
//! where the request goes. The request is sent, with the credential, by
//! [`crate::outbound`], the one sender for tools and data platforms.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};
use tracing::instrument;

use std::collections::BTreeSet;

use crate::catalog::template::{self, Vars, render, value_text};
use crate::catalog::{
    Connector, Encoding, ErrorsSpec, Pagination, Tool, encoders, is_credential_header,
};
use crate::egress::EgressPolicy;
use crate::error::ToolError;
pub use crate::outbound::SendError;
use crate::outbound::{Sender, retry_after_ms, truncate};
use crate::secret::Secret;

/// Largest provider response passed back to a function; larger answers are
/// refused rather than buffered without bound.
pub const MAX_PROVIDER_RESPONSE: usize = 8 * 1024 * 1024;
/// How much of an error body is returned in `upstream` errors.
const MAX_ERROR_BODY: usize = 4 * 1024;

/// Characters escaped in a path segment: everything but unreserved ones, so
/// `/`, `?`, `#` and `..` in a parameter cannot change the path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A request body, encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `application/json`.
    Json(Value),
    /// `application/x-www-form-urlencoded` pairs.
    Form(Vec<(String, String)>),
    /// Bytes with their content type (raw, base64-decoded, multipart).
    Bytes {
        /// `Content-Type`.
        content_type: String,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// One provider request, ready to send.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    /// Method.
    pub method: http::Method,
    /// Full URL (never contains a credential).
    pub url: url::Url,
    /// Tool-specific headers (never credentials).
    pub headers: Vec<(String, String)>,
    /// Body, for body methods.
    pub body: Option<Body>,
    /// Whether repeating the request is harmless.
    pub idempotent: bool,
}

/// Builds the provider request for `tool` with `params` against `base_url`.
pub fn prepare(
    tool: &Tool,
    base_url: &url::Url,
    params: &Map<String, Value>,
) -> Result<PreparedRequest, ToolError> {
    if tool.proxy {
        return prepare_proxy(base_url, params);
    }
    let derived = match tool.spec.encoder {
        Some(encoder) => encoders::run(encoder, params)?,
        None => Map::new(),
    };
    let vars = Vars {
        params,
        derived: &derived,
    };
    let mut consumed: BTreeSet<String> = BTreeSet::new();
    let mut path = String::new();
    let mut template = tool.spec.path.as_str();
    while let Some(open) = template.find('{') {
        path.push_str(template.get(..open).unwrap_or_default());
        let after = template.get(open + 1..).unwrap_or_default();
        let close = after.find('}').unwrap_or(after.len());
        let name = after.get(..close).unwrap_or_default();
        let value = params.get(name).filter(|v| !v.is_null()).ok_or_else(|| {
            ToolError::InvalidParams(format!(
                "params.{name} is required (it is part of the URL path)"
            ))
        })?;
        let text = scalar_text(name, value)?;
        if text.is_empty() || text == "." || text == ".." {
            return Err(ToolError::InvalidParams(format!(
                "params.{name} must be a non-empty path segment"
            )));
        }
        path.push_str(&utf8_percent_encode(&text, SEGMENT).to_string());
        consumed.insert(name.to_string());
        template = after.get(close + 1..).unwrap_or_default();
    }
    path.push_str(template);
    let mut url = join(base_url, &path);

    let method = tool.spec.method;
    let request = tool.spec.request.as_ref();
    let mut query: Vec<(String, String)> = Vec::new();
    let mut headers = Vec::new();
    let mut body = None;
    if let Some(req) = request {
        if let Some(q) = &req.query {
            for (key, t) in q {
                template::referenced(t, &mut consumed);
                if let Some(v) = render(t, &vars) {
                    push_query(&mut query, key, &v)?;
                }
            }
        }
        for (name, t) in &req.headers {
            template::referenced(t, &mut consumed);
            if let Some(v) = render(t, &vars) {
                let text = match &v {
                    Value::String(s) => s.clone(),
                    // JSON in a header (Dropbox-API-Arg) must be ASCII:
                    // everything else is sent as \u escapes.
                    other => ascii_json(other),
                };
                if http::HeaderValue::from_str(&text).is_err() {
                    return Err(ToolError::InvalidParams(format!(
                        "the value for header {name} contains characters a header cannot carry"
                    )));
                }
                headers.push((name.clone(), text));
            }
        }
        if let Some(t) = &req.body {
            template::referenced(t, &mut consumed);
            if let Some(v) = render(t, &vars) {
                body = Some(encode_body(req.encoding, v, &headers)?);
            }
        }
    }
    if let Some(encoder) = tool.spec.encoder {
        match encoder {
            crate::catalog::Encoder::Rfc2822 => {
                consumed.extend(encoders::RFC2822_INPUTS.iter().map(|s| (*s).to_string()))
            }
            crate::catalog::Encoder::LinkedinAuthor => {
                consumed.insert("author".into());
            }
        }
    }
    let leftover: Map<String, Value> = params
        .iter()
        .filter(|(k, _)| !consumed.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let query_given = request.is_some_and(|r| r.query.is_some());
    let body_given = request.is_some_and(|r| r.body.is_some());
    if method.params_in_query() {
        if !query_given {
            for (key, value) in &leftover {
                push_query(&mut query, key, value)?;
            }
        }
    } else {
        let mut rest = leftover;
        if !query_given {
            for key in &tool.spec.query {
                if let Some(value) = rest.remove(key) {
                    push_query(&mut query, key, &value)?;
                }
            }
        }
        // Body methods carry a JSON object (`{}` when every parameter went
        // to the path or query): providers commonly reject an empty POST.
        if !body_given {
            body = Some(Body::Json(Value::Object(rest)));
        }
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query.iter());
    }
    Ok(PreparedRequest {
        method: method.as_http(),
        url,
        headers,
        body,
        idempotent: tool.spec.idempotent,
    })
}

/// `base_url` with `path` appended to its path, no query or fragment.
fn join(base_url: &url::Url, path: &str) -> url::Url {
    let base_path = base_url.path().trim_end_matches('/');
    let mut url = base_url.clone();
    url.set_path(&format!("{base_path}{path}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

fn push_query(
    query: &mut Vec<(String, String)>,
    key: &str,
    value: &Value,
) -> Result<(), ToolError> {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                query.push((key.to_string(), scalar_text(key, item)?));
            }
        }
        Value::Object(_) => query.push((key.to_string(), value.to_string())),
        other => query.push((key.to_string(), scalar_text(key, other)?)),
    }
    Ok(())
}

/// Compact JSON with every non-ASCII character as a `\uXXXX` escape.
fn ascii_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn content_type_of(headers: &[(String, String)]) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone())
}

fn encode_body(
    encoding: Encoding,
    value: Value,
    headers: &[(String, String)],
) -> Result<Body, ToolError> {
    let octets = || content_type_of(headers).unwrap_or_else(|| "application/octet-stream".into());
    match encoding {
        Encoding::Json => Ok(Body::Json(value)),
        Encoding::Form => {
            let Value::Object(map) = value else {
                return Err(ToolError::InvalidParams(
                    "the form body must be an object".into(),
                ));
            };
            let mut pairs = Vec::new();
            for (k, v) in map {
                match v {
                    Value::Null => {}
                    Value::String(s) => pairs.push((k, s)),
                    Value::Array(_) | Value::Object(_) => pairs.push((k, v.to_string())),
                    other => pairs.push((k, other.to_string())),
                }
            }
            Ok(Body::Form(pairs))
        }
        Encoding::Raw => Ok(Body::Bytes {
            content_type: octets(),
            data: value_text(&value).into_bytes(),
        }),
        Encoding::Base64 => Ok(Body::Bytes {
            content_type: octets(),
            data: decode_base64("content", &value_text(&value))?,
        }),
        Encoding::MultipartRelated | Encoding::MultipartForm => {
            let Value::Array(parts) = value else {
                return Err(ToolError::InvalidParams(
                    "the multipart body must be a list of parts".into(),
                ));
            };
            let form = encoding == Encoding::MultipartForm;
            let boundary = format!("runtime-{}", hex::encode(rand::random::<[u8; 12]>()));
            let mut data = Vec::new();
            for part in parts {
                data.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                let get = |k: &str| part.get(k).and_then(Value::as_str);
                if form {
                    let name = get("name").unwrap_or("file");
                    let mut disposition = format!("form-data; name=\"{}\"", quote(name));
                    if let Some(f) = get("filename") {
                        disposition.push_str(&format!("; filename=\"{}\"", quote(f)));
                    }
                    data.extend_from_slice(
                        format!("Content-Disposition: {disposition}\r\n").as_bytes(),
                    );
                }
                let (content_type, bytes) = if let Some(j) = part.get("json") {
                    (
                        "application/json; charset=UTF-8".to_string(),
                        j.to_string().into_bytes(),
                    )
                } else if let Some(t) = part.get("text") {
                    (
                        "text/plain; charset=UTF-8".to_string(),
                        value_text(t).into_bytes(),
                    )
                } else if let Some(b) = part.get("base64") {
                    (
                        "application/octet-stream".to_string(),
                        decode_base64("content", &value_text(b))?,
                    )
                } else {
                    continue;
                };
                let content_type = get("contentType")
                    .map(str::to_string)
                    .unwrap_or(content_type);
                if content_type.contains(['\r', '\n']) {
                    return Err(ToolError::InvalidParams(
                        "a content type must not contain line breaks".into(),
                    ));
                }
                data.extend_from_slice(format!("Content-Type: {content_type}\r\n\r\n").as_bytes());
                data.extend_from_slice(&bytes);
                data.extend_from_slice(b"\r\n");
            }
            data.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            let kind = if form { "form-data" } else { "related" };
            Ok(Body::Bytes {
                content_type: format!("multipart/{kind}; boundary={boundary}"),
                data,
            })
        }
    }
}

/// Escapes a multipart parameter value (quotes and line breaks).
fn quote(text: &str) -> String {
    text.replace(['\r', '\n'], " ").replace('"', "%22")
}

fn decode_base64(name: &str, text: &str) -> Result<Vec<u8>, ToolError> {
    use base64::Engine as _;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(compact.trim_end_matches('='))
        })
        .map_err(|_| ToolError::InvalidParams(format!("params.{name} is not valid base64")))
}

/// Builds a `<SLUG>_PROXY` request. The path is checked so that it stays
/// below the base URL; the host is never taken from the caller.
fn prepare_proxy(
    base_url: &url::Url,
    params: &Map<String, Value>,
) -> Result<PreparedRequest, ToolError> {
    let method = match params.get("method").and_then(Value::as_str) {
        Some("GET") => http::Method::GET,
        Some("POST") => http::Method::POST,
        Some("PUT") => http::Method::PUT,
        Some("PATCH") => http::Method::PATCH,
        Some("DELETE") => http::Method::DELETE,
        _ => {
            return Err(ToolError::InvalidParams(
                "params.method must be GET, POST, PUT, PATCH or DELETE".into(),
            ));
        }
    };
    let path = params
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let lower = path.to_ascii_lowercase();
    let bad = !path.starts_with('/')
        || path.starts_with("//")
        || path.contains("//")
        || path.contains(['?', '#', '\\', '@'])
        || path.chars().any(|c| c.is_control() || c == ' ')
        || lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.split('/').any(|seg| seg == "." || seg == "..");
    if bad {
        return Err(ToolError::InvalidParams(
            "params.path must be a path below the API base URL: starting with `/`, without `//`, `..`, `?`, `#`, `@`, backslashes or encoded dots and slashes (put query parameters in params.query)".into(),
        ));
    }
    let mut url = join(base_url, path);
    if url.host_str() != base_url.host_str()
        || url.port_or_known_default() != base_url.port_or_known_default()
    {
        return Err(ToolError::InvalidParams(
            "params.path must not change the host".into(),
        ));
    }
    if let Some(q) = params.get("query").and_then(Value::as_object) {
        let mut pairs = Vec::new();
        for (k, v) in q {
            push_query(&mut pairs, k, v)?;
        }
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs.iter());
        }
    }
    let mut headers = Vec::new();
    if let Some(h) = params.get("headers").and_then(Value::as_object) {
        for (name, value) in h {
            let value = value.as_str().unwrap_or_default();
            let forbidden = is_credential_header(name)
                || [
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "te",
                    "upgrade",
                ]
                .iter()
                .any(|f| name.eq_ignore_ascii_case(f));
            if forbidden
                || http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(ToolError::InvalidParams(format!(
                    "params.headers.{name} is not allowed (credential, hop-by-hop or malformed header)"
                )));
            }
            headers.push((name.clone(), value.to_string()));
        }
    }
    let body = match (&method, params.get("body")) {
        (&http::Method::GET | &http::Method::DELETE, Some(b)) if !b.is_null() => {
            return Err(ToolError::InvalidParams(
                "params.body is only for POST, PUT and PATCH".into(),
            ));
        }
        (&http::Method::GET | &http::Method::DELETE, _) => None,
        (_, Some(b)) => Some(Body::Json(b.clone())),
        (_, None) => Some(Body::Json(Value::Object(Map::new()))),
    };
    Ok(PreparedRequest {
        idempotent: method == http::Method::GET,
        method,
        url,
        headers,
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

/// A provider's successful answer.
#[derive(Debug)]
pub struct Answer {
    /// The body as JSON (a string if it is not JSON, null if empty).
    pub value: Value,
    /// Response headers (for `Link` pagination).
    pub headers: http::HeaderMap,
}

/// Sends a prepared request with the credential and maps the answer.
#[instrument(skip_all, fields(connector = %connector.spec.slug, method = %request.method, path = %request.url.path()))]
pub async fn send(
    client: &reqwest::Client,
    policy: &EgressPolicy,
    connector: &Connector,
    request: &PreparedRequest,
    credential: &Secret,
) -> Result<Answer, SendError> {
    let sender = Sender {
        client,
        policy,
        name: &connector.spec.display_name,
        max_bytes: MAX_PROVIDER_RESPONSE as u64,
        too_big_hint: "; ask for less (paging, filters)",
    };
    let build = |mut builder: reqwest::RequestBuilder| {
        for (name, value) in &connector.spec.headers {
            builder = builder.header(name, value);
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        match &request.body {
            None => builder,
            Some(Body::Json(v)) => builder.json(v),
            Some(Body::Form(pairs)) => builder.form(pairs),
            Some(Body::Bytes { content_type, data }) => builder
                .header(http::header::CONTENT_TYPE, content_type)
                .body(data.clone()),
        }
    };
    let reply = sender
        .send(
            request.method.clone(),
            request.url.clone(),
            build,
            &connector.spec.auth,
            credential,
            &[],
        )
        .await?;
    let status = reply.status;
    if !(200..300).contains(&status) {
        return Err(ToolError::Upstream {
            status,
            body: truncate(&reply.text, MAX_ERROR_BODY),
        }
        .into());
    }
    let headers = reply.headers.clone();
    let value = reply.into_json();
    if let Some(errors) = &connector.spec.errors
        && let Some(message) = failure_in_answer(errors, &value)
    {
        if errors.unauthorized.contains(&message) {
            return Err(SendError::Unauthorized);
        }
        if errors.rate_limited.contains(&message) {
            return Err(ToolError::RateLimited {
                retry_after_ms: retry_after_ms(&headers),
            }
            .into());
        }
        return Err(ToolError::Upstream {
            status,
            body: truncate(&message, MAX_ERROR_BODY),
        }
        .into());
    }
    Ok(Answer { value, headers })
}

/// The failure message of a 2xx answer that reports one.
fn failure_in_answer(errors: &ErrorsSpec, value: &Value) -> Option<String> {
    let message_at = |v: &Value, default: &str| -> String {
        let pointer = errors.message_pointer.as_deref().unwrap_or(default);
        match v.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => v.to_string(),
        }
    };
    if let Some(p) = &errors.ok_pointer
        && value.pointer(p) == Some(&Value::Bool(false))
    {
        return Some(message_at(value, "/error"));
    }
    if let Some(p) = &errors.errors_pointer
        && let Some(Value::Array(list)) = value.pointer(p)
        && let Some(first) = list.first()
    {
        return Some(message_at(first, "/message"));
    }
    None
}

/// Where the next page is.
#[derive(Debug)]
pub enum NextPage {
    /// Send the tool again with these params.
    Params(Map<String, Value>),
    /// Fetch this URL (same origin as the first request).
    Url(url::Url),
}

/// The items of one page.
pub fn page_items<'a>(pagination: &Pagination, value: &'a Value) -> Option<&'a Vec<Value>> {
    value.pointer(pagination.items()).and_then(Value::as_array)
}

/// Works out the next page from a page's answer, or `None` at the end.
pub fn next_page(
    pagination: &Pagination,
    params: &Map<String, Value>,
    request: &PreparedRequest,
    answer: &Answer,
) -> Option<NextPage> {
    let count = page_items(pagination, &answer.value).map_or(0, Vec::len);
    let same_origin = |url: url::Url| -> Option<NextPage> {
        (url.origin() == request.url.origin()).then_some(NextPage::Url(url))
    };
    match pagination {
        Pagination::Cursor {
            cursor_param,
            next_cursor,
            has_more,
            ..
        } => {
            if let Some(p) = has_more
                && answer.value.pointer(p) == Some(&Value::Bool(false))
            {
                return None;
            }
            let cursor = answer.value.pointer(next_cursor)?;
            let usable = match cursor {
                Value::String(s) => !s.is_empty(),
                Value::Number(_) => true,
                _ => false,
            };
            if !usable || count == 0 {
                return None;
            }
            let mut next = params.clone();
            next.insert(cursor_param.clone(), cursor.clone());
            Some(NextPage::Params(next))
        }
        Pagination::Link { .. } => {
            let header = answer.headers.get_all(http::header::LINK);
            let next = header
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .find(|link| {
                    link.split(';')
                        .skip(1)
                        .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
                })?;
            let target = next.split(';').next()?.trim();
            let target = target.strip_prefix('<')?.strip_suffix('>')?;
            same_origin(request.url.join(target).ok()?)
        }
        Pagination::NextUrl { next_url, .. } => {
            let target = answer.value.pointer(next_url)?.as_str()?;
            if target.is_empty() {
                return None;
            }
            same_origin(request.url.join(target).ok()?)
        }
        Pagination::Offset {
            offset_param,
            limit_param,
            default_limit,
            ..
        } => {
            let limit = params
                .get(limit_param)
                .and_then(Value::as_u64)
                .unwrap_or(*default_limit);
            if count == 0 || (count as u64) < limit {
                return None;
            }
            let offset = params
                .get(offset_param)
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let mut next = params.clone();
            next.insert(offset_param.clone(), Value::from(offset + count as u64));
            Some(NextPage::Params(next))
        }
        Pagination::Page {
            page_param,
            first_page,
            ..
        } => {
            if count == 0 {
                return None;
            }
            let page = params
                .get(page_param)
                .and_then(Value::as_u64)
                .unwrap_or(*first_page);
            let mut next = params.clone();
            next.insert(page_param.clone(), Value::from(page + 1));
            Some(NextPage::Params(next))
        }
    }
}

/// The first page's answer with the items of every page at its items
/// pointer.
pub fn merge_pages(pagination: &Pagination, mut first: Value, items: Vec<Value>) -> Value {
    let pointer = pagination.items();
    if pointer.is_empty() {
        return Value::Array(items);
    }
    if let Some(slot) = first.pointer_mut(pointer) {
        *slot = Value::Array(items);
    }
    first
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
        assert_eq!(req.body, Some(Body::Json(json!({"title": "t"}))));
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
    fn json_headers_are_ascii() {
        assert_eq!(
            ascii_json(&json!({"path": "/Résumé 😀.txt"})),
            r#"{"path":"/R\u00e9sum\u00e9 \ud83d\ude00.txt"}"#
        );
    }

    #[test]
    fn link_headers_lead_to_the_next_page_on_the_same_origin_only() {
        let pagination = Pagination::Link {
            items: String::new(),
        };
        let request = PreparedRequest {
            method: http::Method::GET,
            url: "https://api.github.com/repos/o/r/issues".parse().unwrap(),
            headers: vec![],
            body: None,
            idempotent: true,
        };
        let answer = |link: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::LINK, link.parse().unwrap());
            Answer {
                value: json!([1]),
                headers,
            }
        };
        let next = next_page(
            &pagination,
            &Map::new(),
            &request,
            &answer(
                r#"<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=9>; rel="last""#,
            ),
        );
        assert!(
            matches!(next, Some(NextPage::Url(u)) if u.as_str() == "https://api.github.com/repositories/1/issues?page=2")
        );
        let elsewhere = next_page(
            &pagination,
            &Map::new(),
            &request,
            &answer(r#"<https://evil.example/steal>; rel="next""#),
        );
        assert!(elsewhere.is_none());
    }

    #[test]
    fn proxy_paths_stay_below_the_base() {
        let catalog = Catalog::builtin().unwrap();
        let (c, t) = catalog.tool("GITHUB_PROXY").unwrap();
        let ok = prepare(
            t,
            &c.base_url,
            &map(json!({"method": "GET", "path": "/user/repos", "query": {"per_page": 2}})),
        )
        .unwrap();
        assert_eq!(
            ok.url.as_str(),
            "https://api.github.com/user/repos?per_page=2"
        );
        for bad in [
            "//evil.example/x",
            "/a/../b",
            "/a/%2E%2E/b",
            "/a%2fb",
            "/a\\b",
            "/x?y=1",
            "/@evil.example",
            "/a b",
        ] {
            assert!(
                prepare(t, &c.base_url, &map(json!({"method": "GET", "path": bad}))).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
