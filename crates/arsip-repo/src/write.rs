//! The write path: a backup session turns byte streams into chunk ids, stores the chunks the
//! repository does not have yet in packs, and finally writes an index and a manifest.
//!
//! Pipeline (memory is bounded by the channel sizes, whatever the input size):
//! - the caller's thread reads and chunks (FastCDC, or fixed blocks for relation files),
//!   hashes each chunk (keyed BLAKE3) and drops those the index already holds with enough
//!   trust or this session has queued (a bounded set);
//! - `workers` threads compress (zstd) and encrypt into one open pack each;
//! - full packs go to an async uploader with at most `uploads` PUTs in flight.
//!
//! Ordering, which is what makes crashes harmless: a pack is acknowledged durable before
//! any index names it; an index is durable before the manifest that needs it is written; the
//! manifest is written last. Everything is create-only; nothing is ever deleted.

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;

use crate::chunker::Chunker;
use crate::crypto;
use crate::error::{RepoError, Result};
use crate::format::{
    self, BlobEntry, ChunkId, FinishedPack, IndexEntry, IndexPack, PackBuilder, FLAG_ZSTD,
};
use crate::index::ChunkIndex;
use crate::keys::ChunkerParams;
use crate::repo::{Repository, INDEX_PREFIX};

/// Entries per index object: 100 k entries ≈ 5 MiB.
const INDEX_FLUSH_ENTRIES: usize = 100_000;

/// Live counters of a session, read by progress displays.
#[derive(Debug, Default)]
pub struct Progress {
    pub read_bytes: AtomicU64,
    pub chunks: AtomicU64,
    pub new_chunks: AtomicU64,
    pub new_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub packs: AtomicU64,
}

/// What a finished session added.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    pub read_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub packs: u64,
    pub indexes: u64,
}

/// Bytes of new chunks handed to a pack worker as one job (and read in one go by
/// [`BackupSession::write_blocks`]): small chunks cost one channel hand-off per batch, not one
/// per chunk, and the job queue holds a few MiB rather than a few chunks.
const BATCH: usize = 1 << 20;

/// Ids per generation of [`Pending`]: at most ≈ 33 MiB of hash table each (2^20 buckets of a
/// 32-byte id and a control byte), two generations alive.
const PENDING_GENERATION: usize = 1 << 19;

/// The chunk ids this session has queued, so that a chunk met twice is stored once. Bounded
/// whatever the backup's size: when the current generation is full it becomes the previous
/// one and the older ids are forgotten; an id found in the previous generation moves to the
/// current one, so ids that keep recurring (zero pages, a repeated file) stay. Forgetting an
/// id costs at most a second stored copy of that chunk, which readers accept like any copy
/// (FORMAT.md §11.3), never a missing chunk.
struct Pending {
    generation: usize,
    current: HashSet<ChunkId>,
    previous: HashSet<ChunkId>,
}

impl Pending {
    fn new(generation: usize) -> Pending {
        Pending {
            generation,
            current: HashSet::new(),
            previous: HashSet::new(),
        }
    }

    /// Remember `id`; true if this session had not queued it (as far as it remembers).
    fn insert(&mut self, id: ChunkId) -> bool {
        if self.current.contains(&id) {
            return false;
        }
        let seen = self.previous.remove(&id);
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(id);
        !seen
    }
}

/// New chunks for a pack worker: `(id, offset, len)` ranges of `data`, in order. `data` may
/// also hold bytes between them that the repository already has.
struct Job {
    data: Vec<u8>,
    chunks: Vec<(ChunkId, usize, usize)>,
}

/// The first error of the pipeline's stages (a pack worker, the uploader), kept so that
/// whichever caller notices first that the pipeline stopped (a stream's hand-off, or
/// `finish`) reports the cause, with its path and class, rather than "it stopped".
#[derive(Debug, Default)]
struct FirstError(Mutex<Option<RepoError>>);

