//! Every `x-runtime-*` header a function sees: the host sets them from the
//! typed [`Trigger`], and removes any a caller sent, here and nowhere else
//! (as Spin's `trigger-http/src/headers.rs` does for its `spin-*` headers).
//! The names are part of the contract with guests (the manifest docs and
//! the example functions read them); they never change.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use host_api::broker::Principal;

use crate::invoke::Trigger;

/// The prefix of every host-set header; none may come from outside.
pub const PREFIX: &str = "x-runtime-";
/// Who called: `admin`, `user`, `anonymous` or `cron`.
pub const PRINCIPAL: &str = "x-runtime-principal";
/// The verified end user's id, when a user called.
pub const USER: &str = "x-runtime-user";
/// What started a cron run: `cron`, `manual` or `catch_up`.
pub const TRIGGER: &str = "x-runtime-trigger";
/// The cron run's id (as in `GET .../runs`).
pub const RUN_ID: &str = "x-runtime-run-id";
/// The fire time the cron run is for (RFC 3339).
pub const SCHEDULED_FOR: &str = "x-runtime-scheduled-for";
/// 1 for a cron run's first attempt, 2 for its first retry, and so on.
pub const ATTEMPT: &str = "x-runtime-attempt";

/// Removes every `x-runtime-*` header `headers` carries, then sets the ones
/// the host owns for `trigger`.
pub fn set(headers: &mut HeaderMap, trigger: &Trigger) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(PREFIX))
        .cloned()
        .collect();
    for k in spoofed {
        headers.remove(k);
    }
    let principal = trigger.principal();
    let who = match &principal {
        Principal::Admin => "admin",
        Principal::User(_) => "user",
        Principal::Cron => "cron",
        _ => "anonymous",
    };
    headers.insert(PRINCIPAL, HeaderValue::from_static(who));
    if let Principal::User(user) = &principal
        && let Ok(v) = HeaderValue::from_str(user)
    {
        headers.insert(USER, v);
    }
    if let Trigger::Cron(run) = trigger {
        headers.insert(TRIGGER, HeaderValue::from_static(trigger.name()));
        if let Ok(v) = HeaderValue::from_str(&run.run_id) {
            headers.insert(RUN_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(&run.scheduled_for.to_rfc3339()) {
            headers.insert(SCHEDULED_FOR, v);
        }
        headers.insert(ATTEMPT, HeaderValue::from(run.attempt));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::invoke::CronRun;
    use crate::scheduler::RunTrigger;

    #[test]
    fn callers_cannot_set_host_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(PRINCIPAL, HeaderValue::from_static("admin"));
        headers.insert("x-runtime-anything", HeaderValue::from_static("x"));
        headers.insert("x-other", HeaderValue::from_static("kept"));
        set(&mut headers, &Trigger::Http(Principal::Anonymous));
        assert_eq!(headers.get(PRINCIPAL).unwrap(), "anonymous");
        assert!(headers.get("x-runtime-anything").is_none());
        assert!(headers.get(USER).is_none());
        assert_eq!(headers.get("x-other").unwrap(), "kept");
    }

    #[test]
    fn a_cron_run_names_itself() {
        let mut headers = HeaderMap::new();
        let run = CronRun {
            started_by: RunTrigger::CatchUp,
            run_id: "00ff".into(),
            scheduled_for: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            attempt: 2,
        };
        set(&mut headers, &Trigger::Cron(run));
        assert_eq!(headers.get(PRINCIPAL).unwrap(), "cron");
        assert_eq!(headers.get(TRIGGER).unwrap(), "catch_up");
        assert_eq!(headers.get(RUN_ID).unwrap(), "00ff");
        assert_eq!(
            headers.get(SCHEDULED_FOR).unwrap(),
            "1970-01-01T00:00:00+00:00"
        );
        assert_eq!(headers.get(ATTEMPT).unwrap(), "2");
    }
}
