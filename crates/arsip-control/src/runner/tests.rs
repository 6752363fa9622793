//! The engine on a made-up timeline, claiming runs in real local repositories: two weeks
//! of daily runs, retries of transient failures only, exclusion per source and per
//! repository, coalescing, catch-up once, timeouts, and two daemons sharing runs.
//!
//! The executor is scripted (what each attempt returns, how long it takes): what is under
//! test is the scheduling, and the claims it makes in the repository are real.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;
use crate::testutil::{config, finished, repo, t};

/// One scripted attempt: how long it takes, what it returns.
#[derive(Clone)]
struct Step {
    takes: Duration,
    result: AttemptResult,
}

fn ok() -> Step {
    Step {
        takes: Duration::ZERO,
        result: AttemptResult::ok(),
    }
}

fn fail(transient: bool) -> Step {
    Step {
        takes: Duration::ZERO,
        result: AttemptResult {
            outcome: Outcome::Failed,
            transient,
            message: Some(
                if transient {
                    "store unreachable"
                } else {
                    "bad input"
                }
                .into(),
            ),
            ..AttemptResult::ok()
        },
    }
}

fn slow(d: Duration) -> Step {
    Step { takes: d, ..ok() }
}

#[derive(Default)]
struct Script {
    steps: Mutex<HashMap<String, VecDeque<Step>>>,
    /// Every attempt: job, scheduled time, real start and end.
    calls: Mutex<Vec<(String, Timestamp, Instant, Instant)>>,
}

impl Script {
    fn then(&self, job: &str, steps: impl IntoIterator<Item = Step>) {
        self.steps
            .lock()
            .unwrap()
            .entry(job.into())
            .or_default()
            .extend(steps);
    }

    fn calls(&self, job: &str) -> Vec<Timestamp> {
        let c = self.calls.lock().unwrap();
        c.iter().filter(|c| c.0 == job).map(|c| c.1).collect()
    }
}

impl Executor for Arc<Script> {
    fn run(&self, job: &str, _def: &Job, scheduled: Timestamp) -> ExecFuture {
        let step = self
            .steps
            .lock()
            .unwrap()
            .get_mut(job)
            .and_then(|q| q.pop_front())
            .unwrap_or_else(ok);
        let me = self.clone();
        let job = job.to_string();
        Box::pin(async move {
            let start = Instant::now();
            tokio::time::sleep(step.takes).await;
            me.calls
                .lock()
                .unwrap()
                .push((job, scheduled, start, Instant::now()));
            step.result
        })
    }
}

struct Daemon {
    runner: Runner,
    state: std::path::PathBuf,
}

async fn daemon(
    dir: &Path,
    name: &str,
    config: &Config,
    script: &Arc<Script>,
    init: bool,
) -> Daemon {
    let state = dir.join(format!("state-{name}"));
    let (journal, rec) = Journal::open(&state, t("2026-11-30T00:00:00Z")).unwrap();
    let repo = repo(dir, init).await;
    let runner = Runner::new(
        config.clone(),
        name.into(),
        [("main".to_string(), repo)].into(),
        Arc::new(script.clone()),
        journal,
        &rec.entries,
    )
    .unwrap();
    Daemon { runner, state }
}

