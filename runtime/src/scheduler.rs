//! Cron scheduling: when a cron-triggered function runs, and what happens when
//! it fails, overruns, or the runtime was down.
//!
//! The module has three layers, each usable and tested on its own:
//!
//! 1. [`CronTrigger`] (what a manifest says) is validated into a [`Schedule`]
//!    once, at deploy: an expression that does not parse, an unknown time
//!    zone or a schedule that can never fire is refused with a message that
//!    says how to fix it. [`Schedule::next_after`] answers "when next?" in
//!    UTC, computed on the wall clock of the trigger's time zone.
//! 2. [`decide`] is the catch-up policy as a pure function of the schedule,
//!    the persisted last fire time and the current time: nothing due, fire
//!    now, or fire times were missed while nobody was looking.
//! 3. [`Scheduler`] runs one small tokio task per job that sleeps until the
//!    next fire time and hands runs to a [`Runner`]. Persistence goes through
//!    a [`ScheduleStore`] (an in-memory one is here; the sled one lives with
//!    the other stores) and wall-clock time through a [`Clock`], so tests
//!    drive everything with `tokio::time::pause` and never sleep.
//!
//! # Expressions
//!
//! Five fields (`minute hour day-of-month month day-of-week`) fire at second
//! 0; six fields put seconds first and a seventh names years, as the `cron`
//! crate parses them; `@daily`, `@hourly` and friends work too. Day-of-week
//! numbers follow Unix cron whatever the field count (0 and 7 are Sunday,
//! 1 is Monday), because the `cron` crate's own numbering (1 is Sunday)
//! would silently turn `0 17 * * 1-5` into Sunday-to-Thursday. Restricting
//! both the day of month and the day of week is refused: Unix cron fires
//! when *either* matches, the `cron` crate only when *both* do, and a user
//! cannot tell which one they get.
//!
//! # Daylight-saving time
//!
//! A schedule is evaluated on the local wall clock of its time zone, so
//! `0 9 * * *` in Europe/Berlin runs at 09:00 in winter and in summer. Clock
//! changes follow cron(8), which is what people who write cron expressions
//! expect:
//!
//! - Schedules with a fixed hour (`30 2 * * *`, `0 */6 * * *`) follow the
//!   wall clock. A time skipped by a spring-forward gap fires once, at the
//!   first instant after the gap (02:30 on the night Berlin jumps from 02:00
//!   to 03:00 fires at 03:00 CEST); several skipped times collapse into that
//!   one run. A time repeated by a fall-back change fires once, at its first
//!   occurrence.
//! - Schedules that fire every hour (`*/15 * * * *`, `0 * * * *`) follow
//!   elapsed time: a skipped wall-clock time is simply not there, and the
//!   repeated hour runs again, so a job every 15 minutes keeps running
//!   every 15 real minutes through both changes instead of pausing for an
//!   hour or bunching up.
//!
//! Offsets come from chrono-tz, which compiles the IANA database into the
//! binary, so every machine gives the same answers.
//!
//! # Running
//!
//! - At most one run of a job at a time. A fire time that finds the previous
//!   run still going is recorded as [`Outcome::Skipped`], not queued: a queue
//!   behind a slow job only grows.
//! - Each attempt has a deadline. The [`Runner`] is told it, and the
//!   scheduler also stops waiting at it and records [`Outcome::TimedOut`].
//! - A failed or timed-out attempt is retried with exponential backoff
//!   ([`RetryPolicy`]), unless the retry could still be running at the next
//!   fire time: then the fire supersedes it, so retries never cause skips.
//! - The fire time is persisted *before* the run starts. A crash during a
//!   run therefore never re-runs it on restart, let alone in a burst.
//! - After downtime, missed fire times are caught up with one run for the
//!   whole missed window ([`CatchUpPolicy::RunOnce`], the default), or
//!   skipped ([`CatchUpPolicy::Skip`]); never one run per missed time.
//! - A stop ([`Scheduler::drain`]) starts nothing new and waits for the runs
//!   in progress; those still going when the caller gives up are recorded
//!   as [`Outcome::Interrupted`], so no run vanishes from the history.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};
use cron::TimeUnitSpec;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle};

/// Longest cron expression accepted. Real ones are a few dozen characters;
/// the parser's work grows with the length and the text comes from a deploy
/// request.
pub const MAX_EXPRESSION_LEN: usize = 256;

/// Largest payload (serialized JSON) a trigger may carry. It is stored with
/// the job and handed to every run; it is for parameters, not data.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// How late a fire may be handled and still count as on time (the
/// scheduler's own latency, a busy machine). Later than this, the fire time
/// was missed and the [`CatchUpPolicy`] applies. Fire times that fall due
/// together within the grace are coalesced into one run.
pub const ON_TIME_GRACE: TimeDelta = TimeDelta::seconds(60);

/// Largest clock change handled as daylight-saving time: the window searched
/// for repeated local times. Real DST changes are one hour (30 minutes on
/// Lord Howe Island, two hours at the Troll station); cron(8) uses the same
/// three-hour bound.
const MAX_DST_SHIFT: TimeDelta = TimeDelta::hours(3);

/// Most calendar matches examined by one [`Schedule::next_after`] call. Only
/// a per-second schedule near a DST change needs more than a handful (about
/// 21 600); the bound keeps a pathological schedule from spinning.
const MAX_SCAN: usize = 100_000;

/// Longest the job loop sleeps before looking at the wall clock again, so a
/// clock correction or a suspended machine delays a fire by at most this.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Commands queued for one job (updates, manual triggers). They are rare
/// administrative calls; a full queue makes the caller wait.
const COMMAND_QUEUE: usize = 8;

/// How long [`Scheduler::drain`] still waits, after giving up on the runs in
/// progress, for those that were already writing their own record (a store
/// write: milliseconds).
const RECORD_WRITE_WAIT: Duration = Duration::from_secs(5);

/// Run records kept per job by [`MemoryScheduleStore`], oldest dropped
/// first: enough history for development without growing forever.
pub const MAX_MEMORY_RUNS_PER_JOB: usize = 1000;

const EXPRESSION_HELP: &str = "use 5 fields (minute hour day-of-month month day-of-week, \
     e.g. `0 17 * * MON-FRI` for 17:00 on weekdays) or 6 with seconds first \
     (`0 0 17 * * MON-FRI`); day-of-week numbers run 0-7 with 0 and 7 = Sunday";

const TIMEZONE_HELP: &str =
    "the time zone must be an IANA name like `Europe/Paris`, `America/New_York` or `UTC`";

/// A cron trigger as a function's manifest declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronTrigger {
    /// The cron expression: 5 fields (minute-level), 6 (seconds first) or
    /// 7 (seconds first, years last). See the [module docs](self).
    pub expression: String,
    /// IANA time zone the expression is read in; DST is applied there.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// JSON handed to every run of this trigger, so one function can serve
    /// several schedules (a daily and a weekly report, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

impl CronTrigger {
    /// A trigger in UTC without payload.
    pub fn new(expression: impl Into<String>) -> Self {
        Self {
            expression: expression.into(),
            timezone: default_timezone(),
            payload: None,
        }
    }

    /// The same trigger read in another time zone.
    pub fn in_timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    /// The same trigger with a payload.
    pub fn with_payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = Some(payload);
        self
    }
}

/// Why a [`CronTrigger`] was refused. Every message says how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The expression does not parse, or uses something we refuse.
    #[error("cron expression `{expression}` is invalid: {reason}; {help}", help = EXPRESSION_HELP)]
    InvalidExpression {
        /// The expression as written.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not in the IANA database.
    #[error("unknown time zone `{timezone}`{hint}: {help}", hint = did_you_mean(.suggestion), help = TIMEZONE_HELP)]
    UnknownTimeZone {
        /// The time zone as written.
        timezone: String,
        /// The IANA name it probably meant (same letters, other case).
        suggestion: Option<String>,
    },
    /// The expression parses but matches no future time.
    #[error(
        "cron expression `{expression}` never fires in {timezone}: no future date matches all of \
         its fields (day 30 in February, a year that has passed); check the day-of-month, month \
         and year fields"
    )]
    NeverFires {
        /// The expression as written.
        expression: String,
        /// The time zone it was read in.
        timezone: String,
    },
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error(
        "the trigger's payload is {size} bytes, more than the {max} allowed: pass parameters, and \
         keep data in the store"
    )]
    PayloadTooLarge {
        /// Serialized size of the payload.
        size: usize,
        /// [`MAX_PAYLOAD_BYTES`].
        max: usize,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|name| format!(" (did you mean `{name}`?)"))
        .unwrap_or_default()
}

/// How a schedule treats daylight-saving changes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DstRule {
    /// Fixed hours: skipped times fire once after the gap, repeated times
    /// fire once.
    WallClock,
    /// Every hour: fire whenever the local clock shows a matching time.
    Elapsed,
}

