//! File a GitHub issue from a bug report.
//!
//! `POST` a JSON report:
//!
//! ```json
//! { "repo": "owner/name", "title": "Crash on save", "description": "...",
//!   "steps": ["Open a file", "Press save"], "severity": "high", "reporter": "alice" }
//! ```
//!
//! (`steps`, `severity` and `reporter` are optional.) The function validates
//! it, writes a markdown issue body and creates the issue through the
//! brokered `GITHUB_CREATE_ISSUE` tool, so it never holds a GitHub token.
//! It answers `201 {"issue": <number>, "url": <html_url>}`, or an error as
//! `{"error": <kind>, "message": <sentence>}`.

use guest_sdk::http::{Request, Response};
use guest_sdk::{Error, integrations};
use serde::Deserialize;
use serde_json::{Value, json};

/// The tool this function is granted in `manifest.json`.
const CREATE_ISSUE_TOOL: &str = "GITHUB_CREATE_ISSUE";

/// GitHub's own limit on an issue title, in characters.
const MAX_TITLE_CHARS: usize = 256;

/// GitHub's own limit on an issue body, in characters.
const MAX_BODY_CHARS: usize = 65_536;

/// At most this many reproduction steps; a report with more is probably not
/// written by a person.
const MAX_STEPS: usize = 50;

/// A reporter name longer than this is refused rather than pasted into the
/// issue.
const MAX_REPORTER_CHARS: usize = 100;

/// GitHub's limits on owner (user or organisation) and repository names.
const MAX_OWNER_CHARS: usize = 39;
/// See [`MAX_OWNER_CHARS`].
const MAX_REPO_CHARS: usize = 100;

/// The accepted severities, mildest first; each becomes a `severity:<s>`
/// label.
const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// The report as posted. Every field is optional here so that a missing one
/// gets a message naming it, instead of serde's generic one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    /// `owner/name` of the repository to file the issue in.
    repo: Option<String>,
    /// The issue title.
    title: Option<String>,
    /// What went wrong.
    description: Option<String>,
    /// How to reproduce it, one step per entry.
    #[serde(default)]
    steps: Vec<String>,
    /// One of [`SEVERITIES`].
    severity: Option<String>,
    /// Who reported it (a name or handle), for the issue body.
    reporter: Option<String>,
}

/// A validated report, ready to become an issue.
#[derive(Debug, PartialEq, Eq)]
struct Issue {
    /// Repository owner.
    owner: String,
    /// Repository name.
    repo: String,
    /// Issue title, trimmed.
    title: String,
    /// Markdown issue body.
    body: String,
    /// `bug`, plus `severity:<s>` when a severity was given.
    labels: Vec<String>,
}

/// A report that cannot be filed: which field and why.
#[derive(Debug, PartialEq, Eq)]
struct Invalid {
    /// The offending field, as named in the request JSON.
    field: &'static str,
    /// A sentence saying what is wrong and what is accepted.
    message: String,
}

