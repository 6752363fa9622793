//! Restores of hostile snapshots into hostile targets, on the real filesystem, as root (what
//! CI runs as): a restore never changes anything outside its target, never follows a link,
//! refuses to overwrite unless asked, and brings back what the tree records (owners, modes
//! with setuid/setgid/sticky, hard links, holes, extended attributes and ACLs, capabilities,
//! special files, non-UTF-8 names), and a disk that fills up fails with the real error.
//!
//! Snapshots are built directly with `SnapshotTxn` and `Node`, as an attacker holding agent
//! credentials (or any user whose files are backed up) could write them. Every case checks a
//! sentinel tree beside the target, before and after.
//!
//! Modules: `support` (repository, snapshot builder, sentinel), then one module per class.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arsip_files::restore::{self, RestoreOptions};
use arsip_repo::clock::SystemClock;
use arsip_repo::{FullRepo, InitOptions, RepoError, Repository};
use arsip_repo::{Node, NodeType, Snapshot};
use arsip_repo::{SnapshotMeta, SnapshotTxn};
use arsip_storage::backend;

mod support {
    use super::*;

    /// Tree nodes with the data of regular files.
    pub type Entries = Vec<(Node, Vec<u8>)>;

    pub async fn repo() -> FullRepo {
        std::env::set_var("ARSIP_TEST_WEAK_KDF", "1");
        let store = backend::open(&backend::Location::Memory, false).unwrap();
        let opts = InitOptions {
            chunker: arsip_repo::ChunkerParams {
                min: 16 * 1024,
                avg: 64 * 1024,
                max: 256 * 1024,
            },
            pack_size: 1 << 20,
            ..InitOptions::default()
        };
        let (repo, _) = Repository::init(store, Some(b"pw"), &opts, Arc::new(SystemClock))
            .await
            .unwrap();
        repo
    }

    pub fn ts() -> jiff::Timestamp {
        jiff::Timestamp::new(1_700_000_000, 123_456_789).unwrap()
    }

    pub fn file(path: &str, data: &[u8]) -> (Node, Vec<u8>) {
        (
            Node {
                path: path.into(),
                node_type: NodeType::File,
                mode: 0o644,
                mtime: Some(ts()),
                size: data.len() as u64,
                ..Default::default()
            },
            data.to_vec(),
        )
    }

    pub fn dir(path: &str) -> (Node, Vec<u8>) {
        (
            Node {
                path: path.into(),
                node_type: NodeType::Dir,
                mode: 0o755,
                mtime: Some(ts()),
                ..Default::default()
            },
            vec![],
        )
    }

    pub fn symlink(path: &str, target: &str) -> (Node, Vec<u8>) {
        (
            Node {
                path: path.into(),
                node_type: NodeType::Symlink,
                mode: 0o777,
                mtime: Some(ts()),
                target: Some(target.into()),
                ..Default::default()
            },
            vec![],
        )
    }

    pub fn owned(mut e: (Node, Vec<u8>), uid: u32, gid: u32, mode: u32) -> (Node, Vec<u8>) {
        e.0.uid = Some(uid);
        e.0.gid = Some(gid);
        e.0.mode = mode;
        e
    }

