//! The request a handler receives and the response it returns.
//!
//! Both are plain, fully buffered values: the SDK reads the whole request
//! body before calling the handler and writes the whole response body after
//! it returns. That keeps handlers ordinary synchronous functions that can be
//! unit-tested natively by building a [`Request`] with [`Request::new`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest request body, in bytes, that the SDK reads into memory (16 MiB).
///
/// The host enforces its own, usually smaller, limit; this one exists so the
/// guest never allocates without bound even if the host's limit is raised or
/// missing, and so that a body the function could not hold anyway is refused
/// with `413 Payload Too Large` before the handler runs rather than ending in
/// an out-of-memory trap halfway through.
pub const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// An incoming HTTP request, with its body already read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method in upper case as sent (`GET`, `POST`, or an extension
    /// method verbatim).
    method: String,
    /// The request target: path plus optional `?query`. Always starts with
    /// `/` when it came from the host.
    path_with_query: String,
    /// Header fields in the order received; names as the host gave them
    /// (lower case for HTTP/2 and for wasmtime's host), values as raw bytes
    /// because HTTP allows non-UTF-8 values.
    headers: Vec<(String, Vec<u8>)>,
    /// The complete body; at most [`MAX_REQUEST_BODY`] bytes when built by
    /// the SDK.
    body: Vec<u8>,
}

impl Request {
    /// Builds a request with no headers and an empty body.
    ///
    /// The SDK builds requests itself; this constructor is for testing a
    /// handler natively:
    ///
    /// ```
    /// use guest_sdk::http::Request;
    ///
    /// let req = Request::new("POST", "/issues?dry_run=1")
    ///     .with_header("Content-Type", "application/json")
    ///     .with_body(br#"{"title":"crash"}"#.to_vec());
    /// assert_eq!(req.path(), "/issues");
    /// assert_eq!(req.query_param("dry_run").as_deref(), Some("1"));
    /// assert_eq!(req.header("content-type"), Some("application/json"));
    /// ```
    pub fn new(method: impl Into<String>, path_with_query: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            path_with_query: path_with_query.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Returns the request with one more header field appended.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Returns the request with its body replaced.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The HTTP method, e.g. `"GET"`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path and query as sent, e.g. `"/search?q=rust"`.
    pub fn path_with_query(&self) -> &str {
        &self.path_with_query
    }

    /// The path without the query, e.g. `"/search"`. Not percent-decoded.
    pub fn path(&self) -> &str {
        match self.path_with_query.split_once('?') {
            Some((path, _)) => path,
            None => &self.path_with_query,
        }
    }

    /// The raw query string after `?`, if there is one. Not percent-decoded.
    pub fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, query)| query)
    }

    /// The first value of query parameter `name`, percent-decoded (and with
    /// `+` read as a space, as HTML forms encode it).
    ///
    /// A parameter given without `=` (`?verbose`) has the value `""`. Bytes
    /// that do not decode to UTF-8 are replaced with U+FFFD.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| decode_query_component(key) == name)
            .map(|(_, value)| decode_query_component(value))
    }

    /// The first value of header `name` (compared case-insensitively), if it
    /// is present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// All header fields in the order received, values as raw bytes.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
    }

    /// The complete request body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    ///
    /// # Errors
    ///
    /// When the body is not valid UTF-8.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// The body parsed as JSON into `T`.
    ///
    /// # Errors
    ///
    /// When the body is not JSON or does not match `T`; the error's message
    /// names the line, column and (for a mismatch) the field, and is fit to
    /// return to the client in a `400` response.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space
/// and `%XX` a byte. A `%` not followed by two hex digits is kept as is.
fn decode_query_component(input: &str) -> String {
    let mut bytes = Vec::with_capacity(input.len());
    let mut rest = input.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => match rest {
                [high, low, after @ ..] => match (hex_value(*high), hex_value(*low)) {
                    (Some(high), Some(low)) => {
                        bytes.push((high << 4) | low);
                        rest = after;
                    }
                    _ => bytes.push(b'%'),
                },
                _ => bytes.push(b'%'),
            },
            other => bytes.push(other),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The value of one ASCII hex digit.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The HTTP response a handler returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code; the SDK answers `500` instead if it is outside
    /// `100..=599`.
    status: u16,
    /// Header fields in the order they will be sent.
    headers: Vec<(String, String)>,
    /// The complete body.
    body: Vec<u8>,
}

impl Response {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// An `application/json` response with `value` serialized as its body.
    ///
    /// If `value` cannot be serialized (a map with non-string keys, or a
    /// `Serialize` impl that fails), the result is a `500` text response
    /// saying so, rather than a panic.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(status)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(err) => Self::text(
                500,
                format!("the function's response could not be serialized as JSON: {err}\n"),
            ),
        }
    }

    /// Returns the response with one more header field appended.
    ///
    /// Names and values are checked by the host when the response is sent;
    /// an invalid or forbidden one makes the SDK answer `500` and log why.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Returns the response with its body replaced.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// All header fields in the order they will be sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Splits the response into its parts, for the SDK's serving code.
    pub(crate) fn into_parts(self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        (self.status, self.headers, self.body)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_split_at_first_question_mark() {
        let req = Request::new("GET", "/a/b?x=1&y=2?z");
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query(), Some("x=1&y=2?z"));
        assert_eq!(req.query_param("y").as_deref(), Some("2?z"));

        let bare = Request::new("GET", "/only");
        assert_eq!(bare.path(), "/only");
        assert_eq!(bare.query(), None);
        assert_eq!(bare.query_param("x"), None);
    }

    #[test]
    fn query_params_are_decoded() {
        let req = Request::new("GET", "/?q=hello+w%C3%B6rld&flag&bad=%zz%4&first=1&first=2");
        assert_eq!(req.query_param("q").as_deref(), Some("hello wörld"));
        assert_eq!(req.query_param("flag").as_deref(), Some(""));
        assert_eq!(req.query_param("bad").as_deref(), Some("%zz%4"));
        assert_eq!(req.query_param("first").as_deref(), Some("1"));
        assert_eq!(req.query_param("missing"), None);
    }

    #[test]
    fn headers_are_case_insensitive_and_utf8_only() {
        let req = Request::new("GET", "/")
            .with_header("X-Thing", "one")
            .with_header("x-thing", "two")
            .with_header("x-binary", vec![0xff, 0xfe]);
        assert_eq!(req.header("x-THING"), Some("one"));
        assert_eq!(req.header("x-binary"), None);
        assert_eq!(req.headers().count(), 3);
    }

    #[test]
    fn body_helpers() {
        let req = Request::new("POST", "/").with_body(br#"{"a": 1}"#.to_vec());
        assert_eq!(req.text().ok(), Some(r#"{"a": 1}"#));
        let value: serde_json::Value = req.json().unwrap();
        assert_eq!(value["a"], 1);
        assert!(req.json::<Vec<u8>>().is_err());
    }

    #[test]
    fn response_constructors_set_content_type() {
        let text = Response::text(201, "hi");
        assert_eq!(text.status(), 201);
        assert_eq!(
            text.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(text.body(), b"hi");

        let json = Response::json(200, &serde_json::json!({"ok": true}));
        assert_eq!(json.header("content-type"), Some("application/json"));
        assert_eq!(json.body(), br#"{"ok":true}"#);

        let mut bad_map = std::collections::HashMap::new();
        bad_map.insert(vec![1u8], 1);
        assert_eq!(Response::json(200, &bad_map).status(), 500);
    }
}
