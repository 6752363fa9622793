//! `check`: structure (every object authenticates, every referenced chunk is indexed, every
//! index entry lies inside an existing pack) and, with `read_data`, content (download packs,
//! authenticate every blob, verify every chunk id). Damage is named by object and mapped to
//! the snapshots it affects. Objects of revoked writers are authentic but no longer accepted:
//! they are listed apart from damage. Packs that no accepted index names are described by
//! their own tables (chunks, bytes, whether snapshots need them), never dismissed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::cap::FullRepo;
use crate::error::{RepoError, Result};
use crate::format::{self, ChunkId};
use crate::index::ChunkIndex;
use crate::read::Reader;
use crate::repo::{store_time, Repository, DATA_PREFIX, INDEX_PREFIX};
use crate::snapshot::{Snapshot, SNAPSHOTS_PREFIX};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    /// Percentage of packs (0 < pct ≤ 100), chosen at random.
    Subset(f64),
    /// Slice `slice` of `of` (0 ≤ slice < of): the packs whose id, as a little-endian
    /// integer of its first 8 bytes, is `slice` modulo `of`. Reading slices 0, 1, …, of − 1
    /// in turn reads every pack once (rotating verification: `arsip verify`); the packs
    /// read are listed in [`CheckReport::read_packs`].
    Slice {
        slice: u64,
        of: u64,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub object: String,
    pub message: String,
}

/// An authentic index or manifest whose writer no longer counts (retired before the store
/// accepted it, or declared compromised).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct RevokedObject {
    pub object: String,
    pub writer: String,
    pub reason: String,
}

/// Packs that no accepted index names, as their own (sealed) tables describe them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Unindexed {
    pub packs: usize,
    /// Blobs their tables list.
    pub chunks: usize,
    /// Of those, chunks no accepted index holds anywhere: their data is reachable only by
    /// rebuilding index entries from these packs.
    pub chunks_not_indexed: usize,
    /// Plaintext bytes of the chunks not indexed anywhere.
    pub raw_bytes: u64,
    /// Bytes of the pack objects.
    pub stored_bytes: u64,
    /// Chunks not indexed anywhere that snapshots are known to reference (they are listed
    /// as affected). A lower bound: a snapshot whose tree is itself unindexed cannot be
    /// read, so only its tree chunks count.
    pub chunks_snapshots_need: usize,
    /// Packs whose table could not be read (they are also listed as problems).
    pub unreadable: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub indexes: usize,
    pub packs: usize,
    pub chunks: usize,
    pub packs_read: usize,
    pub bytes_read: u64,
    /// Packs no accepted index names (`unindexed` plus those only revoked writers' indexes
    /// name).
    pub unreferenced_packs: usize,
    /// The packs no index names at all (left by interrupted backups, or their index was
    /// lost), by their own tables.
    pub unindexed: Unindexed,
    pub problems: Vec<Problem>,
    /// Snapshots that cannot be restored completely, with the reason.
    pub affected_snapshots: Vec<String>,
    /// Indexes and manifests of revoked writers: not damage, nothing reads them; a later
    /// maintenance command (prune) removes them.
    pub revoked: Vec<RevokedObject>,
    /// Packs named only by revoked writers' indexes.
    pub revoked_packs: usize,
    /// With [`ReadData::Slice`]: the packs read, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub read_packs: Vec<String>,
}

impl CheckReport {
    /// No damage. Revoked writers' objects and unindexed packs that no snapshot needs are
    /// not damage.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub async fn check(repo: FullRepo, read_data: ReadData) -> Result<CheckReport> {
    let mk = repo.master("check")?;
    let mut report = CheckReport::default();
    let problem = |report: &mut CheckReport, object: &str, message: String| {
        report.problems.push(Problem {
            object: object.to_string(),
            message,
        })
    };

