//! Prune: delete what no snapshot references and repack packs with too many unused bytes,
//! while backups keep writing, without locks (FORMAT.md §17).
//!
//! One run, in order (each step durable before the next; `kill -9` anywhere leaves a state
//! the next run finishes):
//! 1. open a prune session (its store time is checked against the local clock), claim the
//!    next generation `g` (create-only; refused while another prune's session lives);
//! 2. mark: every chunk the snapshots reference (every authentic manifest, revoked writers'
//!    included), and for each one the copy that stays (a root copy if there is one, else
//!    every agent copy);
//! 3. repack the live blobs of the packs with the most unused bytes (read, verified, written
//!    anew as root) until the unused share is under `max_unused`;
//! 4. publish plan `g`: condemned packs (those with nothing to keep, and the repacked ones)
//!    and the chunks that then have no surviving copy, hidden from deduplication;
//! 5. list the writer sessions: fence the dead ones, wait for none (what a live session
//!    might reference stays until a later run);
//! 6. delete the condemned packs no live session could reference, rewrite the root indexes
//!    that name them, remove ended sessions and superseded plans.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arsip_storage::{ErrorKind, ObjectMeta};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::cap::FullRepo;
use crate::error::{RepoError, Result};
use crate::format::{self, ChunkId, IndexEntry, IndexPack, ObjectType, WriterId};
use crate::index::{ChunkIndex, Slot, Trust};
use crate::keys;
use crate::maint::{
    self, accepted_name, claim_name, create_signed, fence_name, plan_name, ClaimDoc, Condemned,
    FenceDoc, MaintState, PlanDoc, Purpose, Session, SessionInfo, SessionTiming,
};
use crate::read::Reader;
use crate::repo::{IndexCatalog, Repository, DATA_PREFIX, FETCH_CONCURRENCY, INDEX_PREFIX};
use crate::snapshot::{Manifest, SNAPSHOTS_PREFIX};
use crate::write::{BackupSession, SessionOptions};

mod refs;
pub(crate) use refs::RefCache;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack until unused bytes in packs that stay are at most this share of them.
    pub max_unused: f64,
    /// Decide and report, write and delete nothing.
    pub dry_run: bool,
    /// Refuse when the local clock and the store's differ by more than this.
    pub max_clock_skew: jiff::SignedDuration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            dry_run: false,
            max_clock_skew: jiff::SignedDuration::from_mins(5),
        }
    }
}

/// What a prune found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// The plan generation this run published (0 for a dry run).
    pub generation: u64,
    pub snapshots: usize,
    pub packs: usize,
    pub stored_bytes: u64,
    /// Bytes of blobs that stay (referenced copies).
    pub used_bytes: u64,
    /// Packs condemned by this run, and their bytes (repacked ones included).
    pub condemned_packs: usize,
    pub condemned_bytes: u64,
    pub repacked_packs: usize,
    /// Bytes of packs read to repack them, and bytes written in their place.
    pub repack_read_bytes: u64,
    pub repack_written_bytes: u64,
    /// Condemned earlier, referenced again (by a snapshot that was committed meanwhile).
    pub rescued_packs: usize,
    pub deleted_packs: usize,
    pub deleted_bytes: u64,
    /// Condemned packs kept for now because a live writer session might reference them.
    pub waiting_packs: usize,
    pub waiting_for: Vec<SessionInfo>,
    pub fenced_sessions: Vec<String>,
    pub indexes_rewritten: usize,
    pub indexes_deleted: usize,
    pub sessions_removed: usize,
    /// Staging files of writes interrupted more than a day ago (local repositories).
    pub staging_removed: u64,
    /// Objects under `snapshots/` that are not authentic manifests (ignored, not deleted).
    pub ignored_manifests: Vec<(String, String)>,
    /// Snapshot trees read from the repository, and snapshots whose references came from
    /// this host's cache (each tree is read once per host: snapshots are immutable).
    pub trees_read: usize,
    pub trees_cached: usize,
}

/// Snapshot trees read at once while marking (each is spooled to memory up to 64 MiB,
/// beyond that to a temporary file).
const TREE_CONCURRENCY: usize = 4;

/// Packs deleted at once between two checks that the prune's session is fresh.
const DELETE_BATCH: usize = 64;

/// An authentic manifest, whatever its writer's standing.
#[derive(Clone)]
struct Found {
    id: String,
    writer: WriterId,
    manifest: Manifest,
    /// Readers accept it (its writer's standing): the data of a compromised writer's
    /// snapshot cannot be located (its indexes are refused), so it is kept where known only.
    accepted: bool,
}

