//! Unit tests of the walk that need the test-only [`hooks`](super::hooks): entries that
//! vanish between listing and reading, files that grow while they are read, read errors —
//! each made to happen at exactly that moment on a real filesystem.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arsip_repo::clock::SystemClock;
use arsip_repo::Node;
use arsip_repo::{FullRepo, InitOptions, Repository};
use arsip_repo::{SnapshotMeta, SnapshotTxn};
use arsip_storage::backend;

use super::hooks::{self, Event};
use super::{files, Action, FilesOptions, FilesOutcome};

async fn repo() -> FullRepo {
    std::env::set_var("ARSIP_TEST_WEAK_KDF", "1");
    let store = backend::open(&backend::Location::Memory, false).unwrap();
    let (repo, _) = Repository::init(
        store,
        Some(b"pw"),
        &InitOptions::default(),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    repo
}

async fn backup(repo: &FullRepo, root: &Path) -> FilesOutcome {
    let txn = SnapshotTxn::start(repo.clone()).await.unwrap();
    let meta = SnapshotMeta {
        kind: "files".into(),
        source: "test".into(),
        ..Default::default()
    };
    let opts = FilesOptions {
        paths: vec![root.to_path_buf()],
        ..Default::default()
    };
    files(txn, opts, meta).await.unwrap()
}

/// (node, content) for every node of the snapshot.
async fn contents(repo: &FullRepo, id: &str) -> Vec<(Node, Vec<u8>)> {
    let snaps = repo.snapshots_report().await.unwrap().0;
    let snap = arsip_repo::select_snapshot(&snaps, id).unwrap().clone();
    let reader = arsip_repo::Reader::open(repo).await.unwrap();
    let mut t = reader.tree(&snap.manifest).await.unwrap();
    let mut out = Vec::new();
    while let Some((n, chunks)) = t.next_node().unwrap() {
        let mut data = Vec::new();
        for c in chunks {
            data.extend(reader.chunk(c).await.unwrap());
        }
        out.push((n, data));
    }
    out
}

fn tree_root() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(d.path()).unwrap().join("t");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a"), b"a").unwrap();
    std::fs::write(root.join("sub/keep"), b"keep").unwrap();
    (d, root)
}

fn bytes(p: &Path) -> Vec<u8> {
    std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec()
}

fn tree_path(p: &Path) -> String {
    p.to_str().unwrap()[1..].to_string()
}

/// Entries deleted after their directory was listed (a file, a directory with contents, a
/// symlink, a FIFO) are skipped with a warning naming each; the snapshot is committed,
/// partial, and holds everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_vanish_after_listing_are_skipped() {
    let (_d, root) = tree_root();
    std::fs::write(root.join("gone-file"), b"x").unwrap();
    std::fs::create_dir_all(root.join("gone-dir/inner")).unwrap();
    std::fs::write(root.join("gone-dir/inner/f"), b"x").unwrap();
    std::os::unix::fs::symlink("a", root.join("gone-link")).unwrap();
    let listed = bytes(&root);
    let r = root.clone();
    let _h = hooks::install(move |e| {
        if let Event::Listed(dir) = e {
            if dir == listed.as_slice() {
                std::fs::remove_file(r.join("gone-file")).unwrap();
                std::fs::remove_dir_all(r.join("gone-dir")).unwrap();
                std::fs::remove_file(r.join("gone-link")).unwrap();
            }
        }
        None
    });
    let repo = repo().await;
    let o = backup(&repo, &root).await;
    assert!(o.partial);
    assert_eq!(
        (o.report.skipped, o.report.changed, o.report.incomplete),
        (3, 0, 0)
    );
    let mut warned: Vec<_> = o
        .report
        .warnings
        .iter()
        .map(|w| (w.path.clone(), w.action))
        .collect();
    warned.sort();
    let p = |n: &str| root.join(n).display().to_string();
    assert_eq!(
        warned,
        [
            (p("gone-dir"), Action::Skipped),
            (p("gone-file"), Action::Skipped),
            (p("gone-link"), Action::Skipped)
        ]
    );
    assert!(o
        .report
        .warnings
        .iter()
        .all(|w| w.reason.contains("vanished")));
    let c = contents(&repo, &o.backup.id).await;
    let paths: Vec<_> = c.iter().map(|(n, _)| n.path.clone()).collect();
    for keep in ["a", "sub", "sub/keep"] {
        assert!(
            paths.contains(&tree_path(&root.join(keep))),
            "{keep}: {paths:?}"
        );
    }
    assert!(!paths.iter().any(|p| p.contains("gone")), "{paths:?}");
    let snaps = repo.snapshots_report().await.unwrap().0;
    let f = &snaps[0].manifest.facts;
    assert_eq!(
        (f["partial"].as_bool(), f["skipped"].as_u64()),
        (Some(true), Some(3))
    );
}