    // Indexes: each must authenticate; those of revoked writers are listed apart.
    let index_metas: Vec<arsip_storage::ObjectMeta> =
        repo.store.list(INDEX_PREFIX).try_collect().await?;
    report.indexes = index_metas.len();
    let mut revoked_pack_names: HashSet<String> = HashSet::new();
    let mut fetched = futures::stream::iter(index_metas.iter().map(|meta| {
        let repo = &repo;
        async move { (meta, repo.store.get(&meta.key).await) }
    }))
    .buffered(crate::repo::FETCH_CONCURRENCY);
    while let Some((meta, raw)) = fetched.next().await {
        let name = &meta.key;
        let raw = raw?;
        if blake3::hash(&raw).to_hex().as_str() != name.trim_start_matches(INDEX_PREFIX) {
            problem(&mut report, name, "content does not match its name".into());
        }
        let p = match format::parse_index(name, &raw) {
            Ok(p) => p,
            Err(e) => {
                problem(&mut report, name, e.to_string());
                continue;
            }
        };
        let (key, standing) = repo.writer_verdict(&p.writer).await?;
        let r = match key {
            Some(vk) => crate::crypto::verify(&vk, p.signed, p.signature)
                .map_err(|e| RepoError::Auth(e.to_string()))
                .and_then(|_| format::open_index_locations(name, &raw, &p, &mk.repo_secret)),
            None => Err(RepoError::Auth(format!(
                "unknown writer {}",
                hex::encode(p.writer)
            ))),
        };
        match r {
            Err(e) => problem(&mut report, name, e.to_string()),
            Ok(_) if standing.accepts(store_time(meta)) => {}
            Ok((packs, _)) => {
                revoked_pack_names.extend(packs.iter().map(|pk| format::pack_key_name(&pk.id)));
                report.revoked.push(RevokedObject {
                    object: name.clone(),
                    writer: hex::encode(p.writer),
                    reason: standing.refusal(store_time(meta)),
                });
            }
        }
    }
    let index = Arc::new(repo.load_index_from_store().await?);
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
    // Packs prune condemned may be gone already (their deletion is recorded by the next
    // plan): not damage, but a chunk whose every copy was in one of them is.
    let state = repo.maint_state().await?;
    let mut removed: HashSet<u32> = HashSet::new();
    for (n, p) in index.packs().iter().enumerate() {
        let name = format::pack_key_name(&p.id);
        referenced_packs.insert(name.clone());
        if !sizes.contains_key(&name) && state.is_removed(&p.id) {
            removed.insert(n as u32);
            continue;
        }
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
    if !removed.is_empty() {
        let slots = index.slots();
        for run in index.id_runs() {
            if slots[run.clone()].iter().all(|s| removed.contains(&s.pack)) {
                damaged.insert(slots[run.start].id);
            }
        }
    }
    let mut unindexed_names: Vec<(String, u64)> = Vec::new();
    for (k, &size) in &sizes {
        if referenced_packs.contains(k) {
            continue;
        }
        report.unreferenced_packs += 1;
        if revoked_pack_names.contains(k) {
            report.revoked_packs += 1;
        } else {
            unindexed_names.push((k.clone(), size));
        }
    }
    unindexed_names.sort();
    // What unindexed packs hold, from their own tables (three ranged reads each): the
    // chunks no accepted index holds, and which pack holds each.
    let mut lost: HashMap<ChunkId, String> = HashMap::new();
    for (name, size) in &unindexed_names {
        report.unindexed.packs += 1;
        report.unindexed.stored_bytes += size;
        match read_table_ranged(&repo, name, *size).await {
            Ok(entries) => {
                report.unindexed.chunks += entries.len();
                for e in entries {
                    if index.all(&e.id).is_empty() && !lost.contains_key(&e.id) {
                        report.unindexed.chunks_not_indexed += 1;
                        report.unindexed.raw_bytes += e.raw_len as u64;
                        lost.insert(e.id, name.clone());
                    }
                }
            }
            Err(RepoError::Storage(e)) => return Err(RepoError::Storage(e)),
            Err(e) => {
                report.unindexed.unreadable += 1;
                problem(
                    &mut report,
                    name,
                    format!("no index names this pack and its own table is unreadable: {e}"),
                );
            }
        }
    }

    // Snapshots: each manifest authenticates; each referenced chunk is indexed.
    let reader = Reader::new(&repo, index.clone())?;
    let listing = repo.snapshot_listing_from_store().await?;
    let (snaps, bad) = (listing.snapshots, listing.damaged);
    report.snapshots = snaps.len() + bad.len() + listing.revoked.len();
    for (name, e) in listing.revoked {
        let (writer, reason) = match e {
            RepoError::Revoked { writer, detail, .. } => (writer, detail),
            e => (String::new(), e.to_string()),
        };
        report.revoked.push(RevokedObject {
            object: name,
            writer,
            reason,
        });
    }
    for (name, e) in bad {
        report.affected_snapshots.push(format!(
            "{} (manifest damaged)",
            name.trim_start_matches(SNAPSHOTS_PREFIX)
        ));
        problem(&mut report, &name, e.to_string());
    }

    // Content.
    if read_data != ReadData::None {
        let mut names: Vec<(usize, String)> = index
            .packs()
            .iter()
            .enumerate()
            .filter(|(_, p)| match read_data {
                ReadData::Slice { slice, of } => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&p.id[..8]);
                    u64::from_le_bytes(b) % of.max(1) == slice
                }
                _ => true,
            })
            .map(|(n, p)| (n, format::pack_key_name(&p.id)))
            .filter(|(_, n)| sizes.contains_key(n))
            .collect();
        if let ReadData::Slice { .. } = read_data {
            report.read_packs = names.iter().map(|(_, n)| n.clone()).collect();
            report.read_packs.sort();
        }
        let pct = match read_data {
            ReadData::Subset(p) => p,
            _ => 100.0,
        };
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

