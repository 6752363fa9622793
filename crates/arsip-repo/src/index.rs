//! The chunk index in memory: every known chunk id with its location, as one sorted table of
//! fixed 52-byte records searched by binary search.
//!
//! Memory: 52 bytes per indexed chunk plus 80 bytes per pack. Past a budget
//! (`LocalSettings::index_memory`, default 256 MiB ≈ 5 million chunks) the table is spilled to a file
//! in the cache directory and memory-mapped: the pages are file-backed, so the kernel reclaims
//! them under pressure instead of the process growing without bound.

use std::collections::HashMap;
use std::io::Write;

use crate::crypto::Key;
use crate::error::{RepoError, Result};
use crate::format::{BlobEntry, ChunkId, IndexPack};

/// How far a chunk's index entry is trusted for deduplication (see FORMAT.md §Writers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Trust {
    /// Written by another agent: usable for restore (verified on read) but never deduplicated
    /// against.
    Foreign = 0,
    /// Written by this agent itself.
    Own = 1,
    /// Written by a holder of the master secret.
    Root = 2,
}

/// One record. `repr(C)`, only integer fields, explicit padding: safe to view as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Slot {
    pub id: ChunkId,
    pub pack: u32,
    pub offset: u32,
    pub len: u32,
    pub raw_len: u32,
    pub flags: u8,
    pub trust: u8,
    pub _pad: [u8; 2],
}

pub const SLOT_SIZE: usize = std::mem::size_of::<Slot>();
const _: () = assert!(SLOT_SIZE == 52);

impl Slot {
    pub fn blob(&self) -> BlobEntry {
        BlobEntry {
            id: self.id,
            offset: self.offset,
            len: self.len,
            raw_len: self.raw_len,
            flags: self.flags,
        }
    }
    pub fn trust(&self) -> Trust {
        match self.trust {
            2 => Trust::Root,
            1 => Trust::Own,
            _ => Trust::Foreign,
        }
    }
}

/// A pack known to the index. Agents know packs by id only (no key, no size).
#[derive(Clone)]
pub struct PackInfo {
    pub id: [u8; 32],
    pub key: Option<Key>,
    pub key_id: u32,
    pub size: u64,
}

enum Table {
    Mem(Vec<Slot>),
    Mapped {
        map: memmap2::MmapMut,
        len: usize,
        _file: std::fs::File,
    },
}

pub struct ChunkIndex {
    table: Table,
    packs: Vec<PackInfo>,
    /// Chunk ids (8-byte prefixes) prune has condemned with no surviving copy: never
    /// deduplicated against (FORMAT.md §17).
    hidden: std::collections::HashSet<u64>,
}

impl ChunkIndex {
    pub fn empty() -> ChunkIndex {
        ChunkIndex {
            table: Table::Mem(Vec::new()),
            packs: Vec::new(),
            hidden: Default::default(),
        }
    }

    pub fn slots(&self) -> &[Slot] {
        match &self.table {
            Table::Mem(v) => v,
            // SAFETY: the map is page-aligned, holds `len` records written from `Slot`s, and
            // `Slot` is repr(C) with no invalid bit patterns.
            Table::Mapped { map, len, .. } => unsafe {
                std::slice::from_raw_parts(map.as_ptr() as *const Slot, *len)
            },
        }
    }

    /// Plaintext bytes of the distinct chunks indexed (before compression).
    pub fn unique_raw_bytes(&self) -> u64 {
        let mut total = 0u64;
        let mut last = None;
        for s in self.slots() {
            if last != Some(s.id) {
                total += s.raw_len as u64;
                last = Some(s.id);
            }
        }
        total
    }

    pub fn len(&self) -> usize {
        self.slots().len()
    }

    /// The memory the entries take.
    pub fn memory_bytes(&self) -> usize {
        self.len() * SLOT_SIZE
    }

