//! Files backups against real filesystems (run as root, as CI does): what the tree records
//! for hostile names, hard links, special files, xattrs and ACLs, modes; `/` and overlapping
//! arguments; excludes, one-file-system across a tmpfs, virtual filesystems, paths never
//! backed up; odd files (unreadable to an unprivileged user) that make a snapshot partial
//! instead of failing it; stream names; `backup command`.
//!
//! Each backup is checked against the source tree itself (every entry's recorded node), and
//! where today's restore supports it, restored with `restore::to_dir` and compared.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arsip_files::backup::{self, Action, FilesOptions, FilesOutcome};
use arsip_files::restore;
use arsip_repo::clock::SystemClock;
use arsip_repo::ChunkId;
use arsip_repo::{FullRepo, InitOptions, OpenWith, RepoError, Repository};
use arsip_repo::{Node, NodeType, Snapshot};
use arsip_repo::{SnapshotMeta, SnapshotTxn};
use arsip_storage::{backend, DynStore};
use base64::Engine;

// ---------------------------------------------------------------------------------------
// support

fn memory() -> DynStore {
    backend::open(&backend::Location::Memory, false).unwrap()
}

async fn init(store: DynStore) -> FullRepo {
    std::env::set_var("ARSIP_TEST_WEAK_KDF", "1");
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

async fn open(store: DynStore) -> FullRepo {
    let with = OpenWith::Password(zeroize::Zeroizing::new(b"pw".to_vec()));
    Repository::open(store, with, Arc::new(SystemClock))
        .await
        .unwrap()
        .full("test")
        .unwrap()
}

fn meta(kind: &str) -> SnapshotMeta {
    SnapshotMeta {
        kind: kind.into(),
        source: "test".into(),
        ..Default::default()
    }
}

fn opts(paths: &[&Path]) -> FilesOptions {
    FilesOptions {
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        ..Default::default()
    }
}

async fn backup_files(repo: &FullRepo, o: FilesOptions) -> Result<FilesOutcome, RepoError> {
    let txn = SnapshotTxn::start(repo.clone()).await?;
    backup::files(txn, o, meta("files")).await
}

async fn snapshot(repo: &FullRepo, id: &str) -> Snapshot {
    let snaps = repo.snapshots_report().await.unwrap().0;
    arsip_repo::select_snapshot(&snaps, id).unwrap().clone()
}

/// Every node of a snapshot's tree, with its chunks, in tree order.
async fn tree(repo: &FullRepo, id: &str) -> Vec<(Node, Vec<ChunkId>)> {
    let snap = snapshot(repo, id).await;
    let reader = arsip_repo::Reader::open(repo).await.unwrap();
    let mut t = reader.tree(&snap.manifest).await.unwrap();
    let mut out = Vec::new();
    while let Some(n) = t.next_node().unwrap() {
        out.push(n);
    }
    out
}

async fn restore_to(repo: &FullRepo, id: &str, to: &Path) {
    let snap = snapshot(repo, id).await;
    let reader = arsip_repo::Reader::open(repo).await.unwrap();
    restore::to_dir(&reader, &snap, to, &|_| {}).await.unwrap();
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// The tree path of an absolute path: without its leading `/`.
fn rel(p: &Path) -> Vec<u8> {
    let c = std::fs::canonicalize(p.parent().unwrap())
        .unwrap()
        .join(p.file_name().unwrap());
    bytes(&c)[1..].to_vec()
}

/// Each path once; every node's parent directory precedes it (or is the root).
fn assert_well_formed(t: &[(Node, Vec<ChunkId>)]) {
    let mut seen = BTreeSet::new();
    for (n, _) in t {
        let p = n.path_bytes().unwrap();
        assert!(!p.is_empty(), "empty path in tree");
        if let Some(i) = p.iter().rposition(|b| *b == b'/') {
            assert!(
                seen.contains(&p[..i]),
                "{:?} precedes its parent",
                String::from_utf8_lossy(&p)
            );
        }
        assert!(
            seen.insert(p.clone()),
            "{:?} appears twice",
            String::from_utf8_lossy(&p)
        );
    }
}

fn by_path(t: &[(Node, Vec<ChunkId>)]) -> BTreeMap<Vec<u8>, (Node, Vec<ChunkId>)> {
    t.iter()
        .map(|(n, c)| (n.path_bytes().unwrap(), (n.clone(), c.clone())))
        .collect()
}

fn xattrs_of(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(p, &mut list[..]) {
        Ok(n) => n,
        Err(_) => return out,
    };
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 65536];
        if let Ok(m) = rustix::fs::lgetxattr(p, name, &mut v[..]) {
            out.insert(name.to_vec(), v[..m].to_vec());
        }
    }
    out
}

fn node_xattrs(n: &Node) -> BTreeMap<Vec<u8>, Vec<u8>> {
    n.xattrs
        .iter()
        .map(|x| {
            (
                x.name.as_bytes().to_vec(),
                base64::engine::general_purpose::STANDARD
                    .decode(&x.value)
                    .unwrap(),
            )
        })
        .collect()
}

