//! Native encoders: values a template cannot express, computed from a tool
//! call's params (see `docs/connectors.md`). Holds the [`Encoder`] a tool
//! names in its definition and [`run`], which computes its outputs.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ToolError;

/// Native encoders that derive template values from params.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Encoder {
    /// An RFC 2822 message, base64url (`$raw`).
    Rfc2822,
    /// A LinkedIn author URN (`$author`).
    LinkedinAuthor,
}

/// Params the `rfc2822` encoder reads.
pub const RFC2822_INPUTS: &[&str] = &[
    "to",
    "cc",
    "bcc",
    "subject",
    "body",
    "html",
    "from",
    "replyTo",
    "inReplyTo",
    "references",
];

/// Runs `encoder` on `params`; the outputs are referenced as `{{$name}}`.
pub fn run(encoder: Encoder, params: &Map<String, Value>) -> Result<Map<String, Value>, ToolError> {
    let mut out = Map::new();
    match encoder {
        Encoder::Rfc2822 => {
            let message = rfc2822(params)?;
            out.insert(
                "raw".into(),
                Value::String(URL_SAFE_NO_PAD.encode(message.as_bytes())),
            );
        }
        Encoder::LinkedinAuthor => {
            let author = params
                .get("author")
                .and_then(Value::as_str)
                .ok_or_else(|| ToolError::InvalidParams("params.author is required".into()))?;
            let urn = if author.starts_with("urn:li:person:")
                || author.starts_with("urn:li:organization:")
            {
                author.to_string()
            } else if author.starts_with("urn:") {
                return Err(ToolError::InvalidParams(
                    "params.author must be a person id, or a urn:li:person: or urn:li:organization: URN".into(),
                ));
            } else {
                format!("urn:li:person:{author}")
            };
            out.insert("author".into(), Value::String(urn));
        }
    }
    Ok(out)
}

/// A header value from a param: a string, or an array of strings joined
/// with `, `. Line breaks are refused (header injection).
fn header_value(params: &Map<String, Value>, name: &str) -> Result<Option<String>, ToolError> {
    let text = match params.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let mut parts = Vec::new();
            for item in items {
                parts.push(item.as_str().ok_or_else(|| {
                    ToolError::InvalidParams(format!("params.{name} must hold strings"))
                })?);
            }
            parts.join(", ")
        }
        Some(_) => {
            return Err(ToolError::InvalidParams(format!(
                "params.{name} must be a string or an array of strings"
            )));
        }
    };
    if text.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(ToolError::InvalidParams(format!(
            "params.{name} must not contain line breaks"
        )));
    }
    Ok(Some(text))
}

/// An RFC 2047 encoded word for non-ASCII header text.
fn encode_word(text: &str) -> String {
    if text.is_ascii() {
        text.to_string()
    } else {
        format!("=?UTF-8?B?{}?=", STANDARD.encode(text.as_bytes()))
    }
}

/// Builds a MIME message with a base64 body (so any text survives
/// transport untouched).
fn rfc2822(params: &Map<String, Value>) -> Result<String, ToolError> {
    let mut message = String::new();
    let to = header_value(params, "to")?
        .ok_or_else(|| ToolError::InvalidParams("params.to is required".into()))?;
    let headers = [
        ("From", header_value(params, "from")?),
        ("To", Some(to)),
        ("Cc", header_value(params, "cc")?),
        ("Bcc", header_value(params, "bcc")?),
        ("Reply-To", header_value(params, "replyTo")?),
        ("In-Reply-To", header_value(params, "inReplyTo")?),
        ("References", header_value(params, "references")?),
    ];
    for (name, value) in headers {
        if let Some(v) = value {
            message.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let subject = header_value(params, "subject")?.unwrap_or_default();
    message.push_str(&format!("Subject: {}\r\n", encode_word(&subject)));
    message.push_str("MIME-Version: 1.0\r\n");
    let html = params.get("html").and_then(Value::as_bool).unwrap_or(false);
    let kind = if html { "text/html" } else { "text/plain" };
    message.push_str(&format!("Content-Type: {kind}; charset=UTF-8\r\n"));
    message.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
    let body = params
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let encoded = STANDARD.encode(body.as_bytes());
    let bytes = encoded.as_bytes();
    for line in bytes.chunks(76) {
        message.push_str(&String::from_utf8_lossy(line));
        message.push_str("\r\n");
    }
    Ok(message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn messages_are_mime_with_encoded_subjects() {
        let out = run(
            Encoder::Rfc2822,
            &params(json!({"to": ["a@x.com", "b@y.com"], "subject": "Résumé", "body": "hi"})),
        )
        .unwrap();
        let raw = URL_SAFE_NO_PAD
            .decode(out.get("raw").unwrap().as_str().unwrap())
            .unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert_eq!(
            text,
            "To: a@x.com, b@y.com\r\nSubject: =?UTF-8?B?UsOpc3Vtw6k=?=\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n"
        );
    }

    #[test]
    fn header_injection_is_refused() {
        let err = run(
            Encoder::Rfc2822,
            &params(json!({"to": "a@x.com\r\nBcc: evil@x.com", "subject": "s"})),
        )
        .unwrap_err();
        assert!(matches!(err, ToolError::InvalidParams(m) if m.contains("params.to")));
    }

    #[test]
    fn linkedin_authors_become_urns() {
        let urn = |a: &str| run(Encoder::LinkedinAuthor, &params(json!({"author": a})));
        assert_eq!(
            urn("abc").unwrap().get("author"),
            Some(&json!("urn:li:person:abc"))
        );
        assert_eq!(
            urn("urn:li:organization:5").unwrap().get("author"),
            Some(&json!("urn:li:organization:5"))
        );
        assert!(urn("urn:li:group:1").is_err());
    }
}
