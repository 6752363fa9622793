//! Schedules: a five-field cron expression (minute hour day-of-month month day-of-week, the
//! `@daily`-style nicknames too) in a time zone, evaluated on jiff's zoned times.
//!
//! Daylight saving, as classic (Vixie) cron does it: a fixed-time job whose time falls in a
//! skipped hour runs at the first valid time after the gap, the same day, once however many
//! of its times the gap holds; in a repeated hour a fixed-time job runs once, on the first
//! pass. Day-of-month and day-of-week, when both are
//! restricted, combine with OR.

use std::fmt;

use croner::parser::{CronParser, Seconds};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use serde::Serialize;

/// A cron expression in a time zone.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    zone: String,
    tz: TimeZone,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expr, self.zone)
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            cron: &'a str,
            time_zone: &'a str,
        }
        Out {
            cron: &self.expr,
            time_zone: &self.zone,
        }
        .serialize(s)
    }
}

/// Why an expression or a zone is refused, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(pub String);

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The time zone called `name` (an IANA name such as `Asia/Jakarta`, or `UTC`), from the
/// system's time zone database.
pub fn zone(name: &str) -> Result<TimeZone, ScheduleError> {
    if name.eq_ignore_ascii_case("utc") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| {
        ScheduleError(format!(
            "unknown time zone {name:?}: use an IANA name such as \"Asia/Jakarta\" or \"UTC\" \
             (the system's time zone database, package tzdata, must be installed)"
        ))
    })
}