/// A validated cron trigger: knows its next fire times.
#[derive(Debug, Clone)]
pub struct Schedule {
    trigger: CronTrigger,
    cron: cron::Schedule,
    tz: Tz,
    dst: DstRule,
}

impl Schedule {
    /// Validates a trigger: the expression parses (see the module docs for
    /// the dialect), the time zone exists, the payload is small enough and
    /// the schedule fires at least once after the current time.
    pub fn parse(trigger: CronTrigger) -> Result<Self, ScheduleError> {
        let invalid = |reason: String| ScheduleError::InvalidExpression {
            expression: trigger.expression.clone(),
            reason,
        };
        if trigger.expression.len() > MAX_EXPRESSION_LEN {
            return Err(invalid(format!(
                "it is longer than {MAX_EXPRESSION_LEN} characters"
            )));
        }
        let normalized = normalize_expression(&trigger.expression).map_err(invalid)?;
        let cron = cron::Schedule::from_str(&normalized).map_err(|e| invalid(cron_reason(&e)))?;
        let tz = parse_timezone(&trigger.timezone)?;
        if let Some(payload) = &trigger.payload {
            let size = serde_json::to_string(payload).map_or(usize::MAX, |json| json.len());
            if size > MAX_PAYLOAD_BYTES {
                return Err(ScheduleError::PayloadTooLarge {
                    size,
                    max: MAX_PAYLOAD_BYTES,
                });
            }
        }
        let dst = if cron.hours().is_all() {
            DstRule::Elapsed
        } else {
            DstRule::WallClock
        };
        let schedule = Self {
            trigger,
            cron,
            tz,
            dst,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::NeverFires {
                expression: schedule.trigger.expression,
                timezone: schedule.trigger.timezone,
            });
        }
        Ok(schedule)
    }

    /// The trigger this schedule was built from.
    pub fn trigger(&self) -> &CronTrigger {
        &self.trigger
    }

    /// The time zone the expression is read in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `t`, or `None` if there is none
    /// (a schedule limited to past years, or beyond 2100).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.dst {
            DstRule::WallClock => self.next_wall_clock(t),
            DstRule::Elapsed => self.next_elapsed(t),
        }
    }

    /// The fire times after `t`, in order (for "next runs" displays).
    pub fn fires_after(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(t), move |&fire| self.next_after(fire))
    }

    /// Whether `other` fires at the same times (the payload may differ).
    fn same_times_as(&self, other: &Schedule) -> bool {
        self.trigger.expression == other.trigger.expression && self.tz == other.tz
    }

    /// Local wall-clock times matching the expression, strictly after
    /// `after`, in order. `Utc` stands in for "no time zone": it has no gaps
    /// and no repeats.
    fn local_matches(&self, after: NaiveDateTime) -> impl Iterator<Item = NaiveDateTime> + '_ {
        self.cron
            .after(&after.and_utc())
            .map(|at| at.naive_utc())
            .take(MAX_SCAN)
    }

    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.tz).naive_local()
    }

    /// Wall-clock rule: each matching local time maps to exactly one
    /// instant, and the mapping never goes backwards, so the first match
    /// after `t`'s local time that lands after `t` is the answer. (Matches
    /// in the second pass of a repeated hour land before `t` and are passed
    /// over.)
    fn next_wall_clock(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.local_matches(self.local(t))
            .filter_map(|local| self.wall_clock_instant(local))
            .find(|&at| at > t)
    }

    /// The instant a wall-clock schedule fires for local time `local`.
    fn wall_clock_instant(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
            // Repeated by a fall-back change: the first occurrence only.
            LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            // Skipped by a spring-forward change: the first instant after the gap.
            LocalResult::None => GapInfo::new(&local, &self.tz)?
                .end
                .map(|at| at.with_timezone(&Utc)),
        }
    }

    /// Elapsed rule: fire at every instant whose local time matches.
    fn next_elapsed(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let offset_at = |at: DateTime<Utc>| self.tz.offset_from_utc_datetime(&at.naive_utc()).fix();
        let offset = offset_at(t);
        let local = self.local(t);
        let first = self.local_matches(local).next()?;
        // Fast path: with the same offset from `t` to the candidate (checked
        // near both ends; DST changes are months apart and at most
        // MAX_DST_SHIFT), the local clock runs straight from `local` to
        // `first`, so nothing matches in between.
        let candidate = offset
            .from_local_datetime(&first)
            .single()?
            .with_timezone(&Utc);
        let unchanged = |at: Option<DateTime<Utc>>| at.is_some_and(|at| offset_at(at) == offset);
        if unchanged(t.checked_add_signed(MAX_DST_SHIFT))
            && unchanged(candidate.checked_sub_signed(MAX_DST_SHIFT))
            && unchanged(Some(candidate))
        {
            return Some(candidate);
        }
        // Near a change: a repeated hour can put a later instant on an
        // earlier local time, so scan local times from MAX_DST_SHIFT before
        // `t`'s until no instant can beat the best one found.
        let start = local.checked_sub_signed(MAX_DST_SHIFT + TimeDelta::seconds(1))?;
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        for local in self.local_matches(start) {
            if let Some((_, horizon)) = best
                && local > horizon
            {
                break;
            }
            let instants = match self.tz.from_local_datetime(&local) {
                LocalResult::Single(at) => [Some(at), None],
                LocalResult::Ambiguous(first, second) => [Some(first), Some(second)],
                LocalResult::None => [None, None],
            };
            for at in instants.into_iter().flatten() {
                let at = at.with_timezone(&Utc);
                if at > t && best.is_none_or(|(best, _)| at < best) {
                    let horizon = self.local(at).checked_add_signed(MAX_DST_SHIFT)?;
                    best = Some((at, horizon));
                }
            }
        }
        best.map(|(at, _)| at)
    }

    /// The latest fire time in `[floor, now]`, where `floor` is a fire time
    /// not after `now`. Looks back in doubling windows first, so a long
    /// downtime of a frequent schedule costs a few dozen steps, not one per
    /// missed fire.
    fn latest_fire_until(&self, floor: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut window = TimeDelta::minutes(1);
        let start = loop {
            let Some(from) = now.checked_sub_signed(window).filter(|&from| from > floor) else {
                break floor;
            };
            if let Some(fire) = self.next_after(from)
                && fire <= now
            {
                break fire;
            }
            match window.checked_mul(2) {
                Some(wider) => window = wider,
                None => break floor,
            }
        };
        self.fires_after(start)
            .take(MAX_SCAN)
            .take_while(|&fire| fire <= now)
            .last()
            .unwrap_or(start)
    }
}

/// The `cron` crate's reason for refusing an expression, without the echo of
/// the (normalized) input and the caret it prints above it.
fn cron_reason(error: &cron::error::Error) -> String {
    let message = error.to_string();
    let mut lines = message.lines();
    if !lines.any(|line| line.trim_start().starts_with('^')) {
        return message.replace('\n', " ");
    }
    let reason = lines.collect::<Vec<_>>().join(" ");
    let reason = reason.trim().trim_end_matches('.');
    if reason.is_empty() {
        "it is not a cron expression (the shorthands are @yearly, @monthly, @weekly, @daily \
         and @hourly)"
            .to_owned()
    } else {
        reason.to_owned()
    }
}

/// Splits the expression into fields, prepends seconds to a 5-field one and
/// rewrites the day-of-week field from Unix numbering into names.
fn normalize_expression(expression: &str) -> Result<String, String> {
    let expression = expression.trim();
    if expression.starts_with('@') {
        return Ok(expression.to_owned());
    }
    let mut fields: Vec<String> = expression.split_whitespace().map(str::to_owned).collect();
    match fields.len() {
        5 => fields.insert(0, "0".to_owned()),
        6 | 7 => {}
        1 => return Err("it has 1 field".to_owned()),
        n => return Err(format!("it has {n} fields")),
    }
    let [_, _, _, day_of_month, _, day_of_week, ..] = fields.as_mut_slice() else {
        return Err("it has too few fields".to_owned());
    };
    let restricted = |field: &str| !(field.starts_with('*') || field == "?");
    if restricted(day_of_month) && restricted(day_of_week) {
        return Err(format!(
            "it restricts both the day of month (`{day_of_month}`) and the day of week \
             (`{day_of_week}`), which cron dialects combine differently (either one or both \
             must match); restrict one and put `*` in the other"
        ));
    }
    *day_of_week = weekday_names(day_of_week)?;
    Ok(fields.join(" "))
}