/// A file that grows (or shrinks) while it is read is kept as read and flagged: size and
/// content are what was read (a growing one up to its size at open), the warning names it,
/// the snapshot is partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_change_while_read_are_kept_and_flagged() {
    let (_d, root) = tree_root();
    let original = vec![7u8; 300_000];
    std::fs::write(root.join("grows"), &original).unwrap();
    std::fs::write(root.join("shrinks"), &original).unwrap();
    let (grows, shrinks) = (bytes(&root.join("grows")), bytes(&root.join("shrinks")));
    let fired = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let f2 = fired.clone();
    let r = root.clone();
    let _h = hooks::install(move |e| {
        if let Event::Read(p) = e {
            let mut fired = f2.lock().unwrap();
            if !fired.iter().any(|q| q == p) && (p == grows.as_slice() || p == shrinks.as_slice()) {
                fired.push(p.to_vec());
                use std::io::Write;
                if p == grows.as_slice() {
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(r.join("grows"))
                        .unwrap();
                    f.write_all(&[9u8; 50_000]).unwrap();
                } else {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(r.join("shrinks"))
                        .unwrap();
                    f.set_len(1000).unwrap();
                }
            }
        }
        None
    });
    let repo = repo().await;
    let o = backup(&repo, &root).await;
    assert_eq!(fired.lock().unwrap().len(), 2);
    assert!(o.partial);
    assert_eq!(
        (o.report.skipped, o.report.changed, o.report.incomplete),
        (0, 2, 0)
    );
    assert!(o
        .report
        .warnings
        .iter()
        .all(|w| w.action == Action::Changed && w.reason.contains("changed while it was read")));
    let c = contents(&repo, &o.backup.id).await;
    let node = |p: &Path| {
        c.iter()
            .find(|(n, _)| n.path == tree_path(p))
            .unwrap()
            .clone()
    };
    // A growing file is read up to the size it had when opened (a log written without
    // pause would otherwise keep the backup reading for ever): the appended bytes wait for
    // the next backup.
    let (n, data) = node(&root.join("grows"));
    assert_eq!(n.size, data.len() as u64);
    assert_eq!(data, original, "the grown file up to its size at open");
    assert_eq!(
        std::fs::metadata(root.join("grows")).unwrap().len(),
        350_000
    );
    let (n, data) = node(&root.join("shrinks"));
    assert_eq!((n.size, data.len()), (1000, 1000));
    let (_, data) = node(&root.join("sub/keep"));
    assert_eq!(data, b"keep");
}

/// A read error in the middle of a file skips that file (its path and the error named);
/// the files after it are read, and the snapshot passes `check --read-data`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_error_skips_the_file_and_the_backup_goes_on() {
    let (_d, root) = tree_root();
    std::fs::write(root.join("bad"), vec![1u8; 5 << 20]).unwrap();
    std::fs::write(root.join("c-after"), b"after").unwrap();
    let bad = bytes(&root.join("bad"));
    let reads = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r2 = reads.clone();
    let _h = hooks::install(move |e| match e {
        Event::Read(p) if p == bad.as_slice() => {
            // Fail after the first reads, once some chunks are already on their way.
            (r2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 3)
                .then(|| std::io::Error::from_raw_os_error(5))
        }
        _ => None,
    });
    let repo = repo().await;
    let o = backup(&repo, &root).await;
    assert!(o.partial);
    assert_eq!((o.report.skipped, o.report.changed), (1, 0));
    let w = &o.report.warnings[0];
    assert_eq!(w.path, root.join("bad").display().to_string());
    assert!(w.reason.contains("Input/output error"), "{}", w.reason);
    let c = contents(&repo, &o.backup.id).await;
    assert!(!c
        .iter()
        .any(|(n, _)| n.path == tree_path(&root.join("bad"))));
    let (_, after) = c
        .iter()
        .find(|(n, _)| n.path == tree_path(&root.join("c-after")))
        .unwrap();
    assert_eq!(after, b"after");
    let report = arsip_repo::check(repo, arsip_repo::ReadData::Subset(100.0))
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
