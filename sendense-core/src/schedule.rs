//! When scheduled work is due: standard five-field cron expressions (minute, hour, day of
//! month, month, day of week — names like `MON` and `JAN` allowed; a restricted day of month
//! and day of week match either, as in Vixie cron) and the shortcuts `@hourly`, `@daily`,
//! `@midnight`, `@weekly`, `@monthly`, `@yearly` and `@annually`, evaluated in a time zone (the
//! local one in production, so daylight saving moves the instants with the clock).
//!
//! The due rule is a pure function ([`Schedule::due`]): a schedule is due at `now` when one of
//! its instants lies after `since` (its last run, or its creation) and at or before `now`.
//! Runs missed while the hub was down collapse into one: the schedule runs once, as of the
//! latest instant it missed, not once per missed instant.

mod run;

pub use run::{GroupRun, ScheduleRunReport, VmRun};

use crate::error::{Error, Result};
use croner::parser::{CronParser, Seconds};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

/// The fields of a five-field expression, in order.
const FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Disallowed).build()
}

impl Schedule {
    /// Parses `text`. A bad expression is an error that names the field and shows where it is.
    pub fn parse(text: &str) -> Result<Schedule> {
        let trimmed = text.trim();
        let expr = if trimmed.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            trimmed
        };
        match parser().parse(expr) {
            Ok(cron) => {
                let s = Schedule {
                    text: trimmed.to_string(),
                    cron,
                };
                // `0 0 30 2 *` parses, and never comes.
                if s.next_after(Timestamp::UNIX_EPOCH, &TimeZone::UTC)
                    .is_none()
                {
                    return Err(Error::invalid(format!(
                        "`{trimmed}` never comes: no date matches it"
                    ))
                    .with_help(
                        "Check the day of month against the month (30 February never comes).",
                    ));
                }
                Ok(s)
            }
            Err(e) => Err(Error::invalid(explain(trimmed, &e.to_string())).with_help(
                "Five fields: minute hour day-of-month month day-of-week, for example `0 2 * * *` \
                 (02:00 every day) or `30 1 * * MON-FRI`; or @hourly, @daily, @weekly, @monthly, \
                 @yearly.",
            )),
        }
    }

    /// The expression as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first instant strictly after `t`, in time zone `tz`.
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let z = t.to_zoned(tz.clone());
        self.cron
            .find_next_occurrence(&z, false)
            .ok()
            .map(|n| n.timestamp())
    }

    /// The latest instant at or before `t`, in time zone `tz`.
    pub fn latest_until(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let z = t.to_zoned(tz.clone());
        self.cron
            .find_previous_occurrence(&z, true)
            .ok()
            .map(|p| p.timestamp())
    }

    /// The instant the schedule is due for at `now`: the latest one after `since` (its last
    /// run, or its creation) and at or before `now`; `None` when nothing is due.
    pub fn due(&self, since: Timestamp, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let latest = self.latest_until(now, tz).filter(|t| *t > since)?;
        // The hour the clock repeats when daylight saving ends: the same wall-clock time again
        // less than two hours after the last run is the same instant of the schedule.
        let wall = |t: Timestamp| {
            let z = t.to_zoned(tz.clone());
            (z.date(), z.hour(), z.minute())
        };
        let repeated = latest.as_second() - since.as_second() < 7200 && wall(latest) == wall(since);
        (!repeated).then_some(latest)
    }
}