const DAILY: &str = r#"
[job.db-daily]
type = "backup"
source = "db"
schedule = "0 2 * * *"
time_zone = "UTC"
retries = 2
retry_backoff = "2m"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_weeks_of_daily_runs_each_once_and_claimed_in_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), DAILY);
    let script = Arc::new(Script::default());
    let mut d = daemon(dir.path(), "a", &c, &script, true).await;
    d.runner.step(t("2026-12-01T00:00:00Z")).unwrap(); // the job becomes known
    for day in 1..=14 {
        let at = t("2026-12-01T02:00:10Z") + SignedDuration::from_hours(24 * (day - 1));
        d.runner.settle(at).await.unwrap();
        // Looking again within the hour changes nothing.
        d.runner
            .settle(at + SignedDuration::from_mins(30))
            .await
            .unwrap();
    }
    let calls = script.calls("db-daily");
    assert_eq!(calls.len(), 14, "{calls:?}");
    assert_eq!(calls[0], t("2026-12-01T02:00:00Z"));
    assert_eq!(calls[13], t("2026-12-14T02:00:00Z"));
    let h = &d.runner.histories()["db-daily"];
    assert_eq!(h.last_success.unwrap().0, t("2026-12-14T02:00:00Z"));
    let runs = d.runner.repos["main"].job_runs("db-daily").await.unwrap();
    assert_eq!(runs.len(), 14);
    assert!(runs.iter().all(|r| r.attempts.len() == 1
        && r.attempts[0].result() == Some(JobResult::Ok)
        && r.attempts[0].claim.daemon == "a"));
    assert_eq!(finished(&d.state).len(), 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_backoff_and_never_count_as_success() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), DAILY);
    let script = Arc::new(Script::default());
    let mut d = daemon(dir.path(), "a", &c, &script, true).await;
    d.runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    // Day 1: two transient failures, then success on the third attempt.
    script.then("db-daily", [fail(true), fail(true), ok()]);
    let t0 = t("2026-12-01T02:00:05Z");
    d.runner.settle(t0).await.unwrap();
    assert_eq!(script.calls("db-daily").len(), 1);
    // Not before the backoff (2 min ±20 %).
    d.runner
        .settle(t0 + SignedDuration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(script.calls("db-daily").len(), 1);
    d.runner
        .settle(t0 + SignedDuration::from_mins(3))
        .await
        .unwrap();
    assert_eq!(script.calls("db-daily").len(), 2);
    assert!(d.runner.histories()["db-daily"].last_success.is_none());
    // The second backoff doubles: 4 min ±20 %.
    d.runner
        .settle(t0 + SignedDuration::from_mins(6))
        .await
        .unwrap();
    assert_eq!(script.calls("db-daily").len(), 2);
    d.runner
        .settle(t0 + SignedDuration::from_mins(9))
        .await
        .unwrap();
    assert_eq!(script.calls("db-daily").len(), 3);
    assert_eq!(
        d.runner.histories()["db-daily"].last_success.unwrap().0,
        t("2026-12-01T02:00:00Z")
    );
    let chain = Chain::run("db-daily", t("2026-12-01T02:00:00Z")).unwrap();
    let view = d.runner.repos["main"].chain_view(&chain).await.unwrap();
    let results: Vec<_> = view.attempts.iter().map(|a| a.result()).collect();
    assert_eq!(
        results,
        [
            Some(JobResult::Failed),
            Some(JobResult::Failed),
            Some(JobResult::Ok)
        ]
    );
    assert_eq!(
        view.attempts[2].claim.previous,
        Some(Previous {
            attempt: 2,
            result: Some(JobResult::Failed)
        })
    );
    // Day 2: a permanent failure is not retried, and the last success stays day 1's.
    script.then("db-daily", [fail(false)]);
    let t1 = t("2026-12-02T02:00:05Z");
    d.runner.settle(t1).await.unwrap();
    d.runner
        .settle(t1 + SignedDuration::from_hours(1))
        .await
        .unwrap();
    assert_eq!(script.calls("db-daily").len(), 4);
    let h = &d.runner.histories()["db-daily"];
    assert_eq!(h.last_outcome, Some(Outcome::Failed));
    assert_eq!(h.last_success.unwrap().0, t("2026-12-01T02:00:00Z"));
    // Day 3: transient failures beyond the retries end the run failed.
    script.then("db-daily", [fail(true), fail(true), fail(true), ok()]);
    let t2 = t("2026-12-03T02:00:05Z");
    for m in [0, 3, 9, 20, 60] {
        d.runner
            .settle(t2 + SignedDuration::from_mins(m))
            .await
            .unwrap();
    }
    assert_eq!(
        script.calls("db-daily").len(),
        7,
        "1 + retries = 3 attempts"
    );
    assert_eq!(
        d.runner.histories()["db-daily"].last_outcome,
        Some(Outcome::Failed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_per_source_and_repository_wide_jobs_exclude_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = r#"
[job.db-daily]
type = "backup"
source = "db"
schedule = "0 2 * * *"
time_zone = "UTC"

[job.db-wal]
type = "wal-check"
source = "db"
schedule = "0 2 * * *"
time_zone = "UTC"

[job.files-daily]
type = "backup"
source = "files"
schedule = "0 2 * * *"
time_zone = "UTC"

[job.prune]
type = "prune"
repository = "main"
schedule = "0 2 * * *"
time_zone = "UTC"
"#;
    let c = config(dir.path(), jobs);
    let script = Arc::new(Script::default());
    for j in ["db-daily", "db-wal", "files-daily", "prune"] {
        script.then(j, [slow(Duration::from_millis(300))]);
    }
    let mut d = daemon(dir.path(), "a", &c, &script, true).await;
    d.runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    // Different sources run together: one job of db, the files backup; prune waits.
    d.runner.step(t("2026-12-01T02:00:01Z")).unwrap();
    assert_eq!((d.runner.running(), d.runner.pending()), (2, 4));
    d.runner.settle(t("2026-12-01T02:00:01Z")).await.unwrap();
    let calls = script.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4);
    let span = |j: &str| {
        let c = calls.iter().find(|c| c.0 == j).unwrap();
        (c.2, c.3)
    };
    let overlap = |a: &str, b: &str| {
        let (x, y) = (span(a), span(b));
        x.0 < y.1 && y.0 < x.1
    };
    assert!(
        !overlap("db-daily", "db-wal"),
        "two jobs of one source at once"
    );
    for j in ["db-daily", "db-wal", "files-daily"] {
        assert!(!overlap(j, "prune"), "{j} beside the repository's prune");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_due_while_the_previous_one_runs_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = r#"
[job.db-often]
type = "backup"
source = "db"
schedule = "*/5 * * * *"
time_zone = "UTC"
"#;
    let c = config(dir.path(), jobs);
    let script = Arc::new(Script::default());
    script.then("db-often", [slow(Duration::from_millis(800))]);
    let mut d = daemon(dir.path(), "a", &c, &script, true).await;
    d.runner.step(t("2026-12-01T00:02:00Z")).unwrap();
    d.runner.step(t("2026-12-01T00:05:01Z")).unwrap();
    assert_eq!(d.runner.running(), 1);
    // 00:10 comes while 00:05 still runs.
    d.runner.step(t("2026-12-01T00:10:01Z")).unwrap();
    assert!(d
        .runner
        .finish_one(|| t("2026-12-01T00:10:02Z"))
        .await
        .unwrap());
    d.runner.settle(t("2026-12-01T00:10:03Z")).await.unwrap();
    let f = finished(&d.state);
    assert_eq!(
        f.iter().map(|x| (x.1, x.2)).collect::<Vec<_>>(),
        [
            (t("2026-12-01T00:10:00Z"), Outcome::Skipped),
            (t("2026-12-01T00:05:00Z"), Outcome::Ok)
        ]
    );
    assert_eq!(script.calls("db-often"), [t("2026-12-01T00:05:00Z")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_the_newest_missed_run_is_caught_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), DAILY);
    let script = Arc::new(Script::default());
    {
        let mut d = daemon(dir.path(), "a", &c, &script, true).await;
        d.runner.step(t("2026-12-01T00:00:00Z")).unwrap();
        d.runner.settle(t("2026-12-01T02:00:03Z")).await.unwrap();
    }
    // Down from the 1st to the 4th, 10:00: the 2nd, 3rd and 4th passed.
    let mut d = daemon(dir.path(), "a", &c, &script, false).await;
    d.runner.settle(t("2026-12-04T10:00:00Z")).await.unwrap();
    d.runner.settle(t("2026-12-04T11:00:00Z")).await.unwrap();
    assert_eq!(
        script.calls("db-daily"),
        [t("2026-12-01T02:00:00Z"), t("2026-12-04T02:00:00Z")]
    );
    let f = finished(&d.state);
    let missed: Vec<_> = f
        .iter()
        .filter(|x| x.2 == Outcome::Missed)
        .map(|x| x.1)
        .collect();
    assert_eq!(
        missed,
        [t("2026-12-02T02:00:00Z"), t("2026-12-03T02:00:00Z")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_timeout_is_stopped_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), DAILY);
    c.jobs.get_mut("db-daily").unwrap().timeout = Some(SignedDuration::from_millis(300));
    let script = Arc::new(Script::default());
    script.then("db-daily", [slow(Duration::from_secs(30)), ok()]);
    let mut d = daemon(dir.path(), "a", &c, &script, true).await;
    d.runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    let started = Instant::now();
    d.runner.settle(t("2026-12-01T02:00:01Z")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the attempt was not stopped"
    );
    // The slow attempt never finished: only the retry is recorded as a call.
    d.runner.settle(t("2026-12-01T02:10:00Z")).await.unwrap();
    assert_eq!(script.calls("db-daily"), [t("2026-12-01T02:00:00Z")]);
    let chain = Chain::run("db-daily", t("2026-12-01T02:00:00Z")).unwrap();
    let view = d.runner.repos["main"].chain_view(&chain).await.unwrap();
    let first = view.attempts[0].done.as_ref().unwrap();
    assert_eq!(
        (first.result, first.transient),
        (JobResult::Interrupted, true)
    );
    assert!(
        first.message.as_deref().unwrap().contains("timed out"),
        "{first:?}"
    );
    assert_eq!(view.attempts[1].result(), Some(JobResult::Ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_repository_run_each_occurrence_once() {
    let dir = tempfile::tempdir().unwrap();
    // A repository-wide job: a peer's backup result must name a snapshot that exists, which
    // the scripted executor makes none of (the executors' tests cover that).
    let c = config(
        dir.path(),
        r#"
[job.db-daily]
type = "prune"
repository = "main"
schedule = "0 2 * * *"
time_zone = "UTC"
"#,
    );
    let script = Arc::new(Script::default());
    script.then("db-daily", (0..3).map(|_| slow(Duration::from_millis(500))));
    let mut a = daemon(dir.path(), "a", &c, &script, true).await;
    let mut b = daemon(dir.path(), "b", &c, &script, false).await;
    a.runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    b.runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    for day in 1..=3 {
        let at = t("2026-12-01T02:00:02Z") + SignedDuration::from_hours(24 * (day - 1));
        let (ra, rb) = tokio::join!(a.runner.settle(at), b.runner.settle(at));
        ra.unwrap();
        rb.unwrap();
    }
    assert_eq!(
        script.calls("db-daily").len(),
        3,
        "one attempt per occurrence"
    );
    let (fa, fb) = (finished(&a.state), finished(&b.state));
    assert_eq!(fa.len(), 3);
    assert_eq!(fb.len(), 3);
    for ((_, ta, oa, pa), (_, tb, ob, pb)) in fa.iter().zip(&fb) {
        assert_eq!((ta, oa, ob), (tb, &Outcome::Ok, &Outcome::Ok));
        assert!(pa.is_some() != pb.is_some(), "exactly one daemon ran {ta}");
    }
}

/// A result that says `ok` for a backup but names no snapshot that exists (planted by a
/// registered writer) does not count as a success: the run is recorded as failed, so the
/// alerts that watch it fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_ok_without_its_snapshot_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), DAILY);
    let script = Arc::new(Script::default());
    let mut d = daemon(dir.path(), "a", &c, &script, true).await;
    let chain = Chain::run("db-daily", t("2026-12-01T02:00:00Z")).unwrap();
    let spec = ClaimSpec {
        daemon: "liar".into(),
        timeout: SignedDuration::from_hours(1),
        config_digest: None,
        previous: None,
    };
    let repo = d.runner.repos["main"].clone();
    let liar = repo.claim(&chain, 1, &spec).await.unwrap().unwrap();
    liar.finish(Finish {
        snapshots: vec!["ab".repeat(32)],
        ..Finish::ok()
    })
    .await
    .unwrap();
    d.runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    d.runner.settle(t("2026-12-01T02:00:05Z")).await.unwrap();
    let h = &d.runner.histories()["db-daily"];
    assert_eq!(h.last_outcome, Some(Outcome::Failed));
    assert!(h.last_success.is_none());
    assert!(script.calls("db-daily").is_empty());
}

/// Wait until `job`'s attempt task is in `phase`.
async fn reach(runner: &Runner, job: &str, phase: Phase) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = runner
            .tasks
            .get(job)
            .map(|t| t.phase.lock().unwrap().clone());
        if now.as_ref() == Some(&phase) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{job} never reached {phase:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cancelled attempt stops at once, records `cancelled` as its final result in the
/// repository, and is neither retried here nor taken over by a peer; a peer that watched it
/// cannot cancel it, and notices that its own configuration of the job differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_and_is_neither_retried_nor_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    // A repository-wide job, like the HA test: a peer's result names no snapshot.
    let job = r#"
[job.prune]
type = "prune"
repository = "main"
schedule = "0 2 * * *"
time_zone = "UTC"
retries = 2
retry_backoff = "2m"
"#;
    let c = config(dir.path(), job);
    let mut other = c.clone();
    other.jobs.get_mut("prune").unwrap().retry_backoff = SignedDuration::from_mins(5);
    let script = Arc::new(Script::default());
    script.then("prune", [slow(Duration::from_secs(60))]);
    let mut a = daemon(dir.path(), "a", &c, &script, true).await;
    let mut b = daemon(dir.path(), "b", &other, &script, false).await;
    let at = t("2026-12-01T02:00:01Z");
    for d in [&mut a, &mut b] {
        d.runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    }
    a.runner.step(at).unwrap();
    reach(&a.runner, "prune", Phase::Running).await;
    b.runner.step(at).unwrap();
    reach(&b.runner, "prune", Phase::Watching("a".into())).await;
    // The watcher refuses: the run is not its to stop.
    assert!(matches!(
        b.runner.cancel(at, "prune", "ops", None),
        Err(CancelError::AtPeer { daemon, .. }) if daemon == "a"
    ));
    assert!(matches!(
        a.runner.cancel(at, "prune", "ops", Some(t("2026-11-30T02:00:00Z"))),
        Err(CancelError::OtherRun(s)) if s == t("2026-12-01T02:00:00Z")
    ));
    let started = Instant::now();
    assert_eq!(
        a.runner.cancel(at, "prune", "ops", None).unwrap(),
        t("2026-12-01T02:00:00Z")
    );
    assert!(a.runner.finish_one(|| at).await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(30), "not stopped");
    // No retry, here or at the peer, long after the backoff.
    let later = t("2026-12-01T03:00:00Z");
    let (ra, rb) = tokio::join!(a.runner.settle(later), b.runner.settle(later));
    ra.unwrap();
    rb.unwrap();
    assert!(
        script.calls("prune").is_empty(),
        "the slow attempt never ended by itself"
    );
    let chain = Chain::run("prune", t("2026-12-01T02:00:00Z")).unwrap();
    let view = a.runner.repos["main"].chain_view(&chain).await.unwrap();
    assert_eq!(view.attempts.len(), 1, "{view:?}");
    let done = view.attempts[0].done.as_ref().unwrap();
    assert_eq!((done.result, done.transient), (JobResult::Cancelled, false));
    assert_eq!(done.message.as_deref(), Some("cancelled by ops"));
    for (d, peer) in [(&a, false), (&b, true)] {
        let runs = finished(&d.state);
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].2, runs[0].3.is_some()), (Outcome::Cancelled, peer));
    }
    // The claim carried a's digest of the job, which b's configuration does not share.
    assert_eq!(view.attempts[0].claim.config_digest, c.job_digest("prune"));
    assert_ne!(c.job_digest("prune"), other.job_digest("prune"));
    assert!(b.runner.state().read().unwrap().config_mismatch["prune"]);
    // Nothing to cancel any more.
    assert!(matches!(
        a.runner.cancel(later, "prune", "ops", None),
        Err(CancelError::Idle)
    ));
    assert!(matches!(
        a.runner.cancel(later, "nope", "ops", None),
        Err(CancelError::NoSuchJob)
    ));
}

/// A run waiting for its retry ends at once when cancelled; the retry never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_its_retry_is_cancelled_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), DAILY);
    let script = Arc::new(Script::default());
    script.then("db-daily", [fail(true), ok()]);
    let mut d = daemon(dir.path(), "a", &c, &script, true).await;
    d.runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    let at = t("2026-12-01T02:00:01Z");
    d.runner.settle(at).await.unwrap();
    assert_eq!(d.runner.pending(), 1, "waiting for the retry");
    d.runner.cancel(at, "db-daily", "ops", None).unwrap();
    assert_eq!(d.runner.pending(), 0);
    d.runner.settle(t("2026-12-01T03:00:00Z")).await.unwrap();
    assert_eq!(script.calls("db-daily").len(), 1);
    let runs = finished(&d.state);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].2, Outcome::Cancelled);
    let s = d.runner.state();
    let s = s.read().unwrap();
    assert_eq!(
        s.jobs["db-daily"].consecutive_failures, 1,
        "a cancelled backup is no backup"
    );
    assert_eq!(s.jobs["db-daily"].runs_total["cancelled"], 1);
}
