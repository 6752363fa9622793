//! Prune beside live writers, in one process against a real local directory store: what
//! it reclaims, what a live session keeps, that condemned chunks are stored again rather
//! than referenced, that a session that stopped renewing is fenced and cannot commit, and
//! one prune at a time.

use std::sync::Arc;

use arsip_storage::{backend, DynStore};

use super::*;
use crate::clock::SystemClock;
use crate::snapshot::Node;
use crate::txn::{SnapshotMeta, SnapshotTxn};
use crate::{InitOptions, LocalSettings, OpenWith};

const TTL_SECS: i64 = 2;

struct Fixture {
    _dir: tempfile::TempDir,
    repo: FullRepo,
}

async fn fixture() -> Fixture {
    std::env::set_var("ARSIP_TEST_WEAK_KDF", "1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("repo")).unwrap();
    let store: DynStore =
        backend::open(&backend::Location::Local(dir.path().join("repo")), false).unwrap();
    let opts = InitOptions {
        pack_size: 8 << 20,
        ..Default::default()
    };
    Repository::init(store.clone(), Some(b"pw"), &opts, Arc::new(SystemClock))
        .await
        .unwrap();
    let repo = Repository::open(
        store,
        OpenWith::Password(zeroize::Zeroizing::new(b"pw".to_vec())),
        Arc::new(SystemClock),
    )
    .await
    .unwrap()
    .full("test")
    .unwrap()
    .with_local(LocalSettings {
        cache_dir: dir.path().join("cache"),
        sessions: SessionTiming::with_ttl(jiff::SignedDuration::from_secs(TTL_SECS)),
        ..Default::default()
    });
    Fixture { _dir: dir, repo }
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Start a backup of `content` (one file), not yet committed.
async fn started(repo: &FullRepo, content: &[u8]) -> (SnapshotTxn, u64) {
    let mut txn = SnapshotTxn::start(repo.clone()).await.unwrap();
    let session = txn.session().clone();
    let c = content.to_vec();
    let (ids, size) = crate::blocking(move || session.write_bytes(&c))
        .await
        .unwrap();
    let new = txn
        .progress()
        .new_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    txn.node(
        &Node::stream_file("f", size, jiff::Timestamp::UNIX_EPOCH),
        &ids,
    )
    .unwrap();
    (txn, new)
}

async fn commit(txn: SnapshotTxn) -> Result<String> {
    let meta = SnapshotMeta {
        kind: "stdin".into(),
        source: "test".into(),
        ..Default::default()
    };
    txn.commit(meta).await.map(|o| o.id)
}

async fn backup(repo: &FullRepo, content: &[u8]) -> String {
    commit(started(repo, content).await.0).await.unwrap()
}

/// The file content of snapshot `id`, read back through a fresh reader.
async fn content(repo: &FullRepo, id: &str) -> Vec<u8> {
    let snaps = repo.snapshot_listing().await.unwrap().snapshots;
    let snap = snaps.iter().find(|s| s.id == id).expect("snapshot listed");
    let reader = Reader::open(repo).await.unwrap();
    let mut t = reader.tree(&snap.manifest).await.unwrap();
    let (_, chunks) = t.next_node().unwrap().unwrap();
    let mut out = Vec::new();
    for c in chunks {
        out.extend(reader.chunk(c).await.unwrap());
    }
    out
}

async fn assert_clean(repo: &FullRepo) {
    let r = crate::check::check(repo.clone(), crate::check::ReadData::Subset(100.0))
        .await
        .unwrap();
    assert!(r.ok(), "check: {:?}", r.problems);
}

async fn pack_count(repo: &FullRepo) -> usize {
    list_packs(repo).await.unwrap().len()
}

async fn run(repo: &FullRepo) -> PruneReport {
    prune(repo, &PruneOptions::default()).await.unwrap()
}

async fn expire() {
    tokio::time::sleep(std::time::Duration::from_millis(
        (TTL_SECS as u64 * 1000) * 7 / 5 + 500,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_then_prune_reclaims_repacks_and_keeps_the_rest() {
    let f = fixture().await;
    // `a` interleaves pieces that `b` shares with pieces of its own, so that packs hold
    // both: forgetting `a` leaves packs partly used, which prune repacks.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for n in 0..3 {
        let shared = data(10 + n, 3 << 20);
        a.extend(&shared);
        a.extend(data(20 + n, 3 << 20));
        b.extend(&shared);
    }
    b.extend(data(3, 1 << 20));
    let ia = backup(&f.repo, &a).await;
    let ib = backup(&f.repo, &b).await;
    let before = pack_count(&f.repo).await;
    f.repo.forget(&[ia]).await.unwrap();

    let dry = prune(
        &f.repo,
        &PruneOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(dry.condemned_packs > 0, "{dry:?}");
    assert_eq!(
        pack_count(&f.repo).await,
        before,
        "a dry run deletes nothing"
    );

    let r = run(&f.repo).await;
    assert!(r.deleted_packs > 0 && r.deleted_bytes >= 2 << 20, "{r:?}");
    assert!(
        r.repacked_packs > 0,
        "the pack shared by both is repacked: {r:?}"
    );
    assert_eq!(r.waiting_packs, 0);
    // Only the kept blobs are read (whole packs would be about twice what is written).
    assert!(
        r.repack_read_bytes * 10 < r.repack_written_bytes * 11 + (1 << 20),
        "{r:?}"
    );
    assert_eq!(content(&f.repo, &ib).await, b);
    assert_clean(&f.repo).await;

    // Nothing left to do, and nothing breaks when run again.
    let again = run(&f.repo).await;
    assert_eq!(
        (again.deleted_packs, again.repacked_packs),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(content(&f.repo, &ib).await, b);
    // Sessions of committed backups and of the prunes themselves are gone; one plan stays.
    let (sessions, junk) = f.repo.sessions().await.unwrap();
    assert!(
        sessions.is_empty() && junk.is_empty(),
        "{sessions:?} {junk:?}"
    );

    // A new backup of the same data after the prunes stores nothing twice and restores.
    let ic = backup(&f.repo, &b).await;
    assert_eq!(content(&f.repo, &ic).await, b);
    assert_clean(&f.repo).await;
}

/// A backup running while prune condemns what it deduplicated against keeps it: prune
/// waits for its session, and once it committed, its snapshot references the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_keeps_what_it_may_reference() {
    let f = fixture().await;
    let a = data(4, 2 << 20);
    let ia = backup(&f.repo, &a).await;
    let (w, new) = started(&f.repo, &a).await;
    assert_eq!(new, 0, "the running backup deduplicated against the first");
    f.repo.forget(&[ia]).await.unwrap();
    let r = run(&f.repo).await;
    assert!(r.condemned_packs > 0 && r.deleted_packs == 0, "{r:?}");
    assert!(r.waiting_packs > 0 && !r.waiting_for.is_empty(), "{r:?}");
    let iw = commit(w).await.unwrap();
    let r = run(&f.repo).await;
    assert_eq!(
        r.deleted_packs, 0,
        "the committed snapshot rescues its data: {r:?}"
    );
    assert!(r.rescued_packs > 0, "{r:?}");
    assert_eq!(content(&f.repo, &iw).await, a);
    assert_clean(&f.repo).await;
}

/// After a plan condemned data, a backup that starts does not deduplicate against it (it
/// stores the chunks again), so deleting the condemned packs cannot break it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condemned_chunks_are_stored_again_not_referenced() {
    let f = fixture().await;
    let a = data(5, 2 << 20);
    let ia = backup(&f.repo, &a).await;
    // A session that blocks deletion, so the condemned packs stay for a while.
    let (blocker, _) = started(&f.repo, b"other").await;
    f.repo.forget(&[ia]).await.unwrap();
    let r = run(&f.repo).await;
    assert!(r.condemned_packs > 0 && r.deleted_packs == 0, "{r:?}");
    let (w, new) = started(&f.repo, &a).await;
    assert!(
        new >= a.len() as u64,
        "stored again, not deduplicated: {new}"
    );
    let iw = commit(w).await.unwrap();
    drop(blocker);
    expire().await;
    let r = run(&f.repo).await;
    assert!(r.deleted_packs > 0, "{r:?}");
    assert_eq!(
        r.fenced_sessions.len(),
        1,
        "the abandoned session is fenced: {r:?}"
    );
    assert_eq!(content(&f.repo, &iw).await, a);
    assert_clean(&f.repo).await;
}

/// A writer whose session stopped renewing (paused past its lifetime) is fenced by prune,
/// and its commit fails instead of publishing a snapshot whose data may be gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_session_cannot_commit() {
    let f = fixture().await;
    let a = data(6, 2 << 20);
    let ia = backup(&f.repo, &a).await;
    let (w, _) = started(&f.repo, &a).await;
    w.pause_renewals();
    f.repo.forget(&[ia]).await.unwrap();
    expire().await;
    let r = run(&f.repo).await;
    assert_eq!(r.fenced_sessions.len(), 1, "{r:?}");
    assert!(r.deleted_packs > 0, "{r:?}");
    let e = commit(w).await.unwrap_err();
    assert!(
        matches!(&e, RepoError::Busy(m) if m.contains("fenced")) && e.is_transient(),
        "{e}"
    );
    let listing = f.repo.snapshot_listing().await.unwrap();
    assert!(listing.snapshots.is_empty(), "{:?}", listing.snapshots);
    assert_clean(&f.repo).await;
}

/// One prune at a time: a claim whose session lives refuses a second prune.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_prune_at_a_time() {
    let f = fixture().await;
    backup(&f.repo, b"x").await;
    let shared = f.repo.shared();
    let (lease, state) = Session::open(&shared, Purpose::Prune).await.unwrap();
    let timing = f.repo.session_timing();
    claim(&f.repo, &lease, &state, &timing).await.unwrap();
    let e = prune(&f.repo, &PruneOptions::default()).await.unwrap_err();
    assert!(
        matches!(&e, RepoError::Busy(m) if m.contains("another prune")) && e.is_transient(),
        "{e}"
    );
    // Once that prune's session is gone for longer than its lifetime, the claim lapses.
    drop(lease);
    expire().await;
    run(&f.repo).await;
}

/// A full-key backup remembers what its snapshot references on this host, and each other
/// snapshot's tree is read once per host: prunes take references from the cache. A cache
/// entry that was edited, swapped for another snapshot's or truncated is ignored and the
/// tree read again, so no entry can make prune drop referenced data; the entries of
/// forgotten snapshots go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_references_are_cached_and_a_tampered_entry_is_read_again() {
    let f = fixture().await;
    let (a, b, c) = (data(1, 3 << 20), data(2, 3 << 20), data(3, 3 << 20));
    let ia = backup(&f.repo, &a).await;
    let ib = backup(&f.repo, &b).await;
    let dir = f.repo.repo_cache_dir().join("refs");
    let entry = |id: &str| dir.join(id);
    // The backups' own entries are exactly what reading their trees gives.
    let cache = RefCache::of(&f.repo).unwrap();
    let reader = Reader::open(&f.repo).await.unwrap();
    for snap in f.repo.snapshot_listing().await.unwrap().snapshots {
        let from_tree = read_refs(&reader, &snap.manifest).await.unwrap();
        assert_eq!(cache.get(&snap.id), Some(from_tree), "{}", snap.id);
    }
    // So the prune reads no tree.
    let first = run(&f.repo).await;
    assert_eq!((first.trees_read, first.trees_cached), (0, 2), "{first:?}");
    // An entry the backup did not leave (another host's snapshot) is read once.
    std::fs::remove_file(entry(&ia)).unwrap();
    let ic = backup(&f.repo, &c).await;
    let second = run(&f.repo).await;
    assert_eq!(
        (second.trees_read, second.trees_cached),
        (1, 2),
        "{second:?}"
    );

    // `a`'s entry replaced by `c`'s (both authentic, for another snapshot), `b`'s edited,
    // `c`'s truncated: all three trees are read again, nothing referenced goes.
    std::fs::copy(entry(&ic), entry(&ia)).unwrap();
    let mut eb = std::fs::read(entry(&ib)).unwrap();
    let last = eb.len() - 1;
    eb[last] ^= 1;
    std::fs::write(entry(&ib), eb).unwrap();
    let ec = std::fs::read(entry(&ic)).unwrap();
    std::fs::write(entry(&ic), &ec[..ec.len() / 2]).unwrap();
    f.repo.forget(std::slice::from_ref(&ib)).await.unwrap();
    let third = run(&f.repo).await;
    assert_eq!((third.trees_read, third.trees_cached), (2, 0), "{third:?}");
    assert!(third.deleted_packs > 0, "b's data goes: {third:?}");
    assert_eq!(content(&f.repo, &ia).await, a);
    assert_eq!(content(&f.repo, &ic).await, c);
    assert_clean(&f.repo).await;
    assert!(
        !entry(&ib).exists(),
        "the forgotten snapshot's entry is removed"
    );
    let fourth = run(&f.repo).await;
    assert_eq!(
        (fourth.trees_read, fourth.trees_cached),
        (0, 2),
        "{fourth:?}"
    );
}

fn slot(offset: u32, len: u32) -> Slot {
    Slot {
        id: [offset as u8; 32],
        pack: 0,
        offset,
        len,
        raw_len: len,
        flags: 0,
        trust: 0,
        _pad: [0; 2],
    }
}

fn spans(reads: &[Vec<Slot>]) -> Vec<Vec<u32>> {
    reads
        .iter()
        .map(|r| r.iter().map(|s| s.offset).collect())
        .collect()
}

#[test]
fn repack_reads_join_close_blobs_and_skip_far_unused_bytes() {
    let k = 1 << 10;
    let gap = REPACK_GAP as u32;
    // Out of order, one named twice, one exactly the gap away, one a byte further.
    let slots = vec![
        slot(10 * k, k),
        slot(0, k),
        slot(0, k),
        slot(11 * k + gap, k),
        slot(12 * k + 2 * gap + 1, k),
        slot(40 << 20, k),
    ];
    let reads = repack_reads(slots);
    assert_eq!(
        spans(&reads),
        vec![
            vec![0, 10 * k, 11 * k + gap],
            vec![12 * k + 2 * gap + 1],
            vec![40 << 20]
        ]
    );
    // Adjacent blobs up to REPACK_READ are one read; the next one starts another.
    let n = (REPACK_READ / (1 << 20)) as u32;
    let adjacent: Vec<Slot> = (0..=n).map(|i| slot(i << 20, 1 << 20)).collect();
    let reads = repack_reads(adjacent);
    assert_eq!(
        reads.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![n as usize, 1]
    );
    // A blob overlapping the previous one (a damaged index) is read on its own, not dropped.
    let reads = repack_reads(vec![slot(0, 4 * k), slot(2 * k, 4 * k)]);
    assert_eq!(spans(&reads), vec![vec![0], vec![2 * k]]);
    assert!(repack_reads(Vec::new()).is_empty());
}