/// Every entry under `root` (itself included) is in the tree exactly as it is on disk:
/// type, mode with setuid/setgid/sticky, owner, mtime, size and content, symlink target,
/// device number, xattrs (names that are not UTF-8 excepted), hard links as one group.
async fn assert_tree_matches(repo: &FullRepo, t: &[(Node, Vec<ChunkId>)], root: &Path) {
    let nodes = by_path(t);
    let reader = arsip_repo::Reader::open(repo).await.unwrap();
    let mut groups: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut data_of_group: BTreeSet<u64> = BTreeSet::new();
    for p in walk(root) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            assert!(!nodes.contains_key(&rel(&p)), "socket recorded");
            continue;
        }
        let (n, chunks) = nodes
            .get(&rel(&p))
            .unwrap_or_else(|| panic!("{} missing from the tree", p.display()));
        let what = p.display().to_string();
        let want_type = if ft.is_dir() {
            NodeType::Dir
        } else if ft.is_symlink() {
            NodeType::Symlink
        } else if ft.is_file() {
            NodeType::File
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
            NodeType::Fifo
        } else if std::os::unix::fs::FileTypeExt::is_char_device(&ft) {
            NodeType::CharDevice
        } else {
            NodeType::BlockDevice
        };
        assert_eq!(n.node_type, want_type, "{what}");
        assert_eq!(n.mode, m.mode() & 0o7777, "{what}");
        assert_eq!((n.uid, n.gid), (Some(m.uid()), Some(m.gid())), "{what}");
        let mtime = jiff::Timestamp::new(m.mtime(), m.mtime_nsec() as i32).unwrap();
        assert_eq!(n.mtime, Some(mtime), "{what}");
        let want_x: BTreeMap<_, _> = xattrs_of(&p)
            .into_iter()
            .filter(|(k, _)| std::str::from_utf8(k).is_ok())
            .collect();
        assert_eq!(node_xattrs(n), want_x, "{what}");
        match want_type {
            NodeType::Symlink => {
                let target = std::fs::read_link(&p).unwrap();
                assert_eq!(n.target_bytes().unwrap().unwrap(), bytes(&target), "{what}");
            }
            NodeType::CharDevice | NodeType::BlockDevice => {
                assert_eq!(n.rdev, Some(m.rdev()), "{what}")
            }
            NodeType::File => {
                assert_eq!(n.size, m.len(), "{what}");
                if m.nlink() > 1 {
                    let g = n
                        .hardlink
                        .unwrap_or_else(|| panic!("{what}: no hard link group"));
                    let key = (m.dev(), m.ino());
                    assert_eq!(
                        *groups.entry(g).or_insert(key),
                        key,
                        "{what}: group {g} mixes inodes"
                    );
                    if !data_of_group.insert(g) {
                        assert!(chunks.is_empty(), "{what}: a later link carries chunks");
                        continue;
                    }
                } else {
                    assert_eq!(n.hardlink, None, "{what}");
                }
                let mut got = Vec::new();
                for c in chunks {
                    got.extend_from_slice(&reader.chunk(*c).await.unwrap());
                }
                assert_eq!(got, std::fs::read(&p).unwrap(), "{what}: content");
            }
            _ => {}
        }
    }
    // No two inodes share a group.
    let inodes: BTreeSet<_> = groups.values().collect();
    assert_eq!(inodes.len(), groups.len());
}

/// `root` and everything below it, not following symlinks.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if std::fs::symlink_metadata(root).unwrap().is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            out.extend(walk(&p));
        }
    }
    out
}

/// Compare two trees as today's restore reproduces them: names, types, content, permission
/// bits, symlink targets, file mtimes.
fn assert_same_tree(a: &Path, b: &Path) {
    let list = |r: &Path| -> BTreeMap<PathBuf, std::fs::Metadata> {
        walk(r)
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(r).unwrap().to_path_buf(),
                    std::fs::symlink_metadata(&p).unwrap(),
                )
            })
            .collect()
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(
        la.keys().collect::<Vec<_>>(),
        lb.keys().collect::<Vec<_>>(),
        "{} vs {}",
        a.display(),
        b.display()
    );
    for (k, ma) in &la {
        let mb = &lb[k];
        let (pa, pb) = (a.join(k), b.join(k));
        assert_eq!(ma.file_type(), mb.file_type(), "{}", k.display());
        if ma.is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap()
            );
            continue;
        }
        assert_eq!(ma.mode() & 0o777, mb.mode() & 0o777, "{}", k.display());
        if ma.is_file() {
            assert_eq!(
                std::fs::read(&pa).unwrap(),
                std::fs::read(&pb).unwrap(),
                "{}",
                k.display()
            );
            assert_eq!(ma.mtime(), mb.mtime(), "{}", k.display());
        }
    }
}

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn sample(len: usize, seed: u64) -> Vec<u8> {
    arsip_testkit::sample_data(len, seed)
}

/// A small ordinary tree: files of several sizes, a subdirectory, a symlink.
fn plain_tree(root: &Path) {
    write(&root.join("a.txt"), b"alpha");
    write(&root.join("sub/big.bin"), &sample(3 << 20, 1));
    write(&root.join("sub/empty"), b"");
    write(&root.join("sub/deeper/x"), b"x");
    std::os::unix::fs::symlink("../a.txt", root.join("sub/link")).unwrap();
}

// ---------------------------------------------------------------------------------------
// what a backup records

/// Names and symlink targets that are not UTF-8 (and other hostile names) are recorded byte
/// for byte; before, the backup failed with "path is not UTF-8".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_symlink_targets_are_recorded_as_bytes() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    std::fs::create_dir(&root).unwrap();
    let names: &[&[u8]] = &[
        b"caf\xe9",
        b"\xff\xfe",
        b"\xed\xa0\x80surrogate",
        b"\xc3",
        b"new\nline",
        b"tab\there",
        b" lead and trail ",
        b"-dash",
        b"back\\slash",
        b"\x01\x7f",
        "日本語".as_bytes(),
        "emoji😀".as_bytes(),
        b"..dots",
        b"{\"path\":\"x\"}",
        b"{\"chunks\":[]}",
    ];
    for (i, n) in names.iter().enumerate() {
        let p = root.join(OsStr::from_bytes(n));
        if i % 2 == 0 {
            write(&p, n);
        } else {
            std::fs::create_dir(&p).unwrap();
            write(&p.join(OsStr::from_bytes(b"inner\xe9")), b"inner");
        }
    }
    std::os::unix::fs::symlink(OsStr::from_bytes(b"target-\xe9\xff/x"), root.join("l1")).unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"\xfe"),
        root.join(OsStr::from_bytes(b"l\xfe")),
    )
    .unwrap();

    let repo = init(memory()).await;
    let o = backup_files(&repo, opts(&[&root])).await.unwrap();
    assert!(!o.partial, "{:?}", o.report);
    let t = tree(&repo, &o.backup.id).await;
    assert_well_formed(&t);
    assert_tree_matches(&repo, &t, &root).await;
    // Only names that are not UTF-8 carry raw bytes.
    for (n, _) in &t {
        assert_eq!(
            n.path_raw.is_some(),
            std::str::from_utf8(&n.path_bytes().unwrap()).is_err()
        );
    }
}

