//! `arsip copy`: a keyless mirror of a repository into another store (FORMAT.md §21). The
//! objects are copied byte for byte, so the same passwords, key files and agent files open
//! the copy and every signature verifies unchanged; nothing is decrypted or re-encrypted,
//! and storage credentials are all it needs (a replicator that cannot read the backups).
//!
//! - **Consistent at every instant.** Listings run in reverse dependency order (manifests
//!   and WAL first, then fences, indexes, packs, the writer registry last), copies in
//!   dependency order (key slots and writers, `config`, fences, packs, indexes, WAL,
//!   stanzas, manifests, audit and verification records, retirements last), every write a
//!   create: whatever a manifest on the copy needs is there before it.
//! - **Verified.** A content-addressed object (packs, indexes, manifests, revocations) is
//!   copied only if the BLAKE3 of its bytes is its name (else it is reported as damaged at
//!   the source); every upload is read back by size; a name already at the destination with
//!   other bytes is reported as foreign, never overwritten.
//! - **Resumable, idempotent.** The destination is the cursor: each run compares both
//!   listings and copies what is missing. `kill -9` loses only the creates in flight.
//! - **Retirements last.** A retired writer's objects are accepted only if the store took
//!   them before its retirement (§8.6): on the copy the retirement must come after them.
//! - What is the source's own is not copied: sessions, prune plans, job claims, leases,
//!   probes. The copy runs its own maintenance; deletes are never propagated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use arsip_storage::{DynStore, ErrorKind};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{RepoError, Result};

/// Creates in flight at once.
pub const MIRROR_CONCURRENCY: usize = 8;

/// What a mirror run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MirrorOutcome {
    /// Objects created at the destination, and their bytes.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Objects the destination already held (byte-identical or of the same size).
    pub present: u64,
    /// Manifests forgotten at the source between its listing and their copy.
    pub forgotten: u64,
    /// Source objects whose bytes are not their (content-addressed) name: not copied.
    pub damaged: Vec<String>,
    /// Destination objects under a source object's name with other bytes: left alone.
    pub foreign: Vec<String>,
    /// Before the run: manifests of the source the destination lacked, and how long the
    /// oldest of them had been at the source (by the source store's clock): the replication
    /// lag. `None`: the destination had every manifest.
    pub missing_manifests: u64,
    pub lag_seconds: Option<f64>,
    /// Nothing was written (`dry_run`): the figures are what a run would copy.
    pub dry_run: bool,
}

impl MirrorOutcome {
    /// The destination holds every object it should and nothing contradicts the source.
    pub fn clean(&self) -> bool {
        self.damaged.is_empty() && self.foreign.is_empty()
    }
}

/// Copy phases, in the order they run (each one's objects may depend on the ones before).
const ORDER: [Phase; 12] = [
    Phase::Prefix("keys/"),
    Phase::Writers { retirements: false },
    Phase::Config,
    Phase::Prefix("fences/"),
    Phase::Prefix("data/"),
    Phase::Prefix("index/"),
    Phase::Prefix("wal/"),
    Phase::Prefix("stanzas/"),
    Phase::Prefix("snapshots/"),
    Phase::Prefix("audit/"),
    Phase::Prefix("verify/"),
    Phase::Writers { retirements: true },
];

/// What is listed, in reverse dependency order: what is listed later cannot lack what
/// something listed earlier needs (a manifest listed first has its packs and indexes stored
/// by the time they are listed).
const LISTED: [&str; 10] = [
    "snapshots/",
    "wal/",
    "stanzas/",
    "audit/",
    "verify/",
    "fences/",
    "index/",
    "data/",
    "writers/",
    "keys/",
];

