//! What the scheduler does when things go wrong: the catch-up policy for
//! fire times missed during downtime ([`decide`], a pure function of the
//! schedule, the persisted last fire time and now) and the retries of a
//! failed attempt ([`RetryPolicy`]). The overlap rule (a fire that finds
//! the previous run going is skipped) is applied by the job loop in
//! [`super`].

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::schedule::Schedule;

/// How late a fire may be handled and still count as on time (the
/// scheduler's own latency, a busy machine). Later than this, the fire time
/// was missed and the [`CatchUpPolicy`] applies. Fire times that fall due
/// together within the grace are coalesced into one run.
pub const ON_TIME_GRACE: TimeDelta = TimeDelta::seconds(60);

/// What to do about fire times missed while the scheduler was not running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUpPolicy {
    /// Run once for the whole missed window (never once per missed time),
    /// then carry on with the schedule.
    #[default]
    RunOnce,
    /// Record the missed window as skipped and carry on.
    Skip,
}

/// Fire times that passed without being handled in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissedWindow {
    /// The earliest missed fire time.
    pub first: DateTime<Utc>,
    /// The latest missed fire time; a catch-up run is scheduled for it.
    pub last: DateTime<Utc>,
}

/// What [`decide`] says to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due; wait until `next` (`None`: no fire time is left).
    Wait {
        /// The next fire time.
        next: Option<DateTime<Utc>>,
    },
    /// A fire time is due on time: run for it.
    Fire {
        /// The fire time to run for (the latest one, if several are due
        /// within [`ON_TIME_GRACE`]).
        scheduled_for: DateTime<Utc>,
        /// The fire time after it.
        next: Option<DateTime<Utc>>,
    },
    /// Fire times were missed and the policy is [`CatchUpPolicy::RunOnce`]:
    /// run once now, for `missed.last`.
    CatchUp {
        /// The missed fire times.
        missed: MissedWindow,
        /// The next fire time, after now.
        next: Option<DateTime<Utc>>,
    },
    /// Fire times were missed and the policy is [`CatchUpPolicy::Skip`].
    SkipMissed {
        /// The missed fire times.
        missed: MissedWindow,
        /// The next fire time, after now.
        next: Option<DateTime<Utc>>,
    },
}

/// The catch-up policy: given that every fire time up to `last_fire` has
/// been handled, what is due at `now`?
///
/// A fire time handled within [`ON_TIME_GRACE`] is on time
/// ([`Decision::Fire`]). Otherwise it was missed (the runtime was down, the
/// machine asleep) and `policy` decides between one catch-up run and none;
/// either way the next decision is about a fire time after `now`, so there
/// is never a burst.
pub fn decide(
    schedule: &Schedule,
    policy: CatchUpPolicy,
    last_fire: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Decision {
    let Some(first_due) = schedule.next_after(last_fire) else {
        return Decision::Wait { next: None };
    };
    if first_due > now {
        return Decision::Wait {
            next: Some(first_due),
        };
    }
    let last_due = schedule.latest_fire_until(first_due, now);
    let next = schedule.next_after(last_due);
    if now.signed_duration_since(first_due) <= ON_TIME_GRACE {
        return Decision::Fire {
            scheduled_for: last_due,
            next,
        };
    }
    let missed = MissedWindow {
        first: first_due,
        last: last_due,
    };
    match policy {
        CatchUpPolicy::RunOnce => Decision::CatchUp { missed, next },
        CatchUpPolicy::Skip => Decision::SkipMissed { missed, next },
    }
}

/// Retries of a failed or timed-out attempt, with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: no retries).
    pub max_retries: u32,
    /// Wait before the first retry; each further retry waits twice as long.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three retries after 1 s, 2 s and 4 s: enough for a flaky upstream,
    /// short enough to finish well before most next fire times.
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        2u32.checked_pow(retry.saturating_sub(1))
            .and_then(|factor| self.initial_backoff.checked_mul(factor))
            .map_or(self.max_backoff, |backoff| backoff.min(self.max_backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::schedule::CronTrigger;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn schedule(expression: &str, timezone: &str) -> Schedule {
        Schedule::parse(CronTrigger::new(expression).in_timezone(timezone)).unwrap()
    }

    // --- Catch-up policy ---

    #[test]
    fn nothing_due_means_wait_for_the_next_fire() {
        let daily = schedule("0 9 * * *", "UTC");
        assert_eq!(
            decide(
                &daily,
                CatchUpPolicy::RunOnce,
                at("2026-03-10T09:00:00Z"),
                at("2026-03-10T12:00:00Z")
            ),
            Decision::Wait {
                next: Some(at("2026-03-11T09:00:00Z"))
            }
        );
    }

    #[test]
    fn a_fire_handled_on_time_is_a_normal_fire() {
        let daily = schedule("0 9 * * *", "UTC");
        assert_eq!(
            decide(
                &daily,
                CatchUpPolicy::Skip,
                at("2026-03-09T09:00:00Z"),
                at("2026-03-10T09:00:30Z")
            ),
            Decision::Fire {
                scheduled_for: at("2026-03-10T09:00:00Z"),
                next: Some(at("2026-03-11T09:00:00Z"))
            }
        );
        // Fire times due together within the grace are one run.
        let ten_seconds = schedule("*/10 * * * * *", "UTC");
        assert_eq!(
            decide(
                &ten_seconds,
                CatchUpPolicy::RunOnce,
                at("2026-03-10T09:00:00Z"),
                at("2026-03-10T09:00:35Z")
            ),
            Decision::Fire {
                scheduled_for: at("2026-03-10T09:00:30Z"),
                next: Some(at("2026-03-10T09:00:40Z"))
            }
        );
    }

    #[test]
    fn missed_fires_run_once_or_are_skipped() {
        let daily = schedule("0 9 * * *", "UTC");
        let missed = MissedWindow {
            first: at("2026-03-08T09:00:00Z"),
            last: at("2026-03-10T09:00:00Z"),
        };
        let next = Some(at("2026-03-11T09:00:00Z"));
        let (last_fire, now) = (at("2026-03-07T09:00:00Z"), at("2026-03-10T12:00:00Z"));
        assert_eq!(
            decide(&daily, CatchUpPolicy::RunOnce, last_fire, now),
            Decision::CatchUp { missed, next }
        );
        assert_eq!(
            decide(&daily, CatchUpPolicy::Skip, last_fire, now),
            Decision::SkipMissed { missed, next }
        );
        // A single fire time missed by more than the grace is missed too.
        assert_eq!(
            decide(
                &daily,
                CatchUpPolicy::RunOnce,
                at("2026-03-09T09:00:00Z"),
                at("2026-03-10T09:05:00Z")
            ),
            Decision::CatchUp {
                missed: MissedWindow {
                    first: at("2026-03-10T09:00:00Z"),
                    last: at("2026-03-10T09:00:00Z")
                },
                next
            }
        );
    }

    #[test]
    fn a_long_downtime_of_a_frequent_schedule_is_one_window() {
        let every_second = schedule("* * * * * *", "Europe/Berlin");
        let decision = decide(
            &every_second,
            CatchUpPolicy::RunOnce,
            at("2026-01-01T00:00:00Z"),
            at("2026-03-10T12:34:56Z"),
        );
        assert_eq!(
            decision,
            Decision::CatchUp {
                missed: MissedWindow {
                    first: at("2026-01-01T00:00:01Z"),
                    last: at("2026-03-10T12:34:56Z")
                },
                next: Some(at("2026-03-10T12:34:57Z"))
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
        };
        let waits: Vec<u64> = (1..=6)
            .map(|retry| policy.backoff(retry).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(10));
    }
}
