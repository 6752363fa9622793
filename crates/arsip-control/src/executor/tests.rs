//! The executors against a real local repository, driven by the engine over a made-up day:
//! a files backup tagged with its job and occurrence, forget, prune and verify; a claim
//! lost before the commit leaves no snapshot, across the thread the attempt runs on.

use std::path::Path;
use std::sync::Arc;

use arsip_ops::repo::{clock::SystemClock, RepoError};
use jiff::Timestamp;

use super::*;
use crate::journal::Journal;
use crate::runner::Runner;
use crate::testutil::{config, finished, repo, t};

const JOBS: &str = r#"
[job.files-daily]
type = "backup"
source = "files"
schedule = "0 2 * * *"
time_zone = "UTC"

[job.retention]
type = "forget"
repository = "main"
schedule = "0 3 * * *"
time_zone = "UTC"

[job.prune]
type = "prune"
repository = "main"
schedule = "0 4 * * *"
time_zone = "UTC"

[job.verify]
type = "verify"
repository = "main"
schedule = "0 5 * * *"
time_zone = "UTC"
"#;

fn executors(c: &Config) -> Arc<Executors> {
    Arc::new(Executors::new(
        c.clone(),
        Arc::new(SystemClock),
        PathBuf::from("/nonexistent/arsip"),
        Default::default(),
        "host-a".into(),
        "arsip".into(),
    ))
}

/// The engine with the real executors, journaling in `state`, started the day before the
/// first runs.
fn engine(state: &Path, c: &Config, repo: &Arc<arsip_ops::repo::Repository>) -> Runner {
    let (journal, rec) = Journal::open(state, t("2026-11-30T00:00:00Z")).unwrap();
    let mut runner = Runner::new(
        c.clone(),
        "a".into(),
        [("main".to_string(), repo.clone())].into(),
        Arc::new(executors(c)),
        journal,
        &rec.entries,
    )
    .unwrap();
    runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    runner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_day_backs_up_forgets_prunes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/app.env"), "JWT_SECRET=x\n").unwrap();
    let c = config(dir.path(), JOBS);
    let repo = repo(dir.path(), true).await;
    let state = dir.path().join("state-a");
    let mut runner = engine(&state, &c, &repo);
    for at in ["02:00:05", "03:00:05", "04:00:05", "05:00:05"] {
        runner
            .settle(t(&format!("2026-12-01T{at}Z")))
            .await
            .unwrap();
    }
    let runs = finished(&state);
    let journal: String = std::fs::read_dir(state.join("journal"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let outcomes: Vec<(&str, Outcome)> = runs.iter().map(|r| (r.0.as_str(), r.2)).collect();
    assert_eq!(
        outcomes,
        [
            ("files-daily", Outcome::Ok),
            ("retention", Outcome::Ok),
            ("prune", Outcome::Ok),
            // The configuration's PostgreSQL source has no server here: verify cannot
            // measure the WAL archive's lag, and says so as a warning.
            ("verify", Outcome::Warnings)
        ],
        "{journal}"
    );
    assert!(
        journal.contains("could not be asked for its current WAL"),
        "{journal}"
    );
    // The snapshot says which job and occurrence made it.
    let full = executors(&c).full("main").await.unwrap();
    let snaps = full.snapshot_listing().await.unwrap().snapshots;
    assert_eq!(snaps.len(), 1);
    let tags = &snaps[0].manifest.tags;
    assert_eq!(tags[TAG_JOB], "files-daily");
    assert_eq!(
        tags[TAG_SCHEDULED].parse::<Timestamp>().unwrap(),
        t("2026-12-01T02:00:00Z")
    );
    assert_eq!(snaps[0].manifest.kind, "files");
    // The claim records what the attempt committed; verify stored its record.
    let chain = arsip_ops::repo::Chain::run("files-daily", t("2026-12-01T02:00:00Z")).unwrap();
    let view = repo.chain_view(&chain).await.unwrap();
    assert_eq!(
        view.attempts[0].done.as_ref().unwrap().snapshots,
        [snaps[0].id.clone()]
    );
    assert_eq!(full.verification_names().await.unwrap().len(), 1);
}

/// The commit guard of the claim reaches the thread the attempt runs on: a claim that is
/// no longer held commits no snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_commits_nothing_from_the_attempts_thread() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/f"), "x").unwrap();
    let c = config(dir.path(), JOBS);
    repo(dir.path(), true).await;
    let ex = executors(&c);
    let lost: arsip_ops::repo::CommitGuard =
        Arc::new(|| Err(RepoError::Busy("the claim was taken over".into())));
    let def = c.jobs["files-daily"].clone();
    let r = arsip_ops::repo::guarded(lost, ex.run("files-daily", &def, t("2026-12-01T02:00:00Z")))
        .await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.transient, "a lost claim is worth another attempt: {r:?}");
    assert!(
        r.message.as_deref().unwrap().contains("taken over"),
        "{r:?}"
    );
    let full = ex.full("main").await.unwrap();
    assert!(full.snapshot_listing().await.unwrap().snapshots.is_empty());
    // Without the guard the same attempt commits.
    let r = ex.run("files-daily", &def, t("2026-12-01T02:00:00Z")).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
}