pub async fn prune(repo: &FullRepo, opts: &PruneOptions) -> Result<PruneReport> {
    repo.master("prune")?;
    let shared: Arc<Repository> = repo.shared();
    let timing = repo.session_timing();
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };

    // 1. Session, clock, claim.
    let (lease, state, g) = if opts.dry_run {
        (None, repo.maint_state().await?, 0)
    } else {
        let (lease, state) = Session::open(&shared, Purpose::Prune).await?;
        let skew = repo.clock.now().duration_since(lease.started_store());
        if skew.abs() > opts.max_clock_skew {
            return Err(RepoError::Refused(format!(
                "the local clock differs from the store's by {:.0} s (more than {} s); prune \
                 measures writer sessions on the store's clock and refuses to run with a clock \
                 this far off. Fix the time (NTP) and run it again",
                skew.as_secs_f64(),
                opts.max_clock_skew.as_secs()
            )));
        }
        let g = claim(repo, &lease, &state, &timing).await?;
        (Some(lease), state, g)
    };
    report.generation = g;

    // 2. Mark.
    // The three listings are independent: any order of them is one a sequential prune could
    // see, and a writer's pack, index and manifest are each handled whatever they miss.
    let (store_packs, (index, catalog), (found, ignored)) = futures::try_join!(
        list_packs(repo),
        repo.load_index_cataloged(&state),
        manifests(repo, &[]),
    )?;
    report.packs = store_packs.len();
    report.stored_bytes = store_packs.values().sum();
    let index = Arc::new(index);
    report.ignored_manifests = ignored;
    report.snapshots = found.len();
    let reader = Reader::new(repo, index.clone())?;
    let refs = RefCache::of(repo)?;
    let mut marker = Marker {
        reader: &reader,
        index: &index,
        refs: &refs,
        trees_read: 0,
        trees_cached: 0,
    };
    let mut used = vec![false; index.len()];
    let (ok, refused): (Vec<&Found>, Vec<&Found>) = found.iter().partition(|f| f.accepted);
    for (manifests, strict) in [(ok, true), (refused, false)] {
        marker.mark(manifests, &mut used, strict).await?;
    }
    (report.trees_read, report.trees_cached) = (marker.trees_read, marker.trees_cached);
    let gone = |id: &[u8; 32]| !store_packs.contains_key(id) || state.deleted.contains(id);
    let keep = choose_copies(&index, &used, &state, &gone)?;

    // Per pack: bytes of blobs that stay, and of indexed blobs that do not.
    let mut kept_bytes: HashMap<[u8; 32], u64> = HashMap::new();
    let mut unused_bytes: HashMap<[u8; 32], u64> = HashMap::new();
    for (n, s) in index.slots().iter().enumerate() {
        let per = if keep[n] {
            &mut kept_bytes
        } else {
            &mut unused_bytes
        };
        *per.entry(index.pack(s.pack).id).or_default() += s.len as u64;
    }
    report.used_bytes = kept_bytes.values().sum();
    let mut condemn: HashMap<[u8; 32], u64> = HashMap::new();
    let mut rescued = 0;
    let mut partial: Vec<([u8; 32], u64)> = Vec::new();
    for (id, &size) in &store_packs {
        let kept = kept_bytes.get(id).copied().unwrap_or(0);
        match (kept, state.condemned.get(id)) {
            (0, Some(&since)) => {
                condemn.insert(*id, since);
            }
            (0, None) => {
                condemn.insert(*id, g);
            }
            (_, was) => {
                rescued += was.is_some() as usize;
                match unused_bytes.get(id) {
                    Some(&u) if u > 0 => partial.push((*id, u.min(size))),
                    _ => {}
                }
            }
        }
    }
    report.rescued_packs = rescued;
    let to_repack = choose_repack(partial, report.used_bytes, opts.max_unused);

    if opts.dry_run {
        report.condemned_packs = condemn.values().filter(|&&s| s == g).count() + to_repack.len();
        report.condemned_bytes = condemn
            .iter()
            .filter(|(_, &s)| s == g)
            .map(|(id, _)| store_packs[id])
            .sum::<u64>()
            + to_repack.iter().map(|id| store_packs[id]).sum::<u64>();
        report.repacked_packs = to_repack.len();
        report.repack_read_bytes = to_repack.iter().map(|id| store_packs[id]).sum();
        return Ok(report);
    }
    let lease = lease.expect("a session unless dry run");

    // 3. Repack.
    let mut repacked_ids: HashSet<ChunkId> = HashSet::new();
    if !to_repack.is_empty() {
        let (read, written) = repack(repo, &index, &keep, &to_repack, &mut repacked_ids).await?;
        report.repacked_packs = to_repack.len();
        report.repack_read_bytes = read;
        report.repack_written_bytes = written;
        for id in &to_repack {
            condemn.insert(*id, g);
        }
    }
    report.condemned_packs = condemn.values().filter(|&&s| s == g).count();
    report.condemned_bytes = condemn
        .iter()
        .filter(|(_, &s)| s == g)
        .map(|(id, _)| store_packs[id])
        .sum();

    // 4. Publish plan g.
    let mut deleted: HashSet<[u8; 32]> = state.deleted.clone();
    deleted.extend(
        state
            .condemned
            .keys()
            .filter(|id| !store_packs.contains_key(*id)),
    );
    let publish = Publish {
        g,
        session: lease.id(),
        condemn: &condemn,
        deleted: &deleted,
        repacked: &repacked_ids,
        sizes: &store_packs,
    };
    publish_plan(repo, &index, &publish).await?;

    // 5. Sessions: which may still reference condemned packs; fence the dead.
    // A session listed before the renewal is judged by a later clock, one listed after it by
    // an earlier one: neither can make a live writer look dead.
    let ((sessions, junk), now, fences) =
        futures::try_join!(repo.sessions(), lease.renew_now(), repo.fences())?;
    let ended = ended_sessions(&found);
    let mut blocking: Vec<SessionInfo> = Vec::new();
    let mut fence_now: Vec<&SessionInfo> = Vec::new();
    for s in sessions.iter().filter(|s| s.session != lease.id()) {
        if s.ended || ended.contains(&(s.session.clone(), s.writer.clone())) {
            continue;
        }
        if s.dead(now, &timing) {
            if !matches!(fences.get(&s.session), Some(Some(_))) {
                fence_now.push(s);
            }
        } else {
            blocking.push(s.clone());
        }
    }
    let found2 = fence(repo, &fence_now, &found).await?;
    report.fenced_sessions = fence_now.iter().map(|s| s.session.clone()).collect();
    // Manifests committed meanwhile: what they reference stays for now.
    let seen: HashSet<&str> = found.iter().map(|f| f.id.as_str()).collect();
    let new: Vec<&Found> = found2
        .iter()
        .filter(|f| !seen.contains(f.id.as_str()))
        .collect();
    let mut late_used = vec![false; index.len()];
    // A chunk of a new snapshot that the index we loaded does not hold is in a new pack.
    marker.mark(new, &mut late_used, false).await?;
    (report.trees_read, report.trees_cached) = (marker.trees_read, marker.trees_cached);
    refs.retain(&found2.iter().map(|f| f.id.as_str()).collect());
    let late_packs: HashSet<[u8; 32]> = index
        .slots()
        .iter()
        .zip(&late_used)
        .filter(|(_, &u)| u)
        .map(|(s, _)| index.pack(s.pack).id)
        .collect();

    // 6. Delete what no live session can reference.
    let oldest_live = blocking.iter().map(|s| s.generation).min();
    let (doomed, waiting): (Vec<[u8; 32]>, Vec<[u8; 32]>) =
        condemn.keys().copied().partition(|id| {
            let blocked = oldest_live.is_some_and(|gen| gen < condemn[id]);
            !blocked && !late_packs.contains(id)
        });
    // In batches, each after a check that this prune's session is still fresh.
    for batch in doomed.chunks(DELETE_BATCH) {
        lease.fresh(&timing).await?;
        repo.delete_all(batch.iter().map(format::pack_key_name).collect())
            .await?;
        for id in batch {
            deleted.insert(*id);
            report.deleted_packs += 1;
            report.deleted_bytes += store_packs[id];
        }
    }
    let waiting = waiting.len();
    report.waiting_packs = waiting;
    if waiting > 0 {
        report.waiting_for = blocking;
    }
    let (rewritten, removed) = rewrite_indexes(repo, &catalog, &deleted).await?;
    report.indexes_rewritten = rewritten;
    report.indexes_deleted = removed;

    let settled = |s: &SessionInfo| {
        s.ended
            || ended.contains(&(s.session.clone(), s.writer.clone()))
            || report.fenced_sessions.contains(&s.session)
            || matches!(fences.get(&s.session), Some(Some(_)))
    };
    let done: Vec<&SessionInfo> = sessions
        .iter()
        .filter(|s| s.session != lease.id() && settled(s))
        .collect();
    report.sessions_removed = done.len();
    report.staging_removed = clean_up(repo, &done, &junk, now, &timing, g).await?;
    lease.close().await?;
    Ok(report)
}

