//! The one place a credentialed request leaves the host, for tool calls
//! ([`crate::tools`]) and data platforms ([`crate::data`]) alike.
//!
//! In order: the egress policy checks the URL; the credential is presented
//! the way the connector declares ([`AuthScheme`]); the request is sent and a
//! transport failure is classified (refused by egress, timed out,
//! unreachable, cut off) without ever carrying a header; the answer is read
//! within a byte cap (gunzipped, within the same cap, when it says gzip);
//! every credential echoed in it is scrubbed; and the two statuses every
//! caller treats alike are mapped: 401 (the caller may refresh and retry
//! once) and 429 (rate limited, with the provider's `Retry-After`). Every
//! other status is the caller's to interpret.

use std::io::Read as _;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::catalog::AuthScheme;
use crate::egress::EgressPolicy;
use crate::error::ToolError;
use crate::secret::Secret;

/// Used when a provider says 429 without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest delay a provider's `Retry-After` is taken at: a function is told
/// at most this, so a broken or hostile header cannot park it for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Shortest credential scrubbed from answers; shorter ones would redact
/// ordinary text.
const MIN_SCRUBBED_LEN: usize = 4;

/// Where a request goes and how much of its answer is read.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The HTTP client (the egress policy's: no redirects, guarded DNS).
    pub client: &'a reqwest::Client,
    /// The egress rules the URL must pass.
    pub policy: &'a EgressPolicy,
    /// Who answers, as errors name it ("Slack", "Snowflake").
    pub name: &'a str,
    /// Largest answer read, after decompression.
    pub max_bytes: u64,
    /// What the caller can do about a larger answer, appended to the error.
    pub too_big_hint: &'a str,
}

/// An answer with a status the caller interprets (not 401 or 429).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers (pagination links, `Retry-After`).
    pub headers: http::HeaderMap,
    /// The body as text, credentials scrubbed.
    pub text: String,
}

impl Reply {
    /// The body as JSON: a JSON string when it is not JSON, null when empty.
    pub fn into_json(self) -> Value {
        if self.text.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.text).unwrap_or(Value::String(self.text))
    }
}

/// Why a request produced no [`Reply`].
#[derive(Debug)]
pub enum SendError {
    /// The provider rejected the credential (401): the caller may refresh
    /// an OAuth token and retry once.
    Unauthorized,
    /// The request may not have reached the provider, or its answer did not
    /// arrive whole (timeout, connection failure, cut off): an idempotent
    /// request may be sent again.
    Transient(ToolError),
    /// Anything else, as the guest will see it (egress refusal, 429, an
    /// answer over the cap).
    Tool(ToolError),
}

impl From<ToolError> for SendError {
    fn from(e: ToolError) -> Self {
        SendError::Tool(e)
    }
}

/// Longest `Retry-After` the host waits out itself for an idempotent call;
/// longer ones are returned to the function as `rate-limited`.
const MAX_RETRY_WAIT_MS: u64 = 2_000;

impl SendError {
    /// Whether an idempotent request may be sent again after this, and
    /// after how long: the provider was unreachable or cut the answer off,
    /// failed temporarily (500, 502, 503, 504), or asked for a short pause.
    pub fn retryable(&self) -> Option<Duration> {
        match self {
            SendError::Transient(_)
            | SendError::Tool(ToolError::Upstream {
                status: 500 | 502 | 503 | 504,
                ..
            }) => Some(Duration::ZERO),
            SendError::Tool(ToolError::RateLimited { retry_after_ms })
                if *retry_after_ms <= MAX_RETRY_WAIT_MS =>
            {
                Some(Duration::from_millis(*retry_after_ms))
            }
            _ => None,
        }
    }

    /// The error a caller reports when it does not retry. A 401 the caller
    /// could not recover from reads as the provider's refusal.
    pub fn into_tool_error(self, name: &str) -> ToolError {
        match self {
            SendError::Transient(e) | SendError::Tool(e) => e,
            SendError::Unauthorized => ToolError::Upstream {
                status: 401,
                body: format!("{name} refused the credential"),
            },
        }
    }
}