    /// Commit a snapshot holding exactly `entries`, in this order; data goes to regular
    /// files (a hard-link follower gets none).
    pub async fn snapshot(repo: &FullRepo, entries: Vec<(Node, Vec<u8>)>) -> Snapshot {
        let mut txn = SnapshotTxn::start(repo.clone()).await.unwrap();
        for (node, data) in entries {
            let ids = if node.node_type == NodeType::File && !data.is_empty() {
                let s = txn.session().clone();
                tokio::task::spawn_blocking(move || s.write_stream(std::io::Cursor::new(data)))
                    .await
                    .unwrap()
                    .unwrap()
                    .0
            } else {
                vec![]
            };
            txn.node(&node, &ids).unwrap();
        }
        let out = txn
            .commit(SnapshotMeta {
                kind: "files".into(),
                source: "hostile".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let snaps = repo.snapshots_report().await.unwrap().0;
        arsip_repo::select_snapshot(&snaps, &out.id)
            .unwrap()
            .clone()
    }

    pub async fn restore_to(
        repo: &FullRepo,
        snap: &Snapshot,
        target: &Path,
        opts: &RestoreOptions,
    ) -> Result<restore::RestoreOutcome, RepoError> {
        let reader = arsip_repo::Reader::open(repo).await?;
        restore::to_dir_with(&reader, snap, target, &[], opts, &|_| {}).await
    }

    pub fn overwrite() -> RestoreOptions {
        RestoreOptions {
            overwrite: true,
            ..Default::default()
        }
    }

    /// A sentinel tree outside the target: files, a directory, a file owned by a user.
    pub struct World {
        pub _tmp: tempfile::TempDir,
        pub base: PathBuf,
        pub sentinel: PathBuf,
        pub target: PathBuf,
    }

    impl World {
        pub fn new() -> World {
            let tmp = tempfile::tempdir().unwrap();
            let base = tmp.path().canonicalize().unwrap();
            let sentinel = base.join("sentinel");
            std::fs::create_dir_all(sentinel.join("dir/deeper")).unwrap();
            std::fs::write(sentinel.join("victim"), "ORIGINAL").unwrap();
            std::fs::write(sentinel.join("dir/inner"), "INNER").unwrap();
            std::fs::write(sentinel.join("dir/deeper/passwd"), "root:x:0:0").unwrap();
            std::os::unix::fs::symlink("victim", sentinel.join("link")).unwrap();
            std::fs::create_dir(base.join("targets")).unwrap();
            World {
                _tmp: tmp,
                target: base.join("targets/main"),
                base,
                sentinel,
            }
        }

        /// A fresh target path beside the main one.
        pub fn at(&self, name: &str) -> PathBuf {
            self.base.join("targets").join(name)
        }

        pub fn victim(&self) -> String {
            self.sentinel.join("victim").display().to_string()
        }

        pub fn sentinel_dir(&self) -> String {
            self.sentinel.join("dir").display().to_string()
        }

        /// Everything outside the target: the sentinel tree and the base directory's entries.
        pub fn outside(&self) -> Vec<String> {
            let mut out = fingerprint(&self.sentinel);
            let mut names: Vec<_> = std::fs::read_dir(&self.base)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            out.push(format!("base: {names:?}"));
            out
        }
    }

    /// Every entry below `root` with its type, owner, mode, size, times, content or target.
    pub fn fingerprint(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {:?}", std::fs::read_link(&p).unwrap())
            } else if m.is_dir() {
                let mut kids: Vec<_> = std::fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                kids.sort();
                stack.extend(kids);
                "dir".into()
            } else if m.is_file() {
                format!("{:?}", std::fs::read(&p).unwrap())
            } else {
                format!("special {:o}", m.mode())
            };
            let mut names = vec![0u8; 65536];
            let n = rustix::fs::llistxattr(&p, &mut names[..]).unwrap_or(0);
            let xattrs: Vec<String> = names[..n]
                .split(|&b| b == 0)
                .filter(|x| !x.is_empty())
                .map(|x| {
                    let name = String::from_utf8_lossy(x).into_owned();
                    let mut v = vec![0u8; 65536];
                    let len = rustix::fs::lgetxattr(&p, name.as_str(), &mut v[..]).unwrap_or(0);
                    format!("{name}={:?}", &v[..len])
                })
                .collect();
            out.push(format!(
                "{} {}:{} {:o} {} {}.{} {what} {xattrs:?}",
                p.display(),
                m.uid(),
                m.gid(),
                m.mode(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            ));
        }
        out.sort();
        out
    }

    /// Names below `root`, relative, sorted.
    pub fn names(root: &Path) -> Vec<String> {
        let mut out: Vec<String> = fingerprint(root)
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .map(|p| {
                Path::new(&p)
                    .strip_prefix(root)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .filter(|p| !p.is_empty())
            .collect();
        out.sort();
        out
    }
}

use support::*;

/// Links planted inside the snapshot, at the names a restore creates (final names, the old
/// temporary names, directories replaced by links, links below links, relative and absolute
/// targets): nothing outside the target changes, whatever the restore's outcome.
mod planted_in_snapshot {
    use super::*;

    fn cases(w: &World) -> Vec<(&'static str, Entries)> {
        let v = w.victim();
        let d = w.sentinel_dir();
        let rel_v = "../../sentinel/victim".to_string();
        let deep_v = format!("../../../../../../../..{v}");
        let mut out = vec![];
        for (label, t) in [("abs", &v), ("rel", &rel_v), ("deep", &deep_v)] {
            let _ = label;
            let mut evil = symlink("x", t);
            evil.0.xattrs = ["user.evil", "trusted.evil", "security.evil"]
                .iter()
                .map(|n| arsip_repo::Xattr {
                    name: n.to_string(),
                    value: "RVZJTA==".into(),
                })
                .collect();
            evil.0.uid = Some(1234);
            evil.0.gid = Some(1234);
            out.push(("a link with xattrs and an owner", vec![evil]));
            let mut fifo = (
                Node {
                    node_type: NodeType::Fifo,
                    mode: 0o4777,
                    uid: Some(1234),
                    gid: Some(1234),
                    ..dir("sub").0
                },
                vec![],
            );
            fifo.0.xattrs = vec![arsip_repo::Xattr {
                name: "trusted.evil".into(),
                value: "RVZJTA==".into(),
            }];
            out.push(("a fifo at a planted link", vec![symlink("sub", t), fifo]));
            out.push((
                "link at the final name, then the file",
                vec![symlink("f", t), file("f", b"EVIL")],
            ));
            out.push((
                "link at the old temporary name",
                vec![symlink(".f.arsip-tmp", t), file("f", b"EVIL")],
            ));
            out.push((
                "link at a temporary name in a subdirectory",
                vec![
                    dir("sub"),
                    symlink("sub/.x.arsip-tmp", t),
                    file("sub/x", b"EVIL"),
                ],
            ));
            out.push((
                "link at the final name, then a fifo and a symlink",
                vec![
                    symlink("p", t),
                    (
                        Node {
                            node_type: NodeType::Fifo,
                            mode: 0o666,
                            ..dir("p").0
                        },
                        vec![],
                    ),
                    symlink("p", "/etc/shadow"),
                ],
            ));
            out.push((
                "hard link follower at a planted link",
                vec![
                    (
                        Node {
                            hardlink: Some(9),
                            ..file("h1", b"EVIL").0
                        },
                        b"EVIL".to_vec(),
                    ),
                    symlink("h2", t),
                    (
                        Node {
                            hardlink: Some(9),
                            ..file("h2", b"").0
                        },
                        vec![],
                    ),
                ],
            ));
        }
        let rel_d = "../../sentinel/dir".to_string();
        for t in [&d, &rel_d] {
            out.push((
                "directory replaced by a link, file below",
                vec![symlink("d", t), file("d/inner", b"EVIL")],
            ));
            out.push((
                "directory replaced by a link, then the directory and a new file",
                vec![
                    symlink("d", t),
                    owned(dir("d"), 1234, 1234, 0o777),
                    file("d/new", b"EVIL"),
                    file("d/deeper/passwd", b"EVIL"),
                ],
            ));
            out.push((
                "link below a directory, then a path through it",
                vec![
                    dir("a"),
                    symlink("a/b", t),
                    dir("a/b/deeper"),
                    file("a/b/deeper/passwd", b"EVIL"),
                ],
            ));
            out.push((
                "link, then a file with mode and owner through it",
                vec![
                    symlink("d", t),
                    owned(file("d/inner", b"EVIL"), 1234, 1234, 0o4777),
                ],
            ));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_outside_the_target_changes() {
        let repo = repo().await;
        let w = World::new();
        let before = w.outside();
        for (i, (what, entries)) in cases(&w).into_iter().enumerate() {
            let snap = snapshot(&repo, entries).await;
            for (o, opts) in [
                ("default", RestoreOptions::default()),
                ("overwrite", overwrite()),
            ] {
                let target = w.at(&format!("target-{i}-{o}"));
                let r = restore_to(&repo, &snap, &target, &opts).await;
                assert_eq!(w.outside(), before, "case {i} ({what}, {o}): {r:?}");
                std::fs::remove_dir_all(&target).unwrap();
            }
        }
        assert_eq!(w.outside(), before);
    }

    /// Regular files whose names look like temporaries (the old `.NAME.arsip-tmp`, and
    /// others) restore byte for byte beside the files they would have collided with.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn temporary_looking_names_restore_exactly() {
        let repo = repo().await;
        let w = World::new();
        let mut entries = vec![dir("d")];
        for i in 0..40 {
            let n = format!("d/f{i}");
            for name in [
                format!(".f{i}.arsip-tmp"),
                format!("..f{i}.arsip-tmp.arsip-tmp"),
                format!("f{i}.tmp"),
                format!(".f{i}.arsip-tmp~"),
            ] {
                entries.push(file(&format!("d/{name}"), name.as_bytes()));
            }
            entries.push(file(&n, format!("real {i}").as_bytes()));
        }
        entries.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        let want: Vec<(String, Vec<u8>)> = entries
            .iter()
            .filter(|e| e.0.node_type == NodeType::File)
            .map(|e| (e.0.path.clone(), e.1.clone()))
            .collect();
        let snap = snapshot(&repo, entries).await;
        for round in 0..3 {
            let target = w.at(&format!("t{round}"));
            restore_to(&repo, &snap, &target, &RestoreOptions::default())
                .await
                .unwrap();
            for (p, data) in &want {
                assert_eq!(&std::fs::read(target.join(p)).unwrap(), data, "{p}");
            }
            assert_eq!(
                names(&target.join("d")).len(),
                want.len(),
                "{:?}",
                names(&target)
            );
        }
    }

    /// Paths a snapshot may not hold are refused before anything is written: absolute,
    /// `..`, empty components, NUL, and the restore's own staging names.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsafe_paths_are_refused_before_writing() {
        let repo = repo().await;
        let w = World::new();
        let staging = b".arsip-restore-0123456789abcdef".to_vec();
        let bad: Vec<Vec<u8>> = vec![
            format!("{}/evil", w.sentinel.display()).into_bytes(),
            b"/etc/evil".to_vec(),
            b"../evil".to_vec(),
            b"a/../../evil".to_vec(),
            b"a/..".to_vec(),
            b"..".to_vec(),
            b"".to_vec(),
            b".".to_vec(),
            b"a//b".to_vec(),
            b"a/".to_vec(),
            b"a/\0b".to_vec(),
            staging.clone(),
            [b"a/".as_slice(), &staging, b"/x"].concat(),
        ];
        for (i, p) in bad.iter().enumerate() {
            let mut first = file("first", b"written before the bad node").0;
            first.size = 0;
            let mut evil = file("x", b"EVIL").0;
            evil.set_path_bytes(p);
            let snap = snapshot(
                &repo,
                vec![(first, vec![]), dir("a"), (evil, b"EVIL".to_vec())],
            )
            .await;
            let target = w.at(&format!("bad-{i}"));
            let r = restore_to(&repo, &snap, &target, &RestoreOptions::default()).await;
            assert!(
                matches!(&r, Err(RepoError::Invalid(m)) if m.contains("refusing")),
                "{:?}: {r:?}",
                String::from_utf8_lossy(p)
            );
            assert_eq!(
                names(&target),
                Vec::<String>::new(),
                "{:?}: wrote before refusing",
                String::from_utf8_lossy(p)
            );
            assert!(!w.base.join("evil").exists() && !Path::new("/etc/evil").exists());
        }
        assert!(arsip_files::is_restore_staging(&staging));
        assert!(!arsip_files::is_restore_staging(b".f.arsip-tmp"));
    }
}

/// Links and files planted in the target before the restore: refused by default (naming
/// them, touching nothing), replaced without being followed with `overwrite`, removed with
/// `delete`.
mod planted_in_target {
    use super::*;

    fn snapshot_entries() -> Vec<(Node, Vec<u8>)> {
        vec![
            dir("d"),
            file("d/x", b"new x"),
            dir("e"),
            file("e/y", b"new y"),
            file("f", b"new f"),
            symlink("l", "f"),
            dir("keep"),
        ]
    }

    fn plant(w: &World) {
        let t = &w.target;
        std::fs::create_dir_all(t.join("e")).unwrap();
        std::fs::create_dir_all(t.join("keep/old")).unwrap();
        std::fs::write(t.join("keep/old/data"), "old data").unwrap();
        let ln = |target: &str, at: &str| std::os::unix::fs::symlink(target, t.join(at)).unwrap();
        ln(&w.sentinel_dir(), "d");
        ln(&w.victim(), "f");
        ln(&w.victim(), ".f.arsip-tmp");
        ln(&w.victim(), "e/y");
        ln(&w.victim(), "e/.y.arsip-tmp");
        ln(&w.sentinel_dir(), "l");
        std::fs::write(t.join("stray"), "not in the snapshot").unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_by_default_naming_the_conflicts() {
        let repo = repo().await;
        let w = World::new();
        let snap = snapshot(&repo, snapshot_entries()).await;
        plant(&w);
        let before = w.outside();
        let target_before = fingerprint(&w.target);
        let r = restore_to(&repo, &snap, &w.target, &RestoreOptions::default()).await;
        let msg = match r {
            Err(RepoError::Refused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        for name in ["d", "f", "e/y", "l"] {
            assert!(
                msg.contains(&format!("{}", w.target.join(name).display())),
                "{name} not named: {msg}"
            );
        }
        assert!(msg.contains("overwrite"), "{msg}");
        assert_eq!(w.outside(), before);
        assert_eq!(
            fingerprint(&w.target),
            target_before,
            "the target was touched"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overwrite_replaces_links_without_following_them() {
        let repo = repo().await;
        let w = World::new();
        let snap = snapshot(&repo, snapshot_entries()).await;
        plant(&w);
        let before = w.outside();
        restore_to(&repo, &snap, &w.target, &overwrite())
            .await
            .unwrap();
        assert_eq!(w.outside(), before);
        let t = &w.target;
        assert!(std::fs::symlink_metadata(t.join("d")).unwrap().is_dir());
        assert_eq!(std::fs::read(t.join("d/x")).unwrap(), b"new x");
        assert_eq!(std::fs::read(t.join("e/y")).unwrap(), b"new y");
        assert!(std::fs::symlink_metadata(t.join("f")).unwrap().is_file());
        assert_eq!(std::fs::read(t.join("f")).unwrap(), b"new f");
        assert_eq!(std::fs::read_link(t.join("l")).unwrap(), Path::new("f"));
        // Entries the snapshot does not hold stay without `delete`.
        assert!(t.join("stray").exists() && t.join("keep/old/data").exists());
        assert!(std::fs::symlink_metadata(t.join(".f.arsip-tmp")).is_ok());

        // `delete` removes them, links included (never following them).
        let opts = RestoreOptions {
            overwrite: true,
            delete: true,
            ..Default::default()
        };
        restore_to(&repo, &snap, &w.target, &opts).await.unwrap();
        assert_eq!(w.outside(), before);
        assert_eq!(names(&w.target), ["d", "d/x", "e", "e/y", "f", "keep", "l"],);
    }

    /// An empty existing directory is a fresh target; a directory holding only directories
    /// the snapshot also holds merges without complaint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn empty_or_merging_targets_are_fine() {
        let repo = repo().await;
        let w = World::new();
        let snap = snapshot(&repo, snapshot_entries()).await;
        std::fs::create_dir_all(&w.target).unwrap();
        restore_to(&repo, &snap, &w.target, &RestoreOptions::default())
            .await
            .unwrap();
        let t2 = w.at("t2");
        std::fs::create_dir_all(t2.join("d")).unwrap();
        std::fs::create_dir_all(t2.join("keep")).unwrap();
        restore_to(&repo, &snap, &t2, &RestoreOptions::default())
            .await
            .unwrap();
        assert_eq!(std::fs::read(t2.join("d/x")).unwrap(), b"new x");
        // Restoring again over itself is a conflict on every file.
        let r = restore_to(&repo, &snap, &t2, &RestoreOptions::default()).await;
        assert!(matches!(r, Err(RepoError::Refused(_))), "{r:?}");
    }

    /// Leftovers with the restore's staging names (a killed restore on a filesystem without
    /// O_TMPFILE) are removed by the next restore and are never data.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staging_leftovers_are_cleaned_up() {
        let repo = repo().await;
        let w = World::new();
        let snap = snapshot(&repo, snapshot_entries()).await;
        std::fs::create_dir_all(w.target.join("d")).unwrap();
        std::fs::write(w.target.join("d/.arsip-restore-00000000deadbeef"), "half").unwrap();
        std::os::unix::fs::symlink(w.victim(), w.target.join(".arsip-restore-1234")).unwrap();
        let before = w.outside();
        // The staging fallback is what a filesystem without O_TMPFILE uses: exercise it too.
        let opts = RestoreOptions {
            staging_names: true,
            ..Default::default()
        };
        restore_to(&repo, &snap, &w.target, &opts).await.unwrap();
        assert_eq!(w.outside(), before);
        assert_eq!(names(&w.target), ["d", "d/x", "e", "e/y", "f", "keep", "l"],);
        assert_eq!(std::fs::read(w.target.join("d/x")).unwrap(), b"new x");
    }
}

/// As root: a tree owned by other users comes back with its owners, modes (setuid, setgid,
/// sticky), hard links, holes, xattrs, ACLs, capabilities, special files and byte names.
mod attributes {
    use super::*;

    /// `system.posix_acl_access` bytes: user::rwx user:1234:r-- group::r-x mask::r-x other::r--
    fn acl(default_only: bool) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        let mut e = |tag: u16, perm: u16, id: u32| {
            v.extend(tag.to_le_bytes());
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
        };
        let _ = default_only;
        e(0x01, 7, u32::MAX);
        e(0x02, 4, 1234);
        e(0x04, 5, u32::MAX);
        e(0x10, 5, u32::MAX);
        e(0x20, 4, u32::MAX);
        v
    }

    /// `security.capability`, VFS_CAP_REVISION_2, permitted cap_net_bind_service, effective.
    fn capability() -> Vec<u8> {
        let mut v = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
        for w in [1u32 << 10, 0, 0, 0] {
            v.extend(w.to_le_bytes());
        }
        v
    }

    fn b64(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn xattr(name: &str, value: &[u8]) -> arsip_repo::Xattr {
        arsip_repo::Xattr {
            name: name.into(),
            value: b64(value),
        }
    }

    fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let n = rustix::fs::lgetxattr(p, name, &mut buf[..]).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_foreign_tree_comes_back_exactly() {
        assert_eq!(rustix::process::geteuid().as_raw(), 0, "run as root");
        let repo = repo().await;
        let w = World::new();
        let mut sparse = vec![b'a'; 4096];
        sparse.extend(vec![0u8; 8 << 20]);
        sparse.extend(vec![b'b'; 5000]);
        sparse.extend(vec![0u8; 1 << 20]);
        let mut bad_name = file("x", b"bytes name").0;
        bad_name.set_path_bytes(b"bad\xffname");
        let mut bad_dir = dir("x").0;
        bad_dir.set_path_bytes(b"dir\xfe");
        let mut bad_child = file("x", b"child").0;
        bad_child.set_path_bytes(b"dir\xfe/child\x80");
        let mut bad_link = symlink("badlink", "x").0;
        bad_link.set_target_bytes(b"target\xff\xfe");
        let hl = |path: &str, data: &[u8]| {
            let (mut n, d) = file(path, data);
            n.hardlink = Some(1);
            n.uid = Some(1234);
            n.gid = Some(1234);
            (n, d)
        };
        let mut capf = owned(file("cap", b"#!/bin/true\n"), 1234, 1234, 0o755);
        capf.0.xattrs = vec![
            xattr("security.capability", &capability()),
            xattr("user.comment", b"hello"),
        ];
        let mut aclf = owned(file("acl", b"acl"), 1234, 1235, 0o754);
        aclf.0.xattrs = vec![xattr("system.posix_acl_access", &acl(false))];
        let mut acld = owned(dir("acldir"), 1234, 1235, 0o754);
        acld.0.xattrs = vec![
            xattr("system.posix_acl_access", &acl(false)),
            xattr("system.posix_acl_default", &acl(true)),
            xattr("user.dir", b"on a dir"),
        ];
        let mut xlink = owned(symlink("xlink", "/etc/passwd"), 1234, 1235, 0o777);
        xlink.0.xattrs = vec![xattr("trusted.note", b"on the link itself")];
        let mut sf = file("sparse", &sparse);
        sf.0.uid = Some(1236);
        let fifo = Node {
            path: "fifo".into(),
            node_type: NodeType::Fifo,
            mode: 0o640,
            uid: Some(1234),
            gid: Some(1235),
            mtime: Some(ts()),
            ..Default::default()
        };
        let null = Node {
            path: "null".into(),
            node_type: NodeType::CharDevice,
            mode: 0o666,
            rdev: Some(rustix::fs::makedev(1, 3)),
            uid: Some(0),
            gid: Some(0),
            mtime: Some(ts()),
            ..Default::default()
        };
        let entries = vec![
            owned(dir("home"), 0, 0, 0o755),
            owned(dir("home/u"), 1234, 1234, 0o700),
            owned(file("home/u/secret", b"s3cret"), 1234, 1234, 0o600),
            owned(symlink("home/u/ln", "secret"), 1234, 1235, 0o777),
            owned(file("suid", b"#!/bin/sh\n"), 1234, 1234, 0o4755),
            owned(file("sgid", b"#!/bin/sh\n"), 0, 1235, 0o2755),
            owned(file("both", b"#!/bin/sh\n"), 1234, 1235, 0o6750),
            owned(dir("sticky"), 1234, 1234, 0o1777),
            owned(dir("sgiddir"), 0, 1235, 0o2775),
            owned(file("sgiddir/f", b"f"), 1235, 1235, 0o640),
            capf,
            aclf,
            acld,
            owned(file("acldir/f", b"f"), 1234, 1235, 0o644),
            hl("h1", b"linked data"),
            dir("sub"),
            hl("sub/h2", b""),
            hl("h3", b""),
            sf,
            (fifo, vec![]),
            (null, vec![]),
            (bad_name, b"bytes name".to_vec()),
            (bad_dir, vec![]),
            (bad_child, b"child".to_vec()),
            (bad_link, vec![]),
            xlink,
        ];
        let snap = snapshot(&repo, entries.clone()).await;
        let before = w.outside();
        let out = restore_to(&repo, &snap, &w.target, &RestoreOptions::default())
            .await
            .unwrap();
        assert_eq!(w.outside(), before);
        let t = &w.target;

        for (n, data) in &entries {
            let bytes = n.path_bytes().unwrap();
            let p = t.join(std::ffi::OsStr::from_bytes(&bytes));
            let m =
                std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            if let (Some(u), Some(g)) = (n.uid, n.gid) {
                assert_eq!((m.uid(), m.gid()), (u, g), "owner of {}", p.display());
            }
            let want_type = match n.node_type {
                NodeType::File => libc_type(0o100000),
                NodeType::Dir => libc_type(0o040000),
                NodeType::Symlink => libc_type(0o120000),
                NodeType::Fifo => libc_type(0o010000),
                NodeType::CharDevice => libc_type(0o020000),
                NodeType::BlockDevice => libc_type(0o060000),
            };
            assert_eq!(m.mode() & 0o170000, want_type, "type of {}", p.display());
            if n.node_type != NodeType::Symlink {
                assert_eq!(m.mode() & 0o7777, n.mode, "mode of {}", p.display());
            }
            assert_eq!(
                (m.mtime(), m.mtime_nsec()),
                (ts().as_second(), ts().subsec_nanosecond() as i64),
                "mtime of {}",
                p.display()
            );
            if n.node_type == NodeType::File && n.hardlink.is_none() {
                assert_eq!(&std::fs::read(&p).unwrap(), data, "{}", p.display());
            }
            if n.node_type == NodeType::Symlink {
                let target = n.target_bytes().unwrap().unwrap();
                assert_eq!(
                    std::fs::read_link(&p).unwrap().as_os_str().as_bytes(),
                    target
                );
            }
            for x in &n.xattrs {
                use base64::Engine;
                let want = base64::engine::general_purpose::STANDARD
                    .decode(&x.value)
                    .unwrap();
                assert_eq!(
                    get_xattr(&p, &x.name).as_deref(),
                    Some(&want[..]),
                    "{} of {}",
                    x.name,
                    p.display()
                );
            }
        }
        // Hard links: one inode, three names.
        let h1 = std::fs::metadata(t.join("h1")).unwrap();
        for p in ["sub/h2", "h3"] {
            let m = std::fs::metadata(t.join(p)).unwrap();
            assert_eq!((m.dev(), m.ino()), (h1.dev(), h1.ino()), "{p}");
        }
        assert_eq!(h1.nlink(), 3);
        assert_eq!(std::fs::read(t.join("sub/h2")).unwrap(), b"linked data");
        // Holes stay holes: ~9 KiB of data in a 9 MiB file.
        let s = std::fs::metadata(t.join("sparse")).unwrap();
        assert_eq!(s.len(), sparse.len() as u64);
        assert!(
            s.blocks() * 512 <= 64 << 10,
            "sparse file takes {} bytes on disk",
            s.blocks() * 512
        );
        assert_eq!(std::fs::read(t.join("sparse")).unwrap(), sparse);
        // The device is the device.
        let d = std::fs::symlink_metadata(t.join("null")).unwrap();
        assert_eq!(d.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!(out.warnings, 0, "{out:?}");
    }

    fn libc_type(t: u32) -> u32 {
        t
    }
}

/// A disk that fills up: the real error (ENOSPC) naming the file, and no file under a final
/// name that is incomplete.
mod disk_full {
    use super::*;

    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enospc_names_the_path_and_leaves_no_partial_file() {
        let repo = repo().await;
        let w = World::new();
        std::fs::create_dir_all(&w.target).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&w.target)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs (the tests run as root)");
        let _m = Mount(w.target.clone());
        let mut entries = vec![dir("d")];
        let mut want = vec![];
        for i in 0..6 {
            let data = arsip_testkit::sample_data(700_000, i);
            let p = format!("d/f{i}");
            want.push((p.clone(), data.clone()));
            entries.push(file(&p, &data));
        }
        let snap = snapshot(&repo, entries).await;
        let r = restore_to(&repo, &snap, &w.target, &RestoreOptions::default()).await;
        let e = match r {
            Err(RepoError::Io(e)) => e,
            other => panic!("expected an I/O error, got {other:?}"),
        };
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
        assert!(e.to_string().contains("os error 28"), "{e}");
        assert!(
            e.to_string()
                .contains(&w.target.join("d/f").display().to_string()),
            "the error names the file: {e}"
        );
        for (p, data) in &want {
            if let Ok(got) = std::fs::read(w.target.join(p)) {
                assert_eq!(&got, data, "{p} is under its final name but incomplete");
            }
        }
    }
}

/// Mount points inside the target (a bind mount of /dev or of a host directory into a chroot
/// being restored): a restore may write into them, but never empties one, with `overwrite`
/// or `delete`, even a bind mount of a directory of the same filesystem.
mod mounts {
    use super::support::*;
    use super::*;

    /// `mount --bind from to`, undone on drop; `None` if it failed.
    struct Bind(PathBuf);

    impl Bind {
        fn new(from: &Path, to: &Path) -> Option<Bind> {
            std::fs::create_dir_all(to).unwrap();
            let ok = std::process::Command::new("mount")
                .arg("--bind")
                .arg(from)
                .arg(to)
                .status()
                .is_ok_and(|s| s.success());
            ok.then(|| Bind(to.to_path_buf()))
        }
    }

    impl Drop for Bind {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mount_points_in_the_target_are_never_emptied() {
        let repo = repo().await;
        let w = World::new();
        let before = w.outside();
        // --delete: the snapshot holds `mnt` as an empty directory (as a backup records a
        // virtual filesystem's mount point) and nothing of what the mount holds.
        let snap = snapshot(&repo, vec![dir("mnt"), file("other", b"x")]).await;
        let t = w.at("delete");
        let bind = Bind::new(&w.sentinel, &t.join("mnt"))
            .expect("mount --bind failed: this test runs as root, as the suite does");
        let opts = RestoreOptions {
            overwrite: true,
            delete: true,
            ..Default::default()
        };
        let r = restore_to(&repo, &snap, &t, &opts).await.unwrap();
        assert!(r.warnings >= 1, "{r:?}");
        assert_eq!(std::fs::read(t.join("other")).unwrap(), b"x");
        drop(bind);
        assert_eq!(w.outside(), before, "--delete emptied a mount point");

        // --overwrite: a file of the snapshot where the target has a mount point.
        let snap = snapshot(&repo, vec![dir("d"), file("d/f", b"data")]).await;
        let t = w.at("overwrite");
        let bind = Bind::new(&w.sentinel, &t.join("d/f")).expect("mounted above");
        let e = restore_to(&repo, &snap, &t, &overwrite())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("mount point"), "{e}");
        drop(bind);
        assert_eq!(w.outside(), before, "--overwrite emptied a mount point");
    }

    /// Mode 000 is a mode: a file, a directory and a FIFO recorded with it come back with it
    /// (today's restore left them 0600/0700, opening them to their owner).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mode_000_is_restored() {
        let repo = repo().await;
        let w = World::new();
        let fifo = Node {
            path: "p".into(),
            node_type: NodeType::Fifo,
            mode: 0,
            mtime: Some(ts()),
            ..Default::default()
        };
        let mut d = dir("d");
        d.0.mode = 0;
        let mut f = file("f", b"secret");
        f.0.mode = 0;
        let snap = snapshot(&repo, vec![d, f, (fifo, vec![])]).await;
        restore_to(&repo, &snap, &w.target, &RestoreOptions::default())
            .await
            .unwrap();
        for n in ["d", "f", "p"] {
            let m = std::fs::symlink_metadata(w.target.join(n)).unwrap();
            assert_eq!(m.mode() & 0o7777, 0, "{n}");
        }
        assert_eq!(std::fs::read(w.target.join("f")).unwrap(), b"secret");
    }
}