const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Reads a day-of-week field with Unix numbering (0 and 7 = Sunday) and
/// writes it as names, which the `cron` crate reads unambiguously.
fn weekday_names(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let mut days: u8 = 0; // bit d set = weekday d, 0 = Sunday
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let step = step
                    .parse::<u8>()
                    .ok()
                    .filter(|step| (1..=7).contains(step))
                    .ok_or_else(|| format!("`{item}` needs a day-of-week step from 1 to 7"))?;
                (base, Some(step))
            }
            None => (item, None),
        };
        let (first, last) = match (base, base.split_once('-')) {
            ("*" | "?", _) => (0, 6),
            (_, Some((first, last))) => (weekday(first, false, item)?, weekday(last, true, item)?),
            // `MON/2` means from Monday to the end of the week.
            (_, None) if step.is_some() => (weekday(base, false, item)?, 6),
            (_, None) => {
                let day = weekday(base, false, item)?;
                (day, day)
            }
        };
        if first > last {
            return Err(format!(
                "the day-of-week range `{base}` runs backwards; list the days instead \
                 (e.g. `FRI,SAT,SUN,MON`)"
            ));
        }
        for day in (first..=last).step_by(usize::from(step.unwrap_or(1))) {
            days |= 1 << (day % 7);
        }
    }
    if days == 0b111_1111 {
        return Ok("*".to_owned());
    }
    let names: Vec<&str> = WEEKDAYS
        .iter()
        .enumerate()
        .filter(|(day, _)| days & (1 << day) != 0)
        .map(|(_, name)| *name)
        .collect();
    Ok(names.join(","))
}

/// One day of the week, Unix numbering. Sunday closing a range is 7, so
/// `SAT-SUN` means Saturday and Sunday.
fn weekday(text: &str, ends_range: bool, item: &str) -> Result<u8, String> {
    let day = match text.trim().to_ascii_lowercase().as_str() {
        "0" => 0,
        "sun" | "sunday" if !ends_range => 0,
        "1" | "mon" | "monday" => 1,
        "2" | "tue" | "tues" | "tuesday" => 2,
        "3" | "wed" | "wednesday" => 3,
        "4" | "thu" | "thur" | "thurs" | "thursday" => 4,
        "5" | "fri" | "friday" => 5,
        "6" | "sat" | "saturday" => 6,
        "7" | "sun" | "sunday" => 7,
        _ => {
            return Err(format!(
                "`{item}` is not a day of the week (use 0-7, where 0 and 7 are Sunday, or SUN-SAT)"
            ));
        }
    };
    Ok(day)
}

fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| {
        let suggestion = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(name.trim()))
            .map(|tz| tz.name().to_owned());
        ScheduleError::UnknownTimeZone {
            timezone: name.to_owned(),
            suggestion,
        }
    })
}

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

/// Everything the scheduler needs to know about one job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// When it fires, and the payload each run gets.
    pub schedule: Schedule,
    /// Retries of failed attempts.
    pub retry: RetryPolicy,
    /// Longest one attempt may take.
    pub deadline: Duration,
    /// What to do about fire times missed during downtime.
    pub catch_up: CatchUpPolicy,
}

impl JobSpec {
    /// A job with the default retry and catch-up policies.
    pub fn new(schedule: Schedule, deadline: Duration) -> Self {
        Self {
            schedule,
            retry: RetryPolicy::default(),
            deadline,
            catch_up: CatchUpPolicy::default(),
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// A fire time of the schedule.
    Cron,
    /// [`Scheduler::trigger_now`], for development.
    Manual,
    /// The one run for fire times missed during downtime.
    CatchUp,
}

/// What one attempt is told.
#[derive(Debug, Clone, PartialEq)]
pub struct RunContext {
    /// The id of this attempt's [`RunRecord`].
    pub run_id: String,
    /// What started the run.
    pub trigger: RunTrigger,
    /// The fire time this run is for (for a manual run, when it was asked).
    pub scheduled_for: DateTime<Utc>,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
    /// The trigger's payload.
    pub payload: Option<serde_json::Value>,
    /// How long the attempt may take. The scheduler stops waiting at this
    /// point and records it as timed out, so honour it as a hard limit.
    pub deadline: Duration,
}

/// What a [`Runner`] reports about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// `Err` with a message a person can act on if the run failed.
    pub result: Result<(), String>,
    /// The tools the run called, in order, for the run history.
    pub tool_calls: Vec<String>,
}

impl RunOutcome {
    /// A successful run.
    pub fn ok(tool_calls: Vec<String>) -> Self {
        Self {
            result: Ok(()),
            tool_calls,
        }
    }

    /// A failed run; it will be retried per the job's [`RetryPolicy`].
    pub fn error(message: impl Into<String>, tool_calls: Vec<String>) -> Self {
        Self {
            result: Err(message.into()),
            tool_calls,
        }
    }
}

/// Runs a job: in the server, instantiates the function and calls its
/// `scheduled` export through the one invocation path.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs one attempt of `job`.
    async fn run(&self, job: &str, ctx: RunContext) -> RunOutcome;
}

/// How a run (or a fire time without a run) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The run succeeded.
    Ok,
    /// The run failed; `error` says why.
    Error,
    /// No run: the previous one was still going, or a missed window was
    /// skipped by [`CatchUpPolicy::Skip`].
    Skipped,
    /// The run did not finish within its deadline.
    TimedOut,
    /// The runtime stopped before the run finished (its grace period ran
    /// out); it is not retried.
    Interrupted,
}

/// One entry of a job's run history: an attempt, or a fire time skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Unique id (16 hex digits).
    pub run_id: String,
    /// The job.
    pub job: String,
    /// What started it.
    pub trigger: RunTrigger,
    /// The fire time it was for.
    pub scheduled_for: DateTime<Utc>,
    /// When the attempt started (for a skip: when it was decided).
    pub started_at: DateTime<Utc>,
    /// When the attempt ended.
    pub ended_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed, timed out or was skipped.
    pub error: Option<String>,
    /// 1 for the first attempt, 2 for the first retry; 0 for a skip.
    pub attempt: u32,
    /// Tools called by the attempt, in order (empty when it timed out).
    pub tool_calls: Vec<String>,
}