impl FirstError {
    /// Keep `e` if it is the first; return what the failing stage itself returns.
    fn record(&self, e: RepoError) -> RepoError {
        self.0.lock().unwrap().get_or_insert(e);
        RepoError::Internal("the upload pipeline stopped (its cause is reported)".into())
    }

    /// The recorded cause, else `fallback`.
    fn cause_or(&self, fallback: RepoError) -> RepoError {
        self.0.lock().unwrap().take().unwrap_or(fallback)
    }
}

pub struct BackupSession {
    repo: Arc<Repository>,
    known: Arc<ChunkIndex>,
    pending: Mutex<Pending>,
    jobs: Mutex<Option<mpsc::SyncSender<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<Result<()>>>>,
    uploader: Mutex<Option<tokio::task::JoinHandle<Result<u64>>>>,
    failure: Arc<FirstError>,
    pub progress: Arc<Progress>,
}

/// Tuning of a session; defaults suit 2–8 cores.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub workers: usize,
    pub uploads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        SessionOptions {
            workers: cores.clamp(1, 8),
            uploads: 2,
        }
    }
}

impl BackupSession {
    /// Start a session. Must be called inside a tokio runtime.
    pub fn start(
        repo: Arc<Repository>,
        known: Arc<ChunkIndex>,
        opts: SessionOptions,
    ) -> BackupSession {
        let progress = Arc::new(Progress::default());
        let failure = Arc::new(FirstError::default());
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(opts.workers * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);
        let mut workers = Vec::new();
        for n in 0..opts.workers {
            let rx = job_rx.clone();
            let tx = pack_tx.clone();
            let repo = repo.clone();
            let progress = progress.clone();
            let failure = failure.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("arsip-pack-{n}"))
                    .spawn(move || {
                        pack_worker(&repo, &rx, &tx, &progress).map_err(|e| failure.record(e))
                    })
                    .expect("spawn pack worker"),
            );
        }
        drop(pack_tx);
        let uploader = tokio::spawn(upload_loop(
            repo.clone(),
            pack_rx,
            opts.uploads,
            progress.clone(),
            failure.clone(),
        ));
        BackupSession {
            repo,
            known,
            pending: Mutex::new(Pending::new(PENDING_GENERATION)),
            jobs: Mutex::new(Some(job_tx)),
            workers: Mutex::new(workers),
            uploader: Mutex::new(Some(uploader)),
            failure,
            progress,
        }
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Chunk and store a stream; returns its chunk ids in order and its length. Blocking:
    /// call from a blocking thread (`spawn_blocking`), never from an async task.
    pub fn write_stream<R: Read>(&self, reader: R) -> Result<(Vec<ChunkId>, u64)> {
        self.write_stream_with(reader, self.repo.config.chunker)
    }

    /// [`write_stream`](Self::write_stream) with other chunk sizes than the repository's
    /// (still its secret seed), for streams whose changes are small and scattered, such as
    /// database dumps. Readers never re-chunk, so any sizes make a valid repository; only
    /// deduplication depends on using the same sizes from one backup to the next.
    pub fn write_stream_with<R: Read>(
        &self,
        reader: R,
        params: ChunkerParams,
    ) -> Result<(Vec<ChunkId>, u64)> {
        params.validate()?;
        let jobs = self.job_sender()?;
        let mut chunker = Chunker::new(reader, params, self.repo.chunker_seed());
        let mut ids = Vec::new();
        let mut total = 0u64;
        let new_job = || Job {
            data: Vec::new(),
            chunks: Vec::new(),
        };
        let mut job = new_job();
        let read = (|| -> Result<()> {
            while let Some(chunk) = chunker.next_chunk()? {
                let len = chunk.len();
                total += len as u64;
                let id = crypto::chunk_id(self.repo.id_key(), chunk);
                ids.push(id);
                if self.admit(&id, len) {
                    if job.data.capacity() == 0 {
                        // Room for a full batch plus the chunk that crosses its end, so no
                        // reallocation; only a stream's last chunk is shorter than `min`, so
                        // a small stream gets just what it needs.
                        job.data.reserve(if len < params.min as usize {
                            len
                        } else {
                            BATCH + params.max as usize
                        });
                    }
                    job.chunks.push((id, job.data.len(), len));
                    job.data.extend_from_slice(chunk);
                    if job.data.len() >= BATCH {
                        self.send(&jobs, std::mem::replace(&mut job, new_job()))?;
                    }
                }
            }
            Ok(())
        })();
        // Admitted ids are in the session's queued set: their chunks must reach a pack even
        // when the stream fails, or a later stream of this session would skip them.
        if !job.chunks.is_empty() {
            self.send(&jobs, job)?;
        }
        read?;
        Ok((ids, total))
    }

    /// Store a stream cut into fixed blocks of `block` bytes (the last one shorter), for data
    /// that changes in place at fixed offsets, such as relation files changing page by page.
    /// Blocking, like [`write_stream`](Self::write_stream).
    pub fn write_blocks<R: Read>(&self, reader: R, block: usize) -> Result<(Vec<ChunkId>, u64)> {
        // Readers refuse larger chunks (FORMAT.md §10.2); config validation allows ≤ 4 MiB.
        if block == 0 || block > format::MAX_CHUNK_LEN as usize {
            return Err(RepoError::Internal(format!(
                "block size {block} out of range"
            )));
        }
        let jobs = self.job_sender()?;
        let batch = (BATCH / block).max(1) * block;
        let mut reader = reader.take(u64::MAX);
        let mut ids = Vec::new();
        let mut total = 0u64;
        loop {
            let mut data = Vec::with_capacity(batch);
            reader.set_limit(batch as u64);
            // read_to_end retries short reads and EINTR; it stops at `batch` bytes or EOF.
            let n = reader.read_to_end(&mut data)?;
            total += n as u64;
            let mut chunks = Vec::new();
            for (i, piece) in data.chunks(block).enumerate() {
                let id = crypto::chunk_id(self.repo.id_key(), piece);
                ids.push(id);
                if self.admit(&id, piece.len()) {
                    chunks.push((id, i * block, piece.len()));
                }
            }
            if !chunks.is_empty() {
                self.send(&jobs, Job { data, chunks })?;
            }
            if n < batch {
                break;
            }
        }
        Ok((ids, total))
    }

    /// Store chunks whose ids are known and verified (prune's repack), each as it is: no
    /// chunking, no deduplication against the index (only against this session). Blocks:
    /// call it from a blocking thread.
    pub(crate) fn store_chunks(&self, chunks: Vec<(ChunkId, Vec<u8>)>) -> Result<()> {
        let jobs = self.job_sender()?;
        let mut job = Job {
            data: Vec::new(),
            chunks: Vec::new(),
        };
        for (id, raw) in chunks {
            if !self.pending.lock().unwrap().insert(id) {
                continue;
            }
            let p = &self.progress;
            for c in [&p.read_bytes, &p.new_bytes] {
                c.fetch_add(raw.len() as u64, Ordering::Relaxed);
            }
            p.new_chunks.fetch_add(1, Ordering::Relaxed);
            job.chunks.push((id, job.data.len(), raw.len()));
            job.data.extend_from_slice(&raw);
            if job.data.len() >= BATCH {
                let full = std::mem::replace(
                    &mut job,
                    Job {
                        data: Vec::new(),
                        chunks: Vec::new(),
                    },
                );
                self.send(&jobs, full)?;
            }
        }
        if !job.chunks.is_empty() {
            self.send(&jobs, job)?;
        }
        Ok(())
    }

    /// Store a small in-memory buffer (e.g. a tree stream spooled to memory).
    pub fn write_bytes(&self, data: &[u8]) -> Result<(Vec<ChunkId>, u64)> {
        self.write_stream(data)
    }

    fn job_sender(&self) -> Result<mpsc::SyncSender<Job>> {
        self.jobs
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| RepoError::Internal("session finished".into()))
    }

    /// Count a chunk of `len` bytes with id `id`; true if it must be stored, i.e. neither
    /// the repository (with enough trust) nor this session has it yet.
    fn admit(&self, id: &ChunkId, len: usize) -> bool {
        let len = len as u64;
        self.progress.read_bytes.fetch_add(len, Ordering::Relaxed);
        self.progress.chunks.fetch_add(1, Ordering::Relaxed);
        let new = !self.known.dedupable(id) && self.pending.lock().unwrap().insert(*id);
        if new {
            self.progress.new_chunks.fetch_add(1, Ordering::Relaxed);
            self.progress.new_bytes.fetch_add(len, Ordering::Relaxed);
        }
        new
    }

    fn send(&self, jobs: &mpsc::SyncSender<Job>, job: Job) -> Result<()> {
        // Every pack worker has stopped: one of the stages failed and recorded why.
        jobs.send(job).map_err(|_| {
            self.failure
                .cause_or(RepoError::Internal("the upload pipeline stopped".into()))
        })
    }

    /// Flush every pack and write the final index. After `Ok`, every chunk the session
    /// returned an id for is durable and indexed; a manifest may now refer to them.
    pub async fn finish(&self) -> Result<SessionStats> {
        drop(self.jobs.lock().unwrap().take());
        let workers: Vec<_> = std::mem::take(&mut *self.workers.lock().unwrap());
        let worker_result = crate::blocking(move || {
            let mut first = Ok(());
            for w in workers {
                let r = w
                    .join()
                    .unwrap_or_else(|_| Err(RepoError::Internal("pack worker panicked".into())));
                if first.is_ok() {
                    first = r;
                }
            }
            first
        })
        .await;
        let uploader = self
            .uploader
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| RepoError::Internal("session finished twice".into()))?;
        let indexes = uploader
            .await
            .map_err(|e| RepoError::Internal(e.to_string()))
            .and_then(|r| r)
            .and_then(|n| worker_result.map(|()| n))
            .map_err(|e| self.failure.cause_or(e))?;
        let p = &self.progress;
        Ok(SessionStats {
            read_bytes: p.read_bytes.load(Ordering::Relaxed),
            chunks: p.chunks.load(Ordering::Relaxed),
            new_chunks: p.new_chunks.load(Ordering::Relaxed),
            new_bytes: p.new_bytes.load(Ordering::Relaxed),
            stored_bytes: p.stored_bytes.load(Ordering::Relaxed),
            packs: p.packs.load(Ordering::Relaxed),
            indexes,
        })
    }
}

