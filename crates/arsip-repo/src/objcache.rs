//! Local copies of the repository's content-addressed objects (indexes and snapshot
//! manifests): each is named by the BLAKE3 hash of its bytes, so a local copy is checked by
//! hashing it and a tampered, truncated or swapped copy is simply fetched again. Everything
//! read from a copy is then authenticated exactly as if it came from the store (signatures,
//! writer standing, fences). The cache is local state, not repository format: losing it costs
//! one download of each object.
//!
//! A copy, `<cache>/<repo id>/objects/<index|snapshots>/<hash>`, is written when the object
//! is first fetched; copies of objects no longer listed are removed when their prefix is
//! listed again.
//!
//! The cache directory may be shared or planted (a root restore runs on a host others use):
//! a directory of the cache is used only if it is a real directory (not a symbolic link)
//! owned by the user arsip runs as, so that removing stale copies can never delete files
//! elsewhere; an entry is read only if it is a regular file (never followed, never a FIFO
//! or a device) of at most [`MAX_COPY`] bytes.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use arsip_storage::{DynStore, StorageError};
use bytes::Bytes;

/// The largest local copy read (indexes are a few MiB, manifests a few KiB).
pub(crate) const MAX_COPY: u64 = 1 << 30;

/// `base/parts…`, each component from `base` down created (mode 0700) if missing, if every
/// one is a real directory owned by this user; else `None`, and the cache is not used.
pub(crate) fn own_dir(base: &Path, parts: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let uid = rustix::process::geteuid().as_raw();
    let usable = |p: &Path| -> bool {
        if std::fs::symlink_metadata(p).is_err() {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(p);
        }
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_dir() && m.uid() == uid => true,
            _ => {
                // Once per process: every object read would say it again.
                static SAID: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        dir = %p.display(),
                        "cache directory is a symbolic link, not a directory, or another \
                         user's: not using it"
                    );
                }
                false
            }
        }
    };
    let mut path = base.to_path_buf();
    if !usable(&path) {
        return None;
    }
    for part in parts {
        path.push(part);
        if !usable(&path) {
            return None;
        }
    }
    Some(path)
}

/// The bytes of `path` if it is a regular file (a link is not followed, a FIFO does not
/// block) of at most `max` bytes.
pub(crate) fn read_regular(path: &Path, max: u64) -> Option<Vec<u8>> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .ok()?;
    let m = f.metadata().ok()?;
    if !m.file_type().is_file() || m.len() > max {
        return None;
    }
    let mut out = Vec::with_capacity(m.len() as usize);
    Read::by_ref(&mut f).take(max).read_to_end(&mut out).ok()?;
    Some(out)
}

pub(crate) struct ObjectCache {
    /// The repository's own cache directory.
    base: PathBuf,
}