    /// The runs of entries of one chunk id each: `start..end` ranges of [`Self::slots`], in
    /// id order (a chunk stored more than once has several entries).
    pub fn id_runs(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let slots = self.slots();
        let mut i = 0;
        std::iter::from_fn(move || {
            if i >= slots.len() {
                return None;
            }
            let j = i + slots[i..]
                .iter()
                .take_while(|s| s.id == slots[i].id)
                .count();
            let run = i..j;
            i = j;
            Some(run)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_spilled(&self) -> bool {
        matches!(self.table, Table::Mapped { .. })
    }

    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    pub fn pack(&self, n: u32) -> &PackInfo {
        &self.packs[n as usize]
    }

    /// The most trusted entry for `id`.
    pub fn lookup(&self, id: &ChunkId) -> Option<&Slot> {
        self.all(id).iter().max_by_key(|s| s.trust)
    }

    /// Every entry for `id` (a chunk may be stored more than once by concurrent writers).
    ///
    /// Chunk ids are keyed hashes, uniform over the id space, so the first 8 bytes of `id`
    /// predict its position in the sorted table to within a few hundred records. The search
    /// widens a window around that guess (doubling steps, so skewed tables still cost only
    /// O(log n)) and then bisects inside it: a handful of nearby probes instead of ~log2(n)
    /// cache misses (or page faults, for a spilled table) spread over the whole table.
    pub fn all(&self, id: &ChunkId) -> &[Slot] {
        let s = self.slots();
        let n = s.len();
        let below = |i: usize| s[i].id < *id;
        let prefix = u64::from_be_bytes(id[..8].try_into().unwrap());
        let guess = ((prefix as u128 * n as u128) >> 64) as usize;
        // Invariants on exit: every record before `lo` is below `id`, none from `hi` on is.
        let (mut lo, mut step) = (guess, 16);
        while lo > 0 && !below(lo - 1) {
            lo = lo.saturating_sub(step);
            step *= 2;
        }
        let (mut hi, mut step) = (guess, 16);
        while hi < n && below(hi) {
            hi = (hi + step).min(n);
            step *= 2;
        }
        let start = lo + s[lo..hi].partition_point(|x| x.id < *id);
        let len = s[start..].iter().take_while(|x| x.id == *id).count();
        &s[start..start + len]
    }

    /// May a writer deduplicate against `id`? Only if some entry is trusted (own or root)
    /// and prune has not hidden it (condemned with no surviving copy).
    pub fn dedupable(&self, id: &ChunkId) -> bool {
        if !self.hidden.is_empty() && self.hidden.contains(&crate::maint::prefix(id)) {
            return false;
        }
        self.all(id).iter().any(|s| s.trust() >= Trust::Own)
    }

    /// Hide `hidden` (8-byte id prefixes) from deduplication.
    pub(crate) fn hide(mut self, hidden: std::collections::HashSet<u64>) -> ChunkIndex {
        self.hidden = hidden;
        self
    }
}

/// Accumulates index entries, spilling to a mapped file past the memory budget.
pub struct IndexBuilder {
    mem: Vec<Slot>,
    spill: Option<(std::io::BufWriter<std::fs::File>, usize)>,
    budget_slots: usize,
    spill_dir: std::path::PathBuf,
    packs: Vec<PackInfo>,
    pack_ids: HashMap<([u8; 32], Option<[u8; 32]>), u32>,
}

impl IndexBuilder {
    pub fn new(budget_bytes: usize, spill_dir: std::path::PathBuf) -> IndexBuilder {
        IndexBuilder {
            mem: Vec::new(),
            spill: None,
            budget_slots: (budget_bytes / SLOT_SIZE).max(16),
            spill_dir,
            packs: Vec::new(),
            pack_ids: HashMap::new(),
        }
    }

    /// Register a pack; returns its number in this index. Packs are keyed by id *and* key:
    /// an index from another writer that names a known pack with a different key gets its
    /// own record, so a wrong key can only spoil that index's own entries (which readers try
    /// after more trusted ones), never the entries of a trusted index.
    pub fn add_pack(&mut self, p: PackInfo) -> u32 {
        let k = (p.id, p.key.as_ref().map(|k| k.0));
        if let Some(&n) = self.pack_ids.get(&k) {
            return n;
        }
        let n = self.packs.len() as u32;
        self.pack_ids.insert(k, n);
        self.packs.push(p);
        n
    }

    pub fn add_index_pack(&mut self, p: &IndexPack) -> u32 {
        self.add_pack(PackInfo {
            id: p.id,
            key: Some(p.key.clone()),
            key_id: p.key_id,
            size: p.size,
        })
    }

    pub fn add(&mut self, pack: u32, b: &BlobEntry, trust: Trust) -> Result<()> {
        let slot = Slot {
            id: b.id,
            pack,
            offset: b.offset,
            len: b.len,
            raw_len: b.raw_len,
            flags: b.flags,
            trust: trust as u8,
            _pad: [0; 2],
        };
        if let Some((w, n)) = &mut self.spill {
            w.write_all(slot_bytes(&slot))
                .map_err(|e| spill_error(&self.spill_dir, "writing the index spill file in", e))?;
            *n += 1;
            return Ok(());
        }
        self.mem.push(slot);
        if self.mem.len() > self.budget_slots {
            tracing::info!(
                budget_bytes = self.budget_slots * SLOT_SIZE,
                dir = %self.spill_dir.display(),
                "index exceeds its memory budget; spilling to a mapped file"
            );
            std::fs::create_dir_all(&self.spill_dir).map_err(|e| {
                spill_error(&self.spill_dir, "creating the index spill directory", e)
            })?;
            let file = tempfile::tempfile_in(&self.spill_dir)
                .map_err(|e| spill_error(&self.spill_dir, "creating an index spill file in", e))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            for s in self.mem.drain(..) {
                w.write_all(slot_bytes(&s)).map_err(|e| {
                    spill_error(&self.spill_dir, "writing the index spill file in", e)
                })?;
            }
            self.mem = Vec::new();
            let n = self.budget_slots + 1;
            self.spill = Some((w, n));
        }
        Ok(())
    }

    pub fn finish(self) -> Result<ChunkIndex> {
        let table = match self.spill {
            None => {
                let mut v = self.mem;
                v.sort_unstable_by_key(|s| s.id);
                Table::Mem(v)
            }
            Some((w, len)) => {
                let file = w.into_inner().map_err(|e| {
                    spill_error(
                        &self.spill_dir,
                        "writing the index spill file in",
                        e.into_error(),
                    )
                })?;
                // SAFETY: the file is private to this process (unlinked temp file).
                let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| {
                    spill_error(&self.spill_dir, "mapping the index spill file in", e)
                })?;
                // SAFETY: as in `ChunkIndex::slots`.
                let slots =
                    unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr() as *mut Slot, len) };
                slots.sort_unstable_by_key(|s| s.id);
                Table::Mapped {
                    map,
                    len,
                    _file: file,
                }
            }
        };
        Ok(ChunkIndex {
            table,
            packs: self.packs,
            hidden: Default::default(),
        })
    }
}