/// Reads `Retry-After` (RFC 9110, section 10.2.3) as a delay from `now`:
/// delta-seconds, or an HTTP-date (IMF-fixdate, or the obsolete RFC 850 and
/// asctime forms). A date in the past means no wait; every delay is capped
/// at [`MAX_RETRY_AFTER`]. `None`: no header, or one that reads as neither.
pub fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits: too many for a u64 is still just "very long".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The provider's `Retry-After` in milliseconds, or the default pause.
pub fn retry_after_ms(headers: &http::HeaderMap) -> u64 {
    u64::try_from(
        retry_after(headers, SystemTime::now())
            .unwrap_or(DEFAULT_RETRY_AFTER)
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// Adds `credential` to `builder` as `auth` declares.
fn present(
    builder: reqwest::RequestBuilder,
    auth: &AuthScheme,
    credential: &Secret,
) -> reqwest::RequestBuilder {
    match auth {
        AuthScheme::Bearer => builder.bearer_auth(credential.expose()),
        AuthScheme::Header { name, prefix } => {
            builder.header(name, format!("{prefix}{}", credential.expose()))
        }
        AuthScheme::Basic => {
            let (user, password) = credential
                .expose()
                .split_once(':')
                .unwrap_or((credential.expose(), ""));
            builder.basic_auth(user, Some(password))
        }
    }
}

impl Sender<'_> {
    /// Sends `method url` with the headers and body `build` adds, presenting
    /// `credential` as `auth` says; `also_scrub` names further secrets (a
    /// connection string behind a bearer) removed from the answer.
    pub async fn send(
        &self,
        method: http::Method,
        url: url::Url,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        auth: &AuthScheme,
        credential: &Secret,
        also_scrub: &[&Secret],
    ) -> Result<Reply, SendError> {
        let name = self.name;
        self.policy.check_url(&url).map_err(ToolError::Denied)?;
        let builder = build(self.client.request(method, url));
        let mut response = present(builder, auth, credential)
            .send()
            .await
            .map_err(|e| {
                if let Some(refused) = crate::egress::refusal(&e) {
                    return SendError::Tool(ToolError::Denied(refused.to_string()));
                }
                // reqwest errors carry the URL, never headers; keep only the kind.
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not be reached"
                } else {
                    "did not answer"
                };
                SendError::Transient(ToolError::Unavailable(format!(
                    "{name} {what}; try again later"
                )))
            })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let too_big = || {
            SendError::Tool(ToolError::Unavailable(format!(
                "{name} answered with more than {} bytes{}",
                self.max_bytes, self.too_big_hint
            )))
        };
        let mut raw = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if (raw.len() + chunk.len()) as u64 > self.max_bytes {
                        return Err(too_big());
                    }
                    raw.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    return Err(SendError::Transient(ToolError::Unavailable(format!(
                        "{name}'s answer was cut off; try again"
                    ))));
                }
            }
        }
        let gzip = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        if gzip {
            raw = gunzip(&raw, self.max_bytes).map_err(|e| match e {
                Gunzip::TooBig => too_big(),
                Gunzip::Corrupt => SendError::Tool(ToolError::Unavailable(format!(
                    "{name} sent a corrupt gzip answer"
                ))),
            })?;
        }
        let mut text = String::from_utf8_lossy(&raw).into_owned();
        for secret in std::iter::once(credential).chain(also_scrub.iter().copied()) {
            text = scrub(&text, secret);
        }
        match status {
            401 => Err(SendError::Unauthorized),
            429 => Err(ToolError::RateLimited {
                retry_after_ms: retry_after_ms(&headers),
            }
            .into()),
            _ => Ok(Reply {
                status,
                headers,
                text,
            }),
        }
    }
}