/// A claimant that committed its snapshot and died before recording its result: the daemon
/// that takes the run over adopts that snapshot instead of backing up a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_adopts_what_the_lapsed_claimant_committed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/f"), "x").unwrap();
    let c = config(dir.path(), JOBS);
    let repo = repo(dir.path(), true).await;
    let ex = executors(&c);
    let when = t("2026-12-01T02:00:00Z");
    let def = c.jobs["files-daily"].clone();
    // Daemon "dead" claims the run, commits, and dies without a result.
    let chain = arsip_ops::repo::Chain::run("files-daily", when).unwrap();
    let spec = arsip_ops::repo::ClaimSpec {
        daemon: "dead".into(),
        timeout: jiff::SignedDuration::from_hours(1),
        config_digest: None,
        previous: None,
    };
    let claim = repo.claim(&chain, 1, &spec).await.unwrap().unwrap();
    let r = arsip_ops::repo::guarded(claim.guard(), ex.run("files-daily", &def, when)).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    drop(claim);
    let timing = repo.session_timing();
    tokio::time::sleep((timing.ttl + timing.margin * 2).try_into().unwrap()).await;
    // Daemon "a" comes up, finds the claim lapsed, and adopts the snapshot.
    let state = dir.path().join("state-a");
    let (journal, rec) = Journal::open(&state, t("2026-11-30T00:00:00Z")).unwrap();
    let mut runner = Runner::new(
        c.clone(),
        "a".into(),
        [("main".to_string(), repo.clone())].into(),
        Arc::new(ex.clone()),
        journal,
        &rec.entries,
    )
    .unwrap();
    runner.step(t("2026-12-01T00:00:00Z")).unwrap();
    runner.settle(t("2026-12-01T02:00:05Z")).await.unwrap();
    let full = ex.full("main").await.unwrap();
    let snaps = full.snapshot_listing().await.unwrap().snapshots;
    assert_eq!(snaps.len(), 1, "no second backup of the run");
    let view = repo.chain_view(&chain).await.unwrap();
    let second = view.attempt(2).unwrap();
    assert_eq!(second.claim.daemon, "a");
    let done = second.done.as_ref().unwrap();
    assert_eq!(done.snapshots, [snaps[0].id.clone()]);
    assert!(
        done.message.as_deref().unwrap().contains("adopted"),
        "{done:?}"
    );
}

/// A source's own retention decides for the snapshots its backup job made; the repository's
/// (the plan's 30 days here) for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_follows_a_sources_own_retention() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    // The text lands in `[source.files]`, then the jobs follow.
    let c = config(
        dir.path(),
        &format!("retention = {{ keep_last = 2 }}\n{JOBS}"),
    );
    let e = executors(&c);
    let rules = e.source_rules("main");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].0, "arsip.job=files-daily");
    assert_eq!(rules[0].1.keep_last, Some(2));
    let repo = repo(dir.path(), true).await;
    let state = dir.path().join("state-a");
    let mut runner = engine(&state, &c, &repo);
    for day in 1..=3 {
        std::fs::write(dir.path().join("data/day"), format!("{day}")).unwrap();
        for at in ["02:00:05", "03:00:05"] {
            runner
                .settle(t(&format!("2026-12-0{day}T{at}Z")))
                .await
                .unwrap();
        }
    }
    let full = e.full("main").await.unwrap();
    // Three backups, each younger than 30 days: the source's rule kept the newest two.
    assert_eq!(full.snapshot_listing().await.unwrap().snapshots.len(), 2);
}

/// A copy job that follows backups: each successful backup is followed by a run that
/// mirrors the repository into the other one, which then opens with the same password and
/// lists the snapshot; the run's facts carry what it copied and the lag it found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_follows_each_backup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/app.env"), "JWT_SECRET=x\n").unwrap();
    let c = config(
        dir.path(),
        &format!(
            r#"
[repository.sin]
location = "{copy}"

[job.files-daily]
type = "backup"
source = "files"
schedule = "0 2 * * *"
time_zone = "UTC"

[job.to-sin]
type = "copy"
repository = "main"
to = "sin"
schedule = "0 12 * * 0"
time_zone = "UTC"
after_backups = true
"#,
            copy = dir.path().join("sin").display()
        ),
    );
    assert!(!c.runs_in("sin"), "only a destination");
    let repo = repo(dir.path(), true).await;
    let state = dir.path().join("state-a");
    let mut runner = engine(&state, &c, &repo);
    runner.settle(t("2026-12-01T02:00:05Z")).await.unwrap();
    let runs = finished(&state);
    let outcomes: Vec<(&str, Outcome)> = runs.iter().map(|r| (r.0.as_str(), r.2)).collect();
    assert_eq!(
        outcomes,
        [("files-daily", Outcome::Ok), ("to-sin", Outcome::Ok)]
    );
    let s = runner.state();
    let copy = s.read().unwrap().jobs["to-sin"]
        .last_success
        .clone()
        .unwrap();
    assert!(copy.facts.copied_objects.unwrap() > 0, "{copy:?}");
    assert!(
        copy.facts.copy_lag_seconds.is_some(),
        "the copy lacked a snapshot"
    );
    assert_eq!(
        copy.triggered_by.as_deref(),
        Some("after backup files-daily")
    );
    let metrics = crate::metrics::render(&c, &s.read().unwrap(), &Default::default());
    assert!(
        metrics.contains(r#"arsip_copy_last_success_timestamp_seconds{repo="main",to="sin"}"#),
        "{metrics}"
    );
    let mut sin = c.repositories["main"].clone();
    sin.location = c.repositories["sin"].location.clone();
    let mut c2 = c.clone();
    c2.repositories.insert("main".into(), sin);
    let copied = executors(&c2).full("main").await.unwrap();
    assert_eq!(copied.snapshot_listing().await.unwrap().snapshots.len(), 1);
}
