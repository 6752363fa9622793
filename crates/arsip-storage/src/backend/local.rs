//! The local backend: a directory on a filesystem, written by arsip itself and read
//! through `object_store`'s local filesystem.
//!
//! Writes: an object is written to a private staging file beside it (`NAME#DIGITS`, a name
//! `object_store` and [`LocalStore::list`] never report as an object), fsynced, then
//! - created by `link(2)`, which fails if the name exists (create-only), or
//! - replaced by `rename(2)` while an exclusive `flock` on the current file is held and its
//!   identity (e_tag) still matches (conditional update); deletes take the same lock, so a
//!   conditional write never resurrects a deleted object or replaces a newer one.
//!
//! and the directories from the object up to the root are fsynced before the write is
//! acknowledged. Any fsync failure is permanent (see [`StorageError::fsync`]); a create whose
//! directory fsync failed removes its object again, so a later attempt writes it anew rather
//! than finding bytes that only the page cache holds. A create that meets an existing object
//! fsyncs it before reporting `AlreadyExists`, so a concurrent writer's unsynced object is
//! never acknowledged by a second writer either.
//!
//! Permissions: objects are created 0600 and directories 0700 (restic uses 0400/0700): key
//! slots and everything else are readable by the repository's owner only. A pre-existing
//! repository directory keeps its own mode.
//!
//! e_tag: `object_store`'s (`{inode:x}-{mtime µs:x}-{size:x}`), computed the same way here
//! for the lock-held comparison (a unit test pins the two together). A replacement's mtime
//! is kept strictly after the one it replaces, so a chain of updates never repeats an e_tag.
//! What remains: a deleted object re-created with the same size, the freed inode number and
//! an mtime in the same clock tick would look unchanged (S3 has the analogous case: equal
//! bytes give equal ETags).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as OsPath;

use super::ObjectStoreBackend;
use crate::{ErrorKind, Object, ObjectMeta, Result, Revision, StorageError, Store};

/// Mode of object files and of the directories the store creates.
pub const FILE_MODE: u32 = 0o600;
pub const DIR_MODE: u32 = 0o700;

#[derive(Debug)]
pub struct LocalStore {
    shared: Arc<Shared>,
    inner: ObjectStoreBackend,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    /// Set when this process is root and the repository directory belongs to another user:
    /// new files and directories are given to that owner ([`adopted_owner`]).
    owner: Option<(rustix::fs::Uid, rustix::fs::Gid)>,
    fs: Arc<LocalFileSystem>,
    /// Test builds only: counts down to the fsync that is made to fail (1 = the next one).
    #[cfg(test)]
    fail_fsync_countdown: std::sync::atomic::AtomicI64,
}

impl LocalStore {
    pub fn open(root: &Path, create_dir: bool) -> Result<LocalStore> {
        let perm = |m: String| StorageError::new(ErrorKind::Permanent, None, m);
        if create_dir {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(root)
                .map_err(|e| {
                    perm(format!(
                        "cannot create repository directory {}: {e}",
                        root.display()
                    ))
                })?;
        }
        let root = root.canonicalize().map_err(|e| {
            StorageError::new(
                if e.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Permanent
                },
                None,
                format!("repository directory {}: {e}", root.display()),
            )
        })?;
        if !root.is_dir() {
            return Err(perm(format!("{} is not a directory", root.display())));
        }
        let fs = Arc::new(
            LocalFileSystem::new_with_prefix(&root)
                .map_err(|e| StorageError::from_object_store("", e))?,
        );
        let describe = format!("local:{}", root.display());
        Ok(LocalStore {
            inner: ObjectStoreBackend::new(fs.clone(), String::new(), describe),
            shared: Arc::new(Shared {
                owner: adopted_owner(&root),
                root,
                fs,
                #[cfg(test)]
                fail_fsync_countdown: Default::default(),
            }),
        })
    }

    /// Test builds only: make the `n`-th fsync from now (1 = the next) fail with EIO.
    #[cfg(test)]
    pub(crate) fn fail_nth_fsync(&self, n: u32) {
        self.shared
            .fail_fsync_countdown
            .store(n.into(), std::sync::atomic::Ordering::SeqCst);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce(&Shared, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        let k = key.to_string();
        tokio::task::spawn_blocking(move || f(&shared, &k))
            .await
            .map_err(|e| StorageError::new(ErrorKind::Permanent, Some(key), e.to_string()))?
    }
}