/// Removes any echo of `credential` from provider text before it reaches a
/// function, a log or an audit record.
fn scrub(text: &str, credential: &Secret) -> String {
    if credential.expose().len() < MIN_SCRUBBED_LEN {
        return text.to_string();
    }
    text.replace(credential.expose(), "[redacted]")
}

/// `text` cut to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (truncated)", text.get(..end).unwrap_or_default())
}

enum Gunzip {
    TooBig,
    Corrupt,
}

/// Decompresses a gzip body, refusing more than `max` bytes.
fn gunzip(raw: &[u8], max: u64) -> Result<Vec<u8>, Gunzip> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|_| Gunzip::Corrupt)?;
    if out.len() as u64 > max {
        return Err(Gunzip::TooBig);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn gzip_bodies_are_decoded_within_the_cap() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"{\"data\":[]}").unwrap();
        let raw = enc.finish().unwrap();
        assert_eq!(gunzip(&raw, 1024).ok().unwrap(), b"{\"data\":[]}");
        assert!(matches!(gunzip(&raw, 4), Err(Gunzip::TooBig)));
        assert!(matches!(gunzip(b"not gzip", 1024), Err(Gunzip::Corrupt)));
    }

    #[test]
    fn short_credentials_are_not_scrubbed() {
        assert_eq!(scrub("a b c", &Secret::new("b")), "a b c");
    }

    #[test]
    fn credentials_are_scrubbed_and_errors_truncated() {
        let s = Secret::new("tok_abcdef");
        assert_eq!(scrub("echo tok_abcdef!", &s), "echo [redacted]!");
        let long = "é".repeat(10);
        assert!(truncate(&long, 5).starts_with("éé"));
    }

    /// 1994-11-06T08:49:37Z, the date in RFC 9110's examples.
    fn rfc_now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn retry_after_of(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, value.parse().unwrap());
        retry_after(&headers, rfc_now())
    }

    #[test]
    fn retry_after_reads_delta_seconds_within_the_cap() {
        assert_eq!(retry_after(&http::HeaderMap::new(), rfc_now()), None);
        assert_eq!(retry_after_of("0"), Some(Duration::ZERO));
        assert_eq!(retry_after_of("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after_of(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_of("3600"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after_of("3601"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after_of("99999999999999999999999999"),
            Some(MAX_RETRY_AFTER)
        );
        for unreadable in ["", "-5", "1.5", "+3", "soon", "0x10"] {
            assert_eq!(retry_after_of(unreadable), None, "{unreadable:?}");
        }
    }

    #[test]
    fn retry_after_reads_http_dates_in_all_three_forms() {
        let ten = Some(Duration::from_secs(10));
        assert_eq!(retry_after_of("Sun, 06 Nov 1994 08:49:47 GMT"), ten);
        assert_eq!(retry_after_of("Sunday, 06-Nov-94 08:49:47 GMT"), ten);
        assert_eq!(retry_after_of("Sun Nov  6 08:49:47 1994"), ten);
        // Now, and in the past: no wait.
        assert_eq!(
            retry_after_of("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after_of("Sat, 05 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        // Far ahead: capped.
        assert_eq!(
            retry_after_of("Sun, 06 Nov 1994 09:49:38 GMT"),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            retry_after_of("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_RETRY_AFTER)
        );
        for unreadable in [
            "Sun, 06 Nov 1994 08:49:47",
            "Sun, 06 Nov 1994 08:49:47 +0100",
            "1994-11-06T08:49:47Z",
            "Sun, 32 Nov 1994 08:49:47 GMT",
        ] {
            assert_eq!(retry_after_of(unreadable), None, "{unreadable:?}");
        }
    }

    #[test]
    fn bodies_are_json_text_or_null() {
        let reply = |text: &str| Reply {
            status: 200,
            headers: http::HeaderMap::new(),
            text: text.into(),
        };
        assert_eq!(reply("  ").into_json(), Value::Null);
        assert_eq!(reply("{\"a\":1}").into_json(), serde_json::json!({"a": 1}));
        assert_eq!(reply("plain").into_json(), Value::String("plain".into()));
    }
}