impl Schedule {
    pub fn parse(expr: &str, zone_name: &str) -> Result<Schedule, ScheduleError> {
        let tz = zone(zone_name)?;
        let trimmed = expr.trim();
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && fields != 5 {
            return Err(ScheduleError(format!(
                "{expr:?} has {fields} field(s); a schedule needs 5 (minute hour day-of-month \
                 month day-of-week), e.g. \"0 2 * * *\" for 02:00 every day"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| ScheduleError(format!("{expr:?} is not a cron expression: {e}")))?;
        let s = Schedule {
            expr: trimmed.to_string(),
            zone: zone_name.to_string(),
            tz,
            cron,
        };
        // An expression that never matches (30 February) is refused here, not at 02:00.
        if s.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(ScheduleError(format!("{expr:?} never matches a date")));
        }
        Ok(s)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn zone_name(&self) -> &str {
        &self.zone
    }

    /// The first run strictly after `t`, in the schedule's zone.
    pub fn next_after(&self, t: Timestamp) -> Option<Zoned> {
        let from = t.to_zoned(self.tz.clone());
        let next = self.cron.find_next_occurrence(&from, false).ok();
        // The cron library moves a single time in a skipped hour to just after the gap, but
        // drops the times of a list (`0 2,14 * * *`) that fall in one: a clock change between
        // `t` and its answer whose skipped minutes the schedule matches is a run, at the
        // first valid time after the gap, once.
        let limit = next.as_ref().map(|z| z.timestamp());
        for tr in self.tz.following(t) {
            let at = tr.timestamp();
            if limit.is_some_and(|l| at >= l) || at.duration_since(t).as_hours() > 24 * 400 {
                break;
            }
            if self.gap_matches(at, tr.offset()) {
                return Some(at.to_zoned(self.tz.clone()));
            }
        }
        next
    }

    /// Whether a clock change at `at` to `after` skips a civil minute the schedule matches.
    fn gap_matches(&self, at: Timestamp, after: jiff::tz::Offset) -> bool {
        let before = self.tz.to_offset(at - SignedDuration::from_nanos(1));
        let skipped = after.seconds() - before.seconds();
        if skipped <= 0 {
            return false;
        }
        // The skipped civil times, as times of a fixed zone at the old offset.
        let fixed = TimeZone::fixed(before);
        (0..skipped / 60).any(|m| {
            let civil = (at + SignedDuration::from_mins(m as i64)).to_zoned(fixed.clone());
            self.cron.is_time_matching(&civil).unwrap_or(false)
        })
    }

    /// The next `n` runs after `t`.
    pub fn upcoming(&self, t: Timestamp, n: usize) -> Vec<Zoned> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            let Some(z) = self.next_after(at) else { break };
            at = z.timestamp();
            out.push(z);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(expr: &str, zone: &str, after: &str) -> String {
        let z = Schedule::parse(expr, zone)
            .unwrap()
            .next_after(ts(after))
            .unwrap();
        z.timestamp().to_string()
    }

    #[test]
    fn the_plans_schedule_runs_at_two_in_jakarta() {
        // 02:00 WIB is 19:00 UTC the day before.
        assert_eq!(
            next("0 2 * * *", "Asia/Jakarta", "2026-12-01T12:00:00Z"),
            "2026-12-01T19:00:00Z"
        );
        assert_eq!(
            next("0 2 * * *", "Asia/Jakarta", "2026-12-01T19:00:00Z"),
            "2026-12-02T19:00:00Z",
            "strictly after"
        );
        let s = Schedule::parse("*/15 * * * *", "UTC").unwrap();
        let runs = s.upcoming(ts("2026-12-01T00:07:00Z"), 3);
        let runs: Vec<String> = runs.iter().map(|z| z.timestamp().to_string()).collect();
        assert_eq!(
            runs,
            [
                "2026-12-01T00:15:00Z",
                "2026-12-01T00:30:00Z",
                "2026-12-01T00:45:00Z"
            ]
        );
    }

    #[test]
    fn daylight_saving_gaps_and_folds_run_once() {
        // Berlin springs forward at 02:00 on 2026-03-29: 02:30 does not exist that day; the
        // job runs right after the gap, the same day.
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z"),
            "2026-03-29T01:00:00Z"
        );
        // New York falls back at 02:00 on 2026-11-01: 01:30 happens twice; it runs once.
        let s = Schedule::parse("30 1 * * *", "America/New_York").unwrap();
        let runs = s.upcoming(ts("2026-10-31T12:00:00Z"), 3);
        let runs: Vec<String> = runs.iter().map(|z| z.timestamp().to_string()).collect();
        assert_eq!(
            runs,
            [
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z",
                "2026-11-03T06:30:00Z"
            ]
        );
    }

    #[test]
    fn list_schedules_keep_their_times_in_a_skipped_hour() {
        // New York springs forward at 02:00 on 2027-03-14: 02:00-02:59 do not exist.
        let runs = |expr: &str| -> Vec<String> {
            Schedule::parse(expr, "America/New_York")
                .unwrap()
                .upcoming(ts("2027-03-13T12:00:00Z"), 4)
                .iter()
                .map(|z| z.timestamp().to_string())
                .collect()
        };
        // 02:00 runs at 03:00 EDT (07:00Z), then 14:00 as usual.
        assert_eq!(
            runs("0 2,14 * * *"),
            [
                "2027-03-13T19:00:00Z",
                "2027-03-14T07:00:00Z",
                "2027-03-14T18:00:00Z",
                "2027-03-15T06:00:00Z"
            ]
        );
        // Both skipped times make one run after the gap.
        assert_eq!(
            runs("0,30 2 * * *"),
            [
                "2027-03-14T07:00:00Z",
                "2027-03-15T06:00:00Z",
                "2027-03-15T06:30:00Z",
                "2027-03-16T06:00:00Z"
            ]
        );
        // Times outside the gap are not pulled in by it.
        assert_eq!(runs("0 4 * * *")[0], "2027-03-14T08:00:00Z");
        assert_eq!(runs("0 2 15 3 *")[0], "2027-03-15T06:00:00Z");
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        let e = Schedule::parse("0 2 * *", "UTC").unwrap_err().0;
        assert!(e.contains("has 4 field(s)") && e.contains("needs 5"), "{e}");
        let e = Schedule::parse("0 0 2 * * *", "UTC").unwrap_err().0;
        assert!(e.contains("has 6 field(s)"), "{e}");
        let e = Schedule::parse("61 2 * * *", "UTC").unwrap_err().0;
        assert!(e.contains("not a cron expression"), "{e}");
        let e = Schedule::parse("0 0 30 2 *", "UTC").unwrap_err().0;
        assert!(e.contains("never matches"), "{e}");
        let e = Schedule::parse("0 2 * * *", "Asia/Jakartaa").unwrap_err().0;
        assert!(e.contains("unknown time zone"), "{e}");
        assert!(Schedule::parse("@daily", "UTC").is_ok());
    }
}