/// A [`ScheduleStore`] backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend's own error.
    #[error("schedule store failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where the scheduler keeps what must survive a restart.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// The latest fire time of `job` that has been handled (run, skipped or
    /// declared missed), or when the job was first scheduled.
    async fn last_fire(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Records that every fire time of `job` up to `at` is handled. Must be
    /// durable when it returns: it is written before the run starts.
    async fn set_last_fire(&self, job: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Forgets `job`'s last fire time (the job was removed).
    async fn clear_last_fire(&self, job: &str) -> Result<(), StoreError>;
    /// Appends to `record.job`'s run history.
    async fn append_run(&self, record: RunRecord) -> Result<(), StoreError>;
    /// Up to `limit` most recent records of `job`, newest first.
    async fn recent_runs(&self, job: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
}

/// A [`ScheduleStore`] in memory, for tests and throwaway development.
#[derive(Debug, Default)]
pub struct MemoryScheduleStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    last_fire: HashMap<String, DateTime<Utc>>,
    runs: HashMap<String, VecDeque<RunRecord>>,
}

impl MemoryScheduleStore {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ScheduleStore for MemoryScheduleStore {
    async fn last_fire(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.state().last_fire.get(job).copied())
    }

    async fn set_last_fire(&self, job: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.state().last_fire.insert(job.to_owned(), at);
        Ok(())
    }

    async fn clear_last_fire(&self, job: &str) -> Result<(), StoreError> {
        self.state().last_fire.remove(job);
        Ok(())
    }

    async fn append_run(&self, record: RunRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        let runs = state.runs.entry(record.job.clone()).or_default();
        if runs.len() >= MAX_MEMORY_RUNS_PER_JOB {
            runs.pop_front();
        }
        runs.push_back(record);
        Ok(())
    }

    async fn recent_runs(&self, job: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        Ok(self
            .state()
            .runs
            .get(job)
            .map(|runs| runs.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default())
    }
}

/// Wall-clock time for the scheduler.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock: what the server uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that moves with tokio's clock: a fixed start plus the tokio
/// time elapsed since. Under `tokio::time::pause` it stands still until the
/// test advances time, so fire times are exact.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall_at_start: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `wall` now.
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            wall_at_start: wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        TimeDelta::from_std(self.start.elapsed())
            .ok()
            .and_then(|elapsed| self.wall_at_start.checked_add_signed(elapsed))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Why a [`Scheduler`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// No job with this id is scheduled.
    #[error("no scheduled job `{0}`: deploy a function with a cron trigger, or check the name")]
    UnknownJob(String),
    /// A manual trigger found a run in progress.
    #[error("job `{0}` is running; wait for the run to finish, then trigger it again")]
    AlreadyRunning(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs cron jobs: one task per job, driven by tokio time.
///
/// Cloning gives another handle to the same scheduler. Dropping the last
/// handle (or calling [`Scheduler::shutdown`]) stops every job; runs in
/// progress finish and are recorded.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

struct Shared {
    deps: Deps,
    jobs: Mutex<HashMap<String, JobHandle>>,
}

/// What every job task needs; cheap to clone.
#[derive(Clone)]
struct Deps {
    store: Arc<dyn ScheduleStore>,
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    in_flight: Arc<InFlight>,
}

/// The attempts in progress, across jobs, so a stop can wait for them and
/// record the ones it cuts off. An attempt's record is written by exactly
/// one side: the attempt claims its entry before writing, a stop takes the
/// unclaimed ones.
#[derive(Default)]
struct InFlight {
    runs: Mutex<HashMap<String, InFlightRun>>,
    /// Notified whenever an entry leaves `runs`.
    left: tokio::sync::Notify,
}

struct InFlightRun {
    /// The record to write if the run is cut off.
    record: RunRecord,
    /// The attempt is writing its own record.
    claimed: bool,
    /// Stops the attempt's task.
    abort: Option<tokio::task::AbortHandle>,
}

impl InFlight {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, InFlightRun>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The attempt `run_id` is about to write its record: false if a stop
    /// already recorded it as interrupted.
    fn claim(&self, run_id: &str) -> bool {
        match self.runs().get_mut(run_id) {
            Some(run) if !run.claimed => {
                run.claimed = true;
                true
            }
            _ => false,
        }
    }

    /// The attempt `run_id` is over and recorded.
    fn done(&self, run_id: &str) {
        self.runs().remove(run_id);
        self.left.notify_waiters();
    }

    /// Waits until no attempt is in progress, or `until` resolves.
    async fn wait_empty(&self, until: &mut (impl Future<Output = ()> + Unpin)) -> bool {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if self.runs().is_empty() {
                return true;
            }
            tokio::select! {
                () = &mut left => {}
                () = &mut *until => return false,
            }
        }
    }
}

struct JobHandle {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Command {
    Update(Box<JobSpec>),
    TriggerNow(oneshot::Sender<Result<String, SchedulerError>>),
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("jobs", &self.jobs())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler with no jobs yet.
    pub fn new(
        store: Arc<dyn ScheduleStore>,
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                deps: Deps {
                    store,
                    runner,
                    clock,
                    in_flight: Arc::default(),
                },
                jobs: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn jobs_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, JobHandle>> {
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Schedules `job`, or changes its spec.
    ///
    /// A job new to this scheduler resumes from its persisted last fire time,
    /// so the fire times it missed while the runtime was down are caught up
    /// per its [`CatchUpPolicy`]. When an existing job's times change, the
    /// new schedule starts from now: nothing is caught up under it.
    pub async fn upsert(&self, job: &str, spec: JobSpec) {
        let existing = self
            .jobs_map()
            .get(job)
            .map(|handle| handle.commands.clone());
        let spec = match existing {
            Some(commands) => match commands.send(Command::Update(Box::new(spec))).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(Command::Update(spec))) => *spec,
                Err(mpsc::error::SendError(Command::TriggerNow(_))) => return,
            },
            None => spec,
        };
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let job_loop = JobLoop {
            job: job.to_owned(),
            spec,
            deps: self.shared.deps.clone(),
            commands: receiver,
            last_fire: DateTime::<Utc>::MIN_UTC,
            next_fire: None,
            running: None,
            retry: None,
        };
        let task = tokio::spawn(job_loop.run());
        self.jobs_map()
            .insert(job.to_owned(), JobHandle { commands, task });
    }

    /// Stops scheduling `job` and forgets its last fire time (its run
    /// history stays). A run in progress finishes but is not retried.
    /// Returns whether the job was scheduled.
    pub async fn remove(&self, job: &str) -> Result<bool, SchedulerError> {
        let removed = self.jobs_map().remove(job).is_some();
        if removed {
            self.shared.deps.store.clear_last_fire(job).await?;
        }
        Ok(removed)
    }

    /// Runs `job` now, whatever its schedule (for development). The run is
    /// not retried, replaces a retry that is waiting, and does not move the
    /// job's last fire time. Returns the run id; the record appears in the
    /// history when the run ends.
    pub async fn trigger_now(&self, job: &str) -> Result<String, SchedulerError> {
        let commands = self
            .jobs_map()
            .get(job)
            .map(|handle| handle.commands.clone())
            .ok_or_else(|| SchedulerError::UnknownJob(job.to_owned()))?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::TriggerNow(reply))
            .await
            .map_err(|_| SchedulerError::UnknownJob(job.to_owned()))?;
        answer
            .await
            .map_err(|_| SchedulerError::UnknownJob(job.to_owned()))?
    }

    /// The most recent run records of `job`, newest first.
    pub async fn recent_runs(
        &self,
        job: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, SchedulerError> {
        Ok(self.shared.deps.store.recent_runs(job, limit).await?)
    }

    /// The scheduled jobs, sorted.
    pub fn jobs(&self) -> Vec<String> {
        let mut jobs: Vec<String> = self.jobs_map().keys().cloned().collect();
        jobs.sort();
        jobs
    }

    /// Stops every job. Runs in progress finish and are recorded.
    pub fn shutdown(&self) {
        self.jobs_map().clear();
    }

    /// Stops every job, as [`Scheduler::shutdown`], then waits for the runs in
    /// progress to finish and be recorded, until `give_up` resolves (the
    /// end of a grace period, a second stop signal). Runs still going then
    /// are stopped and recorded as [`Outcome::Interrupted`]. Returns how
    /// many were.
    pub async fn drain(&self, give_up: impl Future<Output = ()>) -> usize {
        self.shutdown();
        let in_flight = &self.shared.deps.in_flight;
        let mut give_up = std::pin::pin!(give_up);
        if in_flight.wait_empty(&mut give_up).await {
            return 0;
        }
        let cut: Vec<InFlightRun> = {
            let mut runs = in_flight.runs();
            let ids: Vec<String> = runs
                .iter()
                .filter(|(_, run)| !run.claimed)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| runs.remove(id)).collect()
        };
        let now = self.shared.deps.clock.now();
        for run in &cut {
            if let Some(abort) = &run.abort {
                abort.abort();
            }
            let mut record = run.record.clone();
            record.ended_at = now;
            tracing::warn!(job = %record.job, run_id = %record.run_id, "run interrupted by the stop");
            if let Err(error) = self.shared.deps.store.append_run(record).await {
                tracing::error!(%error, "cannot record an interrupted run");
            }
        }
        // Attempts that were writing their own record: let them finish.
        let mut write_wait = std::pin::pin!(tokio::time::sleep(RECORD_WRITE_WAIT));
        if !in_flight.wait_empty(&mut write_wait).await {
            tracing::error!("run records still being written when the scheduler stopped");
        }
        cut.len()
    }
}

/// One fire time being worked on.
#[derive(Debug, Clone, Copy)]
struct Fire {
    trigger: RunTrigger,
    scheduled_for: DateTime<Utc>,
    attempt: u32,
}

struct Running {
    fire: Fire,
    run_id: String,
    started_at: DateTime<Utc>,
    handle: JoinHandle<Outcome>,
}

struct PendingRetry {
    at: DateTime<Utc>,
    fire: Fire,
}

/// The task behind one job: sleeps until something is due, starts attempts
/// as tasks of their own and decides about retries when they end.
struct JobLoop {
    job: String,
    spec: JobSpec,
    deps: Deps,
    commands: mpsc::Receiver<Command>,
    /// Every fire time up to here is handled (mirrors the store).
    last_fire: DateTime<Utc>,
    /// The next fire time after `last_fire`.
    next_fire: Option<DateTime<Utc>>,
    running: Option<Running>,
    retry: Option<PendingRetry>,
}

impl JobLoop {
    async fn run(mut self) {
        self.last_fire = self.initial_last_fire().await;
        loop {
            let now = self.deps.clock.now();
            self.tick(now).await;
            if self.running.is_none()
                && let Some(retry) = self.retry.take_if(|retry| retry.at <= now)
            {
                self.start(retry.fire);
            }
            let wake = [self.next_fire, self.retry.as_ref().map(|retry| retry.at)]
                .into_iter()
                .flatten()
                .min()
                .and_then(|at| at.signed_duration_since(now).to_std().ok())
                .map_or(MAX_SLEEP, |wait| wait.min(MAX_SLEEP));
            tokio::select! {
                biased;
                ended = wait_for(&mut self.running) => self.attempt_ended(ended).await,
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => return,
                },
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    async fn initial_last_fire(&self) -> DateTime<Utc> {
        let now = self.deps.clock.now();
        match self.deps.store.last_fire(&self.job).await {
            Ok(Some(at)) => at,
            Ok(None) => {
                // Start the record now, so a downtime before the first fire
                // is caught up too.
                self.persist_last_fire(now).await;
                now
            }
            Err(error) => {
                tracing::error!(job = %self.job, %error, "cannot read the last fire time; starting from now");
                now
            }
        }
    }

    async fn persist_last_fire(&self, at: DateTime<Utc>) {
        if let Err(error) = self.deps.store.set_last_fire(&self.job, at).await {
            // Running anyway is the lesser evil: a restart catches up once.
            tracing::error!(job = %self.job, %error, "cannot persist the last fire time");
        }
    }

    /// Handles whatever fire time is due at `now`.
    async fn tick(&mut self, now: DateTime<Utc>) {
        let decision = decide(&self.spec.schedule, self.spec.catch_up, self.last_fire, now);
        match decision {
            Decision::Wait { next } => self.next_fire = next,
            Decision::Fire {
                scheduled_for,
                next,
            } => {
                self.next_fire = next;
                self.fire(RunTrigger::Cron, scheduled_for).await;
            }
            Decision::CatchUp { missed, next } => {
                tracing::warn!(job = %self.job, first = %missed.first, last = %missed.last, "fire times were missed; running once to catch up");
                self.next_fire = next;
                self.fire(RunTrigger::CatchUp, missed.last).await;
            }
            Decision::SkipMissed { missed, next } => {
                tracing::warn!(job = %self.job, first = %missed.first, last = %missed.last, "fire times were missed; skipping them");
                self.next_fire = next;
                self.last_fire = missed.last;
                self.persist_last_fire(missed.last).await;
                let reason = format!(
                    "fire times from {} to {} were missed while the scheduler was not running, \
                     and the job's catch-up policy is to skip them",
                    missed.first, missed.last
                );
                self.record_skip(RunTrigger::CatchUp, missed.last, reason)
                    .await;
            }
        }
    }

    async fn fire(&mut self, trigger: RunTrigger, scheduled_for: DateTime<Utc>) {
        self.last_fire = scheduled_for;
        self.persist_last_fire(scheduled_for).await;
        // A run that has already ended does not make this fire a skip.
        if self
            .running
            .as_ref()
            .is_some_and(|running| running.handle.is_finished())
        {
            let ended = wait_for(&mut self.running).await;
            self.attempt_ended(ended).await;
        }
        if let Some(running) = &self.running {
            let reason = format!(
                "the previous run (for {}) was still going",
                running.fire.scheduled_for
            );
            self.record_skip(trigger, scheduled_for, reason).await;
            return;
        }
        self.retry = None;
        self.start(Fire {
            trigger,
            scheduled_for,
            attempt: 1,
        });
    }

    async fn record_skip(&self, trigger: RunTrigger, scheduled_for: DateTime<Utc>, reason: String) {
        let now = self.deps.clock.now();
        tracing::warn!(job = %self.job, %scheduled_for, %reason, "fire skipped");
        let record = RunRecord {
            run_id: new_run_id(),
            job: self.job.clone(),
            trigger,
            scheduled_for,
            started_at: now,
            ended_at: now,
            outcome: Outcome::Skipped,
            error: Some(reason),
            attempt: 0,
            tool_calls: Vec::new(),
        };
        if let Err(error) = self.deps.store.append_run(record).await {
            tracing::error!(job = %self.job, %error, "cannot record a skipped fire");
        }
    }

    /// Starts an attempt as a task of its own; returns its run id.
    fn start(&mut self, fire: Fire) -> String {
        let run_id = new_run_id();
        let started_at = self.deps.clock.now();
        let deadline = self.spec.deadline;
        let ctx = RunContext {
            run_id: run_id.clone(),
            trigger: fire.trigger,
            scheduled_for: fire.scheduled_for,
            attempt: fire.attempt,
            payload: self.spec.schedule.trigger().payload.clone(),
            deadline,
        };
        let deps = self.deps.clone();
        let job = self.job.clone();
        let record_id = run_id.clone();
        // Registered before the task exists, so the task always finds it.
        deps.in_flight.runs().insert(
            run_id.clone(),
            InFlightRun {
                record: RunRecord {
                    run_id: run_id.clone(),
                    job: job.clone(),
                    trigger: fire.trigger,
                    scheduled_for: fire.scheduled_for,
                    started_at,
                    ended_at: started_at,
                    outcome: Outcome::Interrupted,
                    error: Some(
                        "the runtime stopped before the run finished (its shutdown grace period \
                         ran out); the run is not retried: run it again if it must complete"
                            .into(),
                    ),
                    attempt: fire.attempt,
                    tool_calls: Vec::new(),
                },
                claimed: false,
                abort: None,
            },
        );
        let handle = tokio::spawn(async move {
            let result = tokio::time::timeout(deadline, deps.runner.run(&job, ctx)).await;
            let (outcome, error, tool_calls) = match result {
                Ok(RunOutcome {
                    result: Ok(()),
                    tool_calls,
                }) => (Outcome::Ok, None, tool_calls),
                Ok(RunOutcome {
                    result: Err(message),
                    tool_calls,
                }) => (Outcome::Error, Some(message), tool_calls),
                Err(_) => (
                    Outcome::TimedOut,
                    Some(format!(
                        "the run did not finish within its deadline of {deadline:?}; make it \
                         faster or raise the function's deadline"
                    )),
                    Vec::new(),
                ),
            };
            let record = RunRecord {
                run_id: record_id.clone(),
                job,
                trigger: fire.trigger,
                scheduled_for: fire.scheduled_for,
                started_at,
                ended_at: deps.clock.now(),
                outcome,
                error,
                attempt: fire.attempt,
                tool_calls,
            };
            if !deps.in_flight.claim(&record.run_id) {
                // A stop recorded this run as interrupted already.
                return Outcome::Interrupted;
            }
            if let Err(error) = deps.store.append_run(record).await {
                tracing::error!(%error, "cannot record a run");
            }
            deps.in_flight.done(&record_id);
            outcome
        });
        if let Some(run) = self.deps.in_flight.runs().get_mut(&run_id) {
            run.abort = Some(handle.abort_handle());
        }
        self.running = Some(Running {
            fire,
            run_id: run_id.clone(),
            started_at,
            handle,
        });
        run_id
    }

    /// An attempt ended: schedule a retry if it failed and one fits.
    async fn attempt_ended(&mut self, ended: Result<Outcome, JoinError>) {
        let Some(running) = self.running.take() else {
            return;
        };
        let outcome = match ended {
            Ok(outcome) => outcome,
            Err(error) => {
                // The runner panicked: its task never wrote the record.
                if !self.deps.in_flight.claim(&running.run_id) {
                    return;
                }
                let record = RunRecord {
                    run_id: running.run_id.clone(),
                    job: self.job.clone(),
                    trigger: running.fire.trigger,
                    scheduled_for: running.fire.scheduled_for,
                    started_at: running.started_at,
                    ended_at: self.deps.clock.now(),
                    outcome: Outcome::Error,
                    error: Some(format!("the run crashed: {error}")),
                    attempt: running.fire.attempt,
                    tool_calls: Vec::new(),
                };
                if let Err(error) = self.deps.store.append_run(record).await {
                    tracing::error!(job = %self.job, %error, "cannot record a run");
                }
                self.deps.in_flight.done(&running.run_id);
                Outcome::Error
            }
        };
        let fire = running.fire;
        if matches!(outcome, Outcome::Ok | Outcome::Skipped)
            || fire.trigger == RunTrigger::Manual
            || fire.attempt > self.spec.retry.max_retries
        {
            return;
        }
        let backoff = self.spec.retry.backoff(fire.attempt);
        let Some(at) = TimeDelta::from_std(backoff)
            .ok()
            .and_then(|backoff| self.deps.clock.now().checked_add_signed(backoff))
        else {
            return;
        };
        // The retry must be over (deadline included) by the next fire time.
        let over_by = TimeDelta::from_std(self.spec.deadline)
            .ok()
            .and_then(|deadline| at.checked_add_signed(deadline));
        if let Some(next) = self.next_fire
            && over_by.is_none_or(|over_by| over_by > next)
        {
            tracing::info!(job = %self.job, %next, "retry dropped: it could overlap the next fire time");
            return;
        }
        self.retry = Some(PendingRetry {
            at,
            fire: Fire {
                attempt: fire.attempt.saturating_add(1),
                ..fire
            },
        });
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Update(spec) => {
                if !spec.schedule.same_times_as(&self.spec.schedule) {
                    // Nothing is caught up under a schedule that did not exist.
                    let now = self.deps.clock.now();
                    if now > self.last_fire {
                        self.last_fire = now;
                        self.persist_last_fire(now).await;
                    }
                    self.retry = None;
                }
                self.spec = *spec;
            }
            Command::TriggerNow(reply) => {
                let answer = if self.running.is_some() {
                    Err(SchedulerError::AlreadyRunning(self.job.clone()))
                } else {
                    self.retry = None;
                    Ok(self.start(Fire {
                        trigger: RunTrigger::Manual,
                        scheduled_for: self.deps.clock.now(),
                        attempt: 1,
                    }))
                };
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(answer);
            }
        }
    }
}

/// Waits for the running attempt, or forever if there is none.
async fn wait_for(running: &mut Option<Running>) -> Result<Outcome, JoinError> {
    match running {
        Some(running) => (&mut running.handle).await,
        None => std::future::pending().await,
    }
}

fn new_run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn schedule(expression: &str, timezone: &str) -> Schedule {
        Schedule::parse(CronTrigger::new(expression).in_timezone(timezone)).unwrap()
    }

    fn fires(schedule: &Schedule, after: &str, count: usize) -> Vec<DateTime<Utc>> {
        schedule.fires_after(at(after)).take(count).collect()
    }

    fn times(texts: &[&str]) -> Vec<DateTime<Utc>> {
        texts.iter().map(|text| at(text)).collect()
    }

    fn error_message(expression: &str, timezone: &str) -> String {
        Schedule::parse(CronTrigger::new(expression).in_timezone(timezone))
            .unwrap_err()
            .to_string()
    }

    // --- Parsing and validation ---

    #[test]
    fn five_fields_fire_at_second_zero_on_the_named_days() {
        let weekdays = schedule("0 17 * * MON-FRI", "UTC");
        // 2026-03-06 is a Friday.
        assert_eq!(
            fires(&weekdays, "2026-03-06T17:00:00Z", 2),
            times(&["2026-03-09T17:00:00Z", "2026-03-10T17:00:00Z"])
        );
    }

    #[test]
    fn weekday_numbers_are_unix_numbers() {
        let numbers = schedule("0 17 * * 1-5", "UTC");
        let names = schedule("0 17 * * MON-FRI", "UTC");
        assert_eq!(
            fires(&numbers, "2026-03-01T00:00:00Z", 10),
            fires(&names, "2026-03-01T00:00:00Z", 10)
        );
        // 2026-03-01 is a Sunday: 0 and 7 both mean Sunday.
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN"] {
            assert_eq!(
                fires(&schedule(sunday, "UTC"), "2026-02-28T00:00:00Z", 1),
                times(&["2026-03-01T09:00:00Z"]),
                "{sunday}"
            );
        }
        // A range may end on Sunday as 7 or SUN.
        for weekend in ["0 9 * * 6-7", "0 9 * * SAT-SUN", "0 9 * * 0,6"] {
            assert_eq!(
                fires(&schedule(weekend, "UTC"), "2026-03-02T00:00:00Z", 2),
                times(&["2026-03-07T09:00:00Z", "2026-03-08T09:00:00Z"]),
                "{weekend}"
            );
        }
        // Steps count from Sunday = 0: Sunday, Tuesday, Thursday, Saturday.
        assert_eq!(
            fires(&schedule("0 9 * * */2", "UTC"), "2026-03-01T10:00:00Z", 3),
            times(&[
                "2026-03-03T09:00:00Z",
                "2026-03-05T09:00:00Z",
                "2026-03-07T09:00:00Z"
            ])
        );
    }

    #[test]
    fn six_and_seven_fields_and_shorthands_are_accepted() {
        assert_eq!(
            fires(
                &schedule("*/20 * * * * *", "UTC"),
                "2026-03-01T00:00:05Z",
                3
            ),
            times(&[
                "2026-03-01T00:00:20Z",
                "2026-03-01T00:00:40Z",
                "2026-03-01T00:01:00Z"
            ])
        );
        assert_eq!(
            fires(
                &schedule("0 0 12 1 1 * 2090-2091", "UTC"),
                "2026-03-01T00:00:00Z",
                3
            ),
            times(&["2090-01-01T12:00:00Z", "2091-01-01T12:00:00Z"])
        );
        assert_eq!(
            fires(
                &schedule("@daily", "Europe/Paris"),
                "2026-03-01T12:00:00Z",
                1
            ),
            times(&["2026-03-01T23:00:00Z"])
        );
    }

    #[test]
    fn invalid_expressions_are_refused_with_the_fix() {
        for (expression, reason) in [
            ("0 17 * *", "it has 4 fields"),
            ("0 0 0 17 * * * *", "it has 8 fields"),
            ("61 * * * *", "Minutes"),
            ("0 17 * * MON-FRY", "is not a day of the week"),
            ("0 17 * * FRI-MON", "runs backwards"),
            ("0 9 1 * MON", "restricts both the day of month"),
            ("@reboot", "the shorthands are @yearly"),
        ] {
            let message = error_message(expression, "UTC");
            assert!(message.contains(reason), "{expression}: {message}");
            assert!(
                message.contains("use 5 fields (minute hour day-of-month month day-of-week"),
                "{message}"
            );
        }
        let long = "0 ".repeat(MAX_EXPRESSION_LEN);
        assert!(error_message(&long, "UTC").contains("longer than"));
    }

    #[test]
    fn unknown_time_zones_are_refused_with_the_fix() {
        let message = error_message("0 9 * * *", "Europe/Pariss");
        assert!(
            message.contains("unknown time zone `Europe/Pariss`"),
            "{message}"
        );
        assert!(
            message.contains("IANA name like `Europe/Paris`"),
            "{message}"
        );
        let message = error_message("0 9 * * *", "europe/paris");
        assert!(
            message.contains("did you mean `Europe/Paris`?"),
            "{message}"
        );
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        let error = Schedule::parse(CronTrigger::new("0 0 30 2 *")).unwrap_err();
        assert!(matches!(error, ScheduleError::NeverFires { .. }), "{error}");
        assert!(error.to_string().contains("never fires"), "{error}");
        let past = error_message("0 0 0 1 1 * 2020", "UTC");
        assert!(past.contains("never fires"), "{past}");
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let big = json!({ "blob": "x".repeat(MAX_PAYLOAD_BYTES) });
        let error = Schedule::parse(CronTrigger::new("0 9 * * *").with_payload(big)).unwrap_err();
        assert!(
            matches!(error, ScheduleError::PayloadTooLarge { .. }),
            "{error}"
        );
    }

    #[test]
    fn triggers_deserialize_with_utc_by_default_and_no_unknown_fields() {
        let trigger: CronTrigger =
            serde_json::from_value(json!({ "expression": "0 17 * * MON-FRI" })).unwrap();
        assert_eq!(trigger, CronTrigger::new("0 17 * * MON-FRI"));
        let trigger: CronTrigger = serde_json::from_value(json!({
            "expression": "0 17 * * *", "timezone": "Europe/Berlin", "payload": { "channel": "#team" }
        }))
        .unwrap();
        assert_eq!(trigger.payload, Some(json!({ "channel": "#team" })));
        let typo = serde_json::from_value::<CronTrigger>(json!({
            "expression": "0 17 * * *", "time_zone": "Europe/Berlin"
        }));
        assert!(typo.unwrap_err().to_string().contains("time_zone"));
    }

    // --- Daylight-saving time ---
    // 2026: Berlin springs forward on 29 March (02:00 CET -> 03:00 CEST, at
    // 01:00Z) and falls back on 25 October (03:00 CEST -> 02:00 CET, at
    // 01:00Z). New York springs forward on 8 March (02:00 EST -> 03:00 EDT,
    // at 07:00Z) and falls back on 1 November (02:00 EDT -> 01:00 EST, at
    // 06:00Z).

    #[test]
    fn fixed_times_keep_their_local_hour_across_dst() {
        let nine = schedule("0 9 * * *", "America/New_York");
        assert_eq!(
            fires(&nine, "2026-03-07T00:00:00Z", 2),
            times(&["2026-03-07T14:00:00Z", "2026-03-08T13:00:00Z"])
        );
        assert_eq!(
            fires(&nine, "2026-10-31T00:00:00Z", 2),
            times(&["2026-10-31T13:00:00Z", "2026-11-01T14:00:00Z"])
        );
    }

    #[test]
    fn a_time_skipped_by_spring_forward_fires_once_right_after_the_gap() {
        let berlin = schedule("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&berlin, "2026-03-27T12:00:00Z", 3),
            times(&[
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST, the end of the gap
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ])
        );
        let new_york = schedule("30 2 * * *", "America/New_York");
        assert_eq!(
            fires(&new_york, "2026-03-07T12:00:00Z", 2),
            times(&["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"])
        );
        // Several skipped times, and the end of the gap itself, are one run.
        let collapsed = schedule("0,30 2,3 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&collapsed, "2026-03-29T00:00:00Z", 2),
            times(&["2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"])
        );
    }

    #[test]
    fn a_time_repeated_by_fall_back_fires_once() {
        let berlin = schedule("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&berlin, "2026-10-24T00:00:00Z", 3),
            times(&[
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST, the first of two
                "2026-10-26T01:30:00Z", // 02:30 CET
            ])
        );
        let new_york = schedule("30 1 * * *", "America/New_York");
        assert_eq!(
            fires(&new_york, "2026-10-31T12:00:00Z", 2),
            times(&["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"])
        );
        // Asked from inside the second pass, the repeated time is over.
        assert_eq!(
            fires(&new_york, "2026-11-01T06:10:00Z", 1),
            times(&["2026-11-02T06:30:00Z"])
        );
    }

    #[test]
    fn hourly_schedules_run_on_elapsed_time_through_dst() {
        let half_hourly = schedule("*/30 * * * *", "Europe/Berlin");
        // Spring forward: 01:30 CET, then 03:00 CEST 30 minutes later.
        assert_eq!(
            fires(&half_hourly, "2026-03-29T00:00:00Z", 4),
            times(&[
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-29T02:00:00Z"
            ])
        );
        // Fall back: 02:00-02:30 run in CEST and again in CET.
        assert_eq!(
            fires(&half_hourly, "2026-10-24T23:45:00Z", 6),
            times(&[
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T01:30:00Z", // 02:30 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
                "2026-10-25T02:30:00Z",
            ])
        );
        // Asked from inside either pass of the repeated hour.
        assert_eq!(
            half_hourly.next_after(at("2026-10-25T00:40:00Z")),
            Some(at("2026-10-25T01:00:00Z"))
        );
        assert_eq!(
            half_hourly.next_after(at("2026-10-25T01:10:00Z")),
            Some(at("2026-10-25T01:30:00Z"))
        );
        let hourly = schedule("0 * * * *", "America/New_York");
        assert_eq!(
            fires(&hourly, "2026-11-01T04:30:00Z", 3),
            times(&[
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T06:00:00Z", // 01:00 EST
                "2026-11-01T07:00:00Z", // 02:00 EST
            ])
        );
        assert_eq!(
            fires(&hourly, "2026-03-08T06:30:00Z", 2),
            times(&["2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"]) // 03:00, 04:00 EDT
        );
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

    // --- The scheduler, on paused tokio time ---

    /// What the scripted runner does on its n-th call (1-based).
    type Script = Box<dyn Fn(u32) -> (Duration, RunOutcome) + Send + Sync>;

    struct ScriptedRunner {
        clock: Arc<TokioClock>,
        store: Arc<MemoryScheduleStore>,
        script: Script,
        calls: Mutex<Vec<Call>>,
    }

    #[derive(Debug, Clone)]
    struct Call {
        at: DateTime<Utc>,
        ctx: RunContext,
        last_fire_seen: Option<DateTime<Utc>>,
    }

    #[async_trait]
    impl Runner for ScriptedRunner {
        async fn run(&self, _job: &str, ctx: RunContext) -> RunOutcome {
            let last_fire_seen = self.store.last_fire("job").await.unwrap();
            let number = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Call {
                    at: self.clock.now(),
                    ctx,
                    last_fire_seen,
                });
                u32::try_from(calls.len()).unwrap()
            };
            let (takes, outcome) = (self.script)(number);
            tokio::time::sleep(takes).await;
            outcome
        }
    }

    struct Harness {
        scheduler: Scheduler,
        store: Arc<MemoryScheduleStore>,
        runner: Arc<ScriptedRunner>,
        clock: Arc<TokioClock>,
    }

    impl Harness {
        fn new(start: &str, script: Script) -> Self {
            Self::with_store(start, script, Arc::new(MemoryScheduleStore::default()))
        }

        fn with_store(start: &str, script: Script, store: Arc<MemoryScheduleStore>) -> Self {
            let clock = Arc::new(TokioClock::starting_at(at(start)));
            let runner = Arc::new(ScriptedRunner {
                clock: clock.clone(),
                store: store.clone(),
                script,
                calls: Mutex::new(Vec::new()),
            });
            let scheduler = Scheduler::new(store.clone(), runner.clone(), clock.clone());
            Self {
                scheduler,
                store,
                runner,
                clock,
            }
        }

        /// Lets tokio time run until the wall clock reads `until`.
        async fn run_until(&self, until: &str) {
            let wait = at(until).signed_duration_since(self.clock.now());
            tokio::time::sleep(wait.to_std().unwrap()).await;
        }

        fn calls(&self) -> Vec<Call> {
            self.runner.calls.lock().unwrap().clone()
        }

        fn call_times(&self) -> Vec<DateTime<Utc>> {
            self.calls().iter().map(|call| call.at).collect()
        }

        /// The run history, oldest fire (then attempt) first.
        async fn records(&self) -> Vec<RunRecord> {
            let mut records = self.store.recent_runs("job", 1000).await.unwrap();
            records.sort_by_key(|record| (record.scheduled_for, record.attempt));
            records
        }
    }

    fn quick_ok() -> Script {
        Box::new(|_| {
            (
                Duration::ZERO,
                RunOutcome::ok(vec!["SLACK_SEND_MESSAGE".into()]),
            )
        })
    }

    fn job(expression: &str, timezone: &str) -> JobSpec {
        JobSpec::new(schedule(expression, timezone), Duration::from_secs(30))
    }

    fn summary(records: &[RunRecord]) -> Vec<(DateTime<Utc>, RunTrigger, Outcome, u32)> {
        records
            .iter()
            .map(|r| (r.scheduled_for, r.trigger, r.outcome, r.attempt))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_right_instants_across_a_dst_change() {
        let harness = Harness::new("2026-03-27T12:00:00Z", quick_ok());
        let spec = JobSpec::new(
            Schedule::parse(
                CronTrigger::new("30 2 * * *")
                    .in_timezone("Europe/Berlin")
                    .with_payload(json!({ "channel": "#team-updates" })),
            )
            .unwrap(),
            Duration::from_secs(30),
        );
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-30T12:00:00Z").await;

        let expected = times(&[
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z",
        ]);
        assert_eq!(harness.call_times(), expected);
        for call in harness.calls() {
            assert_eq!(call.ctx.scheduled_for, call.at);
            assert_eq!(
                call.ctx.payload,
                Some(json!({ "channel": "#team-updates" }))
            );
            assert_eq!(call.ctx.deadline, Duration::from_secs(30));
            // Persisted before the run started.
            assert_eq!(call.last_fire_seen, Some(call.ctx.scheduled_for));
        }
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            expected
                .iter()
                .map(|&at| (at, RunTrigger::Cron, Outcome::Ok, 1))
                .collect::<Vec<_>>()
        );
        assert!(
            records
                .iter()
                .all(|r| r.started_at == r.scheduled_for && r.tool_calls == ["SLACK_SEND_MESSAGE"])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fire_that_finds_the_previous_run_going_is_skipped() {
        // The first run takes 150 s of a job that fires every minute.
        let slow_first: Script = Box::new(|call| {
            let takes = if call == 1 { 150 } else { 1 };
            (Duration::from_secs(takes), RunOutcome::ok(Vec::new()))
        });
        let harness = Harness::new("2026-03-10T12:00:30Z", slow_first);
        let spec = JobSpec {
            deadline: Duration::from_secs(600),
            ..job("* * * * *", "UTC")
        };
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-10T12:04:30Z").await;

        assert_eq!(
            harness.call_times(),
            times(&["2026-03-10T12:01:00Z", "2026-03-10T12:04:00Z"])
        );
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![
                (at("2026-03-10T12:01:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
                (
                    at("2026-03-10T12:02:00Z"),
                    RunTrigger::Cron,
                    Outcome::Skipped,
                    0
                ),
                (
                    at("2026-03-10T12:03:00Z"),
                    RunTrigger::Cron,
                    Outcome::Skipped,
                    0
                ),
                (at("2026-03-10T12:04:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
            ]
        );
        assert_eq!(records[0].ended_at, at("2026-03-10T12:03:30Z"));
        assert!(records[1].error.as_deref().unwrap().contains("still going"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_exponential_backoff() {
        let always_fails: Script = Box::new(|_| {
            (
                Duration::ZERO,
                RunOutcome::error("Slack said 503", Vec::new()),
            )
        });
        let harness = Harness::new("2026-03-10T08:00:00Z", always_fails);
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-10T10:00:00Z").await;

        assert_eq!(
            harness.call_times(),
            times(&[
                "2026-03-10T09:00:00Z",
                "2026-03-10T09:00:01Z",
                "2026-03-10T09:00:03Z",
                "2026-03-10T09:00:07Z",
            ])
        );
        let attempts: Vec<u32> = harness.calls().iter().map(|c| c.ctx.attempt).collect();
        assert_eq!(attempts, [1, 2, 3, 4]);
        let records = harness.records().await;
        assert_eq!(records.len(), 4);
        assert!(records.iter().all(|r| r.outcome == Outcome::Error
            && r.scheduled_for == at("2026-03-10T09:00:00Z")
            && r.error.as_deref() == Some("Slack said 503")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_attempt_is_recorded_and_retried() {
        let hangs_once: Script = Box::new(|call| {
            let takes = if call == 1 { 3600 } else { 1 };
            (Duration::from_secs(takes), RunOutcome::ok(Vec::new()))
        });
        let harness = Harness::new("2026-03-10T08:00:00Z", hangs_once);
        let spec = JobSpec {
            deadline: Duration::from_secs(5),
            ..job("0 9 * * *", "UTC")
        };
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-10T10:00:00Z").await;

        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![
                (
                    at("2026-03-10T09:00:00Z"),
                    RunTrigger::Cron,
                    Outcome::TimedOut,
                    1
                ),
                (at("2026-03-10T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 2),
            ]
        );
        assert_eq!(records[0].ended_at, at("2026-03-10T09:00:05Z"));
        assert!(records[0].error.as_deref().unwrap().contains("deadline"));
        assert_eq!(records[1].started_at, at("2026-03-10T09:00:06Z"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_would_overlap_the_next_fire_is_dropped() {
        let always_fails: Script =
            Box::new(|_| (Duration::ZERO, RunOutcome::error("boom", Vec::new())));
        let harness = Harness::new("2026-03-10T12:00:30Z", always_fails);
        let spec = JobSpec {
            retry: RetryPolicy {
                max_retries: 5,
                initial_backoff: Duration::from_secs(20),
                max_backoff: Duration::from_secs(3600),
            },
            ..job("* * * * *", "UTC")
        };
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-10T12:02:30Z").await;

        // 12:01:20 + 30 s deadline fits before 12:02; 12:02:00 would not.
        assert_eq!(
            harness.call_times(),
            times(&[
                "2026-03-10T12:01:00Z",
                "2026-03-10T12:01:20Z",
                "2026-03-10T12:02:00Z",
                "2026-03-10T12:02:20Z",
            ])
        );
        let records = harness.records().await;
        assert!(records.iter().all(|r| r.outcome == Outcome::Error));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_after_downtime_catches_up_once_then_runs_normally() {
        let store = Arc::new(MemoryScheduleStore::default());
        store
            .set_last_fire("job", at("2026-03-07T09:00:00Z"))
            .await
            .unwrap();
        let harness = Harness::with_store("2026-03-10T12:00:00Z", quick_ok(), store);
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-12T12:00:00Z").await;

        assert_eq!(
            harness.call_times(),
            times(&[
                "2026-03-10T12:00:00Z",
                "2026-03-11T09:00:00Z",
                "2026-03-12T09:00:00Z"
            ])
        );
        assert_eq!(
            summary(&harness.records().await),
            vec![
                (
                    at("2026-03-10T09:00:00Z"),
                    RunTrigger::CatchUp,
                    Outcome::Ok,
                    1
                ),
                (at("2026-03-11T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
                (at("2026-03-12T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
            ]
        );
        assert_eq!(
            harness.store.last_fire("job").await.unwrap(),
            Some(at("2026-03-12T09:00:00Z"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_scheduler_on_the_same_store_resumes_after_downtime() {
        let harness = Harness::new("2026-03-10T08:00:00Z", quick_ok());
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-10T10:00:00Z").await;
        harness.scheduler.shutdown();
        // Down for three days.
        harness.run_until("2026-03-13T12:00:00Z").await;
        let restarted = Scheduler::new(
            harness.store.clone(),
            harness.runner.clone(),
            harness.clock.clone(),
        );
        restarted.upsert("job", job("0 9 * * *", "UTC")).await;
        harness.run_until("2026-03-14T12:00:00Z").await;

        assert_eq!(
            summary(&harness.records().await),
            vec![
                (at("2026-03-10T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
                (
                    at("2026-03-13T09:00:00Z"),
                    RunTrigger::CatchUp,
                    Outcome::Ok,
                    1
                ),
                (at("2026-03-14T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_skip_policy_records_the_missed_window_without_running() {
        let store = Arc::new(MemoryScheduleStore::default());
        store
            .set_last_fire("job", at("2026-03-07T09:00:00Z"))
            .await
            .unwrap();
        let harness = Harness::with_store("2026-03-10T12:00:00Z", quick_ok(), store);
        let spec = JobSpec {
            catch_up: CatchUpPolicy::Skip,
            ..job("0 9 * * *", "UTC")
        };
        harness.scheduler.upsert("job", spec).await;
        harness.run_until("2026-03-11T12:00:00Z").await;

        assert_eq!(harness.call_times(), times(&["2026-03-11T09:00:00Z"]));
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![
                (
                    at("2026-03-10T09:00:00Z"),
                    RunTrigger::CatchUp,
                    Outcome::Skipped,
                    0
                ),
                (at("2026-03-11T09:00:00Z"), RunTrigger::Cron, Outcome::Ok, 1),
            ]
        );
        assert!(records[0].error.as_deref().unwrap().contains("missed"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_trigger_runs_now_once() {
        let fails_slowly: Script = Box::new(|_| {
            (
                Duration::from_secs(10),
                RunOutcome::error("boom", Vec::new()),
            )
        });
        let harness = Harness::new("2026-03-10T12:00:00Z", fails_slowly);
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;

        let run_id = harness.scheduler.trigger_now("job").await.unwrap();
        let again = harness.scheduler.trigger_now("job").await.unwrap_err();
        assert!(
            matches!(again, SchedulerError::AlreadyRunning(_)),
            "{again}"
        );
        let unknown = harness.scheduler.trigger_now("nope").await.unwrap_err();
        assert!(
            matches!(unknown, SchedulerError::UnknownJob(_)),
            "{unknown}"
        );
        harness.run_until("2026-03-10T13:00:00Z").await;

        // One attempt: manual runs are not retried.
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![(
                at("2026-03-10T12:00:00Z"),
                RunTrigger::Manual,
                Outcome::Error,
                1
            )]
        );
        assert_eq!(records[0].run_id, run_id);
        assert_eq!(harness.calls()[0].ctx.run_id, run_id);
        // The schedule is untouched: the next fire is still tomorrow's.
        assert_eq!(
            harness.store.last_fire("job").await.unwrap(),
            Some(at("2026-03-10T12:00:00Z"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn remove_stops_firing() {
        let harness = Harness::new("2026-03-10T12:00:30Z", quick_ok());
        harness
            .scheduler
            .upsert("job", job("* * * * *", "UTC"))
            .await;
        harness.run_until("2026-03-10T12:02:30Z").await;
        assert_eq!(harness.scheduler.jobs(), ["job"]);
        assert!(harness.scheduler.remove("job").await.unwrap());
        assert!(!harness.scheduler.remove("job").await.unwrap());
        harness.run_until("2026-03-10T12:10:00Z").await;

        assert_eq!(
            harness.call_times(),
            times(&["2026-03-10T12:01:00Z", "2026-03-10T12:02:00Z"])
        );
        assert!(harness.scheduler.jobs().is_empty());
        assert_eq!(harness.store.last_fire("job").await.unwrap(), None);
        assert_eq!(harness.records().await.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn changing_a_schedule_does_not_catch_up_under_the_new_one() {
        let harness = Harness::new("2026-03-10T08:00:00Z", quick_ok());
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-10T12:00:00Z").await;
        // 10:00 today has passed, but the new schedule did not exist then.
        harness
            .scheduler
            .upsert("job", job("0 10 * * *", "UTC"))
            .await;
        harness.run_until("2026-03-11T12:00:00Z").await;

        assert_eq!(
            harness.call_times(),
            times(&["2026-03-10T09:00:00Z", "2026-03-11T10:00:00Z"])
        );
    }

    fn slow_ok(takes: Duration) -> Script {
        Box::new(move |_| (takes, RunOutcome::ok(vec!["SLACK_SEND_MESSAGE".into()])))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_waits_for_the_run_in_progress_and_records_it() {
        let harness = Harness::new("2026-03-10T12:00:00Z", slow_ok(Duration::from_secs(20)));
        harness
            .scheduler
            .upsert("job", job("* * * * *", "UTC"))
            .await;
        let run_id = harness.scheduler.trigger_now("job").await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;

        let interrupted = harness
            .scheduler
            .drain(tokio::time::sleep(Duration::from_secs(60)))
            .await;
        assert_eq!(interrupted, 0);
        // It returned when the run ended, not at the end of the grace.
        assert_eq!(harness.clock.now(), at("2026-03-10T12:00:20Z"));
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![(
                at("2026-03-10T12:00:00Z"),
                RunTrigger::Manual,
                Outcome::Ok,
                1
            )]
        );
        assert_eq!(records[0].run_id, run_id);
        // Nothing fires after a stop.
        harness.run_until("2026-03-10T12:10:00Z").await;
        assert_eq!(harness.calls().len(), 1);
        assert!(harness.scheduler.jobs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_outlasting_the_grace_is_recorded_as_interrupted_once() {
        let harness = Harness::new("2026-03-10T12:00:00Z", slow_ok(Duration::from_secs(25)));
        harness
            .scheduler
            .upsert("job", job("0 9 * * *", "UTC"))
            .await;
        let run_id = harness.scheduler.trigger_now("job").await.unwrap();

        let interrupted = harness
            .scheduler
            .drain(tokio::time::sleep(Duration::from_secs(10)))
            .await;
        assert_eq!(interrupted, 1);
        assert_eq!(harness.clock.now(), at("2026-03-10T12:00:10Z"));
        // Past the moment the run would have ended: still one record.
        harness.run_until("2026-03-10T12:01:00Z").await;
        let records = harness.records().await;
        assert_eq!(
            summary(&records),
            vec![(
                at("2026-03-10T12:00:00Z"),
                RunTrigger::Manual,
                Outcome::Interrupted,
                1
            )]
        );
        assert_eq!(records[0].run_id, run_id);
        assert_eq!(records[0].ended_at, at("2026-03-10T12:00:10Z"));
        assert!(
            records[0]
                .error
                .as_deref()
                .unwrap()
                .contains("grace period"),
            "{records:?}"
        );
        assert_eq!(
            serde_json::to_value(Outcome::Interrupted).unwrap(),
            "interrupted"
        );
        // With nothing running, a stop returns at once.
        assert_eq!(harness.scheduler.drain(std::future::pending()).await, 0);
    }
}
