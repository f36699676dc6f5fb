//! Every weekday morning, file a digest of a repository's open pull
//! requests as a GitHub issue: a cron-triggered flow.
//!
//! The schedule and the repository live in `manifest.json`:
//!
//! ```json
//! "cron": [{ "schedule": "0 9 * * MON-FRI", "timezone": "Europe/Paris",
//!            "payload": { "repo": "your-org/your-repo", "staleAfterDays": 3 } }]
//! ```
//!
//! Each run receives the payload as the JSON body of a `POST` (with
//! `x-runtime-trigger: cron`), lists the open pull requests through the
//! brokered `GITHUB_LIST_PULL_REQUESTS`, and files one issue through
//! `GITHUB_CREATE_ISSUE` listing them, oldest first, with the ones waiting
//! longer than `staleAfterDays` marked. With no open pull request nothing
//! is filed. The function never holds a GitHub token; a failed tool call
//! answers non-2xx, so the scheduler records the error and retries.

use guest_sdk::http::{Request, Response};
use guest_sdk::{Error, integrations};
use serde::Deserialize;
use serde_json::{Value, json};

/// Pull requests listed per digest (GitHub's page size limit).
const MAX_PULLS: u64 = 100;
/// Default age, in days, after which a pull request is marked as waiting.
const DEFAULT_STALE_DAYS: u64 = 3;

/// The trigger's payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Payload {
    /// `owner/name` of the repository.
    repo: String,
    /// Age after which a pull request is marked as waiting.
    #[serde(default)]
    stale_after_days: Option<u64>,
}

/// One open pull request, as the digest shows it.
#[derive(Debug, PartialEq, Eq)]
struct Pull {
    number: u64,
    title: String,
    author: String,
    url: String,
    /// `YYYY-MM-DD` of creation.
    opened: String,
    /// Whole days since creation, at `today`.
    age_days: u64,
}

fn handle(request: Request) -> Response {
    let payload: Payload = match request.json() {
        Ok(p) => p,
        Err(e) => return Response::text(400, format!("payload must be {{\"repo\": \"owner/name\"}}: {e}\n")),
    };
    let Some((owner, repo)) = payload.repo.split_once('/') else {
        return Response::text(400, "payload.repo must be `owner/name`\n");
    };
    let scheduled_for = request
        .header("x-runtime-scheduled-for")
        .unwrap_or_default()
        .to_string();
    let today = scheduled_for.get(..10).unwrap_or("").to_string();

    let listed = integrations().execute(
        "GITHUB_LIST_PULL_REQUESTS",
        &json!({ "owner": owner, "repo": repo, "state": "open", "per_page": MAX_PULLS }),
    );
    let pulls = match listed {
        Ok(Value::Array(items)) => items.iter().filter_map(|p| pull(p, &today)).collect::<Vec<_>>(),
        Ok(other) => return Response::text(502, format!("unexpected answer from GitHub: {other}\n")),
        Err(e) => return failed("listing pull requests", &e),
    };
    if pulls.is_empty() {
        println!("no open pull requests in {owner}/{repo}; nothing filed");
        return Response::json(200, &json!({ "filed": false, "open": 0 }));
    }
    let stale = payload.stale_after_days.unwrap_or(DEFAULT_STALE_DAYS);
    let (title, body) = digest(&format!("{owner}/{repo}"), &today, &pulls, stale);
    match integrations().execute(
        "GITHUB_CREATE_ISSUE",
        &json!({ "owner": owner, "repo": repo, "title": title, "body": body, "labels": ["digest"] }),
    ) {
        Ok(created) => {
            println!("filed digest of {} pull requests", pulls.len());
            Response::json(
                201,
                &json!({ "filed": true, "open": pulls.len(), "issue": created.get("number").cloned().unwrap_or(Value::Null) }),
            )
        }
        Err(e) => failed("filing the digest", &e),
    }
}

guest_sdk::http_handler!(handle);

/// A tool error as a failed run: the scheduler records it and retries.
fn failed(doing: &str, e: &Error) -> Response {
    eprintln!("{doing} failed: {e}");
    let status = match e.kind() {
        "rate-limited" | "unavailable" | "upstream" => 503,
        _ => 500,
    };
    Response::json(status, &json!({ "error": e.kind(), "message": format!("{doing}: {e}") }))
}

/// Reads one pull request of GitHub's list answer.
fn pull(p: &Value, today: &str) -> Option<Pull> {
    let created = p.get("created_at")?.as_str()?;
    let opened = created.get(..10)?.to_string();
    Some(Pull {
        number: p.get("number")?.as_u64()?,
        title: p.get("title")?.as_str()?.to_string(),
        author: p.pointer("/user/login").and_then(Value::as_str).unwrap_or("someone").to_string(),
        url: p.get("html_url")?.as_str()?.to_string(),
        age_days: days_between(&opened, today).unwrap_or(0),
        opened,
    })
}

/// The issue title and markdown body of a digest.
fn digest(repo: &str, today: &str, pulls: &[Pull], stale_after: u64) -> (String, String) {
    let mut sorted: Vec<&Pull> = pulls.iter().collect();
    sorted.sort_by_key(|p| (std::cmp::Reverse(p.age_days), p.number));
    let waiting = sorted.iter().filter(|p| p.age_days > stale_after).count();
    let title = format!("Open pull requests in {repo} ({today}): {} open, {waiting} waiting", pulls.len());
    let mut body = format!(
        "{} open pull requests; {waiting} opened more than {stale_after} days ago are marked ⏳.\n\n",
        pulls.len()
    );
    for p in sorted {
        let mark = if p.age_days > stale_after { "⏳ " } else { "" };
        body.push_str(&format!(
            "- {mark}[#{}]({}) {} — @{}, opened {} ({} days)\n",
            p.number,
            p.url,
            p.title.replace(['\n', '\r'], " "),
            p.author,
            p.opened,
            p.age_days
        ));
    }
    body.push_str("\n_Filed by the pr-digest function on its schedule._\n");
    (title, body)
}

/// Days from `from` to `to` (both `YYYY-MM-DD`), by the proleptic
/// Gregorian calendar.
fn days_between(from: &str, to: &str) -> Option<u64> {
    let a = day_number(from)?;
    let b = day_number(to)?;
    u64::try_from(b - a).ok()
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn day_number(date: &str) -> Option<i64> {
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm, written from its description).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_across_months_and_leap_years() {
        assert_eq!(day_number("1970-01-01"), Some(0));
        assert_eq!(days_between("2024-02-28", "2024-03-01"), Some(2));
        assert_eq!(days_between("2026-11-20", "2026-11-22"), Some(2));
        assert_eq!(days_between("2026-11-22", "2026-11-20"), None);
    }

    #[test]
    fn the_digest_lists_oldest_first_and_marks_waiting_ones() {
        let p = |number, age_days| Pull {
            number,
            title: format!("PR {number}"),
            author: "dev".into(),
            url: format!("https://github.com/o/r/pull/{number}"),
            opened: "2026-11-01".into(),
            age_days,
        };
        let (title, body) = digest("o/r", "2026-11-22", &[p(2, 1), p(1, 10)], 3);
        assert_eq!(title, "Open pull requests in o/r (2026-11-22): 2 open, 1 waiting");
        let first = body.lines().nth(2).unwrap_or_default();
        assert!(first.starts_with("- ⏳ [#1]"), "{body}");
        assert!(body.contains("- [#2]"), "{body}");
    }
}