/// What plan `g` records.
struct Publish<'a> {
    g: u64,
    session: &'a str,
    condemn: &'a HashMap<[u8; 32], u64>,
    deleted: &'a HashSet<[u8; 32]>,
    repacked: &'a HashSet<ChunkId>,
    sizes: &'a HashMap<[u8; 32], u64>,
}

/// Publish plan `g` (FORMAT.md §17.3): the condemned packs, the deleted ones indexes still
/// name, and as hidden every chunk with no copy outside them, including the chunks that the
/// tables of condemned unindexed packs list (a live session may index them later).
async fn publish_plan(repo: &FullRepo, index: &ChunkIndex, p: &Publish<'_>) -> Result<()> {
    let indexed: HashSet<[u8; 32]> = index.packs().iter().map(|pk| pk.id).collect();
    let mut hidden = hidden_prefixes(index, p.condemn, p.deleted, p.repacked);
    for (id, _) in p.condemn.iter().filter(|(id, _)| !indexed.contains(*id)) {
        let name = format::pack_key_name(id);
        match crate::check::read_table_ranged(repo, &name, p.sizes[id]).await {
            Ok(entries) => hidden.extend(entries.iter().map(|e| maint::prefix(&e.id))),
            Err(RepoError::Storage(e)) if e.kind == ErrorKind::NotFound => {}
            Err(RepoError::Storage(e)) => return Err(RepoError::Storage(e)),
            // An unreadable pack holds nothing a writer could have indexed.
            Err(e) => tracing::warn!(pack = %name, error = %e, "pack table unreadable"),
        }
    }
    let plan = PlanDoc {
        version: 1,
        generation: p.g,
        session: p.session.to_string(),
        created: repo.clock.now(),
        condemned: {
            let mut v: Vec<Condemned> = p
                .condemn
                .iter()
                .map(|(id, &since)| Condemned {
                    pack: hex::encode(id),
                    since,
                })
                .collect();
            v.sort_by(|a, b| a.pack.cmp(&b.pack));
            v
        },
        deleted: {
            let mut v: Vec<String> = p
                .deleted
                .iter()
                .filter(|id| indexed.contains(*id))
                .map(hex::encode)
                .collect();
            v.sort();
            v
        },
        hidden: maint::encode_hidden(hidden),
    };
    create_signed(repo, &plan_name(p.g), &plan).await?;
    Ok(())
}