    let mut needed: HashSet<ChunkId> = HashSet::new();
    for snap in &snaps {
        match snapshot_damage(&reader, snap, &index, &damaged, &lost, &mut needed).await {
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
    report.revoked.sort();
    report.unindexed.chunks_snapshots_need = needed.len();
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

/// Why a snapshot cannot be restored completely, if it cannot. A missing chunk that an
/// unindexed pack holds is named with that pack and added to `needed`.
async fn snapshot_damage(
    reader: &Reader,
    snap: &Snapshot,
    index: &ChunkIndex,
    damaged: &HashSet<ChunkId>,
    lost: &HashMap<ChunkId, String>,
    needed: &mut HashSet<ChunkId>,
) -> Result<Option<String>> {
    let tree_ids = snap.manifest.tree_ids()?;
    let missing = |id: &ChunkId| index.all(id).is_empty();
    let held = |id: &ChunkId| match lost.get(id) {
        Some(pack) => format!(
            "; unindexed pack {pack} holds it, so rebuilding the index from the packs recovers it"
        ),
        None => String::new(),
    };
    if let Some(id) = tree_ids.iter().find(|id| missing(id)) {
        needed.extend(tree_ids.iter().filter(|id| lost.contains_key(*id)));
        return Ok(Some(format!(
            "references tree chunk {} that no index holds{}",
            hex::encode(&id[..8]),
            held(id)
        )));
    }
    if tree_ids.iter().any(|id| damaged.contains(id)) {
        return Ok(Some("its tree is stored in a damaged pack".into()));
    }
    let mut tree = reader.tree(&snap.manifest).await?;
    let mut damaged_files = BTreeSet::new();
    let mut first_missing: Option<String> = None;
    while let Some((node, chunks)) = tree.next_node()? {
        for id in chunks.iter().filter(|id| missing(id)) {
            if lost.contains_key(id) {
                needed.insert(*id);
            }
            if first_missing.is_none() {
                first_missing = Some(format!(
                    "references chunk {} of {} that no index holds{}",
                    hex::encode(&id[..8]),
                    node.path,
                    held(id)
                ));
            }
        }
        if chunks.iter().any(|id| damaged.contains(id)) {
            damaged_files.insert(node.path);
        }
    }
    if first_missing.is_some() {
        return Ok(first_missing);
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

/// A pack's own table through three ranged reads (its first 96 bytes, its trailer, its
/// sealed table), without downloading the blobs: the pieces are laid out as a pack without
/// blobs, which [`format::read_pack_table`] reads like the whole pack (the entries'
/// offsets still refer to the real pack).
pub async fn read_table_ranged(
    repo: &FullRepo,
    name: &str,
    size: u64,
) -> Result<Vec<format::BlobEntry>> {
    let mk = repo.master("reading pack tables")?;
    let head_len = (format::HEADER_LEN + crate::crypto::SEALED_KEY_LEN) as u64;
    if size < head_len + 8 {
        return Err(RepoError::corrupt(name, "pack shorter than its header"));
    }
    let trailer = repo.store.get_range(name, size - 8..size).await?;
    if &trailer[4..] != format::PACK_TRAILER_MAGIC {
        return Err(RepoError::corrupt(
            name,
            "pack trailer missing (truncated pack?)",
        ));
    }
    let tlen = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as u64;
    if tlen > size - 8 - head_len {
        return Err(RepoError::corrupt(name, "pack table length out of range"));
    }
    let head = repo.store.get_range(name, 0..head_len).await?;
    let table = repo
        .store
        .get_range(name, size - 8 - tlen..size - 8)
        .await?;
    let mut laid = Vec::with_capacity((head_len + tlen + 8) as usize);
    laid.extend_from_slice(&head);
    laid.extend_from_slice(&table);
    laid.extend_from_slice(&trailer);
    Ok(format::read_pack_table(name, &laid, &mk.repo_secret)?.1)
}

/// What [`repair_index`] did.
#[derive(Debug, Default, Serialize)]
pub struct IndexRepair {
    /// Packs that no accepted index named.
    pub packs_unindexed: usize,
    /// Of those, packs whose every listed blob verified and which a new index now names.
    pub packs_indexed: usize,
    /// Blobs the new indexes name (each decrypted and checked against its chunk id).
    pub chunks_indexed: usize,
    /// Of those, chunks that no accepted index held before.
    pub chunks_recovered: usize,
    /// Plaintext bytes of the recovered chunks.
    pub raw_bytes_recovered: u64,
    /// The index objects written (create-only; nothing was deleted).
    pub indexes_written: Vec<String>,
    /// Packs named only by revoked writers' indexes: left alone, nothing reads them.
    pub packs_of_revoked_writers: usize,
    /// Packs (or blobs in them) that failed verification and were not indexed.
    pub problems: Vec<Problem>,
}

/// Index entries per rebuilt index object, as backups flush them (FORMAT.md §6.2).
const REPAIR_FLUSH_ENTRIES: usize = 100_000;

/// Rebuild index entries for every pack that no accepted index names, from the packs'
/// own tables (FORMAT.md §5.2): each pack is downloaded, its name checked against its
/// hash, its table opened with the master secret, and every blob it lists decrypted and
/// checked against its chunk id before a new root-signed index names it. Root-signed
/// entries are what every writer deduplicates against, so nothing unverified enters them.
/// Writes new index objects only (create-only) and never deletes. Packs named only by
/// indexes of revoked writers are left alone (their revocation took them back). Needs a
/// full key.
pub async fn repair_index(repo: FullRepo) -> Result<IndexRepair> {
    let mk = repo.master("repairing the index")?;
    let mut out = IndexRepair::default();
    let index = repo.load_index_from_store().await?;
    let mut named: HashSet<String> = index
        .packs()
        .iter()
        .map(|p| format::pack_key_name(&p.id))
        .collect();
    // Packs of revoked writers' indexes: authentic, but refused; not ours to re-admit.
    let mut revoked: HashSet<String> = HashSet::new();
    let metas: Vec<arsip_storage::ObjectMeta> = repo.store.list(INDEX_PREFIX).try_collect().await?;
    for meta in &metas {
        let raw = repo.store.get(&meta.key).await?;
        let Ok(p) = format::parse_index(&meta.key, &raw) else {
            continue;
        };
        let (key, standing) = repo.writer_verdict(&p.writer).await?;
        let verified =
            key.is_some_and(|vk| crate::crypto::verify(&vk, p.signed, p.signature).is_ok());
        if verified && !standing.accepts(store_time(meta)) {
            if let Ok((packs, _)) =
                format::open_index_locations(&meta.key, &raw, &p, &mk.repo_secret)
            {
                revoked.extend(packs.iter().map(|pk| format::pack_key_name(&pk.id)));
            }
        }
    }
    let mut todo: Vec<(String, u64)> = Vec::new();
    let mut listing = repo.store.list(DATA_PREFIX);
    while let Some(m) = listing.next().await {
        let m = m?;
        if named.contains(&m.key) {
            continue;
        }
        if revoked.contains(&m.key) {
            out.packs_of_revoked_writers += 1;
        } else {
            todo.push((m.key, m.size));
        }
    }
    drop(listing);
    todo.sort();
    out.packs_unindexed = todo.len();

    let index = Arc::new(index);
    let mut packs: Vec<format::IndexPack> = Vec::new();
    let mut entries: Vec<format::IndexEntry> = Vec::new();
    let mut recovered: HashSet<ChunkId> = HashSet::new();
    for (name, _) in todo {
        let bytes = repo.store.get(&name).await?;
        let r = {
            let repo = repo.clone();
            let name = name.clone();
            crate::blocking(move || Ok::<_, RepoError>(verify_unindexed_pack(&repo, &name, &bytes)))
                .await?
        };
        let (pack, blobs) = match r {
            Ok(x) => x,
            Err(e) => {
                out.problems.push(Problem {
                    object: name.clone(),
                    message: format!("not indexed: {e}"),
                });
                continue;
            }
        };
        named.insert(name);
        out.packs_indexed += 1;
        let n = packs.len() as u32;
        for b in &blobs {
            if index.all(&b.id).is_empty() && recovered.insert(b.id) {
                out.chunks_recovered += 1;
                out.raw_bytes_recovered += b.raw_len as u64;
            }
        }
        out.chunks_indexed += blobs.len();
        packs.push(pack);
        entries.extend(
            blobs
                .into_iter()
                .map(|blob| format::IndexEntry { pack: n, blob }),
        );
        if entries.len() >= REPAIR_FLUSH_ENTRIES {
            out.indexes_written.push(
                write_root_index(
                    &repo,
                    &std::mem::take(&mut packs),
                    &std::mem::take(&mut entries),
                )
                .await?,
            );
        }
    }
    if !entries.is_empty() {
        out.indexes_written
            .push(write_root_index(&repo, &packs, &entries).await?);
    }
    Ok(out)
}

/// A pack no index names, verified in full: its name is its hash, its table opens, and
/// every blob the table lists opens and matches its chunk id. Any failure refuses the
/// whole pack (an index naming it would point readers at bytes nobody vouched for).
fn verify_unindexed_pack(
    repo: &Repository,
    name: &str,
    bytes: &[u8],
) -> Result<(format::IndexPack, Vec<format::BlobEntry>)> {
    let mk = repo.master("repairing the index")?;
    let hash = blake3::hash(bytes);
    if hash.to_hex().as_str() != name.rsplit('/').next().unwrap_or("") {
        return Err(RepoError::corrupt(
            name,
            "content does not match its name (bytes changed in storage)",
        ));
    }
    let key_id = format::parse_header(name, bytes, format::ObjectType::Pack)?;
    let (key, table) = format::read_pack_table(name, bytes, &mk.repo_secret)?;
    for e in &table {
        let ct = bytes
            .get(e.offset as usize..e.offset as usize + e.len as usize)
            .ok_or_else(|| RepoError::corrupt(name, "a blob lies outside the pack"))?;
        format::open_blob(name, key_id, &key, e, ct, repo.id_key())?;
    }
    if table.is_empty() {
        return Err(RepoError::corrupt(name, "the pack's table lists no blobs"));
    }
    Ok((
        format::IndexPack {
            id: *hash.as_bytes(),
            key,
            size: bytes.len() as u64,
            key_id,
        },
        table,
    ))
}

/// Create one root-signed index object; returns its name.
async fn write_root_index(
    repo: &Repository,
    packs: &[format::IndexPack],
    entries: &[format::IndexEntry],
) -> Result<String> {
    let obj = format::encode_index(
        &repo.writer_id,
        repo.signer(),
        repo.public_key(),
        packs,
        entries,
    );
    let name = format!("{INDEX_PREFIX}{}", blake3::hash(&obj).to_hex());
    repo.store.create(&name, bytes::Bytes::from(obj)).await?;
    Ok(name)
}