#[derive(Debug, Clone, Copy)]
enum Phase {
    Prefix(&'static str),
    Config,
    /// Registrations and compromise revocations, or retirements.
    Writers {
        retirements: bool,
    },
}

/// Whether `name`'s bytes must hash to its last component.
fn content_addressed(name: &str) -> bool {
    name.starts_with("data/")
        || name.starts_with("index/")
        || name.starts_with("snapshots/")
        || (name.starts_with("writers/") && name.contains(".revoked."))
}

/// The local backend's staging files are not objects (FORMAT.md §2.1).
fn is_object(name: &str) -> bool {
    !name.contains('#')
}

type Listing = BTreeMap<String, arsip_storage::ObjectMeta>;

async fn list(store: &DynStore, prefix: &str) -> Result<Listing> {
    let mut out = BTreeMap::new();
    let mut s = store.list(prefix);
    while let Some(m) = s.try_next().await? {
        if is_object(&m.key) {
            out.insert(m.key.clone(), m);
        }
    }
    Ok(out)
}

/// Mirror the repository in `src` into `dst` at `now` (the lag is measured against it).
/// `dst` is empty, or a copy of this repository (its `config` byte-identical); anything else
/// is refused before a byte is written.
pub async fn mirror(
    src: &DynStore,
    dst: &DynStore,
    now: jiff::Timestamp,
    dry_run: bool,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<MirrorOutcome> {
    let config = match src.get("config").await {
        Ok(c) => c,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Err(RepoError::NotARepository(src.describe()))
        }
        Err(e) => return Err(e.into()),
    };
    match dst.get("config").await {
        Ok(theirs) if theirs == config => {}
        Ok(_) => {
            return Err(RepoError::Refused(format!(
                "{} holds another repository (its config differs from {}'s); copy into an empty location or into a copy of this repository",
                dst.describe(),
                src.describe()
            )))
        }
        Err(e) if e.kind == ErrorKind::NotFound => {
            // An empty destination, or one a copy was interrupted in. Key slots of another
            // repository mean neither.
            let ours = list(src, "keys/").await?;
            let theirs = list(dst, "keys/").await?;
            if let Some(k) = theirs.keys().find(|k| !ours.contains_key(*k)) {
                return Err(RepoError::Refused(format!(
                    "{} is not empty and not a copy of this repository (it holds {k}, which {} does not); copy into an empty location",
                    dst.describe(),
                    src.describe()
                )));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let mut sources: BTreeMap<&'static str, Listing> = BTreeMap::new();
    for prefix in LISTED {
        sources.insert(prefix, list(src, prefix).await?);
    }
    let mut out = MirrorOutcome {
        dry_run,
        ..Default::default()
    };
    let ours = list(dst, "snapshots/").await?;
    let missing: Vec<&arsip_storage::ObjectMeta> = sources["snapshots/"]
        .values()
        .filter(|m| !ours.contains_key(&m.key))
        .collect();
    out.missing_manifests = missing.len() as u64;
    out.lag_seconds = missing
        .iter()
        .map(|m| m.last_modified)
        .min()
        .map(|t| now.duration_since(t).as_secs_f64().max(0.0));
    let retirements = retirements(src, &sources["writers/"]).await?;
    for phase in ORDER {
        let (label, wanted): (&str, Vec<arsip_storage::ObjectMeta>) = match phase {
            Phase::Config => {
                // After the key slots and writers it names, before anything that needs it.
                match dst.head("config").await {
                    Ok(_) => out.present += 1,
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        if !dry_run {
                            create(dst, "config", config.clone()).await?;
                        }
                        out.copied += 1;
                        out.copied_bytes += config.len() as u64;
                    }
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            Phase::Prefix(p) => (p, sources[p].values().cloned().collect()),
            Phase::Writers { retirements: last } => (
                "writers/",
                sources["writers/"]
                    .values()
                    .filter(|m| retirements.contains(&m.key) == last)
                    .cloned()
                    .collect(),
            ),
        };
        let prefix = match phase {
            Phase::Prefix(p) => p,
            _ => "writers/",
        };
        let theirs = list(dst, prefix).await?;
        let mut todo = Vec::new();
        for m in wanted {
            match theirs.get(&m.key) {
                Some(t) if t.size == m.size => out.present += 1,
                Some(_) => out.foreign.push(m.key.clone()),
                None => todo.push(m),
            }
        }
        let total = todo.len() as u64;
        if let (Phase::Writers { retirements: true }, false, false) =
            (phase, todo.is_empty(), dry_run)
        {
            // A cut-off is strictly after the objects it admits, by the destination's clock,
            // which counts whole seconds on S3: what was copied in this second would fall
            // on the cut-off and be refused.
            if out.copied > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            }
        }
        if dry_run {
            out.copied += total;
            out.copied_bytes += todo.iter().map(|m| m.size).sum::<u64>();
            continue;
        }
        let done = AtomicU64::new(0);
        let results: Vec<Result<Copied>> = futures::stream::iter(todo)
            .map(|m| {
                let done = &done;
                async move {
                    let r = copy_one(src, dst, &m).await;
                    progress(label, done.fetch_add(1, Ordering::Relaxed) + 1, total);
                    r
                }
            })
            .buffer_unordered(MIRROR_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            match r? {
                Copied::Created(n) => {
                    out.copied += 1;
                    out.copied_bytes += n;
                }
                Copied::Present => out.present += 1,
                Copied::Forgotten => out.forgotten += 1,
                Copied::Damaged(k) => out.damaged.push(k),
                Copied::Foreign(k) => out.foreign.push(k),
            }
        }
    }
    Ok(out)
}

/// The names among `writers` that are retirements (signed JSON whose `body.mode` is
/// `retired`, FORMAT.md §8.6), which go last. A revocation that does not parse, or has no
/// mode, is a compromise: copied early (fail closed).
async fn retirements(
    src: &DynStore,
    writers: &Listing,
) -> Result<std::collections::BTreeSet<String>> {
    let mut out = std::collections::BTreeSet::new();
    for name in writers.keys().filter(|k| k.contains(".revoked.")) {
        let bytes = src.get(name).await?;
        let retired = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                let body = v.get("body")?;
                Some(body.get("mode")?.as_str()? == "retired")
            })
            .unwrap_or(false);
        if retired {
            out.insert(name.clone());
        }
    }
    Ok(out)
}

enum Copied {
    Created(u64),
    Present,
    Forgotten,
    Damaged(String),
    Foreign(String),
}

async fn copy_one(src: &DynStore, dst: &DynStore, m: &arsip_storage::ObjectMeta) -> Result<Copied> {
    let bytes = match src.get(&m.key).await {
        Ok(b) => b,
        // Forgotten (or pruned) at the source since its listing: nothing to copy.
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(Copied::Forgotten),
        Err(e) => return Err(e.into()),
    };
    if content_addressed(&m.key) {
        let name = m.key.rsplit(['/', '.']).next().unwrap_or_default();
        if blake3::hash(&bytes).to_hex().as_str() != name {
            tracing::error!(object = %m.key, "copy: the object's bytes are not its name (damaged at the source); not copied");
            return Ok(Copied::Damaged(m.key.clone()));
        }
    }
    match create(dst, &m.key, bytes.clone()).await? {
        true => Ok(Copied::Created(bytes.len() as u64)),
        false => match dst.get(&m.key).await? == bytes {
            true => Ok(Copied::Present),
            false => Ok(Copied::Foreign(m.key.clone())),
        },
    }
}

/// Create `key` at `dst` and read its size back: `true` created, `false` it was there.
async fn create(dst: &DynStore, key: &str, bytes: Bytes) -> Result<bool> {
    let len = bytes.len() as u64;
    match dst.create(key, bytes).await {
        Ok(()) => {}
        Err(e) if e.kind == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let back = dst.head(key).await?;
    if back.size != len {
        return Err(RepoError::Corrupt {
            object: format!("{} at {}", key, dst.describe()),
            reason: format!("stored {} bytes of {len}", back.size),
        });
    }
    Ok(true)
}
