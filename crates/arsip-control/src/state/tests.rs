//! The fold of the journal: peers, skipped runs, the history's bound.

use super::*;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn run(s: &mut State, job: &str, at: &str, outcome: Outcome, peer: Option<&str>) {
    let at = t(at);
    for e in crate::testutil::run_entries(job, at, at, outcome, Facts::default(), peer) {
        s.apply(&e);
    }
}

#[test]
fn a_peers_run_is_a_success_without_measurements_and_skips_change_nothing() {
    let mut s = State::new("d1".into(), t("2026-12-01T00:00:00Z"), &[]);
    run(&mut s, "j", "2026-12-01T02:00:00Z", Outcome::Ok, None);
    run(&mut s, "j", "2026-12-02T02:00:00Z", Outcome::Ok, Some("d2"));
    let j = &s.jobs["j"];
    assert_eq!(
        j.last_success.as_ref().unwrap().scheduled,
        t("2026-12-02T02:00:00Z")
    );
    assert_eq!(
        j.last_measured.as_ref().unwrap().scheduled,
        t("2026-12-01T02:00:00Z")
    );
    assert_eq!(j.runs_total["ran_by_peer"], 1);
    assert_eq!(j.runs_total["ok"], 2);
    run(&mut s, "j", "2026-12-03T02:00:00Z", Outcome::Failed, None);
    run(&mut s, "j", "2026-12-04T02:00:00Z", Outcome::Skipped, None);
    let j = &s.jobs["j"];
    assert_eq!(j.last_run.as_ref().unwrap().outcome, Outcome::Failed);
    assert_eq!(j.consecutive_failures, 1);
    assert!(j.running.is_none());
}

#[test]
fn the_history_keeps_the_newest_runs() {
    let mut s = State::new("d1".into(), t("2026-01-01T00:00:00Z"), &[]);
    let start = t("2026-01-01T02:00:00Z");
    for d in 0..(HISTORY as i64 + 10) {
        let at = start + jiff::SignedDuration::from_hours(24 * d);
        run(&mut s, "j", &at.to_string(), Outcome::Ok, None);
    }
    let h = &s.jobs["j"].history;
    assert_eq!(h.len(), HISTORY);
    assert_eq!(
        h[0].scheduled,
        start + jiff::SignedDuration::from_hours(24 * 10)
    );
}
