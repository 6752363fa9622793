//! What each snapshot references, cached on the pruning host so that a prune reads the trees
//! of the snapshots committed since the last one, not every retained snapshot's tree again.
//!
//! A snapshot is immutable and named by the hash of its manifest, and the manifest names its
//! tree, so the set of chunks a snapshot id references never changes: an entry computed once
//! stays right for as long as the snapshot exists. Entries are authenticated with a key
//! derived from the master key (prune holds it; nobody who can only write the cache
//! directory does), so a tampered, truncated or swapped entry is ignored and the tree read
//! again; it can never make prune drop data a snapshot references. Entries of snapshots
//! that are gone are removed. The cache is local state, not repository format: losing it
//! costs one read of every tree.
//!
//! An entry, `<cache>/<repo id>/refs/<snapshot id>`: a 32-byte BLAKE3 keyed hash of
//! (snapshot id, zero byte, the rest), then the zstd-compressed concatenation of the sorted,
//! distinct 32-byte chunk ids.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use crate::crypto::{context, Key};
use crate::error::Result;
use crate::format::ChunkId;
use crate::objcache::{own_dir, read_regular, MAX_COPY};
use crate::repo::Repository;

pub(crate) struct RefCache {
    /// The repository's own cache directory; entries are in its `refs/`, used only when
    /// that is a real directory of this user (`objcache::own_dir`).
    base: PathBuf,
    key: Key,
}

impl RefCache {
    /// The cache of a repository opened with a full key (agents cannot authenticate entries).
    pub(crate) fn of(repo: &Repository) -> Result<RefCache> {
        let mk = repo.master("the reference cache")?;
        Ok(RefCache {
            base: repo.repo_cache_dir(),
            key: mk.master.derive(context::LOCAL_REFS, &[]),
        })
    }

    fn dir(&self) -> Option<PathBuf> {
        own_dir(&self.base, &["refs"])
    }

    fn path(&self, snapshot: &str) -> Option<PathBuf> {
        // Snapshot ids are hex hashes; anything else never names a file.
        (snapshot.len() == 64 && snapshot.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir().map(|d| d.join(snapshot)))
            .flatten()
    }

    fn mac(&self, snapshot: &str, body: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key.0);
        h.update(snapshot.as_bytes());
        h.update(&[0]);
        h.update(body);
        h.finalize()
    }

    /// The chunks `snapshot` references, if an authentic entry holds them.
    pub(super) fn get(&self, snapshot: &str) -> Option<Vec<ChunkId>> {
        let raw = read_regular(&self.path(snapshot)?, MAX_COPY)?;
        let (mac, body) = raw.split_at_checked(32)?;
        // blake3::Hash compares in constant time.
        if blake3::Hash::from_bytes(mac.try_into().ok()?) != self.mac(snapshot, body) {
            tracing::warn!(
                snapshot,
                "reference cache entry does not authenticate; re-reading"
            );
            return None;
        }
        let ids = zstd::decode_all(body).ok()?;
        if ids.len() % 32 != 0 {
            return None;
        }
        Some(
            ids.chunks_exact(32)
                .map(|c| c.try_into().expect("32 bytes"))
                .collect(),
        )
    }

    /// Best effort: a failed write only costs a tree read next time.
    pub(crate) fn put(&self, snapshot: &str, ids: &[ChunkId]) {
        let Some(path) = self.path(snapshot) else {
            return;
        };
        let dir = path
            .parent()
            .expect("an entry has a directory")
            .to_path_buf();
        let r = (|| -> std::io::Result<()> {
            let flat: Vec<u8> = ids.iter().flatten().copied().collect();
            let body = zstd::encode_all(&flat[..], 1)?;
            let mut f = tempfile::NamedTempFile::new_in(&dir)?;
            f.write_all(self.mac(snapshot, &body).as_bytes())?;
            f.write_all(&body)?;
            f.persist(path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = r {
            tracing::debug!(snapshot, error = %e, "reference cache entry not written");
        }
    }

    /// Remove the entries of snapshots that no longer exist (and stray files).
    pub(super) fn retain(&self, live: &HashSet<&str>) {
        let Some(dir) = self.dir() else {
            return;
        };
        let Ok(dir) = std::fs::read_dir(dir) else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name();
            if !name.to_str().is_some_and(|n| live.contains(n)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
