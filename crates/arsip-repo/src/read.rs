//! The read path: fetch chunks by id, authenticate, decompress and verify each against its
//! id before anyone sees a byte; stream a list of chunks in order with bounded read-ahead.
//! Consecutive chunks stored back to back in one pack (a file backed up in one go, above all
//! one in small fixed blocks) are fetched as one ranged read, a *run*.

use std::sync::Arc;

use futures::{Stream, StreamExt};

use crate::cap::FullRepo;
use crate::error::{RepoError, Result};
use crate::format::{self, ChunkId};
use crate::index::{ChunkIndex, Slot};
use crate::repo::Repository;
use crate::snapshot::{Manifest, TreeReader};

/// Runs fetched ahead of the writer when streaming.
pub const READ_AHEAD: usize = 8;

/// Most plaintext bytes in one run (a single larger chunk is a run of its own): bounds the
/// memory of a read-ahead at about what it was with one ~1 MiB chunk per read.
pub const RUN_BYTES: u64 = 1 << 20;

/// Consecutive chunks of one file or stream that [`Reader::run`] fetches with one ranged
/// read: each id with its preferred copy (`None`: not indexed), and their plaintext size.
pub struct Run {
    chunks: Vec<(ChunkId, Option<Slot>)>,
    raw: u64,
}

impl Run {
    fn new(id: ChunkId, slot: Option<Slot>) -> Run {
        Run {
            chunks: vec![(id, slot)],
            raw: slot.map_or(0, |s| s.raw_len as u64),
        }
    }

    /// Extend the run with `s` if it is stored right after the run's last chunk, in the
    /// same pack, and the run stays within [`RUN_BYTES`].
    fn try_push(&mut self, id: ChunkId, s: Slot) -> bool {
        let Some((_, Some(last))) = self.chunks.last() else {
            return false;
        };
        let joins = last.pack == s.pack
            && last.offset as u64 + last.len as u64 == s.offset as u64
            && self.raw + s.raw_len as u64 <= RUN_BYTES;
        if joins {
            self.chunks.push((id, Some(s)));
            self.raw += s.raw_len as u64;
        }
        joins
    }
}

#[derive(Clone)]
pub struct Reader {
    repo: Arc<Repository>,
    index: Arc<ChunkIndex>,
}

impl Reader {
    /// Load what a restore needs: a reader over the repository's full index.
    /// Only a [`FullRepo`] reads: agent handles cannot construct a reader.
    pub async fn open(repo: &FullRepo) -> Result<Reader> {
        let index = Arc::new(repo.load_index().await?);
        Reader::new(repo, index)
    }

    pub fn new(repo: &FullRepo, index: Arc<ChunkIndex>) -> Result<Reader> {
        // Defence in depth: the type says so, the handle must agree.
        repo.master("reading data")?;
        Ok(Reader {
            repo: repo.shared(),
            index,
        })
    }

    pub fn index(&self) -> &ChunkIndex {
        &self.index
    }