/// Files with several links, inside and across directories, get one group per inode; the
/// first in tree order carries the data, later ones none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_share_a_group_and_the_data_once() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    write(&root.join("a/one"), &sample(200_000, 7));
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::hard_link(root.join("a/one"), root.join("b/two")).unwrap();
    std::fs::hard_link(root.join("a/one"), root.join("a/three")).unwrap();
    write(&root.join("c/other"), b"other inode");
    std::fs::hard_link(root.join("c/other"), root.join("c/other2")).unwrap();
    // Linked to a file outside the backup: a group of one.
    write(&d.path().join("outside"), b"lonely");
    std::fs::hard_link(d.path().join("outside"), root.join("lonely")).unwrap();

    let repo = init(memory()).await;
    let o = backup_files(&repo, opts(&[&root])).await.unwrap();
    let t = tree(&repo, &o.backup.id).await;
    assert_well_formed(&t);
    assert_tree_matches(&repo, &t, &root).await;
    let nodes = by_path(&t);
    let g = |p: &str| nodes[&rel(&root.join(p))].0.hardlink.unwrap();
    assert_eq!(g("a/one"), g("b/two"));
    assert_eq!(g("a/one"), g("a/three"));
    assert_ne!(g("a/one"), g("c/other"));
    assert_eq!(g("c/other"), g("c/other2"));
    // a/one precedes a/three and b/two: it has the data.
    assert!(!nodes[&rel(&root.join("a/one"))].1.is_empty());
    assert!(nodes[&rel(&root.join("a/three"))].1.is_empty());
    assert!(nodes[&rel(&root.join("b/two"))].1.is_empty());
    // A later link records the inode's size (so an older reader fails loudly instead of
    // restoring an empty file).
    assert_eq!(nodes[&rel(&root.join("b/two"))].0.size, 200_000);
}

