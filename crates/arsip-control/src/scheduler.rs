//! What the daemon should do now, as pure functions of the configuration, the journal and the
//! time: each job's history folded from the journal ([`History`]), and which occurrence is due,
//! which were missed and when the next one comes ([`due`]). No I/O here, so every rule is
//! tested on a made-up timeline.
//!
//! Rules (docs/design/CONTROL.md §3.2):
//! - a run is one occurrence `(job, T)`, `T` the cron instant; it is handled once, whatever
//!   its outcome;
//! - a failure never counts as a success: "last success" moves only on `ok` or `warnings`, and
//!   the next run comes from the schedule, never from the last success;
//! - after downtime, with `catch_up = "once"`, the newest missed occurrence runs once if it is
//!   at most `catch_up_within` old; every other missed one is recorded as missed (they count
//!   against the success rate); with `"skip"` all of them are;
//! - a job the daemon has never handled starts with its next occurrence: a new job does not
//!   catch up.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::config::CatchUp;
use crate::journal::{Entry, Event, Outcome};
use crate::Schedule;

/// At most this many missed occurrences are listed one by one (a `*/5` job down for a month
/// missed 8 640); the rest are counted.
pub const MAX_MISSED_LISTED: usize = 100;

/// A job's past, from the journal.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct History {
    /// The newest occurrence handled (run, missed or skipped).
    pub last_handled: Option<Timestamp>,
    /// The newest occurrence that succeeded, and when it finished.
    pub last_success: Option<(Timestamp, Timestamp)>,
    /// The newest occurrence's outcome.
    pub last_outcome: Option<Outcome>,
    /// When the daemon first knew the job (its first journal entry about it, or the first
    /// `config_loaded` after it appeared): a new job starts after this.
    pub known_since: Option<Timestamp>,
}

/// Every job's history from the journal's entries, oldest first.
pub fn histories(entries: &[Entry]) -> BTreeMap<String, History> {
    let mut out: BTreeMap<String, History> = BTreeMap::new();
    for e in entries {
        apply(&mut out, e);
    }
    out
}

/// Fold one more journal entry into the histories.
pub fn apply(out: &mut BTreeMap<String, History>, e: &Entry) {
    let (job, scheduled, outcome) = match &e.event {
        Event::RunFinished {
            job,
            scheduled,
            outcome,
            ..
        } => (job, *scheduled, *outcome),
        Event::AttemptStarted { job, .. } | Event::AttemptFinished { job, .. } => {
            out.entry(job.clone())
                .or_default()
                .known_since
                .get_or_insert(e.at);
            return;
        }
        Event::ConfigLoaded { .. }
        | Event::Triggered { .. }
        | Event::AlertOpened { .. }
        | Event::AlertResolved { .. }
        | Event::Notified { .. } => return,
    };
    let h = out.entry(job.clone()).or_default();
    h.known_since.get_or_insert(e.at);
    if h.last_handled.is_none_or(|t| scheduled >= t) {
        h.last_handled = Some(scheduled);
        h.last_outcome = Some(outcome);
    }
    if outcome.succeeded() && h.last_success.is_none_or(|(t, _)| scheduled >= t) {
        h.last_success = Some((scheduled, e.at));
    }
}

/// What is due for one job at `now`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Due {
    /// The occurrence to run now, if any.
    pub run: Option<Timestamp>,
    /// Occurrences that passed unhandled and will not run (oldest first, at most
    /// [`MAX_MISSED_LISTED`]), and how many there were in all.
    pub missed: Vec<Timestamp>,
    pub missed_count: usize,
    /// The next occurrence after `now`.
    pub next: Option<Timestamp>,
}

/// How late an occurrence may start and still be on time rather than caught up (a daemon
/// that polls, or a machine busy for a moment).
pub const ON_TIME: SignedDuration = SignedDuration::from_secs(60);

