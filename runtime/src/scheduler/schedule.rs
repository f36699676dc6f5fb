//! What a schedule is: a manifest's [`CronTrigger`] validated into a
//! [`Schedule`] that answers "when next?" in UTC, read on the wall clock of
//! its time zone (the expression dialect and the daylight-saving rules are
//! in the [scheduler's docs](super)).

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};
use cron::TimeUnitSpec;
use serde::{Deserialize, Serialize};

/// Longest cron expression accepted. Real ones are a few dozen characters;
/// the parser's work grows with the length and the text comes from a deploy
/// request.
pub const MAX_EXPRESSION_LEN: usize = 256;

/// Largest payload (serialized JSON) a trigger may carry. It is stored with
/// the job and handed to every run; it is for parameters, not data.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Largest clock change handled as daylight-saving time: the window searched
/// for repeated local times. Real DST changes are one hour (30 minutes on
/// Lord Howe Island, two hours at the Troll station); cron(8) uses the same
/// three-hour bound.
const MAX_DST_SHIFT: TimeDelta = TimeDelta::hours(3);

/// Most calendar matches examined by one [`Schedule::next_after`] call. Only
/// a per-second schedule near a DST change needs more than a handful (about
/// 21 600); the bound keeps a pathological schedule from spinning.
const MAX_SCAN: usize = 100_000;

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
    pub(super) fn same_times_as(&self, other: &Schedule) -> bool {
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
    pub(super) fn latest_fire_until(
        &self,
        floor: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
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
}