fn pack_worker(
    repo: &Repository,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    packs: &tokio::sync::mpsc::Sender<FinishedPack>,
    progress: &Progress,
) -> Result<()> {
    let level = repo.config.compression_level;
    let target = repo.config.pack_size as usize;
    let mut compressor = if level > 0 {
        Some(zstd::bulk::Compressor::new(level)?)
    } else {
        None
    };
    let mut pack: Option<PackBuilder> = None;
    let mut out = Vec::new();
    loop {
        let job = jobs.lock().unwrap().recv();
        let Ok(job) = job else { break };
        for &(id, offset, len) in &job.chunks {
            let raw = &job.data[offset..offset + len];
            let mut flags = 0;
            let stored: &[u8] = match &mut compressor {
                Some(c) => {
                    out.clear();
                    out.reserve(zstd::zstd_safe::compress_bound(len));
                    c.compress_to_buffer(raw, &mut out)?;
                    // Store incompressible chunks raw: not worth the decompression on restore.
                    if out.len() + len / 32 < len {
                        flags |= FLAG_ZSTD;
                        &out
                    } else {
                        raw
                    }
                }
                None => raw,
            };
            let pb = pack.get_or_insert_with(|| PackBuilder::new(repo.public_key(), 0, target));
            pb.add(id, stored, len as u32, flags);
            if pb.len() >= target {
                let fp = pack.take().unwrap().finish();
                progress.packs.fetch_add(1, Ordering::Relaxed);
                if packs.blocking_send(fp).is_err() {
                    return Ok(()); // the uploader failed and recorded why
                }
            }
        }
    }
    if let Some(pb) = pack.take().filter(|p| !p.is_empty()) {
        progress.packs.fetch_add(1, Ordering::Relaxed);
        if packs.blocking_send(pb.finish()).is_err() {
            return Ok(()); // the uploader failed and recorded why
        }
    }
    Ok(())
}