/// What is due for a job with `schedule` and `history` at `now`. A job never handled starts
/// from `history.known_since` (else `now`).
pub fn due(
    schedule: &Schedule,
    history: &History,
    now: Timestamp,
    catch_up: CatchUp,
    catch_up_within: SignedDuration,
) -> Due {
    let mut out = Due {
        next: schedule.next_after(now).map(|z| z.timestamp()),
        ..Default::default()
    };
    // Occurrences in (from, now]: after the last handled one, or for a new job after the
    // moment it became known, less the on-time grace (so that a job added at 01:59:30 runs
    // at 02:00 even if the daemon looks at 02:00:20).
    let from = match history.last_handled {
        Some(t) => t,
        None => history.known_since.unwrap_or(now) - ON_TIME,
    };
    let mut pending: Vec<Timestamp> = Vec::new();
    let mut at = from;
    while let Some(z) = schedule.next_after(at) {
        let t = z.timestamp();
        if t > now {
            break;
        }
        pending.push(t);
        // Keep the newest few: enough to list, bounded however long the downtime was.
        if pending.len() > MAX_MISSED_LISTED + 1 {
            pending.remove(0);
            out.missed_count += 1;
        }
        at = t;
    }
    let Some(&newest) = pending.last() else {
        return out;
    };
    let age = now.duration_since(newest);
    let runs = age <= ON_TIME || (catch_up == CatchUp::Once && age <= catch_up_within);
    if runs {
        pending.pop();
        out.run = Some(newest);
    }
    out.missed_count += pending.len();
    out.missed = pending;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn daily() -> Schedule {
        // 02:00 in Jakarta is 19:00 UTC.
        Schedule::parse("0 2 * * *", "Asia/Jakarta").unwrap()
    }

    fn finished(job: &str, scheduled: &str, outcome: Outcome, at: &str) -> Entry {
        Entry {
            at: t(at),
            event: Event::RunFinished {
                job: job.into(),
                scheduled: t(scheduled),
                outcome,
                peer: None,
            },
        }
    }

    const DAY: SignedDuration = SignedDuration::from_hours(24);

    #[test]
    fn on_time_runs_and_nothing_twice() {
        let h = History {
            last_handled: Some(t("2026-12-01T19:00:00Z")),
            ..Default::default()
        };
        let d = due(&daily(), &h, t("2026-12-02T19:00:20Z"), CatchUp::Skip, DAY);
        assert_eq!(d.run, Some(t("2026-12-02T19:00:00Z")));
        assert!(d.missed.is_empty());
        assert_eq!(d.next, Some(t("2026-12-03T19:00:00Z")));
        // Once handled, the same occurrence is not due again.
        let h = History {
            last_handled: Some(t("2026-12-02T19:00:00Z")),
            ..Default::default()
        };
        let d = due(&daily(), &h, t("2026-12-02T19:30:00Z"), CatchUp::Once, DAY);
        assert_eq!(d.run, None);
    }

    #[test]
    fn downtime_catches_up_the_newest_once_and_records_the_rest_missed() {
        let h = History {
            last_handled: Some(t("2026-11-28T19:00:00Z")),
            ..Default::default()
        };
        // Down from the 29th to the 2nd, 23:00 UTC: the 29th, 30th, 1st and 2nd passed.
        let now = t("2026-12-02T23:00:00Z");
        let d = due(&daily(), &h, now, CatchUp::Once, DAY);
        assert_eq!(d.run, Some(t("2026-12-02T19:00:00Z")));
        assert_eq!(
            d.missed,
            [
                t("2026-11-29T19:00:00Z"),
                t("2026-11-30T19:00:00Z"),
                t("2026-12-01T19:00:00Z")
            ]
        );
        assert_eq!(d.missed_count, 3);
        // Too long ago to catch up: all missed.
        let late = t("2026-12-03T18:00:00Z");
        let d = due(
            &daily(),
            &h,
            late,
            CatchUp::Once,
            SignedDuration::from_hours(12),
        );
        assert_eq!((d.run, d.missed_count), (None, 4));
        // "skip": nothing is made up.
        let d = due(&daily(), &h, now, CatchUp::Skip, DAY);
        assert_eq!((d.run, d.missed_count), (None, 4));
    }

    #[test]
    fn a_new_job_does_not_catch_up() {
        let h = History {
            known_since: Some(t("2026-12-02T20:00:00Z")),
            ..Default::default()
        };
        let d = due(&daily(), &h, t("2026-12-02T21:00:00Z"), CatchUp::Once, DAY);
        assert_eq!(
            d,
            Due {
                next: Some(t("2026-12-03T19:00:00Z")),
                ..Default::default()
            }
        );
        // Added half a minute before its time, looked at 20 s after: it runs.
        let h = History {
            known_since: Some(t("2026-12-03T18:59:30Z")),
            ..Default::default()
        };
        let d = due(&daily(), &h, t("2026-12-03T19:00:20Z"), CatchUp::Skip, DAY);
        assert_eq!(d.run, Some(t("2026-12-03T19:00:00Z")));
    }

    #[test]
    fn a_month_of_downtime_is_bounded() {
        let every5 = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let h = History {
            last_handled: Some(t("2026-11-01T00:00:00Z")),
            ..Default::default()
        };
        let d = due(&every5, &h, t("2026-12-01T00:02:00Z"), CatchUp::Once, DAY);
        assert_eq!(d.run, Some(t("2026-12-01T00:00:00Z")));
        assert_eq!(d.missed_count, 30 * 288 - 1);
        assert_eq!(d.missed.len(), MAX_MISSED_LISTED);
        assert_eq!(d.missed.last(), Some(&t("2026-11-30T23:55:00Z")));
    }

    #[test]
    fn a_failure_is_handled_but_never_a_success() {
        let entries = vec![
            finished(
                "a",
                "2026-11-30T19:00:00Z",
                Outcome::Ok,
                "2026-11-30T19:10:00Z",
            ),
            finished(
                "a",
                "2026-12-01T19:00:00Z",
                Outcome::Failed,
                "2026-12-01T19:20:00Z",
            ),
            finished(
                "b",
                "2026-12-01T19:00:00Z",
                Outcome::Warnings,
                "2026-12-01T19:05:00Z",
            ),
        ];
        let h = histories(&entries);
        assert_eq!(h["a"].last_handled, Some(t("2026-12-01T19:00:00Z")));
        assert_eq!(h["a"].last_outcome, Some(Outcome::Failed));
        assert_eq!(
            h["a"].last_success,
            Some((t("2026-11-30T19:00:00Z"), t("2026-11-30T19:10:00Z")))
        );
        assert_eq!(
            h["b"].last_success.map(|s| s.0),
            Some(t("2026-12-01T19:00:00Z"))
        );
        // After the failure the next run is the schedule's, not "due since the last success".
        let d = due(
            &daily(),
            &h["a"],
            t("2026-12-01T23:00:00Z"),
            CatchUp::Once,
            DAY,
        );
        assert_eq!(d.run, None);
        assert_eq!(d.next, Some(t("2026-12-02T19:00:00Z")));
    }
}