/// The error text for `text`: which field is wrong, with a caret under it.
fn explain(text: &str, detail: &str) -> String {
    if text.starts_with('@') {
        return format!(
            "`{text}` is not a schedule shortcut (@hourly, @daily, @midnight, @weekly, @monthly, \
             @yearly, @annually)"
        );
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 5 {
        return format!(
            "`{text}` has {} field(s); a schedule has 5: minute hour day-of-month month day-of-week",
            fields.len()
        );
    }
    // The first field that is wrong on its own, every other one a `*`.
    for (i, field) in fields.iter().enumerate() {
        let mut probe = ["*"; 5];
        probe[i] = field;
        if parser().parse(&probe.join(" ")).is_err() {
            let at = field_offset(text, i);
            return format!(
                "the {} field `{field}` of `{text}` is not valid\n  {text}\n  {}^",
                FIELDS[i],
                " ".repeat(at)
            );
        }
    }
    format!("`{text}` is not a valid schedule: {detail}")
}

/// Where field `i` of `text` starts.
fn field_offset(text: &str, i: usize) -> usize {
    let mut seen = 0;
    let mut in_field = false;
    for (pos, c) in text.char_indices() {
        let space = c.is_whitespace();
        if !space && !in_field {
            if seen == i {
                return text[..pos].chars().count();
            }
            seen += 1;
        }
        in_field = !space;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn expressions_and_shortcuts_parse_and_bad_ones_say_where() {
        for ok in [
            "0 2 * * *",
            "*/15 * * * *",
            "30 1 * * MON-FRI",
            "0 0 1 JAN *",
            "@daily",
            "@midnight",
            "@hourly",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
        ] {
            Schedule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = Schedule::parse("0 25 * * *").unwrap_err();
        assert!(err.message().contains("hour field `25`"), "{err}");
        assert!(err.message().contains("\n  0 25 * * *\n    ^"), "{err}");
        let err = Schedule::parse("61 2 * * *").unwrap_err();
        assert!(err.message().contains("minute field `61`"), "{err}");
        let err = Schedule::parse("0 2 * * FUNDAY").unwrap_err();
        assert!(err.message().contains("day of week"), "{err}");
        let err = Schedule::parse("0 2 *").unwrap_err();
        assert!(err.message().contains("has 3 field(s)"), "{err}");
        let err = Schedule::parse("0 0 2 * * *").unwrap_err();
        assert!(err.message().contains("has 6 field(s)"), "{err}");
        let err = Schedule::parse("@sometimes").unwrap_err();
        assert!(err.message().contains("not a schedule shortcut"), "{err}");
        assert!(err.help().unwrap().contains("0 2 * * *"));
    }

    #[test]
    fn instants_follow_the_local_clock_across_daylight_saving() {
        // Central European time: UTC+1, UTC+2 from the last Sunday of March (2026-03-29).
        let cet = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let s = Schedule::parse("0 1 * * *").unwrap();
        let first = s.next_after(ts("2026-03-28T12:00:00Z"), &cet).unwrap();
        assert_eq!(first, ts("2026-03-29T00:00:00Z"), "01:00 CET");
        let second = s.next_after(first, &cet).unwrap();
        assert_eq!(second, ts("2026-03-29T23:00:00Z"), "01:00 CEST");
        // Weekdays only: Friday 2026-11-27 01:30 UTC, then Monday.
        let s = Schedule::parse("30 1 * * MON-FRI").unwrap();
        let utc = TimeZone::UTC;
        let next = s.next_after(ts("2026-11-27T02:00:00Z"), &utc).unwrap();
        assert_eq!(next, ts("2026-11-30T01:30:00Z"));
    }

    #[test]
    fn the_hour_daylight_saving_repeats_runs_once_and_impossible_schedules_are_refused() {
        let cet = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2026-10-25: 02:00-03:00 local happens twice (00:00Z CEST, 01:00Z CET).
        let s = Schedule::parse("30 2,14 * * *").unwrap();
        let first = ts("2026-10-25T00:30:00Z");
        assert_eq!(
            s.due(ts("2026-10-24T12:30:00Z"), ts("2026-10-25T00:45:00Z"), &cet),
            Some(first)
        );
        assert_eq!(
            s.due(first, ts("2026-10-25T01:45:00Z"), &cet),
            None,
            "02:30 again is not a new run"
        );
        assert_eq!(
            s.due(first, ts("2026-10-25T13:45:00Z"), &cet),
            Some(ts("2026-10-25T13:30:00Z"))
        );
        let err = Schedule::parse("0 0 30 2 *").unwrap_err();
        assert!(err.message().contains("never comes"), "{err}");
    }

    #[test]
    fn a_schedule_is_due_once_for_the_latest_instant_it_missed() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let utc = TimeZone::UTC;
        let last = ts("2026-11-28T02:00:05Z");
        // Not yet.
        assert_eq!(s.due(last, ts("2026-11-29T01:59:59Z"), &utc), None);
        // At the instant, and after it.
        assert_eq!(
            s.due(last, ts("2026-11-29T02:00:00Z"), &utc),
            Some(ts("2026-11-29T02:00:00Z"))
        );
        assert_eq!(
            s.due(last, ts("2026-11-29T09:30:00Z"), &utc),
            Some(ts("2026-11-29T02:00:00Z"))
        );
        // Once it ran, not again until the next instant.
        let ran = ts("2026-11-29T02:00:07Z");
        assert_eq!(s.due(ran, ts("2026-11-29T09:30:00Z"), &utc), None);
        // Nine nights missed while the hub was down: due once, for the latest.
        assert_eq!(
            s.due(ts("2026-11-20T02:00:00Z"), ts("2026-11-29T12:00:00Z"), &utc),
            Some(ts("2026-11-29T02:00:00Z"))
        );
    }
}