impl Invalid {
    /// An error about `field`.
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Routes by method: only `POST` files a report.
fn handle(request: Request) -> Response {
    if request.method() != "POST" {
        return error_response(
            405,
            "method-not-allowed",
            "send the bug report as a JSON body with POST",
        )
        .with_header("allow", "POST");
    }
    let report: Report = match request.json() {
        Ok(report) => report,
        Err(err) => {
            return error_response(
                400,
                "invalid-request",
                &format!("the body must be a JSON bug report: {err}"),
            );
        }
    };
    let issue = match validate(report) {
        Ok(issue) => issue,
        Err(invalid) => {
            return Response::json(
                400,
                &json!({
                    "error": "invalid-request",
                    "field": invalid.field,
                    "message": invalid.message,
                }),
            );
        }
    };
    let params = json!({
        "owner": issue.owner,
        "repo": issue.repo,
        "title": issue.title,
        "body": issue.body,
        "labels": issue.labels,
    });
    match integrations().execute(CREATE_ISSUE_TOOL, &params) {
        Ok(created) => Response::json(
            201,
            &json!({
                "issue": created.get("number").cloned().unwrap_or(Value::Null),
                "url": created.get("html_url").cloned().unwrap_or(Value::Null),
            }),
        ),
        Err(err) => tool_error_response(&err),
    }
}

guest_sdk::http_handler!(handle);

/// Checks every field and builds the issue.
fn validate(report: Report) -> Result<Issue, Invalid> {
    let repo_field = required(report.repo, "repo")?;
    let (owner, repo) = parse_repo(&repo_field)?;

    let title = required(report.title, "title")?;
    if title.contains(['\r', '\n']) {
        return Err(Invalid::new("title", "`title` must be a single line"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(Invalid::new(
            "title",
            format!("`title` is longer than {MAX_TITLE_CHARS} characters"),
        ));
    }

    let description = required(report.description, "description")?;

    if report.steps.len() > MAX_STEPS {
        return Err(Invalid::new(
            "steps",
            format!("`steps` has more than {MAX_STEPS} entries"),
        ));
    }
    let steps: Vec<String> = report
        .steps
        .iter()
        // A step is one line of a numbered list: keep it on one line.
        .map(|step| step.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|step| !step.is_empty())
        .collect();

    let severity = match report.severity {
        None => None,
        Some(severity) => {
            let severity = severity.trim().to_ascii_lowercase();
            if !SEVERITIES.contains(&severity.as_str()) {
                return Err(Invalid::new(
                    "severity",
                    format!("`severity` must be one of {}", SEVERITIES.join(", ")),
                ));
            }
            Some(severity)
        }
    };

    let reporter = match report.reporter {
        None => None,
        Some(reporter) => {
            let reporter = reporter.split_whitespace().collect::<Vec<_>>().join(" ");
            if reporter.chars().count() > MAX_REPORTER_CHARS {
                return Err(Invalid::new(
                    "reporter",
                    format!("`reporter` is longer than {MAX_REPORTER_CHARS} characters"),
                ));
            }
            Some(reporter).filter(|reporter| !reporter.is_empty())
        }
    };

    let body = issue_body(
        &description,
        &steps,
        severity.as_deref(),
        reporter.as_deref(),
    );
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(Invalid::new(
            "description",
            format!("the issue body would be longer than GitHub's {MAX_BODY_CHARS} characters"),
        ));
    }

    let mut labels = vec!["bug".to_owned()];
    if let Some(severity) = &severity {
        labels.push(format!("severity:{severity}"));
    }
    Ok(Issue {
        owner,
        repo,
        title,
        body,
        labels,
    })
}

/// The trimmed value of a required string field.
fn required(value: Option<String>, field: &'static str) -> Result<String, Invalid> {
    match value.as_deref().map(str::trim) {
        Some(value) if !value.is_empty() => Ok(value.to_owned()),
        _ => Err(Invalid::new(field, format!("`{field}` is required"))),
    }
}

/// Splits `owner/name`, checking both parts against GitHub's naming rules.
fn parse_repo(value: &str) -> Result<(String, String), Invalid> {
    let malformed = || {
        Invalid::new(
            "repo",
            "`repo` must look like `owner/name` (letters, digits, `-`, `_` and `.`)",
        )
    };
    let (owner, name) = value.split_once('/').ok_or_else(malformed)?;
    let owner_ok = !owner.is_empty()
        && owner.len() <= MAX_OWNER_CHARS
        && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let name_ok = !name.is_empty()
        && name.len() <= MAX_REPO_CHARS
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if owner_ok && name_ok {
        Ok((owner.to_owned(), name.to_owned()))
    } else {
        Err(malformed())
    }
}

/// The markdown issue body: description, numbered steps, then the details.
fn issue_body(
    description: &str,
    steps: &[String],
    severity: Option<&str>,
    reporter: Option<&str>,
) -> String {
    let mut body = format!("## Description\n\n{description}\n");
    if !steps.is_empty() {
        body.push_str("\n## Steps to reproduce\n\n");
        for (number, step) in steps.iter().enumerate() {
            body.push_str(&format!("{}. {step}\n", number + 1));
        }
    }
    let mut details = Vec::new();
    if let Some(severity) = severity {
        details.push(format!("- **Severity:** {severity}\n"));
    }
    if let Some(reporter) = reporter {
        // In a code span so that `@name` does not notify anyone.
        let reporter = reporter.replace('`', "'");
        details.push(format!("- **Reported by:** `{reporter}`\n"));
    }
    if !details.is_empty() {
        body.push_str("\n## Details\n\n");
        body.push_str(&details.concat());
    }
    body.push_str("\n---\n_Filed by the bug-report function._\n");
    body
}

/// Maps a failed tool call to the answer for the caller.
fn tool_error_response(err: &Error) -> Response {
    let message = err.to_string();
    match err {
        Error::NotConnected(_) | Error::NeedsReconnect(_) => error_response(
            503,
            err.kind(),
            &format!(
                "GitHub is not available to this function: an administrator must configure \
                 (connect) the github toolkit. {message}"
            ),
        ),
        // The caller of this endpoint may be anyone: the scopes are named,
        // the link that would re-authorize the app's GitHub connection is
        // not (it is for the app's admin, who sees it in the audit tools).
        Error::InsufficientScope { missing, .. } => error_response(
            503,
            err.kind(),
            &format!(
                "the app's GitHub connection lacks the scopes {}; an administrator must approve them",
                missing.join(", ")
            ),
        ),
        Error::Denied(_) => error_response(403, err.kind(), &message),
        Error::InvalidParams(_) => error_response(400, err.kind(), &message),
        Error::RateLimited { retry_after_ms } => error_response(429, err.kind(), &message)
            .with_header("retry-after", retry_after_ms.div_ceil(1000).to_string()),
        Error::Upstream { status, .. } => Response::json(
            502,
            &json!({
                "error": err.kind(),
                "message": format!("GitHub refused the issue: {message}"),
                "providerStatus": status,
            }),
        ),
        _ => error_response(502, err.kind(), &message),
    }
}

/// `{"error": kind, "message": message}` with `status`.
fn error_response(status: u16, kind: &str, message: &str) -> Response {
    Response::json(status, &json!({ "error": kind, "message": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(value: Value) -> Report {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_full_report_becomes_a_tidy_issue() {
        let issue = validate(report(json!({
            "repo": "octo-org/demo.rs",
            "title": "  Crash on save ",
            "description": "The editor quits.",
            "steps": ["Open a file", "  ", "Press\nsave"],
            "severity": "High",
            "reporter": "@alice",
        })))
        .unwrap();
        assert_eq!(issue.owner, "octo-org");
        assert_eq!(issue.repo, "demo.rs");
        assert_eq!(issue.title, "Crash on save");
        assert_eq!(issue.labels, ["bug", "severity:high"]);
        assert_eq!(
            issue.body,
            "## Description\n\nThe editor quits.\n\n\
             ## Steps to reproduce\n\n1. Open a file\n2. Press save\n\n\
             ## Details\n\n- **Severity:** high\n- **Reported by:** `@alice`\n\n\
             ---\n_Filed by the bug-report function._\n"
        );
    }

    #[test]
    fn optional_fields_may_be_left_out() {
        let issue = validate(report(json!({
            "repo": "a/b", "title": "t", "description": "d",
        })))
        .unwrap();
        assert_eq!(issue.labels, ["bug"]);
        assert!(!issue.body.contains("Steps"));
        assert!(!issue.body.contains("Details"));
    }

    #[test]
    fn invalid_reports_name_the_field() {
        let cases = [
            (json!({"repo": "a/b", "description": "d"}), "title"),
            (
                json!({"repo": "a/b", "title": " ", "description": "d"}),
                "title",
            ),
            (json!({"title": "t", "description": "d"}), "repo"),
            (
                json!({"repo": "ab", "title": "t", "description": "d"}),
                "repo",
            ),
            (
                json!({"repo": "a/b/c", "title": "t", "description": "d"}),
                "repo",
            ),
            (
                json!({"repo": "a/..", "title": "t", "description": "d"}),
                "repo",
            ),
            (json!({"repo": "a/b", "title": "t"}), "description"),
            (
                json!({"repo": "a/b", "title": "t", "description": "d", "severity": "meh"}),
                "severity",
            ),
        ];
        for (value, field) in cases {
            let invalid = validate(report(value.clone())).unwrap_err();
            assert_eq!(invalid.field, field, "{value}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_value::<Report>(json!({"titel": "typo"})).is_err());
    }

    #[test]
    fn tool_errors_map_to_statuses() {
        let cases = [
            (Error::NotConnected("github".into()), 503),
            (Error::NeedsReconnect("github".into()), 503),
            (Error::Denied("no grant".into()), 403),
            (Error::InvalidParams("labels".into()), 400),
            (
                Error::RateLimited {
                    retry_after_ms: 1500,
                },
                429,
            ),
            (
                Error::Upstream {
                    status: 404,
                    body: "Not Found".into(),
                },
                502,
            ),
            (Error::Unavailable("timeout".into()), 502),
        ];
        for (err, status) in cases {
            assert_eq!(tool_error_response(&err).status(), status, "{err}");
        }
        // The link that would re-authorize the app's connection never
        // reaches an anonymous reporter.
        let scope = tool_error_response(&Error::InsufficientScope {
            missing: vec!["repo".into()],
            auth_url: Some("https://runtime.test/v1/integrations/connect?state=s3cret".into()),
        });
        assert_eq!(scope.status(), 503);
        let text = String::from_utf8_lossy(scope.body()).into_owned();
        assert!(text.contains("repo") && !text.contains("s3cret"), "{text}");
        let limited = tool_error_response(&Error::RateLimited {
            retry_after_ms: 1500,
        });
        assert_eq!(limited.header("retry-after"), Some("2"));
    }
}