/// `prefix/<64 hex digits>`: the prefix and the hash, for the prefixes that are cached.
fn split(name: &str) -> Option<(&str, &str)> {
    let (prefix, hash) = name.split_once('/')?;
    let cached = matches!(prefix, "index" | "snapshots");
    (cached && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((prefix, hash))
}

impl ObjectCache {
    pub(crate) fn new(repo_cache_dir: PathBuf) -> ObjectCache {
        ObjectCache {
            base: repo_cache_dir,
        }
    }

    /// The directory of `prefix`'s copies, if it can be used safely.
    fn dir(&self, prefix: &str) -> Option<PathBuf> {
        own_dir(&self.base, &["objects", prefix])
    }

    /// The object `name`, from its local copy when that copy hashes to its name, else from
    /// `store` (and then copied). Objects outside the cached prefixes come from the store.
    pub(crate) async fn get(&self, store: &DynStore, name: &str) -> Result<Bytes, StorageError> {
        let Some((prefix, hash)) = split(name) else {
            return store.get(name).await;
        };
        let (base, prefix_owned, hash_owned) =
            (self.base.clone(), prefix.to_string(), hash.to_string());
        let local = tokio::task::spawn_blocking(move || {
            let dir = ObjectCache { base }.dir(&prefix_owned)?;
            let copy = read_regular(&dir.join(&hash_owned), MAX_COPY);
            Some((dir, copy))
        })
        .await
        .ok()
        .flatten();
        let Some((dir, copy)) = local else {
            return store.get(name).await;
        };
        if let Some(b) = copy {
            if blake3::hash(&b).to_hex().as_str() == hash {
                return Ok(Bytes::from(b));
            }
            tracing::warn!(
                object = name,
                "local copy does not match its name; fetching it again"
            );
        }
        let b = store.get(name).await?;
        if blake3::hash(&b).to_hex().as_str() == hash {
            let (bytes, path) = (b.clone(), dir.join(hash));
            // Best effort: a copy not written costs a download next time. The temporary
            // file is created exclusively in the checked directory, then renamed over the
            // entry (a link there is replaced, never written through).
            let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut f = tempfile::NamedTempFile::new_in(&dir)?;
                f.write_all(&bytes)?;
                f.persist(path).map_err(|e| e.error)?;
                Ok(())
            })
            .await;
            if let Ok(Err(e)) = r {
                tracing::debug!(object = name, error = %e, "local copy not written");
            }
        }
        Ok(b)
    }

    /// Remove the copies under `prefix` of objects not in `listed` (full names).
    pub(crate) fn retain(&self, prefix: &str, listed: &HashSet<&str>) {
        let prefix = prefix.trim_end_matches('/');
        let Some(dir) = self.dir(prefix) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let keep = e
                .file_name()
                .to_str()
                .is_some_and(|n| listed.contains(format!("{prefix}/{n}").as_str()));
            if !keep {
                // Unlinks the entry itself, a link included; the directory is ours.
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arsip_storage::backend;

    #[tokio::test]
    async fn copies_are_used_only_when_they_match_their_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        let store: DynStore =
            backend::open(&backend::Location::Local(dir.path().join("repo")), false).unwrap();
        let body = Bytes::from_static(b"an index");
        let name = format!("index/{}", blake3::hash(&body).to_hex());
        store.create(&name, body.clone()).await.unwrap();
        let cache = ObjectCache::new(dir.path().join("cache"));
        assert_eq!(cache.get(&store, &name).await.unwrap(), body);
        let copy = dir.path().join("cache/objects").join(&name);
        assert_eq!(std::fs::read(&copy).unwrap(), body);
        // From the copy once the store lost it.
        store.delete(&name).await.unwrap();
        assert_eq!(cache.get(&store, &name).await.unwrap(), body);
        // A tampered copy is not used: the store is asked (and has nothing).
        std::fs::write(&copy, b"forged").unwrap();
        assert!(cache.get(&store, &name).await.is_err());
        // Copies of objects no longer listed go.
        std::fs::write(&copy, &body).unwrap();
        cache.retain("index/", &HashSet::new());
        assert!(!copy.exists());
    }

    #[test]
    fn a_planted_link_or_fifo_in_the_cache_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("cache");
        std::fs::create_dir(&base).unwrap();
        // `objects/snapshots` is a link to a directory of someone's files.
        let precious = dir.path().join("precious");
        std::fs::create_dir(&precious).unwrap();
        std::fs::write(precious.join("notes.txt"), b"x").unwrap();
        std::fs::create_dir(base.join("objects")).unwrap();
        std::os::unix::fs::symlink(&precious, base.join("objects/snapshots")).unwrap();
        let cache = ObjectCache::new(base.clone());
        cache.retain("snapshots/", &HashSet::new());
        assert!(
            precious.join("notes.txt").exists(),
            "nothing deleted through the link"
        );
        assert!(cache.dir("snapshots").is_none());
        // An entry that is a FIFO or a link to a device is not read (and does not block).
        std::fs::create_dir(base.join("objects/index")).unwrap();
        let fifo = base.join("objects/index/fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(read_regular(&fifo, MAX_COPY).is_none());
        let zero = base.join("objects/index/zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_regular(&zero, MAX_COPY).is_none());
    }
}