/// A spill failure: local I/O in the cache directory, named, never repository damage.
fn spill_error(dir: &std::path::Path, action: &str, source: std::io::Error) -> RepoError {
    RepoError::Local {
        action: action.to_string(),
        path: dir.to_path_buf(),
        source,
    }
}

fn slot_bytes(s: &Slot) -> &[u8] {
    // SAFETY: Slot is repr(C), 52 bytes, padding explicit and initialised.
    unsafe { std::slice::from_raw_parts(s as *const Slot as *const u8, SLOT_SIZE) }
}

pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok().map(|n| n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack known by id only, as agents know packs.
    fn agent_pack() -> PackInfo {
        PackInfo {
            id: [1; 32],
            key: None,
            key_id: 0,
            size: 0,
        }
    }

    fn entry(i: u32) -> BlobEntry {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id[31] = 7;
        BlobEntry {
            id,
            offset: i,
            len: i + 1,
            raw_len: i + 2,
            flags: 0,
        }
    }

    #[test]
    fn lookup_in_memory_and_spilled() {
        for budget in [1 << 30, 0] {
            let dir = tempfile::tempdir().unwrap();
            let mut b = IndexBuilder::new(budget, dir.path().into());
            let p = b.add_pack(agent_pack());
            for i in (0..5000).rev() {
                b.add(
                    p,
                    &entry(i),
                    if i % 2 == 0 {
                        Trust::Root
                    } else {
                        Trust::Foreign
                    },
                )
                .unwrap();
            }
            let idx = b.finish().unwrap();
            assert_eq!(idx.is_spilled(), budget == 0);
            assert_eq!(idx.len(), 5000);
            for i in [0, 1, 2500, 4999] {
                let s = idx.lookup(&entry(i).id).unwrap();
                assert_eq!(s.offset, i);
                assert_eq!(idx.dedupable(&entry(i).id), i % 2 == 0);
            }
            assert!(idx.lookup(&entry(6000).id).is_none());
        }
    }

    #[test]
    fn finds_every_entry_of_uniform_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = IndexBuilder::new(1 << 30, dir.path().into());
        let p = b.add_pack(agent_pack());
        let id = |i: u32| *blake3::hash(&i.to_le_bytes()).as_bytes();
        for i in 0..20_000u32 {
            let copies = 1 + (i % 7 == 0) as u32 + (i % 11 == 0) as u32;
            for c in 0..copies {
                let e = BlobEntry {
                    id: id(i),
                    offset: c,
                    len: 1,
                    raw_len: 1,
                    flags: 0,
                };
                b.add(p, &e, Trust::Own).unwrap();
            }
        }
        let idx = b.finish().unwrap();
        for i in 0..20_000u32 {
            let want = 1 + (i % 7 == 0) as usize + (i % 11 == 0) as usize;
            let got = idx.all(&id(i));
            assert_eq!(got.len(), want, "entry {i}");
            assert!(got.iter().all(|s| s.id == id(i)));
        }
        for i in 20_000..21_000u32 {
            assert!(idx.all(&id(i)).is_empty());
        }
        // the extremes of the id space
        assert!(idx.all(&[0; 32]).is_empty());
        assert!(idx.all(&[0xff; 32]).is_empty());
    }

    #[test]
    fn prefers_trusted_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = IndexBuilder::new(1 << 20, dir.path().into());
        let p = b.add_pack(agent_pack());
        let mut e = entry(1);
        b.add(p, &e, Trust::Foreign).unwrap();
        e.offset = 99;
        b.add(p, &e, Trust::Root).unwrap();
        let idx = b.finish().unwrap();
        assert_eq!(idx.lookup(&e.id).unwrap().offset, 99);
    }
}