/// Upload finished packs and write indexes; a failure is recorded in `failure` while the
/// pack channel is still open, so that the stages it stops find the cause.
async fn upload_loop(
    repo: Arc<Repository>,
    mut rx: tokio::sync::mpsc::Receiver<FinishedPack>,
    concurrency: usize,
    progress: Arc<Progress>,
    failure: Arc<FirstError>,
) -> Result<u64> {
    let r = upload_packs(repo, &mut rx, concurrency, progress).await;
    r.map_err(|e| failure.record(e))
}

async fn upload_packs(
    repo: Arc<Repository>,
    rx: &mut tokio::sync::mpsc::Receiver<FinishedPack>,
    concurrency: usize,
    progress: Arc<Progress>,
) -> Result<u64> {
    let mut done = tokio_stream_from(rx)
        .map(|fp| {
            let repo = repo.clone();
            let progress = progress.clone();
            async move {
                let size = fp.bytes.len() as u64;
                repo.store
                    .create(&format::pack_key_name(&fp.id), Bytes::from(fp.bytes))
                    .await?;
                progress.stored_bytes.fetch_add(size, Ordering::Relaxed);
                Ok::<_, RepoError>((
                    IndexPack {
                        id: fp.id,
                        key: fp.key,
                        size,
                        key_id: 0,
                    },
                    fp.entries,
                ))
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut packs: Vec<IndexPack> = Vec::new();
    let mut entries: Vec<IndexEntry> = Vec::new();
    let mut indexes = 0;
    while let Some(r) = done.next().await {
        let (pack, blobs) = r?;
        let n = packs.len() as u32;
        packs.push(pack);
        entries.extend(
            blobs
                .into_iter()
                .map(|blob: BlobEntry| IndexEntry { pack: n, blob }),
        );
        if entries.len() >= INDEX_FLUSH_ENTRIES {
            write_index(
                &repo,
                &std::mem::take(&mut packs),
                &std::mem::take(&mut entries),
            )
            .await?;
            indexes += 1;
        }
    }
    if !entries.is_empty() {
        write_index(&repo, &packs, &entries).await?;
        indexes += 1;
    }
    Ok(indexes)
}

fn tokio_stream_from<T: Send>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + '_ {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub(crate) async fn write_index(
    repo: &Repository,
    packs: &[IndexPack],
    entries: &[IndexEntry],
) -> Result<()> {
    let obj = format::encode_index(
        &repo.writer_id,
        repo.signer(),
        repo.public_key(),
        packs,
        entries,
    );
    let name = format!("{INDEX_PREFIX}{}", blake3::hash(&obj).to_hex());
    repo.store.create(&name, Bytes::from(obj)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChunkId {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn pending_is_bounded_and_keeps_recurring_ids() {
        let mut p = Pending::new(4);
        assert!(p.insert(id(0)));
        assert!(!p.insert(id(0)));
        for n in 1..100 {
            assert!(p.insert(id(n)), "{n} is new");
            // id 0 recurs all the time: it must never be reported new again
            assert!(!p.insert(id(0)));
            assert!(p.current.len() + p.previous.len() <= 8);
        }
        // ids met once long ago are forgotten: a second copy, never a missing one
        assert!(p.insert(id(1)));
        assert!(!p.insert(id(99)));
    }
}