/// FIFOs, character and block devices are recorded with their device numbers; sockets are
/// skipped without making the snapshot partial; setuid, setgid and sticky bits are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_and_mode_bits_are_recorded() {
    use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    std::fs::create_dir(&root).unwrap();
    mknodat(
        CWD,
        root.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    mknodat(
        CWD,
        root.join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknodat(
        CWD,
        root.join("loop"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o660),
        makedev(7, 200),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    std::os::unix::fs::lchown(root.join("fifo"), Some(42), Some(43)).unwrap();
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2711), ("both", 0o6750)] {
        write(&root.join(name), name.as_bytes());
        // Owner first: chown clears setuid and setgid.
        std::os::unix::fs::lchown(root.join(name), Some(1234), Some(5678)).unwrap();
        std::fs::set_permissions(root.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for (name, mode) in [("sticky", 0o1777), ("sgid-dir", 0o2775)] {
        std::fs::create_dir(root.join(name)).unwrap();
        std::fs::set_permissions(root.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    let repo = init(memory()).await;
    let o = backup_files(&repo, opts(&[&root])).await.unwrap();
    assert!(
        !o.partial,
        "a socket does not make a snapshot partial: {:?}",
        o.report
    );
    let t = tree(&repo, &o.backup.id).await;
    assert_tree_matches(&repo, &t, &root).await;
    let nodes = by_path(&t);
    assert_eq!(nodes[&rel(&root.join("null"))].0.rdev, Some(makedev(1, 3)));
    assert_eq!(
        nodes[&rel(&root.join("loop"))].0.rdev,
        Some(makedev(7, 200))
    );
    assert_eq!(nodes[&rel(&root.join("suid"))].0.mode, 0o4755);
    assert_eq!(nodes[&rel(&root.join("sticky"))].0.mode, 0o1777);
    assert!(!nodes.contains_key(&rel(&root.join("sock"))));
}

/// Extended attributes of files, directories and symlinks are recorded, POSIX ACLs and
/// `security.capability` included; a name that is not UTF-8 is skipped with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xattrs_acls_and_capabilities_are_recorded() {
    use rustix::fs::{lsetxattr, XattrFlags};
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    write(&root.join("f"), b"file");
    write(&root.join("bin"), b"\x7fELF");
    std::fs::create_dir(root.join("dir")).unwrap();
    std::os::unix::fs::symlink("f", root.join("link")).unwrap();
    let set = |p: &Path, n: &[u8], v: &[u8]| lsetxattr(p, n, v, XattrFlags::empty()).unwrap();
    set(&root.join("f"), b"user.plain", b"value");
    set(&root.join("f"), b"user.binary", &[0, 1, 2, 255, 0]);
    set(&root.join("f"), b"user.empty", b"");
    set(&root.join("f"), b"user.big", &sample(3000, 3));
    set(&root.join("dir"), b"user.on-dir", b"d");
    set(&root.join("link"), b"trusted.on-link", b"l");
    // security.capability, v2: cap_net_bind_service, effective.
    let mut cap = Vec::new();
    cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&[0; 8]);
    set(&root.join("bin"), b"security.capability", &cap);
    // An access ACL (user:1000:r--) and a default ACL on the directory.
    let acl = |entries: &[(u16, u16, u32)]| {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    };
    let entries = [
        (1, 6, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ];
    set(&root.join("f"), b"system.posix_acl_access", &acl(&entries));
    set(
        &root.join("dir"),
        b"system.posix_acl_default",
        &acl(&entries),
    );
    set(&root.join("f"), b"user.bad\xffname", b"skipped");

    let repo = init(memory()).await;
    let o = backup_files(&repo, opts(&[&root])).await.unwrap();
    let t = tree(&repo, &o.backup.id).await;
    assert_tree_matches(&repo, &t, &root).await;
    let nodes = by_path(&t);
    let fx = node_xattrs(&nodes[&rel(&root.join("f"))].0);
    assert!(
        fx.contains_key(b"system.posix_acl_access".as_slice()),
        "{fx:?}"
    );
    assert_eq!(fx[b"user.binary".as_slice()], [0, 1, 2, 255, 0]);
    let bx = node_xattrs(&nodes[&rel(&root.join("bin"))].0);
    assert_eq!(bx[b"security.capability".as_slice()], cap);
    let names: Vec<_> = nodes[&rel(&root.join("f"))]
        .0
        .xattrs
        .iter()
        .map(|x| x.name.clone())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "xattrs are in name order");
    // The non-UTF-8 name: a warning naming the file, the snapshot partial (incomplete).
    assert!(o.partial);
    assert_eq!(
        (o.report.skipped, o.report.changed, o.report.incomplete),
        (0, 0, 1)
    );
    let w = &o.report.warnings[0];
    assert_eq!(w.path, root.join("f").display().to_string());
    assert_eq!(w.action, Action::Incomplete);
    assert!(w.reason.contains("not UTF-8"), "{}", w.reason);
}

// ---------------------------------------------------------------------------------------
// arguments

/// Overlapping arguments — a child before its parent, one path twice, a path through `..`,
/// a file inside a directory also given, an argument below a symlinked directory — give a
/// tree with each path once, parents first, that restores completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_arguments_give_each_path_once() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    plain_tree(&root);
    write(&d.path().join("real/inner/file"), b"via a symlinked parent");
    std::os::unix::fs::symlink(d.path().join("real"), d.path().join("alias")).unwrap();
    let args = [
        root.join("sub/deeper"),
        root.join("sub"),
        root.clone(),
        root.join("sub/big.bin"),
        root.join("sub/../a.txt"),
        root.join("."),
        root.clone(),
        root.join("sub/link"),
        d.path().join("alias/inner"),
    ];
    let repo = init(memory()).await;
    let o = backup_files(
        &repo,
        FilesOptions {
            paths: args.to_vec(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!o.partial, "{:?}", o.report);
    let t = tree(&repo, &o.backup.id).await;
    assert_well_formed(&t);
    assert_tree_matches(&repo, &t, &root).await;
    assert_tree_matches(&repo, &t, &d.path().join("real/inner")).await;
    // The symlinked parent is recorded by its physical path, not as a link to pass through.
    assert!(by_path(&t)
        .keys()
        .all(|k| !k.ends_with(b"/alias") && !k.windows(7).any(|w| w == b"/alias/")));
    let to = tempfile::tempdir().unwrap();
    restore_to(&repo, &o.backup.id, to.path()).await;
    assert_same_tree(&root, &to.path().join(path(&rel(&root))));
    assert_eq!(
        std::fs::read(
            to.path()
                .join(path(&rel(&d.path().join("real/inner/file"))))
        )
        .unwrap(),
        b"via a symlinked parent"
    );
}

/// An argument that does not exist fails the backup naming it (nothing is committed); so
/// does no argument at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_arguments_fail_naming_them() {
    let d = tempfile::tempdir().unwrap();
    let repo = init(memory()).await;
    let missing = d.path().join("nope/deeper");
    match backup_files(&repo, opts(&[d.path(), &missing])).await {
        Err(RepoError::Invalid(m)) => assert!(m.contains(&missing.display().to_string()), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        backup_files(&repo, opts(&[])).await,
        Err(RepoError::Invalid(_))
    ));
    assert!(repo.snapshots_report().await.unwrap().0.is_empty());
}

/// The tree paths of `t` that lie below `prefix` (a tree path), relative to it.
fn below(t: &[(Node, Vec<ChunkId>)], prefix: &[u8]) -> BTreeSet<String> {
    t.iter()
        .filter_map(|(n, _)| {
            let p = n.path_bytes().unwrap();
            p.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix(b"/"))
                .map(|r| String::from_utf8_lossy(r).into_owned())
        })
        .collect()
}

/// Top-level entries of `/` other than `keep`, as anchored exclude patterns.
fn exclude_root_except(keep: &[&str]) -> Vec<String> {
    std::fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .map(|n| format!("/{}", globset_escape(&n)))
        .collect()
}

fn globset_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// `backup files /` restores: the root directory has no node (a tree path is never empty),
/// everything below it is there once. The test tree is a directory directly under `/`; every
/// other top-level entry is excluded, except `/proc`, `/sys` and `/dev`, which must be
/// recorded as (empty) mount points and not descended into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_slash_restores_and_skips_virtual_filesystems() {
    let d = tempfile::Builder::new()
        .prefix(".arsip-test-slash-")
        .tempdir_in("/")
        .unwrap();
    plain_tree(d.path());
    let top = d.path().file_name().unwrap().to_str().unwrap().to_string();
    let repo = init(memory()).await;
    let o = backup_files(
        &repo,
        FilesOptions {
            paths: vec!["/".into()],
            exclude: exclude_root_except(&[&top, "proc", "sys", "dev"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t = tree(&repo, &o.backup.id).await;
    assert_well_formed(&t);
    assert_tree_matches(&repo, &t, d.path()).await;
    let nodes = by_path(&t);
    for v in ["proc", "sys", "dev"] {
        assert_eq!(nodes[v.as_bytes()].0.node_type, NodeType::Dir, "{v}");
        assert!(
            below(&t, v.as_bytes()).is_empty(),
            "descended into /{v}: {:?}",
            below(&t, v.as_bytes())
        );
    }
    let to = tempfile::tempdir().unwrap();
    restore_to(&repo, &o.backup.id, to.path()).await;
    assert_same_tree(d.path(), &to.path().join(&top));
}

/// Below an argument, a virtual filesystem (a private devpts instance here: one `ptmx`
/// device) is recorded as its mount point only; `include_virtual` descends into it, and an
/// argument on it is backed up either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_filesystems_on_request_or_as_arguments() {
    let d = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(d.path()).unwrap();
    std::fs::create_dir(root.join("pts")).unwrap();
    let mnt = Mount::new("devpts", "-onewinstance", &root.join("pts"));
    let repo = init(memory()).await;
    for (paths, include_virtual, descended) in [
        (vec![root.clone()], false, false),
        (vec![root.clone()], true, true),
        (vec![root.join("pts")], false, true),
        (vec![root.clone(), root.join("pts")], false, true),
    ] {
        let o = backup_files(
            &repo,
            FilesOptions {
                paths,
                include_virtual,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let t = tree(&repo, &o.backup.id).await;
        assert_well_formed(&t);
        let nodes = by_path(&t);
        assert_eq!(nodes[&rel(&root.join("pts"))].0.node_type, NodeType::Dir);
        let inside = below(&t, &rel(&root.join("pts")));
        assert_eq!(
            inside.contains("ptmx"),
            descended,
            "include_virtual={include_virtual}: {inside:?}"
        );
        if descended {
            assert_eq!(
                nodes[&rel(&root.join("pts/ptmx"))].0.node_type,
                NodeType::CharDevice
            );
        }
    }
    drop(mnt);
}

/// A filesystem mounted for the duration of a test; unmounted (lazily) when dropped.
struct Mount(PathBuf);

impl Mount {
    /// `mount -t FSTYPE ARG AT` (ARG: the source, or `-oOPTIONS` with the type as source).
    fn new(fstype: &str, arg: &str, at: &Path) -> Mount {
        let mut c = std::process::Command::new("mount");
        c.args(["-t", fstype, arg]);
        if arg.starts_with("-o") {
            c.arg(fstype);
        }
        let st = c.arg(at).status().unwrap();
        assert!(
            st.success(),
            "mount -t {fstype} {} (tests run as root)",
            at.display()
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// what a backup leaves out

/// `--exclude` patterns (anchored and not, `*`, `**`, a directory name) and an exclude file
/// with comments leave out exactly what they match, subtrees included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excludes_leave_out_exactly_what_they_match() {
    let d = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(d.path()).unwrap().join("t");
    for p in [
        "keep.txt",
        "app.log",
        "sub/deep.log",
        "sub/keep.logs",
        "cache/big",
        "nested/cache/kept",
        "node_modules/x/y",
        "src/node_modules/z",
        "home/ann/.cache/c",
        "home/ann/docs/.cache",
        "build/out/o",
        "other/build/out",
        "build/outer",
        "caf\u{e9}.tmp",
    ] {
        write(&root.join(p), p.as_bytes());
    }
    write(&root.join(OsStr::from_bytes(b"raw\xff.tmp")), b"raw");
    let exclude_file = d.path().join("excludes");
    std::fs::write(
        &exclude_file,
        "# comments and blank lines are ignored\n\n   *.tmp   \n  # indented comment\nnode_modules\n",
    )
    .unwrap();
    let mut exclude = vec![
        "*.log".to_string(),
        format!("{}/cache", root.display()),
        format!("{}/home/*/.cache", root.display()),
        "build/out".to_string(),
    ];
    exclude.extend(backup::read_exclude_file(&exclude_file).unwrap());
    assert_eq!(
        exclude[4..],
        ["*.tmp".to_string(), "node_modules".to_string()]
    );
    let repo = init(memory()).await;
    let o = backup_files(
        &repo,
        FilesOptions {
            paths: vec![root.clone()],
            exclude,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t = tree(&repo, &o.backup.id).await;
    assert_well_formed(&t);
    let got = below(&t, &rel(&root));
    let want: BTreeSet<String> = [
        "keep.txt",
        "sub",
        "sub/keep.logs",
        "nested",
        "nested/cache",
        "nested/cache/kept",
        "src",
        "home",
        "home/ann",
        "home/ann/docs",
        "home/ann/docs/.cache",
        "build",
        "build/outer",
        "other",
        "other/build",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
    // A bad pattern, or an unreadable exclude file, is an error before anything is read.
    let bad = FilesOptions {
        paths: vec![root.clone()],
        exclude: vec!["a[".into()],
        ..Default::default()
    };
    assert!(matches!(
        backup_files(&repo, bad).await,
        Err(RepoError::Invalid(_))
    ));
    match backup::read_exclude_file(&d.path().join("missing")) {
        Err(RepoError::Invalid(m)) => assert!(m.contains("missing"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// `--one-file-system` records a mount point below an argument as an empty directory and
/// does not descend (a tmpfs here); without it the tmpfs's files are backed up (tmpfs holds
/// real files); an argument on the other filesystem is backed up either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_system_stops_at_mount_points() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    plain_tree(&root);
    std::fs::create_dir(root.join("mnt")).unwrap();
    let mnt = Mount::new("tmpfs", "tmpfs", &root.join("mnt"));
    write(&root.join("mnt/on-tmpfs/file"), b"on tmpfs");
    let repo = init(memory()).await;
    for (one_fs, extra_arg, crossed) in [
        (true, false, false),
        (false, false, true),
        (true, true, true),
    ] {
        let mut paths = vec![root.clone()];
        if extra_arg {
            paths.push(root.join("mnt/on-tmpfs"));
        }
        let o = backup_files(
            &repo,
            FilesOptions {
                paths,
                one_file_system: one_fs,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let t = tree(&repo, &o.backup.id).await;
        assert_well_formed(&t);
        let nodes = by_path(&t);
        assert_eq!(nodes[&rel(&root.join("mnt"))].0.node_type, NodeType::Dir);
        let inside = below(&t, &rel(&root.join("mnt")));
        if crossed {
            assert!(inside.contains("on-tmpfs/file"), "{inside:?}");
            assert_tree_matches(&repo, &t, &root.join("mnt/on-tmpfs")).await;
        } else {
            assert!(inside.is_empty(), "{inside:?}");
        }
        if !one_fs {
            let to = tempfile::tempdir().unwrap();
            restore_to(&repo, &o.backup.id, to.path()).await;
            assert_same_tree(&root, &to.path().join(path(&rel(&root))));
        }
    }
    drop(mnt);
}

/// The repository (a local directory inside the backed-up tree), the cache and restore
/// staging names are never backed up; an argument inside the repository is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_repository_cache_and_staging_names_are_never_backed_up() {
    let d = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(d.path()).unwrap().join("t");
    plain_tree(&root);
    let repo_dir = root.join("backups/repo");
    let cache = root.join("home/.cache/arsip");
    write(&cache.join("spill/x"), b"spill");
    // Staging names of restores, today's and earlier ones, beside ordinary look-alikes: the
    // backup leaves out exactly those `is_restore_staging` names.
    let candidates = [
        ".arsip-restore-0123456789abcdef-1",
        ".big.bin.arsip-tmp",
        "arsip-restore-not-staging",
        ".arsip-tmp",
    ];
    for c in candidates {
        write(&root.join("sub").join(c), b"half a restore");
    }
    assert!(candidates
        .iter()
        .any(|c| arsip_files::is_restore_staging(c.as_bytes())));
    let store = backend::open(&backend::Location::Local(repo_dir.clone()), true).unwrap();
    let repo = init(store).await;
    let never = vec![repo_dir.clone(), cache.clone(), root.join("does-not-exist")];
    let o = backup_files(
        &repo,
        FilesOptions {
            paths: vec![root.clone()],
            never: never.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t = tree(&repo, &o.backup.id).await;
    let got = below(&t, &rel(&root));
    assert!(
        got.contains("backups") && got.contains("home/.cache"),
        "{got:?}"
    );
    for p in &got {
        assert!(
            !p.starts_with("backups/repo") && !p.starts_with("home/.cache/arsip"),
            "{p}"
        );
    }
    for c in candidates {
        let staging = arsip_files::is_restore_staging(c.as_bytes());
        assert_eq!(got.contains(&format!("sub/{c}")), !staging, "{c}");
    }
    for inside in [repo_dir.clone(), repo_dir.join("data"), cache.join("spill")] {
        let r = backup_files(
            &repo,
            FilesOptions {
                paths: vec![inside.clone()],
                never: never.clone(),
                ..Default::default()
            },
        )
        .await;
        match r {
            Err(RepoError::Invalid(m)) => assert!(m.contains("refusing"), "{m}"),
            other => panic!("{}: {other:?}", inside.display()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// odd files: unreadable to the user running the backup

/// The backup half of `unreadable_entries_make_a_partial_snapshot`: runs only when that test
/// re-executes this binary as an unprivileged user (root reads everything, so DAC cannot be
/// tested as root), and writes the outcome as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_backup_as_unprivileged_user() {
    let Ok(spec) = std::env::var("ARSIP_TEST_CHILD_BACKUP") else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let repo_dir = PathBuf::from(spec["repo"].as_str().unwrap());
    let store = backend::open(&backend::Location::Local(repo_dir), false).unwrap();
    let with = OpenWith::Password(zeroize::Zeroizing::new(b"pw".to_vec()));
    let local = arsip_repo::LocalSettings {
        cache_dir: PathBuf::from(spec["cache"].as_str().unwrap()),
        ..Default::default()
    };
    let repo = Repository::open(store, with, Arc::new(SystemClock))
        .await
        .unwrap()
        .full("test")
        .unwrap()
        .with_local(local);
    let paths = spec["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    let o = backup_files(
        &repo,
        FilesOptions {
            paths,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    std::fs::write(
        spec["out"].as_str().unwrap(),
        serde_json::to_vec(&o).unwrap(),
    )
    .unwrap();
}

fn chown_r(p: &Path, uid: u32, gid: u32) {
    for q in walk(p) {
        std::os::unix::fs::lchown(&q, Some(uid), Some(gid)).unwrap();
    }
}

/// An unreadable file is skipped, an unreadable directory kept without its contents, both
/// named in warnings; the snapshot is committed, marked partial in its facts, and restores
/// everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_entries_make_a_partial_snapshot() {
    const NOBODY: u32 = 65534;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = d.path().join("t");
    plain_tree(&root);
    write(&root.join("secret"), b"root only");
    std::fs::set_permissions(root.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    write(&root.join("closed/inside"), b"cannot list");
    std::fs::set_permissions(root.join("closed"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // Searchable but not listable: a later argument below it is still reached.
    write(&root.join("blind/reachable/f"), b"by name");
    chown_r(&root.join("blind/reachable"), NOBODY, NOBODY);
    std::fs::set_permissions(root.join("blind"), std::fs::Permissions::from_mode(0o711)).unwrap();
    chown_r(&root.join("sub"), NOBODY, NOBODY);
    chown_r(&root.join("a.txt"), NOBODY, NOBODY);
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();

    let repo_dir = d.path().join("repo");
    let store = backend::open(&backend::Location::Local(repo_dir.clone()), true).unwrap();
    init(store.clone()).await;
    chown_r(&repo_dir, NOBODY, NOBODY);
    let cache = d.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    chown_r(&cache, NOBODY, NOBODY);
    let out = d.path().join("out.json");
    std::fs::write(&out, b"").unwrap();
    chown_r(&out, NOBODY, NOBODY);
    let spec = serde_json::json!({
        "repo": repo_dir,
        "paths": [root, root.join("blind/reachable")],
        "out": out,
        "cache": cache,
    });
    let st = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_backup_as_unprivileged_user",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ARSIP_TEST_CHILD_BACKUP", spec.to_string())
        .env("TMPDIR", &cache)
        .env("ARSIP_TEST_WEAK_KDF", "1")
        .env("HOME", &cache)
        .status()
        .unwrap();
    assert!(st.success(), "the unprivileged backup failed");
    let o: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(o["partial"], true, "{o}");
    assert_eq!(
        (o["skipped"].as_u64(), o["incomplete"].as_u64()),
        (Some(1), Some(2)),
        "{o}"
    );
    let warned: BTreeMap<String, String> = o["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["path"].as_str().unwrap().to_string(),
                w["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let p = |s: &str| root.join(s).display().to_string();
    assert_eq!(
        warned.get(&p("secret")).map(String::as_str),
        Some("skipped"),
        "{o}"
    );
    assert_eq!(
        warned.get(&p("closed")).map(String::as_str),
        Some("incomplete"),
        "{o}"
    );
    assert_eq!(
        warned.get(&p("blind")).map(String::as_str),
        Some("incomplete"),
        "{o}"
    );
    for w in o["warnings"].as_array().unwrap() {
        assert!(
            w["reason"].as_str().unwrap().contains("Permission denied"),
            "{w}"
        );
    }

    let repo = open(store).await;
    let id = o["id"].as_str().unwrap();
    let snap = snapshot(&repo, id).await;
    let f = &snap.manifest.facts;
    assert_eq!(f["partial"], true);
    assert_eq!(
        (
            f["skipped"].as_u64(),
            f["changed"].as_u64(),
            f["incomplete"].as_u64()
        ),
        (Some(1), Some(0), Some(2))
    );
    assert_eq!(f["problems"].as_array().unwrap().len(), 3);
    assert_eq!(f["problems_omitted"], 0);
    let t = tree(&repo, id).await;
    assert_well_formed(&t);
    let got = below(&t, &rel(&root));
    assert!(
        !got.contains("secret") && got.contains("closed") && !got.contains("closed/inside"),
        "{got:?}"
    );
    assert!(got.contains("blind/reachable/f"), "{got:?}");
    assert_tree_matches(&repo, &t, &root.join("sub")).await;
}

// ---------------------------------------------------------------------------------------
// streams and commands

#[test]
fn stream_names_must_be_plain_relative_paths() {
    for bad in [
        "", "/abs", "/", "..", "../x", "a/../b", "a/..", ".", "./a", "a/./b", "a//b", "a/", "//",
        "a\0b",
    ] {
        match backup::check_stream_name(bad) {
            Err(RepoError::Invalid(_)) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    for good in [
        "app.dump",
        "db/app.dump",
        "..foo",
        "a..b",
        "x.",
        ".hidden",
        "日本.sql",
        "a b",
    ] {
        backup::check_stream_name(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_backup_refuses_a_bad_name_and_commits_nothing() {
    let repo = init(memory()).await;
    let txn = SnapshotTxn::start(repo.clone()).await.unwrap();
    let r = backup::stream(
        txn,
        std::io::Cursor::new(b"x".to_vec()),
        "../escape".into(),
        meta("stdin"),
    )
    .await;
    assert!(matches!(r, Err(RepoError::Invalid(_))), "{r:?}");
    assert!(repo.snapshots_report().await.unwrap().0.is_empty());
}

fn argv(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

/// `backup command` commits the producer's stdout only after it exited 0, recording argv[0]
/// (never the other arguments, which may hold secrets) and the exit status; a non-zero exit
/// or a signal commits nothing and names the status and the end of stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_backup_commits_only_after_exit_0() {
    let repo = init(memory()).await;
    let data = sample(2 << 20, 9);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("payload"), &data).unwrap();
    let script = format!(
        "cat '{}'; echo progress >&2; : password=hunter2",
        d.path().join("payload").display()
    );
    let txn = SnapshotTxn::start(repo.clone()).await.unwrap();
    let o = backup::command(
        txn,
        argv(&["sh", "-c", &script]),
        "app.dump".into(),
        meta("command"),
    )
    .await
    .unwrap();
    let snap = snapshot(&repo, &o.id).await;
    assert_eq!(snap.manifest.facts["command"], "sh");
    assert_eq!(snap.manifest.facts["exit_status"], 0);
    let manifest = serde_json::to_string(&snap.manifest).unwrap();
    assert!(!manifest.contains("hunter2"), "{manifest}");
    let reader = arsip_repo::Reader::open(&repo).await.unwrap();
    let mut out = Vec::new();
    restore::to_writer(&reader, &snap, &mut out, &|_| {})
        .await
        .unwrap();
    assert_eq!(out, data);

    for (script, status) in [
        (
            "printf partial; echo 'pg_dump: error: connection lost' >&2; exit 3".to_string(),
            "exit status: 3",
        ),
        ("printf partial; kill -9 $$".to_string(), "signal: 9"),
        (
            format!("cat '{}'; exit 1", d.path().join("payload").display()),
            "exit status: 1",
        ),
    ] {
        let txn = SnapshotTxn::start(repo.clone()).await.unwrap();
        let e = backup::command(
            txn,
            argv(&["sh", "-c", &script]),
            "app.dump".into(),
            meta("command"),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, RepoError::Source(_)),
            "a producer's failure is no I/O error: {e:?}"
        );
        let e = e.to_string();
        assert!(e.contains(status), "{e}");
        if script.contains("connection lost") {
            assert!(e.contains("connection lost"), "{e}");
        }
    }
    let txn = SnapshotTxn::start(repo.clone()).await.unwrap();
    let e = backup::command(
        txn,
        argv(&["/nonexistent/producer"]),
        "x".into(),
        meta("command"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, RepoError::Invalid(m) if m.contains("/nonexistent/producer")),
        "{e}"
    );
    assert_eq!(
        repo.snapshots_report().await.unwrap().0.len(),
        1,
        "failures commit nothing"
    );
}

// ---------------------------------------------------------------------------------------
// backup and restore together

/// Everything `assert_tree_matches` checks, between two trees on disk: names as bytes,
/// types, full modes, owners, mtimes (not of symlinks), content, targets, device numbers,
/// xattrs, and hard links (entries are linked in one tree exactly when they are in the other).
fn assert_exact_copy(a: &Path, b: &Path) {
    let list = |r: &Path| -> BTreeMap<Vec<u8>, std::fs::Metadata> {
        walk(r)
            .into_iter()
            .map(|p| {
                let m = std::fs::symlink_metadata(&p).unwrap();
                (bytes(p.strip_prefix(r).unwrap()).to_vec(), m)
            })
            .collect()
    };
    let (la, lb) = (list(a), list(b));
    let names = |l: &BTreeMap<Vec<u8>, std::fs::Metadata>| l.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&la), names(&lb));
    let mut links: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    for (k, ma) in &la {
        let mb = &lb[k];
        let what = String::from_utf8_lossy(k).into_owned();
        let (pa, pb) = (a.join(path(k)), b.join(path(k)));
        assert_eq!(ma.file_type(), mb.file_type(), "{what}");
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "{what}");
        assert_eq!(xattrs_of(&pa), xattrs_of(&pb), "{what}");
        if ma.is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap(),
                "{what}"
            );
            continue;
        }
        assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "{what}");
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "{what}"
        );
        assert_eq!(ma.rdev(), mb.rdev(), "{what}");
        if ma.is_file() {
            assert_eq!(
                std::fs::read(&pa).unwrap(),
                std::fs::read(&pb).unwrap(),
                "{what}"
            );
            let (ka, kb) = ((ma.dev(), ma.ino()), (mb.dev(), mb.ino()));
            assert_eq!(
                *links.entry(ka).or_insert(kb),
                kb,
                "{what}: hard links differ"
            );
        }
    }
    let distinct: BTreeSet<_> = links.values().collect();
    assert_eq!(
        distinct.len(),
        links.len(),
        "restored files linked that were not"
    );
}

/// A hostile tree — non-UTF-8 names and targets, hard links, FIFOs and devices, setuid and
/// sticky bits with owners, xattrs, ACLs and capabilities, a sparse file — backed up and
/// restored as root comes back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tree_backs_up_and_restores_exactly() {
    use rustix::fs::{lsetxattr, makedev, mknodat, FileType, Mode, XattrFlags, CWD};
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    plain_tree(&root);
    for n in [
        &b"caf\xe9"[..],
        b"\xff\xfe",
        b"new\nline",
        "日本語".as_bytes(),
    ] {
        let dir = root.join("names").join(OsStr::from_bytes(n));
        write(&dir.join(OsStr::from_bytes(n)), n);
        std::os::unix::fs::symlink(OsStr::from_bytes(n), dir.join("link")).unwrap();
    }
    write(&root.join("links/a"), &sample(100_000, 4));
    std::fs::hard_link(root.join("links/a"), root.join("links/b")).unwrap();
    std::fs::create_dir(root.join("links/sub")).unwrap();
    std::fs::hard_link(root.join("links/a"), root.join("links/sub/c")).unwrap();
    mknodat(
        CWD,
        root.join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o620),
        0,
    )
    .unwrap();
    mknodat(
        CWD,
        root.join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknodat(
        CWD,
        root.join("blk"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o600),
        makedev(7, 9),
    )
    .unwrap();
    // Hard links of entries that are not regular files (two names of one FIFO, device or
    // symlink) stay links.
    std::fs::create_dir(root.join("speclinks")).unwrap();
    std::fs::hard_link(root.join("fifo"), root.join("speclinks/fifo2")).unwrap();
    std::fs::hard_link(root.join("null"), root.join("speclinks/null2")).unwrap();
    std::os::unix::fs::symlink("somewhere", root.join("slink")).unwrap();
    rustix::fs::linkat(
        CWD,
        root.join("slink"),
        CWD,
        root.join("speclinks/slink2"),
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    write(&root.join("suid"), b"#!/bin/true\n");
    std::os::unix::fs::lchown(root.join("suid"), Some(1001), Some(1002)).unwrap();
    std::fs::set_permissions(root.join("suid"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::fs::create_dir(root.join("sticky")).unwrap();
    std::os::unix::fs::lchown(root.join("sticky"), Some(1003), Some(1003)).unwrap();
    std::fs::set_permissions(root.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    lsetxattr(
        root.join("a.txt"),
        "user.k",
        b"v\0binary",
        XattrFlags::empty(),
    )
    .unwrap();
    let mut cap = 0x0200_0001u32.to_le_bytes().to_vec();
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&[0; 12]);
    lsetxattr(
        root.join("suid"),
        "security.capability",
        &cap,
        XattrFlags::empty(),
    )
    .unwrap();
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 5, 1234),
        (4, 5, u32::MAX),
        (0x10, 5, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    lsetxattr(
        root.join("sub"),
        "system.posix_acl_access",
        &acl,
        XattrFlags::empty(),
    )
    .unwrap();
    lsetxattr(
        root.join("sub"),
        "system.posix_acl_default",
        &acl,
        XattrFlags::empty(),
    )
    .unwrap();
    {
        let f = std::fs::File::create(root.join("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"middle", 32 << 20).unwrap();
    }
    let repo = init(memory()).await;
    let o = backup_files(&repo, opts(&[&root])).await.unwrap();
    assert!(!o.partial, "{:?}", o.report);
    let to = tempfile::tempdir().unwrap();
    restore_to(&repo, &o.backup.id, to.path()).await;
    let restored = to.path().join(path(&rel(&root)));
    assert_exact_copy(&root, &restored);
    for (a, b) in [
        ("fifo", "speclinks/fifo2"),
        ("null", "speclinks/null2"),
        ("slink", "speclinks/slink2"),
        ("links/a", "links/sub/c"),
    ] {
        let ino = |p: &str| std::fs::symlink_metadata(restored.join(p)).unwrap().ino();
        assert_eq!(ino(a), ino(b), "{a} and {b} are one inode again");
    }
    let blocks = std::fs::metadata(restored.join("sparse")).unwrap().blocks();
    assert!(
        blocks * 512 < 1 << 20,
        "the sparse file stays sparse ({blocks} blocks)"
    );
}
