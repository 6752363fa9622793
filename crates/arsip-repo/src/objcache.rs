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

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use arsip_storage::{DynStore, StorageError};
use bytes::Bytes;

pub(crate) struct ObjectCache {
    dir: PathBuf,
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
            dir: repo_cache_dir.join("objects"),
        }
    }

    /// The object `name`, from its local copy when that copy hashes to its name, else from
    /// `store` (and then copied). Objects outside the cached prefixes come from the store.
    pub(crate) async fn get(&self, store: &DynStore, name: &str) -> Result<Bytes, StorageError> {
        let Some((prefix, hash)) = split(name) else {
            return store.get(name).await;
        };
        let path = self.dir.join(prefix).join(hash);
        if let Ok(b) = tokio::fs::read(&path).await {
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
            let (dir, bytes) = (self.dir.join(prefix), b.clone());
            // Best effort: a copy not written costs a download next time.
            let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(&dir)?;
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
        let Ok(dir) = std::fs::read_dir(self.dir.join(prefix)) else {
            return;
        };
        for e in dir.flatten() {
            let keep = e
                .file_name()
                .to_str()
                .is_some_and(|n| listed.contains(format!("{prefix}/{n}").as_str()));
            if !keep {
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
}
