//! Job claims between daemons, against a real local directory store and the S3-protocol
//! server: one winner per attempt, lapse by the store's clock, withdrawal, planted claims,
//! the timeout bound, results, the commit guard and housekeeping.

use std::sync::Arc;

use arsip_storage::{backend, DynStore, S3Settings, StoreSettings};
use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::clock::SystemClock;
use crate::maint::SessionTiming;
use crate::snapshot::Node;
use crate::txn::{SnapshotMeta, SnapshotTxn};
use crate::{InitOptions, LocalSettings, OpenWith};

/// Short enough to watch lapses, long enough for S3's whole-second times.
const TTL_SECS: i64 = 3;

struct Fixture {
    dir: tempfile::TempDir,
    store: DynStore,
    /// Two daemons' handles on one repository.
    a: FullRepo,
    b: FullRepo,
}

enum Where {
    Local,
    S3,
}

async fn fixture(at: Where) -> Fixture {
    std::env::set_var("ARSIP_TEST_WEAK_KDF", "1");
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = match at {
        Where::Local => {
            std::fs::create_dir(dir.path().join("repo")).unwrap();
            backend::open(&backend::Location::Local(dir.path().join("repo")), false).unwrap()
        }
        Where::S3 => {
            let s3 = arsip_testkit::s3();
            let settings = StoreSettings {
                s3: S3Settings::from_vars(s3.env().into_iter().map(|(k, v)| (k.to_string(), v)))
                    .unwrap(),
            };
            let loc = backend::Location::S3 {
                bucket: s3.bucket(),
                prefix: "repo".into(),
            };
            backend::open_with(&loc, &settings, false).unwrap()
        }
    };
    Repository::init(
        store.clone(),
        Some(b"pw"),
        &InitOptions::default(),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let a = open(&store, &dir, "a").await;
    let b = open(&store, &dir, "b").await;
    Fixture { dir, store, a, b }
}

async fn open(store: &DynStore, dir: &tempfile::TempDir, host: &str) -> FullRepo {
    Repository::open(
        store.clone(),
        OpenWith::Password(zeroize::Zeroizing::new(b"pw".to_vec())),
        Arc::new(SystemClock),
    )
    .await
    .unwrap()
    .full("test")
    .unwrap()
    .with_local(LocalSettings {
        cache_dir: dir.path().join(format!("cache-{host}")),
        host: host.into(),
        sessions: SessionTiming::with_ttl(SignedDuration::from_secs(TTL_SECS)),
        ..Default::default()
    })
}

fn spec(daemon: &str) -> ClaimSpec {
    ClaimSpec {
        daemon: daemon.into(),
        timeout: SignedDuration::from_hours(6),
        config_digest: None,
        previous: None,
    }
}

fn run_at(job: &str, t: &str) -> Chain {
    Chain::run(job, t.parse().unwrap()).unwrap()
}

fn now() -> Timestamp {
    crate::clock::Clock::now(&SystemClock)
}

fn margin() -> SignedDuration {
    SessionTiming::with_ttl(SignedDuration::from_secs(TTL_SECS)).margin
}

async fn sleep_past_lapse() {
    let ttl = SessionTiming::with_ttl(SignedDuration::from_secs(TTL_SECS));
    let wait = ttl.ttl + ttl.margin + SignedDuration::from_millis(1500);
    tokio::time::sleep(wait.try_into().unwrap()).await;
}

#[test]
fn names() {
    let c = run_at("db.backup", "2026-12-03T02:00:00Z");
    assert_eq!(c.as_str(), "jobs/db.backup/20261203T020000Z");
    assert_eq!(
        c.job_run(),
        Some(("db.backup", "2026-12-03T02:00:00Z".parse().unwrap()))
    );
    assert_eq!(Chain::lease("alerts").unwrap().as_str(), "leases/alerts");
    for bad in ["", "../x", "a/b", ".hidden", "a b"] {
        assert!(Chain::run(bad, Timestamp::UNIX_EPOCH).is_err(), "{bad:?}");
        assert!(Chain::lease(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_part("1"), Some((1, Part::Claim)));
    assert_eq!(parse_part("12.3"), Some((12, Part::Renewal)));
    assert_eq!(parse_part("9999.done"), Some((9999, Part::Done)));
    for bad in [
        "0", "01", "10000", "1.", "1.x", "1.done.1", "-1", "1e3", "", "1.-2",
    ] {
        assert_eq!(parse_part(bad), None, "{bad:?}");
    }
    assert!(parse_run_time("20261203T020000Z").is_some());
    for bad in [
        "20261203T020000",
        "2026-12-03T02:00:00Z",
        "20261303T020000Z",
        "20261203T020060Z",
    ] {
        assert!(parse_run_time(bad).is_none(), "{bad:?}");
    }
}

/// Many daemons at once on one attempt: exactly one holds it.
async fn one_winner(at: Where) {
    let f = fixture(at).await;
    let chain = run_at("db.backup", "2026-12-03T02:00:00Z");
    let mut handles = vec![f.a.clone(), f.b.clone()];
    for i in 0..6 {
        handles.push(open(&f.store, &f.dir, &format!("h{i}")).await);
    }
    let claims = futures::future::join_all(handles.iter().enumerate().map(|(i, h)| {
        let chain = chain.clone();
        async move { h.claim(&chain, 1, &spec(&format!("d{i}"))).await.unwrap() }
    }))
    .await;
    let won: Vec<&Claim> = claims.iter().flatten().collect();
    assert_eq!(won.len(), 1, "exactly one daemon holds attempt 1");
    let view = f.b.chain_view(&chain).await.unwrap();
    assert_eq!(view.attempts.len(), 1);
    assert_eq!(view.next, 2);
    assert!(view.ignored.is_empty(), "{:?}", view.ignored);
    match view.state(now(), margin()) {
        RunState::Live(a) => assert_eq!(a.claim.daemon, won[0].doc.daemon),
        s => panic!("{s:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_per_attempt_local() {
    one_winner(Where::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_per_attempt_s3() {
    one_winner(Where::S3).await;
}

/// Back up one small file inside `guard`'s scope.
async fn backup_under(repo: &FullRepo, guard: CommitGuard) -> Result<String> {
    guarded(guard, async {
        let mut txn = SnapshotTxn::start(repo.clone()).await?;
        let session = txn.session().clone();
        let (ids, size) = crate::blocking(move || session.write_bytes(b"payload")).await?;
        txn.node(&Node::stream_file("f", size, Timestamp::UNIX_EPOCH), &ids)?;
        Ok(txn
            .commit(SnapshotMeta {
                kind: "stream".into(),
                source: "db".into(),
                ..Default::default()
            })
            .await?
            .id)
    })
    .await
}

/// A claimant that stops renewing lapses by the store's clock; the other daemon takes the
/// run over, and the stopped one, when it wakes, commits nothing.
async fn takeover(at: Where) {
    let f = fixture(at).await;
    let chain = run_at("db.backup", "2026-12-03T02:00:00Z");
    let a = f.a.claim(&chain, 1, &spec("A")).await.unwrap().unwrap();
    // While A renews, B sees it live, however long B watches.
    tokio::time::sleep(std::time::Duration::from_secs(TTL_SECS as u64 + 2)).await;
    let view = f.b.chain_view(&chain).await.unwrap();
    assert!(
        matches!(view.state(now(), margin()), RunState::Live(x) if x.attempt == 1),
        "a renewing claimant is live: {:?}",
        view.state(now(), margin())
    );
    assert!(a.held());
    a.renewer.abort(); // A is stopped (SIGSTOP, a partition)
    sleep_past_lapse().await;
    let view = f.b.chain_view(&chain).await.unwrap();
    let RunState::Lapsed(prev) = view.state(now(), margin()) else {
        panic!("{:?}", view.state(now(), margin()));
    };
    let b =
        f.b.claim(
            &chain,
            view.next,
            &ClaimSpec {
                previous: Some(Previous {
                    attempt: prev.attempt,
                    result: None,
                }),
                ..spec("B")
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        b.confirm().await.unwrap(),
        "the store's clock confirms the lapse"
    );
    // A wakes up: its claim is no longer held, even once it renews again, and its backup
    // commits nothing.
    assert!(!a.held());
    a.renew_now().await.unwrap();
    assert!(
        !a.held(),
        "a renewal after the gap does not make the claim held again"
    );
    let before = f.a.snapshot_listing().await.unwrap().snapshots.len();
    let err = backup_under(&f.a, a.guard()).await.unwrap_err();
    assert!(err.to_string().contains("nothing was committed"), "{err}");
    assert_eq!(
        f.a.snapshot_listing().await.unwrap().snapshots.len(),
        before
    );
    // B's backup commits, and the run is done.
    let id = backup_under(&f.b, b.guard()).await.unwrap();
    b.finish(Finish {
        snapshots: vec![id.clone()],
        ..Finish::ok()
    })
    .await
    .unwrap();
    let view = f.a.chain_view(&chain).await.unwrap();
    match view.state(now(), margin()) {
        RunState::Succeeded(x) => {
            assert_eq!(x.attempt, 2);
            assert_eq!(x.done.as_ref().unwrap().snapshots, vec![id]);
            assert_eq!(
                x.claim.previous,
                Some(Previous {
                    attempt: 1,
                    result: None
                })
            );
        }
        s => panic!("{s:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_claimant_lapses_is_taken_over_and_commits_nothing_local() {
    takeover(Where::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_claimant_lapses_is_taken_over_and_commits_nothing_s3() {
    takeover(Where::S3).await;
}

/// A taker whose own clock misjudged the lapse finds the holder alive by the store's clock,
/// withdraws, and the holder's run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taker_that_misjudged_withdraws() {
    let f = fixture(Where::Local).await;
    let chain = run_at("db.backup", "2026-12-03T02:00:00Z");
    let a = f.a.claim(&chain, 1, &spec("A")).await.unwrap().unwrap();
    // B's clock runs an hour fast: it thinks attempt 1 lapsed.
    let view = f.b.chain_view(&chain).await.unwrap();
    let fast = now() + SignedDuration::from_hours(1);
    assert!(matches!(view.state(fast, margin()), RunState::Lapsed(_)));
    let b =
        f.b.claim(&chain, view.next, &spec("B"))
            .await
            .unwrap()
            .unwrap();
    assert!(!b.confirm().await.unwrap());
    b.withdraw().await.unwrap();
    let view = f.b.chain_view(&chain).await.unwrap();
    assert!(matches!(view.state(now(), margin()), RunState::Live(x) if x.attempt == 1));
    assert_eq!(view.next, 3);
    assert_eq!(
        view.attempt(2).unwrap().result(),
        Some(JobResult::Withdrawn)
    );
    a.finish(Finish::ok()).await.unwrap();
    let view = f.b.chain_view(&chain).await.unwrap();
    assert!(matches!(view.state(now(), margin()), RunState::Succeeded(x) if x.attempt == 1));
}

/// Claims that do not verify, or verify but belong to another run, count for nothing but
/// the numbers they use; a planted `.done` does not end a live attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_and_copied_claims_are_ignored() {
    let f = fixture(Where::Local).await;
    let chain = run_at("db.backup", "2026-12-03T02:00:00Z");
    let other = run_at("db.backup", "2026-12-02T02:00:00Z");
    let real = f.a.claim(&other, 1, &spec("A")).await.unwrap().unwrap();
    let genuine = f.store.get(&other.attempt_name(1)).await.unwrap();
    // attempt 1: garbage; 2: another run's authentic claim, copied; 3: a claim signed by a
    // key that is not this repository's; 4.done without its claim (planted for the next
    // attempt, which therefore skips 4); a name arsip never writes
    f.store
        .create(&chain.attempt_name(1), Bytes::from_static(b"{}"))
        .await
        .unwrap();
    f.store
        .create(&chain.attempt_name(2), genuine)
        .await
        .unwrap();
    let stranger = crate::crypto::WriterKey::from_seed(&[7; 32]);
    let mut doc = real.doc.clone();
    doc.chain = chain.as_str().into();
    doc.attempt = 3;
    f.store
        .create(
            &chain.attempt_name(3),
            Bytes::from(keys::sign_doc(&stranger, &doc)),
        )
        .await
        .unwrap();
    f.store
        .create(
            &format!("{}.done", chain.attempt_name(4)),
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    f.store
        .create(&format!("{chain}/zz"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let view = f.b.chain_view(&chain).await.unwrap();
    assert!(view.attempts.is_empty(), "{:?}", view.attempts);
    assert!(matches!(view.state(now(), margin()), RunState::Free));
    assert_eq!(view.next, 5);
    assert_eq!(view.ignored.len(), 5, "{:?}", view.ignored);
    // The numbers in use are skipped; the next one works.
    assert!(f.b.claim(&chain, 1, &spec("B")).await.unwrap().is_none());
    let b =
        f.b.claim(&chain, view.next, &spec("B"))
            .await
            .unwrap()
            .unwrap();
    // A planted result for a live attempt: the attempt reads as live, and its holder is
    // told it cannot record its own result.
    f.store
        .create(
            &format!("{}.done", chain.attempt_name(b.attempt())),
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    let view = f.a.chain_view(&chain).await.unwrap();
    assert!(matches!(view.state(now(), margin()), RunState::Live(x) if x.attempt == 5));
    let err = b.finish(Finish::ok()).await.unwrap_err();
    assert!(err.to_string().contains("planted"), "{err}");
    drop(real);
}

/// A holder that renews forever still lapses once its claim is older than its timeout plus
/// its TTL: a stuck or hostile daemon delays a run by at most that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_bounds_a_holder_that_renews_forever() {
    let f = fixture(Where::Local).await;
    let chain = run_at("db.backup", "2026-12-03T02:00:00Z");
    let a =
        f.a.claim(
            &chain,
            1,
            &ClaimSpec {
                timeout: SignedDuration::from_secs(1),
                ..spec("A")
            },
        )
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(TTL_SECS as u64 + 2)).await;
    a.renew_now().await.unwrap();
    let view = f.b.chain_view(&chain).await.unwrap();
    let at = view.attempt(1).unwrap();
    assert!(now().duration_since(at.last_seen) < SignedDuration::from_secs(2));
    assert!(matches!(view.state(now(), margin()), RunState::Lapsed(_)));
}

/// Results: a transient failure ends the attempt and another may follow; `job_runs` lists
/// every run of the job in order, with an agent's claims among them (agent credentials
/// are enough to take part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_retries_and_history() {
    let f = fixture(Where::Local).await;
    let agent_file = f.a.add_agent("daemon-c").await.unwrap();
    let agent: Arc<Repository> = Repository::open(
        f.store.clone(),
        OpenWith::Agent(agent_file),
        Arc::new(SystemClock),
    )
    .await
    .unwrap()
    .into();
    let day1 = run_at("db.backup", "2026-12-01T02:00:00Z");
    let day2 = run_at("db.backup", "2026-12-02T02:00:00Z");
    let c = agent.claim(&day1, 1, &spec("C")).await.unwrap().unwrap();
    c.finish(Finish {
        transient: true,
        error_class: Some("storage".into()),
        message: Some("connection reset".into()),
        ..Finish::with(JobResult::Failed)
    })
    .await
    .unwrap();
    let view = f.a.chain_view(&day1).await.unwrap();
    let RunState::Ended(x) = view.state(now(), margin()) else {
        panic!()
    };
    assert!(x.done.as_ref().unwrap().transient);
    assert_eq!(x.claim.writer, hex::encode(agent.writer_id));
    let retry =
        f.a.claim(
            &day1,
            view.next,
            &ClaimSpec {
                previous: Some(Previous {
                    attempt: 1,
                    result: Some(JobResult::Failed),
                }),
                ..spec("A")
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retry.attempt(), 2);
    retry.finish(Finish::ok()).await.unwrap();
    f.b.claim(&day2, 1, &spec("B"))
        .await
        .unwrap()
        .unwrap()
        .finish(Finish::with(JobResult::Warnings))
        .await
        .unwrap();
    let runs = f.b.job_runs("db.backup").await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.chain.clone()).collect::<Vec<_>>(),
        vec![day1, day2]
    );
    assert!(runs
        .iter()
        .all(|r| matches!(r.state(now(), margin()), RunState::Succeeded(_))));
    assert!(f.b.job_runs("other").await.unwrap().is_empty());
}

/// A claim held throughout lets the backup commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_claim_commits() {
    let f = fixture(Where::Local).await;
    let chain = run_at("db.backup", "2026-12-03T02:00:00Z");
    let a = f.a.claim(&chain, 1, &spec("A")).await.unwrap().unwrap();
    backup_under(&f.a, a.guard()).await.unwrap();
    assert_eq!(f.a.snapshot_listing().await.unwrap().snapshots.len(), 1);
}

/// A claim that renews only when told (so that the test counts its objects exactly).
async fn quiet_claim(repo: &FullRepo, chain: &Chain, attempt: u64) -> Claim {
    let c = repo
        .claim(chain, attempt, &spec("A"))
        .await
        .unwrap()
        .unwrap();
    c.renewer.abort();
    c
}

fn age(dir: &tempfile::TempDir, key: &str, by: std::time::Duration) {
    let path = dir.path().join("repo").join(key);
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::from(now()) - by)
        .unwrap();
}

/// Prune's housekeeping: old runs go except the newest kept per job, old runs' renewals go,
/// old lease epochs go except the newest; a dry run removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_keeps_the_newest_and_trims_what_decides_nothing() {
    let f = fixture(Where::Local).await;
    let day = std::time::Duration::from_secs(86_400);
    let mut chains = Vec::new();
    for d in 1..=5 {
        let chain = run_at("db.backup", &format!("2026-11-0{d}T02:00:00Z"));
        let c = quiet_claim(&f.a, &chain, 1).await;
        c.renew_now().await.unwrap();
        c.renew_now().await.unwrap();
        c.finish(Finish::ok()).await.unwrap();
        chains.push(chain);
    }
    let lease = Chain::lease("alerts").unwrap();
    for e in 1..=5 {
        quiet_claim(&f.a, &lease, e)
            .await
            .renew_now()
            .await
            .unwrap();
    }
    // Runs of days 1–3 and every lease object are 10 days old; days 4–5 are 3 days old.
    let names: Vec<String> = f
        .store
        .list("")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    for n in names
        .iter()
        .filter(|n| n.starts_with(JOBS_PREFIX) || n.starts_with(LEASES_PREFIX))
    {
        let old =
            chains[..3].iter().any(|c| n.starts_with(&c.prefix())) || n.starts_with(LEASES_PREFIX);
        age(&f.dir, n, if old { 10 * day } else { 3 * day });
    }
    let before = now() - SignedDuration::from_hours(7 * 24);
    let dry = f.a.jobs_expire(before, 2, true).await.unwrap();
    assert_eq!(
        dry,
        JobsExpired {
            runs: 3,
            renewals: 4,
            epochs: 2,
            planted: 0,
        }
    );
    let count = || async {
        f.store
            .list("")
            .try_filter(|m| {
                futures::future::ready(
                    m.key.starts_with(JOBS_PREFIX) || m.key.starts_with(LEASES_PREFIX),
                )
            })
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    };
    assert_eq!(count().await, 5 * 4 + 5 * 2);
    assert_eq!(f.a.jobs_expire(before, 2, false).await.unwrap(), dry);
    let runs = f.a.job_runs("db.backup").await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.chain.clone()).collect::<Vec<_>>(),
        chains[3..].to_vec()
    );
    assert!(runs
        .iter()
        .all(|r| matches!(r.state(now(), margin()), RunState::Succeeded(_))));
    assert_eq!(count().await, 2 * 2 + 3 * 2);
    let epochs = f.a.chain_view(&lease).await.unwrap();
    assert_eq!(
        epochs
            .attempts
            .iter()
            .map(|a| a.attempt)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
}

/// Two daemons that chose different numbers for one run (a planted object between their
/// listings made one of them skip a number) never both go on: the later claim sees the
/// earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_numbers_claimed_for_one_run_do_not_both_run() {
    let f = fixture(Where::Local).await;
    let chain = run_at("db.backup", "2026-12-03T02:00:00Z");
    let a = f.a.claim(&chain, 1, &spec("A")).await.unwrap().unwrap();
    let b = f.b.claim(&chain, 2, &spec("B")).await.unwrap().unwrap();
    let (ra, rb) = (a.confirm().await.unwrap(), b.confirm().await.unwrap());
    assert!(!(ra && rb), "both claimants would run");
    assert!(ra, "the earlier claim goes on");
    // Once A succeeded, a later claimant steps back too.
    a.finish(Finish::ok()).await.unwrap();
    let c = f.b.claim(&chain, 3, &spec("C")).await.unwrap().unwrap();
    assert!(!c.confirm().await.unwrap());
    drop(b);
}

/// Whatever TTL and timeout a claim names, it lapses by the caps: a hostile claimant
/// cannot hold a run for ever by naming huge ones and renewing.
#[test]
fn a_claims_own_ttl_and_timeout_are_capped() {
    let t0: Timestamp = "2026-12-03T02:00:00Z".parse().unwrap();
    let claim = ClaimDoc {
        version: 1,
        chain: "jobs/x/20261203T020000Z".into(),
        attempt: 1,
        daemon: "evil".into(),
        host: "h".into(),
        writer: "00".into(),
        ttl_secs: u64::MAX,
        timeout_secs: u64::MAX,
        config_digest: None,
        previous: None,
        started: t0,
    };
    let at = |renewed: SignedDuration| Attempt {
        attempt: 1,
        claim: claim.clone(),
        claimed_at: t0,
        last_seen: t0 + renewed,
        done: None,
        done_at: None,
    };
    let m = SignedDuration::from_mins(2);
    // Not renewed for more than the capped TTL: lapsed.
    assert!(at(SignedDuration::ZERO).lapsed(t0 + MAX_CLAIM_TTL + m * 2, m));
    // Renewing all along, but past the capped timeout plus TTL: lapsed.
    let late = t0 + MAX_CLAIM_TIMEOUT + MAX_CLAIM_TTL + SignedDuration::from_mins(1);
    assert!(at(late.duration_since(t0) - SignedDuration::from_secs(5)).lapsed(late, m));
    // Renewing, within both: live.
    assert!(!at(SignedDuration::from_hours(2)).lapsed(t0 + SignedDuration::from_hours(2), m));
}