impl Shared {
    fn path(&self, key: &str) -> Result<PathBuf> {
        self.fs
            .path_to_filesystem(&OsPath::from(key))
            .map_err(|e| StorageError::from_object_store(key, e))
    }

    fn fsync(&self, key: &str, path: &Path, file: &File) -> Result<()> {
        #[cfg(test)]
        {
            let n = self
                .fail_fsync_countdown
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            if n == 1 {
                let e = std::io::Error::from_raw_os_error(5); // EIO
                return Err(StorageError::fsync(key, path, &e));
            }
        }
        file.sync_all()
            .map_err(|e| StorageError::fsync(key, path, &e))
    }

    /// fsync every directory from `dir` up to the root, inclusive.
    fn sync_dirs(&self, key: &str, dir: &Path) -> Result<()> {
        let mut d = Some(dir);
        while let Some(dir) = d {
            let f =
                File::open(dir).map_err(|e| StorageError::io(key, "open directory", dir, &e))?;
            self.fsync(key, dir, &f)?;
            if dir == self.root {
                break;
            }
            d = dir.parent();
        }
        Ok(())
    }

    /// fsync an object file and its directories.
    fn sync_object(&self, key: &str, path: &Path) -> Result<()> {
        let f = File::open(path).map_err(|e| StorageError::io(key, "open", path, &e))?;
        self.fsync(key, path, &f)?;
        self.sync_dirs(key, parent(path))
    }

    /// Create `dir` and its missing parents (mode [`DIR_MODE`]), each given to the
    /// repository's owner when [`adopted_owner`] says so.
    fn make_dirs(&self, key: &str, dir: &Path) -> Result<()> {
        let Some((uid, gid)) = self.owner else {
            return std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|e| StorageError::io(key, "create directory", dir, &e));
        };
        let rel = dir.strip_prefix(&self.root).unwrap_or(dir);
        let mut at = self.root.clone();
        for c in rel.components() {
            at.push(c);
            match std::fs::DirBuilder::new().mode(DIR_MODE).create(&at) {
                Ok(()) => rustix::fs::chown(&at, Some(uid), Some(gid)).map_err(|e| {
                    StorageError::io(
                        key,
                        "give to the repository's owner",
                        &at,
                        &std::io::Error::from(e),
                    )
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StorageError::io(key, "create directory", &at, &e)),
            }
        }
        Ok(())
    }