    /// Read one chunk. Tries every stored copy, most trusted first; fails naming the pack
    /// objects if none authenticates.
    pub async fn chunk(&self, id: ChunkId) -> Result<Vec<u8>> {
        let mut slots: Vec<_> = self.index.all(&id).to_vec();
        if slots.is_empty() {
            return Err(RepoError::corrupt(
                format!("chunk {}", hex::encode(&id[..8])),
                "not in any index (missing pack or index object)",
            ));
        }
        slots.sort_by_key(|s| std::cmp::Reverse(s.trust));
        let mut last = None;
        for slot in slots {
            let pack = self.index.pack(slot.pack).clone();
            let name = format::pack_key_name(&pack.id);
            let range = slot.offset as u64..slot.offset as u64 + slot.len as u64;
            let ct = match self.repo.store.get_range(&name, range).await {
                Ok(b) => b,
                Err(e) if e.kind == arsip_storage::ErrorKind::NotFound => {
                    last = Some(RepoError::corrupt(name, "pack object is missing"));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let key = pack
                .key
                .clone()
                .ok_or(RepoError::NeedsFullKey("reading data"))?;
            let id_key = self.repo.id_key().clone();
            let entry = slot.blob();
            let r = crate::blocking(move || {
                Ok::<_, RepoError>(format::open_blob(
                    &name,
                    pack.key_id,
                    &key,
                    &entry,
                    &ct,
                    &id_key,
                ))
            })
            .await?;
            match r {
                Ok(d) => return Ok(d),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap())
    }

    /// Cut `ids` into runs for [`run`](Self::run), lazily: consecutive chunks whose preferred
    /// copies lie back to back in one pack, at most [`RUN_BYTES`] of plaintext each.
    pub fn runs(&self, ids: Vec<ChunkId>) -> impl Iterator<Item = Run> + '_ {
        let mut ids = ids
            .into_iter()
            .map(|id| (id, self.index.lookup(&id).copied()))
            .peekable();
        std::iter::from_fn(move || {
            let (id, slot) = ids.next()?;
            let mut run = Run::new(id, slot);
            // An id that is not indexed stays a run of its own, so that `chunk` reports it.
            while let Some(&(next, Some(s))) = ids.peek() {
                if !run.try_push(next, s) {
                    break;
                }
                ids.next();
            }
            Some(run)
        })
    }

    /// Read one run from [`runs`](Self::runs) with a single ranged read, then authenticate,
    /// decompress and verify each chunk; returns the run's plaintext, chunks concatenated.
    /// If the read or any chunk fails, the run's chunks are read one by one with
    /// [`chunk`](Self::chunk), which tries the other copies and names what is damaged.
    pub async fn run(&self, run: Run) -> Result<Vec<u8>> {
        let slots: Option<Vec<Slot>> = run.chunks.iter().map(|(_, s)| *s).collect();
        if let Some(slots) = slots.filter(|s| s.len() > 1) {
            if let Ok(data) = self.read_run(slots).await {
                return Ok(data);
            }
        }
        let mut out = Vec::new();
        for (id, _) in run.chunks {
            let chunk = self.chunk(id).await?;
            if out.is_empty() {
                out = chunk;
            } else {
                out.extend_from_slice(&chunk);
            }
        }
        Ok(out)
    }

    async fn read_run(&self, slots: Vec<Slot>) -> Result<Vec<u8>> {
        let (first, last) = (slots[0], slots[slots.len() - 1]);
        let pack = self.index.pack(first.pack).clone();
        let name = format::pack_key_name(&pack.id);
        let base = first.offset as u64;
        let ct = self
            .repo
            .store
            .get_range(&name, base..last.offset as u64 + last.len as u64)
            .await?;
        let key = pack
            .key
            .clone()
            .ok_or(RepoError::NeedsFullKey("reading data"))?;
        let id_key = self.repo.id_key().clone();
        crate::blocking(move || {
            let mut out = Vec::with_capacity(slots.iter().map(|s| s.raw_len as usize).sum());
            for s in &slots {
                let at = (s.offset as u64 - base) as usize;
                let blob = ct
                    .get(at..at + s.len as usize)
                    .ok_or_else(|| RepoError::corrupt(&name, "short ranged read"))?;
                let data = format::open_blob(&name, pack.key_id, &key, &s.blob(), blob, &id_key)?;
                out.extend_from_slice(&data);
            }
            Ok(out)
        })
        .await
    }

    /// The plaintext of `ids`, in order, fetched a run at a time (one item per run),
    /// `READ_AHEAD` runs ahead.
    pub fn stream(&self, ids: Vec<ChunkId>) -> impl Stream<Item = Result<Vec<u8>>> + '_ {
        futures::stream::iter(self.runs(ids))
            .map(move |run| self.run(run))
            .buffered(READ_AHEAD)
    }

    /// Read a snapshot's whole tree stream into memory-backed reader. Trees are a few
    /// hundred bytes per file; a tree larger than 64 MiB is spooled to a temp file.
    pub async fn tree(
        &self,
        manifest: &Manifest,
    ) -> Result<TreeReader<Box<dyn std::io::BufRead + Send>>> {
        let ids = manifest.tree_ids()?;
        let mut spool = tempfile::SpooledTempFile::new(64 << 20);
        let mut s = std::pin::pin!(self.stream(ids));
        while let Some(chunk) = s.next().await {
            std::io::Write::write_all(&mut spool, &chunk?)?;
        }
        std::io::Seek::rewind(&mut spool)?;
        Ok(TreeReader::new(Box::new(std::io::BufReader::new(spool))))
    }
}
