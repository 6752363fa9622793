//! `check`: structure (every object authenticates, every referenced chunk is indexed, every
//! index entry lies inside an existing pack) and, with `read_data`, content (download packs,
//! authenticate every blob, verify every chunk id). Damage is named by object and mapped to
//! the snapshots it affects.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::format::{self, ChunkId};
use crate::index::ChunkIndex;
use crate::read::Reader;
use crate::repo::{Repository, DATA_PREFIX, INDEX_PREFIX};
use crate::snapshot::{Snapshot, SNAPSHOTS_PREFIX};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    /// Percentage of packs (0 < pct ≤ 100), chosen at random.
    Subset(f64),
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub object: String,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub indexes: usize,
    pub packs: usize,
    pub chunks: usize,
    pub packs_read: usize,
    pub bytes_read: u64,
    /// Packs no index names: left by interrupted backups, removed by a later prune.
    pub unreferenced_packs: usize,
    pub problems: Vec<Problem>,
    /// Snapshots that cannot be restored completely, with the reason.
    pub affected_snapshots: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub async fn check(repo: Arc<Repository>, read_data: ReadData) -> Result<CheckReport> {
    let mk = repo.master("check")?;
    let mut report = CheckReport::default();
    let problem = |report: &mut CheckReport, object: &str, message: String| {
        report.problems.push(Problem {
            object: object.to_string(),
            message,
        })
    };

    // Indexes: each must authenticate.
    let index_names: Vec<String> = repo
        .store
        .list(INDEX_PREFIX)
        .map_ok(|m| m.key)
        .try_collect()
        .await?;
    report.indexes = index_names.len();
    for name in &index_names {
        let raw = repo.store.get(name).await?;
        if blake3::hash(&raw).to_hex().as_str() != name.trim_start_matches(INDEX_PREFIX) {
            problem(&mut report, name, "content does not match its name".into());
        }
        let r = match format::parse_index(name, &raw) {
            Ok(p) => match repo.writer_key(&p.writer).await? {
                Some(vk) => crate::crypto::verify(&vk, p.signed, p.signature).and_then(|_| {
                    format::open_index_locations(name, &raw, &p, &mk.repo_secret).map(|_| ())
                }),
                None => Err(RepoError::Auth(format!(
                    "unknown or revoked writer {}",
                    hex::encode(p.writer)
                ))),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            problem(&mut report, name, e.to_string());
        }
    }
    let index = Arc::new(repo.load_index().await?);
    report.chunks = index.len();

    // Packs: every pack an index names must exist and be large enough.
    let mut sizes: HashMap<String, u64> = HashMap::new();
    let mut listing = repo.store.list(DATA_PREFIX);
    while let Some(m) = listing.next().await {
        let m = m?;
        sizes.insert(m.key, m.size);
    }
    drop(listing);
    report.packs = sizes.len();
    let mut max_end: Vec<u64> = vec![0; index.packs().len()];
    for s in index.slots() {
        let e = &mut max_end[s.pack as usize];
        *e = (*e).max(s.offset as u64 + s.len as u64);
    }
    let mut damaged: HashSet<ChunkId> = HashSet::new();
    let mut referenced_packs = HashSet::new();
    for (n, p) in index.packs().iter().enumerate() {
        let name = format::pack_key_name(&p.id);
        referenced_packs.insert(name.clone());
        match sizes.get(&name) {
            None => problem(
                &mut report,
                &name,
                "pack is missing but an index names it".into(),
            ),
            Some(&size) if size != p.size || max_end[n] > size => problem(
                &mut report,
                &name,
                format!(
                    "pack is {size} bytes, the index expects {} (truncated?)",
                    p.size
                ),
            ),
            _ => continue,
        }
        damaged.extend(
            index
                .slots()
                .iter()
                .filter(|s| s.pack == n as u32)
                .map(|s| s.id),
        );
    }
    report.unreferenced_packs = sizes
        .keys()
        .filter(|k| !referenced_packs.contains(*k))
        .count();

    // Snapshots: each manifest authenticates; each referenced chunk is indexed.
    let reader = Reader::new(repo.clone(), index.clone())?;
    let (snaps, bad) = snapshots_tolerant(&repo).await?;
    report.snapshots = snaps.len() + bad.len();
    for (name, e) in bad {
        report.affected_snapshots.push(format!(
            "{} (manifest damaged)",
            name.trim_start_matches(SNAPSHOTS_PREFIX)
        ));
        problem(&mut report, &name, e.to_string());
    }

    // Content.
    if let ReadData::Subset(pct) = read_data {
        let mut names: Vec<(usize, String)> = index
            .packs()
            .iter()
            .enumerate()
            .map(|(n, p)| (n, format::pack_key_name(&p.id)))
            .filter(|(_, n)| sizes.contains_key(n))
            .collect();
        if pct < 100.0 {
            use rand::seq::SliceRandom;
            names.shuffle(&mut rand::thread_rng());
            let keep = ((names.len() as f64 * pct / 100.0).ceil() as usize).min(names.len());
            names.truncate(keep);
        }
        let results: Vec<_> = futures::stream::iter(names.into_iter().map(|(n, name)| {
            let repo = repo.clone();
            let index = index.clone();
            async move {
                let bytes = repo.store.get(&name).await?;
                let len = bytes.len() as u64;
                let r = crate::blocking(move || {
                    Ok::<_, RepoError>(verify_pack(&repo, &index, n as u32, &name, &bytes))
                })
                .await?;
                Ok::<_, RepoError>((len, r))
            }
        }))
        .buffer_unordered(2)
        .try_collect()
        .await?;
        for (len, (problems, bad)) in results {
            report.packs_read += 1;
            report.bytes_read += len;
            report.problems.extend(problems);
            damaged.extend(bad);
        }
    }

    for snap in &snaps {
        match snapshot_damage(&reader, snap, &index, &damaged).await {
            Ok(None) => {}
            Ok(Some(reason)) => {
                report
                    .affected_snapshots
                    .push(format!("{} ({reason})", snap.id));
                if reason.starts_with("references") {
                    problem(
                        &mut report,
                        &format!("{SNAPSHOTS_PREFIX}{}", snap.id),
                        reason,
                    );
                }
            }
            Err(e) => {
                report
                    .affected_snapshots
                    .push(format!("{} (tree unreadable)", snap.id));
                problem(
                    &mut report,
                    &format!("{SNAPSHOTS_PREFIX}{}", snap.id),
                    format!("tree stream: {e}"),
                );
            }
        }
    }
    report.problems.sort();
    report.problems.dedup();
    Ok(report)
}

/// Download-side verification of one pack: name = hash, table matches, every blob opens.
fn verify_pack(
    repo: &Repository,
    index: &ChunkIndex,
    n: u32,
    name: &str,
    bytes: &[u8],
) -> (Vec<crate::check::Problem>, Vec<ChunkId>) {
    let mut problems = Vec::new();
    let mut bad = Vec::new();
    let p = |m: String| Problem {
        object: name.to_string(),
        message: m,
    };
    if blake3::hash(bytes).to_hex().as_str() != name.rsplit('/').next().unwrap_or("") {
        problems.push(p(
            "content does not match its name (bytes changed in storage)".into(),
        ));
    }
    let info = index.pack(n);
    let Some(key) = info.key.clone() else {
        return (problems, bad);
    };
    // The pack's own table (self-description, used to rebuild indexes) must agree with the
    // index: same key, and every indexed blob listed with the same position and sizes.
    if let Ok(mk) = repo.master("check") {
        match format::read_pack_table(name, bytes, &mk.repo_secret) {
            Ok((table_key, table)) => {
                if table_key != key {
                    problems.push(p(
                        "the index names this pack with a key the pack does not carry".into(),
                    ));
                }
                let listed: HashSet<_> = table
                    .iter()
                    .map(|e| (e.id, e.offset, e.len, e.raw_len, e.flags))
                    .collect();
                let missing = index
                    .slots()
                    .iter()
                    .filter(|s| s.pack == n)
                    .filter(|s| !listed.contains(&(s.id, s.offset, s.len, s.raw_len, s.flags)))
                    .count();
                if missing > 0 {
                    problems.push(p(format!(
                        "{missing} indexed blob(s) are not in the pack's own table"
                    )));
                }
            }
            Err(e) => problems.push(p(format!("pack table: {e}"))),
        }
    }
    for s in index.slots().iter().filter(|s| s.pack == n) {
        let e = s.blob();
        let (start, end) = (e.offset as usize, e.offset as usize + e.len as usize);
        let r = bytes
            .get(start..end)
            .ok_or_else(|| RepoError::corrupt(name, "blob outside the pack"))
            .and_then(|ct| format::open_blob(name, info.key_id, &key, &e, ct, repo.id_key()));
        if let Err(err) = r {
            problems.push(p(format!("chunk {}: {err}", hex::encode(&e.id[..8]))));
            bad.push(e.id);
        }
    }
    (problems, bad)
}

/// Why a snapshot cannot be restored completely, if it cannot.
async fn snapshot_damage(
    reader: &Reader,
    snap: &Snapshot,
    index: &ChunkIndex,
    damaged: &HashSet<ChunkId>,
) -> Result<Option<String>> {
    let tree_ids = snap.manifest.tree_ids()?;
    let missing = |id: &ChunkId| index.all(id).is_empty();
    if let Some(id) = tree_ids.iter().find(|id| missing(id)) {
        return Ok(Some(format!(
            "references tree chunk {} that no index holds",
            hex::encode(&id[..8])
        )));
    }
    if tree_ids.iter().any(|id| damaged.contains(id)) {
        return Ok(Some("its tree is stored in a damaged pack".into()));
    }
    let mut tree = reader.tree(&snap.manifest).await?;
    let mut damaged_files = BTreeSet::new();
    while let Some((node, chunks)) = tree.next_node()? {
        if let Some(id) = chunks.iter().find(|id| missing(id)) {
            return Ok(Some(format!(
                "references chunk {} of {} that no index holds",
                hex::encode(&id[..8]),
                node.path
            )));
        }
        if chunks.iter().any(|id| damaged.contains(id)) {
            damaged_files.insert(node.path);
        }
    }
    Ok(if damaged_files.is_empty() {
        None
    } else {
        Some(format!(
            "damaged data in {}",
            damaged_files
                .into_iter()
                .take(5)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Every snapshot that opens, and the names and errors of those that do not.
pub async fn snapshots_tolerant(
    repo: &Repository,
) -> Result<(Vec<Snapshot>, Vec<(String, RepoError)>)> {
    repo.snapshots_report().await
}