    /// Write `data` to a new private staging file beside `path`, fsynced; `min_mtime`
    /// (exclusive) keeps a replacement's mtime after its predecessor's.
    fn stage(
        &self,
        key: &str,
        path: &Path,
        data: &[u8],
        after: Option<SystemTime>,
    ) -> Result<PathBuf> {
        let dir = parent(path);
        self.make_dirs(key, dir)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        loop {
            let staged = dir.join(format!("{name}#{}", rand::random::<u32>()));
            let mut f = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&staged)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StorageError::io(key, "create", &staged, &e)),
            };
            let r = (|| {
                if let Some((uid, gid)) = self.owner {
                    rustix::fs::fchown(&f, Some(uid), Some(gid)).map_err(|e| {
                        StorageError::io(
                            key,
                            "give to the repository's owner",
                            &staged,
                            &std::io::Error::from(e),
                        )
                    })?;
                }
                f.write_all(data)
                    .map_err(|e| StorageError::io(key, "write", &staged, &e))?;
                #[cfg(feature = "test-hooks")]
                if let (None, Some(t)) = (after, test_now()) {
                    f.set_modified(t)
                        .map_err(|e| StorageError::io(key, "set mtime of", &staged, &e))?;
                }
                if let Some(prev) = after {
                    let m = f
                        .metadata()
                        .and_then(|m| m.modified())
                        .map_err(|e| StorageError::io(key, "stat", &staged, &e))?;
                    if m <= prev {
                        f.set_modified(prev + Duration::from_micros(1))
                            .map_err(|e| StorageError::io(key, "set mtime of", &staged, &e))?;
                    }
                }
                self.fsync(key, &staged, &f)
            })();
            return match r {
                Ok(()) => Ok(staged),
                Err(e) => {
                    let _ = std::fs::remove_file(&staged);
                    Err(e)
                }
            };
        }
    }

    fn create(&self, key: &str, data: &[u8]) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let staged = self.stage(key, &path, data, None)?;
        let linked = std::fs::hard_link(&staged, &path);
        let _ = std::fs::remove_file(&staged);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Whoever created it may not have synced it yet: do, before anyone relies
                // on its existence.
                self.sync_object(key, &path)?;
                return Err(StorageError::new(
                    ErrorKind::AlreadyExists,
                    Some(key),
                    format!("{} exists", path.display()),
                ));
            }
            Err(e) => return Err(StorageError::io(key, "link", &path, &e)),
        }
        if let Err(e) = self.sync_dirs(key, parent(&path)) {
            // Not acknowledged, so not kept: a later attempt must write it again rather
            // than find a name the disk may not hold.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        stat_meta(key, &path)
    }

    /// Open `path` and hold an exclusive lock on the file currently at that name (retrying
    /// if it was replaced while waiting). `None`: no object.
    fn lock(&self, key: &str, path: &Path) -> Result<Option<(File, std::fs::Metadata)>> {
        loop {
            let f = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StorageError::io(key, "open", path, &e)),
            };
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| StorageError::io(key, "lock", path, &std::io::Error::from(e)))?;
            let held = f
                .metadata()
                .map_err(|e| StorageError::io(key, "stat", path, &e))?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some((f, held)))
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StorageError::io(key, "stat", path, &e)),
            }
        }
    }

    fn update(&self, key: &str, expected: &Revision, data: &[u8]) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let mismatch = |what: &str| {
            StorageError::new(
                ErrorKind::PreconditionFailed,
                Some(key),
                format!("{}: {what}", path.display()),
            )
        };
        let Some((_lock, held)) = self.lock(key, &path)? else {
            return Err(mismatch("no object to update"));
        };
        if expected.e_tag.as_deref() != Some(e_tag(&held).as_str()) {
            // Our own earlier attempt, its answer lost? (see the contract)
            if std::fs::read(&path).is_ok_and(|b| b == data) {
                return stat_meta(key, &path);
            }
            return Err(mismatch(
                "the object is not the revision the update expected",
            ));
        }
        let prev = held
            .modified()
            .map_err(|e| StorageError::io(key, "stat", &path, &e))?;
        let staged = self.stage(key, &path, data, Some(prev))?;
        if let Err(e) = std::fs::rename(&staged, &path) {
            let _ = std::fs::remove_file(&staged);
            return Err(StorageError::io(key, "rename over", &path, &e));
        }
        // Replaced: an fsync failure now cannot restore the old revision; it is reported
        // (permanent) and the caller must not assume either revision is on disk.
        self.sync_dirs(key, parent(&path))?;
        stat_meta(key, &path)
    }

    fn delete(&self, key: &str, expected: Option<&Revision>) -> Result<()> {
        let path = self.path(key)?;
        let Some((_lock, held)) = self.lock(key, &path)? else {
            return match expected {
                None => Ok(()),
                Some(_) => Err(StorageError::new(
                    ErrorKind::NotFound,
                    Some(key),
                    format!("{} does not exist", path.display()),
                )),
            };
        };
        if let Some(exp) = expected {
            if exp.e_tag.as_deref() != Some(e_tag(&held).as_str()) {
                return Err(StorageError::new(
                    ErrorKind::PreconditionFailed,
                    Some(key),
                    format!(
                        "{}: the object is not the revision the delete expected",
                        path.display()
                    ),
                ));
            }
        }
        std::fs::remove_file(&path).map_err(|e| StorageError::io(key, "remove", &path, &e))?;
        self.sync_dirs(key, parent(&path))
    }
}

/// The owner new objects get: when this process is root and the repository directory
/// belongs to another user (a database host's repository owned by `postgres`, whose
/// `archive_command` writes WAL into it while root runs the base backups), files and
/// directories root creates there are given to that user and group, so that with modes
/// 0600/0700 every writer of the repository can still read and extend what the others wrote.
/// `None` (the process's own ownership) otherwise.
fn adopted_owner(root: &Path) -> Option<(rustix::fs::Uid, rustix::fs::Gid)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let m = std::fs::metadata(root).ok()?;
    (m.uid() != 0).then(|| {
        (
            rustix::fs::Uid::from_raw(m.uid()),
            rustix::fs::Gid::from_raw(m.gid()),
        )
    })
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// `object_store`'s local e_tag of a file (see the module documentation).
fn e_tag(m: &std::fs::Metadata) -> String {
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("{:x}-{:x}-{:x}", m.ino(), mtime, m.len())
}