/// Fence the dead sessions (FORMAT.md §17.4): the intents first, then a fresh listing of
/// the manifests, then each fence's accepted list from it. Returns that listing.
async fn fence(repo: &FullRepo, dead: &[&SessionInfo], known: &[Found]) -> Result<Vec<Found>> {
    for s in dead {
        let doc = FenceDoc {
            version: 1,
            session: s.session.clone(),
            writer: s.writer.clone(),
            created: repo.clock.now(),
            accepted: None,
        };
        create_once(repo, &fence_name(&s.session), &doc).await?;
    }
    let (found, _) = manifests(repo, known).await?;
    for s in dead {
        let accepted: Vec<String> = found
            .iter()
            .filter(|f| {
                f.manifest.session.as_deref() == Some(s.session.as_str())
                    && hex::encode(f.writer) == s.writer
            })
            .map(|f| f.id.clone())
            .collect();
        let doc = FenceDoc {
            version: 1,
            session: s.session.clone(),
            writer: s.writer.clone(),
            created: repo.clock.now(),
            accepted: Some(accepted),
        };
        create_once(repo, &accepted_name(&s.session), &doc).await?;
    }
    Ok(found)
}

/// A root-signed document created once: one that exists already (an earlier, interrupted
/// prune wrote it) stands.
async fn create_once<T: Serialize>(repo: &FullRepo, name: &str, doc: &T) -> Result<()> {
    match create_signed(repo, name, doc).await {
        Ok(_) => Ok(()),
        Err(RepoError::Storage(e)) if e.kind == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Remove the objects of settled sessions, objects under `sessions/` that belong to no
/// session and are older than a session may live (planted or orphaned), plans and claims
/// below `g`, and staging files of writes interrupted more than a day ago (a live write's
/// are seconds old). Returns how many staging files went.
async fn clean_up(
    repo: &FullRepo,
    settled: &[&SessionInfo],
    junk: &[String],
    now: jiff::Timestamp,
    timing: &SessionTiming,
    g: u64,
) -> Result<u64> {
    let mut remove: Vec<String> = settled.iter().flat_map(|s| s.objects.clone()).collect();
    let junk: HashSet<&String> = junk.iter().collect();
    let (metas, prune_objs): (Vec<ObjectMeta>, Vec<ObjectMeta>) = futures::try_join!(
        repo.store.list(maint::SESSIONS_PREFIX).try_collect(),
        repo.store.list(maint::PRUNE_PREFIX).try_collect(),
    )?;
    remove.extend(
        metas
            .iter()
            .filter(|m| {
                junk.contains(&m.key) && now.duration_since(m.last_modified) > timing.max_age
            })
            .map(|m| m.key.clone()),
    );
    remove.extend(
        prune_objs
            .iter()
            .filter(|m| maint::parse_prune_name(&m.key).is_some_and(|(n, _)| n < g))
            .map(|m| m.key.clone()),
    );
    let day_ago = now
        .checked_sub(jiff::SignedDuration::from_hours(24))
        .unwrap_or(now);
    let ((), swept) = futures::try_join!(repo.delete_all(remove), async {
        Ok(repo.store.sweep_staging(day_ago).await?)
    })?;
    Ok(swept)
}

/// Claim generation `g` (FORMAT.md §17.3): refused while the newest claim without a plan
/// belongs to a prune session that is alive.
async fn claim(
    repo: &FullRepo,
    lease: &Session,
    state: &MaintState,
    timing: &SessionTiming,
) -> Result<u64> {
    let names: Vec<(u64, bool, String)> = repo
        .store
        .list(maint::PRUNE_PREFIX)
        .try_filter_map(|m| async move {
            Ok(maint::parse_prune_name(&m.key).map(|(g, c)| (g, c, m.key)))
        })
        .try_collect()
        .await?;
    let (sessions, _) = repo.sessions().await?;
    let now = lease.started_store();
    for (n, _, name) in names.iter().filter(|(n, c, _)| *c && *n > state.generation) {
        let raw = match repo.store.get(name).await {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let Ok(doc) = keys::verify_doc::<ClaimDoc>(name, &raw, &repo.root_verify) else {
            continue;
        };
        if doc.generation != *n || doc.session == lease.id() {
            continue;
        }
        if let Some(s) = sessions.iter().find(|s| s.session == doc.session) {
            if !s.dead(now, timing) {
                return Err(RepoError::Busy(format!(
                    "another prune is running (session {} on host {}, started {} by the \
                     store's clock); one prune runs at a time. If that process is gone, its \
                     claim lapses {} minutes after its last renewal",
                    s.session,
                    s.host,
                    s.first_seen,
                    (s.ttl + timing.margin).as_mins()
                )));
            }
        }
    }
    let mut g = names
        .iter()
        .map(|(n, _, _)| *n)
        .max()
        .unwrap_or(0)
        .max(state.generation)
        .checked_add(1)
        .ok_or_else(|| RepoError::Refused("prune generations exhausted".into()))?;
    let host = repo.host().to_string();
    for _ in 0..16 {
        let doc = ClaimDoc {
            version: 1,
            generation: g,
            session: lease.id().to_string(),
            host: host.clone(),
            started: repo.clock.now(),
        };
        match create_signed(repo, &claim_name(g), &doc).await {
            Ok(_) => return Ok(g),
            Err(RepoError::Storage(e)) if e.kind == ErrorKind::AlreadyExists => g += 1,
            Err(e) => return Err(e),
        }
    }
    Err(RepoError::Busy(
        "could not claim a prune generation: another prune claimed each one first".into(),
    ))
}

/// Every pack in the store: id → size.
async fn list_packs(repo: &FullRepo) -> Result<HashMap<[u8; 32], u64>> {
    let mut out = HashMap::new();
    let mut listing = repo.store.list(DATA_PREFIX);
    while let Some(m) = listing.next().await {
        let m = m?;
        let id = m
            .key
            .rsplit('/')
            .next()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|v| <[u8; 32]>::try_from(v).ok());
        match id {
            Some(id) => {
                out.insert(id, m.size);
            }
            None => {
                tracing::warn!(object = %m.key, "ignoring an object under data/ that is not a pack")
            }
        }
    }
    Ok(out)
}

/// Every authentic manifest (its signature verifies under its writer's key, revoked writers
/// included: their snapshots stay until forgotten), and the objects that are not. Those in
/// `known` (read earlier in this run) are taken from there when still listed: a manifest's
/// name is the hash of its bytes.
async fn manifests(
    repo: &FullRepo,
    known: &[Found],
) -> Result<(Vec<Found>, Vec<(String, String)>)> {
    let mk = repo.master("prune")?;
    let known: HashMap<&str, &Found> = known.iter().map(|f| (f.id.as_str(), f)).collect();
    let mut found = Vec::new();
    let mut metas: Vec<ObjectMeta> = repo.store.list(SNAPSHOTS_PREFIX).try_collect().await?;
    repo.object_cache().retain(
        SNAPSHOTS_PREFIX,
        &metas.iter().map(|m| m.key.as_str()).collect(),
    );
    metas.retain(
        |m| match known.get(m.key.trim_start_matches(SNAPSHOTS_PREFIX)) {
            Some(f) => {
                found.push((*f).clone());
                false
            }
            None => true,
        },
    );
    let results: Vec<(String, Result<Option<Found>>)> =
        futures::stream::iter(metas.into_iter().map(|meta| async move {
            let r = async {
                let raw = match repo.get_addressed(&meta.key).await {
                    Ok(r) => r,
                    // Forgotten while we listed.
                    Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let id = meta.key.trim_start_matches(SNAPSHOTS_PREFIX).to_string();
                if blake3::hash(&raw).to_hex().as_str() != id {
                    return Err(RepoError::corrupt(
                        &meta.key,
                        "content does not match its name",
                    ));
                }
                let (writer, signed, sig) =
                    format::sealed_doc_writer(&meta.key, &raw, ObjectType::Snapshot)?;
                let (key, standing) = repo.writer_verdict(&writer).await?;
                let key = key
                    .ok_or_else(|| RepoError::corrupt(&meta.key, "written by an unknown writer"))?;
                let accepted = standing.accepts(crate::repo::store_time(&meta));
                crate::crypto::verify(&key, signed, sig)
                    .map_err(|e| RepoError::corrupt(&meta.key, e.to_string()))?;
                let body = format::open_sealed_doc(
                    &meta.key,
                    &raw,
                    ObjectType::Snapshot,
                    &mk.repo_secret,
                )?;
                let manifest: Manifest = serde_json::from_slice(&body)
                    .map_err(|e| RepoError::corrupt(&meta.key, e.to_string()))?;
                Ok(Some(Found {
                    id,
                    writer,
                    manifest,
                    accepted,
                }))
            }
            .await;
            (meta.key, r)
        }))
        .buffer_unordered(FETCH_CONCURRENCY)
        .collect()
        .await;
    let mut ignored = Vec::new();
    for (name, r) in results {
        match r {
            Ok(Some(f)) => found.push(f),
            Ok(None) => {}
            Err(RepoError::Storage(e)) => return Err(RepoError::Storage(e)),
            Err(e) => ignored.push((name, e.to_string())),
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    ignored.sort();
    Ok((found, ignored))
}

/// Marks what snapshots reference, through the reference cache.
struct Marker<'a> {
    reader: &'a Reader,
    index: &'a ChunkIndex,
    refs: &'a RefCache,
    trees_read: usize,
    trees_cached: usize,
}

impl Marker<'_> {
    /// Mark every index slot of every chunk the snapshots reference. When `strict`, a
    /// referenced chunk no index holds is refused: an unindexed pack may hold it, and
    /// `repair index` recovers it.
    async fn mark(&mut self, found: Vec<&Found>, used: &mut [bool], strict: bool) -> Result<()> {
        let index = self.index;
        // An address, not a pointer: the future stays `Send` (daemons run prune in a task).
        let base = index.slots().as_ptr() as usize;
        let unindexed = |m: &Manifest, id: &ChunkId| {
            RepoError::NotFound(format!(
                "snapshot of {} at {} references chunk {} that no index holds; nothing was \
                 pruned. Run `check` (an unindexed pack may hold it, and rebuilding the index \
                 recovers it)",
                m.source,
                m.time,
                hex::encode(&id[..8])
            ))
        };
        for f in &found {
            let m = &f.manifest;
            if strict {
                if let Some(id) = m.tree_ids()?.iter().find(|id| index.all(id).is_empty()) {
                    return Err(unindexed(m, id));
                }
            }
        }
        // What each snapshot references: from the cache, else its tree, a few trees at once.
        let (refs, reader) = (self.refs, self.reader);
        let mut listed = futures::stream::iter(found.into_iter().map(|f| async move {
            if let Some(ids) = refs.get(&f.id) {
                return (f, Ok((ids, true)));
            }
            let r = match read_refs(reader, &f.manifest).await {
                Ok(ids) => {
                    refs.put(&f.id, &ids);
                    Ok((ids, false))
                }
                Err(e) => Err(e),
            };
            (f, r)
        }))
        .buffered(TREE_CONCURRENCY);
        while let Some((f, r)) = listed.next().await {
            let m = &f.manifest;
            let ids = match r {
                Ok((ids, true)) => {
                    self.trees_cached += 1;
                    ids
                }
                Ok((ids, false)) => {
                    self.trees_read += 1;
                    ids
                }
                // A refused writer's tree may be unreadable (its indexes are refused
                // too); its tree chunks are still kept where an index knows them.
                Err(e) if !strict && !matches!(e, RepoError::Storage(_)) => m.tree_ids()?,
                Err(e) => return Err(e),
            };
            for id in &ids {
                let all = index.all(id);
                if all.is_empty() && !strict {
                    continue;
                }
                if all.is_empty() {
                    return Err(unindexed(m, id));
                }
                // `all` is a subslice of `index.slots()`: its offset in slots.
                let start = (all.as_ptr() as usize - base) / std::mem::size_of::<Slot>();
                used[start..start + all.len()]
                    .iter_mut()
                    .for_each(|u| *u = true);
            }
        }
        Ok(())
    }
}

/// Every chunk a snapshot references (its tree's and its files'), sorted and distinct.
async fn read_refs(reader: &Reader, m: &Manifest) -> Result<Vec<ChunkId>> {
    tree_refs(m.tree_ids()?, reader.tree(m).await?)
}

/// Every chunk a snapshot with tree chunks `tree_ids` and tree stream `tree` references,
/// sorted and distinct: what a reference cache entry holds.
pub(crate) fn tree_refs<R: std::io::BufRead>(
    tree_ids: Vec<ChunkId>,
    mut tree: crate::snapshot::TreeReader<R>,
) -> Result<Vec<ChunkId>> {
    let mut ids = tree_ids;
    while let Some((_, chunks)) = tree.next_node()? {
        ids.extend(chunks);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Which copies of referenced chunks stay: one root copy in a pack not condemned if there
/// is one, else one root copy anywhere (its pack is rescued), else every agent copy (prune
/// cannot tell an honest agent's copy from a lying one without reading them).
fn choose_copies(
    index: &ChunkIndex,
    used: &[bool],
    state: &MaintState,
    gone: &dyn Fn(&[u8; 32]) -> bool,
) -> Result<Vec<bool>> {
    let slots = index.slots();
    let mut keep = vec![false; slots.len()];
    for run in index.id_runs().filter(|r| used[r.start]) {
        let pack = |n: usize| index.pack(slots[n].pack).id;
        let present: Vec<usize> = run.clone().filter(|&n| !gone(&pack(n))).collect();
        let root = |n: &usize| slots[*n].trust() == Trust::Root;
        let live_root = present
            .iter()
            .find(|n| root(n) && !state.condemned.contains_key(&pack(**n)));
        match live_root.or_else(|| present.iter().find(|n| root(n))) {
            Some(&n) => keep[n] = true,
            None if present.is_empty() => {
                return Err(RepoError::NotFound(format!(
                    "chunk {} is referenced but every pack holding it is gone; nothing was \
                     pruned. Run `check`",
                    hex::encode(&slots[run.start].id[..8])
                )))
            }
            None => present.iter().for_each(|&n| keep[n] = true),
        }
    }
    Ok(keep)
}

/// The packs to repack, most unused bytes first, until the unused bytes left in packs that
/// stay are at most `max_unused` of what they hold.
fn choose_repack(mut partial: Vec<([u8; 32], u64)>, used: u64, max_unused: f64) -> Vec<[u8; 32]> {
    partial.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut unused: u64 = partial.iter().map(|p| p.1).sum();
    let mut out = Vec::new();
    for (id, u) in partial {
        if (unused as f64) <= max_unused * (used + unused) as f64 {
            break;
        }
        out.push(id);
        unused -= u;
    }
    out
}

/// Most bytes one ranged read of a pack being repacked covers.
const REPACK_READ: u64 = 4 << 20;
/// Unused bytes between two kept blobs that one read spans rather than make two requests.
const REPACK_GAP: u64 = 256 << 10;
/// Ranged reads at once while repacking (each read is held twice more, opened and queued
/// for packing, until its blobs are packed): at most 12 × 4 MiB in memory. Repacks are bound
/// by the store's time per request, not by bytes.
const REPACK_CONCURRENCY: usize = 4;

/// The ranged reads that fetch the kept blobs of one pack: slots sorted by offset, blobs
/// close together (at most [`REPACK_GAP`] apart) joined while a read stays within
/// [`REPACK_READ`] (a single larger blob is a read of its own). Unused blobs far from kept
/// ones are never read.
fn repack_reads(mut slots: Vec<Slot>) -> Vec<Vec<Slot>> {
    slots.sort_by_key(|s| s.offset);
    let mut out: Vec<Vec<Slot>> = Vec::new();
    for s in slots {
        if let Some(run) = out.last_mut() {
            let (first, last) = (run[0], run[run.len() - 1]);
            let end = last.offset as u64 + last.len as u64;
            let gap = (s.offset as u64).saturating_sub(end);
            let span = s.offset as u64 + s.len as u64 - first.offset as u64;
            // One blob named twice (by two indexes) is read once.
            if (s.offset, s.len) == (last.offset, last.len) {
                continue;
            }
            if s.offset as u64 >= end && gap <= REPACK_GAP && span <= REPACK_READ {
                run.push(s);
                continue;
            }
        }
        out.push(vec![s]);
    }
    out
}

/// Read the kept blobs of `packs` (ranged reads of what stays, never whole packs), verify
/// each against its chunk id, and store them anew in a root session. Returns (bytes read,
/// bytes written).
async fn repack(
    repo: &FullRepo,
    index: &Arc<ChunkIndex>,
    keep: &[bool],
    packs: &[[u8; 32]],
    repacked: &mut HashSet<ChunkId>,
) -> Result<(u64, u64)> {
    let targets: HashSet<[u8; 32]> = packs.iter().copied().collect();
    // Kept slots by pack id (a pack id may have several numbers, one per index naming it).
    let mut by_pack: HashMap<[u8; 32], Vec<Slot>> = HashMap::new();
    for (n, s) in index.slots().iter().enumerate() {
        let id = index.pack(s.pack).id;
        if keep[n] && targets.contains(&id) {
            by_pack.entry(id).or_default().push(*s);
        }
    }
    // One packing thread and one upload: repacking is a small share of a prune, and each
    // open or uploading pack is a pack's size in memory.
    let session = Arc::new(BackupSession::start(
        repo.shared(),
        Arc::new(ChunkIndex::empty()),
        SessionOptions {
            workers: 1,
            uploads: 1,
        },
    ));
    let reads: Vec<([u8; 32], Vec<Slot>)> = packs
        .iter()
        .flat_map(|id| {
            repack_reads(by_pack.remove(id).unwrap_or_default())
                .into_iter()
                .map(move |r| (*id, r))
        })
        .collect();
    let mut done = futures::stream::iter(reads.into_iter().map(|(id, slots)| {
        let session = session.clone();
        async move { repack_read(repo, index, &session, &id, slots).await }
    }))
    .buffer_unordered(REPACK_CONCURRENCY);
    let mut read = 0;
    while let Some(r) = done.next().await {
        let (n, ids) = r?;
        read += n;
        repacked.extend(ids);
    }
    drop(done);
    let stats = session.finish().await?;
    Ok((read, stats.stored_bytes))
}

/// One ranged read of a pack being repacked: its blobs opened and verified, then stored in
/// `session`. Returns (bytes read, chunk ids stored).
async fn repack_read(
    repo: &FullRepo,
    index: &Arc<ChunkIndex>,
    session: &Arc<BackupSession>,
    pack: &[u8; 32],
    slots: Vec<Slot>,
) -> Result<(u64, Vec<ChunkId>)> {
    let name = format::pack_key_name(pack);
    let (first, last) = (slots[0], slots[slots.len() - 1]);
    let base = first.offset as u64;
    let bytes = repo
        .store
        .get_range(&name, base..last.offset as u64 + last.len as u64)
        .await?;
    let read = bytes.len() as u64;
    let (index, repo2, session) = (index.clone(), repo.clone(), session.clone());
    let ids = crate::blocking(move || {
        let mut chunks = Vec::with_capacity(slots.len());
        for s in slots {
            let info = index.pack(s.pack);
            let key = info
                .key
                .as_ref()
                .ok_or_else(|| RepoError::Internal("a full-key index without keys".into()))?;
            let b = s.blob();
            let at = (b.offset as u64 - base) as usize;
            let ct = bytes
                .get(at..at + b.len as usize)
                .ok_or_else(|| RepoError::corrupt(&name, "blob outside the pack"))?;
            let raw = format::open_blob(&name, info.key_id, key, &b, ct, repo2.id_key())?;
            chunks.push((s.id, raw));
        }
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        session.store_chunks(chunks)?;
        Ok::<_, RepoError>(ids)
    })
    .await?;
    Ok((read, ids))
}

/// Prefixes of chunk ids that, once the condemned packs go, have no copy left (FORMAT.md
/// §17.3). Chunks just repacked have a new copy.
fn hidden_prefixes(
    index: &ChunkIndex,
    condemned: &HashMap<[u8; 32], u64>,
    deleted: &HashSet<[u8; 32]>,
    repacked: &HashSet<ChunkId>,
) -> HashSet<u64> {
    let slots = index.slots();
    let mut out = HashSet::new();
    for run in index.id_runs() {
        let survives = slots[run.clone()].iter().any(|s| {
            let p = index.pack(s.pack).id;
            !condemned.contains_key(&p) && !deleted.contains(&p)
        });
        let id = &slots[run.start].id;
        if !survives && !repacked.contains(id) {
            out.insert(maint::prefix(id));
        }
    }
    out
}

/// Sessions a manifest names, with the writer that signed it: (session, writer hex).
fn ended_sessions(found: &[Found]) -> HashSet<(String, String)> {
    found
        .iter()
        .filter_map(|f| {
            f.manifest
                .session
                .clone()
                .map(|s| (s, hex::encode(f.writer)))
        })
        .collect()
}

/// Drop index entries of deleted packs: a root index is rewritten without them (the new one
/// durable before the old one goes), an agent's index is removed once every pack it names
/// is gone (it cannot be re-signed: the next plans keep its dead chunks hidden instead).
/// Only the indexes this run loaded are considered, from its catalog, and only root indexes
/// that need rewriting are downloaded again; one written since (by a writer fenced
/// meanwhile) is the next run's, as after an interruption here.
async fn rewrite_indexes(
    repo: &FullRepo,
    catalog: &IndexCatalog,
    deleted: &HashSet<[u8; 32]>,
) -> Result<(usize, usize)> {
    let mk = repo.master("prune")?;
    let (mut rewritten, mut removed) = (0, 0);
    let mut names: Vec<&String> = catalog
        .iter()
        .filter(|(_, c)| c.packs.iter().any(|id| deleted.contains(id)))
        .map(|(name, _)| name)
        .collect();
    names.sort();
    for name in names {
        let entry = &catalog[name];
        if !entry.root {
            if entry.packs.iter().all(|id| deleted.contains(id)) {
                repo.store.delete(name).await?;
                removed += 1;
            }
            continue;
        }
        let raw = match repo.get_addressed(name).await {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        // Content-addressed: the bytes are those the load verified, or another object.
        if blake3::hash(&raw).to_hex().as_str() != name.trim_start_matches(INDEX_PREFIX) {
            continue;
        }
        let p = format::parse_index(name, &raw)?;
        let (packs, entries) = format::open_index_locations(name, &raw, &p, &mk.repo_secret)?;
        let alive: Vec<bool> = packs.iter().map(|pk| !deleted.contains(&pk.id)).collect();
        let mut new_packs: Vec<IndexPack> = Vec::new();
        let mut renumber = vec![u32::MAX; packs.len()];
        for (n, pk) in packs.iter().enumerate().filter(|(n, _)| alive[*n]) {
            renumber[n] = new_packs.len() as u32;
            new_packs.push(pk.clone());
        }
        let new_entries: Vec<IndexEntry> = entries
            .iter()
            .filter(|e| alive[e.pack as usize])
            .map(|e| IndexEntry {
                pack: renumber[e.pack as usize],
                blob: e.blob,
            })
            .collect();
        if !new_entries.is_empty() {
            crate::write::write_index(repo, &new_packs, &new_entries).await?;
            rewritten += 1;
        } else {
            removed += 1;
        }
        repo.store.delete(name).await?;
    }
    Ok((rewritten, removed))
}

#[cfg(test)]
mod tests;
