//! The read path: fetch chunks by id (ranged reads of single blobs), authenticate, decompress
//! and verify each against its id before anyone sees a byte; stream a list of chunks in
//! order with bounded read-ahead.

use std::sync::Arc;

use futures::{Stream, StreamExt};

use crate::error::{RepoError, Result};
use crate::format::{self, ChunkId};
use crate::index::ChunkIndex;
use crate::repo::Repository;
use crate::snapshot::{Manifest, TreeReader};

/// Chunks fetched ahead of the writer when streaming.
pub const READ_AHEAD: usize = 8;

#[derive(Clone)]
pub struct Reader {
    repo: Arc<Repository>,
    index: Arc<ChunkIndex>,
}

impl Reader {
    pub fn new(repo: Arc<Repository>, index: Arc<ChunkIndex>) -> Result<Reader> {
        repo.master("reading data")?;
        Ok(Reader { repo, index })
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
            let r = tokio::task::spawn_blocking(move || {
                format::open_blob(&name, pack.key_id, &key, &entry, &ct, &id_key)
            })
            .await
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
            match r {
                Ok(d) => return Ok(d),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap())
    }

    /// The chunks of `ids`, in order, fetched `READ_AHEAD` at a time.
    pub fn stream(&self, ids: Vec<ChunkId>) -> impl Stream<Item = Result<Vec<u8>>> + '_ {
        futures::stream::iter(ids)
            .map(move |id| self.chunk(id))
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