fn stat_meta(key: &str, path: &Path) -> Result<ObjectMeta> {
    let m = std::fs::metadata(path).map_err(|e| StorageError::io(key, "stat", path, &e))?;
    let last_modified = m
        .modified()
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Ok(ObjectMeta {
        key: key.to_string(),
        size: m.len(),
        last_modified,
        e_tag: Some(e_tag(&m)),
        version: None,
    })
}

#[async_trait]
impl Store for LocalStore {
    async fn create(&self, key: &str, data: Bytes) -> Result<()> {
        self.create_with_meta(key, data).await.map(|_| ())
    }

    async fn create_with_meta(&self, key: &str, data: Bytes) -> Result<ObjectMeta> {
        self.blocking(key, move |s, k| s.create(k, &data)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }

    async fn get_with_meta(&self, key: &str) -> Result<Object> {
        self.inner.get_with_meta(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        // Staging files of in-flight writes (`name#N`) are not objects.
        self.inner
            .list(prefix)
            .filter(|r| futures::future::ready(!matches!(r, Ok(m) if m.key.contains('#'))))
            .boxed()
    }

    async fn update(&self, key: &str, expected: &Revision, data: Bytes) -> Result<ObjectMeta> {
        let expected = expected.clone();
        self.blocking(key, move |s, k| s.update(k, &expected, &data))
            .await
    }

    async fn delete_if(&self, key: &str, expected: &Revision) -> Result<()> {
        let expected = expected.clone();
        self.blocking(key, move |s, k| s.delete(k, Some(&expected)))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.blocking(key, |s, k| s.delete(k, None)).await
    }

    async fn sweep_staging(&self, older_than: jiff::Timestamp) -> Result<u64> {
        // `object_store` lists no staging file: walk the directory tree.
        let cut = std::time::SystemTime::from(older_than);
        self.blocking("", move |s, _| sweep_dir(&s.root, &s.root, cut))
            .await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// The `ARSIP_TEST_STORE_NOW` hook (RFC 3339), in builds with the `test-hooks` feature only:
/// the store's clock (the mtimes a local repository gives new objects) is pinned, so that
/// end-to-end tests can run a month of backups, retention and prune in seconds. Separate
/// from `ARSIP_TEST_NOW` (the writer's clock): tests of a writer that lies about the time
/// need the two apart.
#[cfg(feature = "test-hooks")]
fn test_now() -> Option<SystemTime> {
    static NOW: std::sync::OnceLock<Option<SystemTime>> = std::sync::OnceLock::new();
    *NOW.get_or_init(|| {
        let t: jiff::Timestamp = std::env::var("ARSIP_TEST_STORE_NOW").ok()?.parse().ok()?;
        Some(SystemTime::from(t))
    })
}

/// Remove staging files (`NAME#DIGITS`) below `dir` last modified before `cut`.
fn sweep_dir(root: &Path, dir: &Path, cut: std::time::SystemTime) -> Result<u64> {
    let io = |p: &Path, what: &str, e: std::io::Error| {
        let key = p.strip_prefix(root).unwrap_or(p).display().to_string();
        StorageError::io(&key, what, p, &e)
    };
    let mut n = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, "listing", e))? {
        let entry = entry.map_err(|e| io(dir, "listing", e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| io(&path, "reading", e))?;
        if meta.is_dir() {
            n += sweep_dir(root, &path, cut)?;
        } else if entry.file_name().as_encoded_bytes().contains(&b'#')
            && meta.modified().is_ok_and(|m| m < cut)
        {
            match std::fs::remove_file(&path) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, "removing a staging file", e)),
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{Retry, RetryPolicy};

    fn store() -> (tempfile::TempDir, Arc<LocalStore>) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(&dir.path().join("repo"), true).unwrap();
        (dir, Arc::new(s))
    }

    fn retrying(s: Arc<LocalStore>) -> Retry {
        let policy = RetryPolicy {
            initial: Duration::from_millis(1),
            ..Default::default()
        };
        Retry::new(s, policy)
    }

    /// Staging files left by interrupted writes are swept once older than the cut-off;
    /// objects and younger staging files stay.
    #[tokio::test]
    async fn sweep_removes_only_old_staging_files() {
        let (dir, s) = store();
        s.create("data/ab/obj", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let root = dir.path().join("repo");
        let old = root.join("data/ab/obj2#123");
        let young = root.join("data/ab/obj3#456");
        std::fs::write(&old, b"partial").unwrap();
        std::fs::write(&young, b"partial").unwrap();
        let past = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(past)
            .unwrap();
        #[allow(clippy::disallowed_methods)]
        let cut = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24);
        assert_eq!(s.sweep_staging(cut).await.unwrap(), 1);
        assert!(!old.exists() && young.exists());
        assert_eq!(
            s.get("data/ab/obj").await.unwrap(),
            Bytes::from_static(b"x")
        );
    }

    /// Root writing into a repository another user owns (root's base backups beside the
    /// `postgres` user's archive_command) gives what it creates to that owner, so the 0600
    /// and 0700 modes do not lock the other writer out; a repository root owns stays root's.
    #[tokio::test]
    async fn root_gives_new_objects_to_the_repository_owner() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test runs as root, as the suite does"
        );
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let (uid, gid) = (65534, 65534);
        std::os::unix::fs::chown(&repo, Some(uid), Some(gid)).unwrap();
        let s = LocalStore::open(&repo, false).unwrap();
        s.create("data/ab/cd/object", Bytes::from_static(b"x"))
            .await
            .unwrap();
        for p in ["data", "data/ab", "data/ab/cd", "data/ab/cd/object"] {
            let m = std::fs::metadata(repo.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{p}");
        }
        let (_d, own) = store();
        own.create("data/x", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let m = std::fs::metadata(own.shared.root.join("data/x")).unwrap();
        assert_eq!(m.uid(), 0);
    }

    /// Issue 10 §5: an fsync failure used to be transient, so the retry met `AlreadyExists`,
    /// read the bytes back from the page cache and acknowledged an object that never reached
    /// the disk. Each fsync of a create is failed in turn (the staged file's, then those of
    /// `data/ab`, `data` and the root): the create fails permanently, leaves no object
    /// behind, and a later create writes it anew.
    #[tokio::test]
    async fn a_failed_fsync_is_never_acknowledged() {
        for nth in 1..=4u32 {
            let (_dir, local) = store();
            let s = retrying(local.clone());
            let key = "data/ab/object";
            let data = Bytes::from(vec![nth as u8; 4096]);
            local.fail_nth_fsync(nth);
            let e = s.create(key, data.clone()).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Permanent, "fsync #{nth}: {e}");
            assert!(e.message.contains("fsync"), "{e}");
            assert_eq!(
                s.get(key).await.unwrap_err().kind,
                ErrorKind::NotFound,
                "fsync #{nth}: an unacknowledged object must not stay behind"
            );
            s.create(key, data.clone()).await.unwrap();
            assert_eq!(s.get(key).await.unwrap(), data);
        }
    }

    /// A create that finds the object already there (another writer's, maybe not yet
    /// synced) syncs it before saying so; if that fails, it does not say `AlreadyExists`
    /// (which callers take as "stored").
    #[tokio::test]
    async fn an_existing_object_is_synced_before_already_exists() {
        let (_dir, local) = store();
        let s = retrying(local.clone());
        s.create("k", Bytes::from_static(b"1")).await.unwrap();
        // fsync #1 is the second create's staged file; #2 is the existing object's.
        local.fail_nth_fsync(2);
        let e = s.create("k", Bytes::from_static(b"1")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
        let e = s.create("k", Bytes::from_static(b"1")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");
    }

    /// An fsync failure during a conditional update is permanent too.
    #[tokio::test]
    async fn a_failed_fsync_fails_an_update() {
        for nth in 1..=2u32 {
            let (_dir, local) = store();
            let s = retrying(local.clone());
            let m = s
                .create_with_meta("lock", Bytes::from_static(b"a"))
                .await
                .unwrap();
            local.fail_nth_fsync(nth);
            let e = s
                .update("lock", &m.revision(), Bytes::from_static(b"b"))
                .await
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Permanent, "fsync #{nth}: {e}");
        }
    }

    /// The e_tag computed here for the lock-held comparison is `object_store`'s.
    #[tokio::test]
    async fn e_tags_agree_with_object_store() {
        let (_dir, local) = store();
        let created = local
            .create_with_meta("a/b", Bytes::from_static(b"xyz"))
            .await
            .unwrap();
        let head = local.head("a/b").await.unwrap();
        assert_eq!(created.e_tag, head.e_tag);
        assert_eq!(created.last_modified, head.last_modified);
        let listed: Vec<_> = local.list("a/").collect().await;
        assert_eq!(listed[0].as_ref().unwrap().e_tag, head.e_tag);
    }
}
