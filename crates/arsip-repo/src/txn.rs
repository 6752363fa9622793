//! The snapshot transaction: what every source goes through to add a snapshot. A
//! [`SnapshotTxn`] holds an open write session and the spooled tree stream; sources append
//! nodes with their chunks, then [`SnapshotTxn::commit`] stores the tree, makes every pack
//! and index durable and writes the manifest, last. The snapshot exists from that create on
//! and not before; an error anywhere earlier leaves only unreferenced packs (and perhaps
//! indexes), which prune removes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::format::ChunkId;
use crate::index::ChunkIndex;
use crate::maint::{Purpose, Session};
use crate::snapshot::{Manifest, Node, NodeType, TreeReader, TreeWriter};
use crate::write::{BackupSession, Progress, SessionOptions};
use crate::{RepoError, Repository, Result};

/// What describes a snapshot apart from its content.
#[derive(Debug, Clone, Default)]
pub struct SnapshotMeta {
    pub kind: String,
    pub source: String,
    pub tags: BTreeMap<String, String>,
    pub facts: BTreeMap<String, serde_json::Value>,
}

/// The outcome of a committed backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupOutcome {
    pub id: String,
    pub kind: String,
    pub logical_bytes: u64,
    pub added_bytes: u64,
    pub stored_bytes: u64,
    pub files: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub seconds: f64,
}

/// Tree nodes are spooled in memory up to this size, then to a temporary file.
const TREE_SPOOL_MEMORY: usize = 8 << 20;

/// A snapshot being written: an open session plus the spooled tree stream. Sources write
/// chunks through [`SnapshotTxn::session`], append nodes with [`SnapshotTxn::node`] and end
/// with [`SnapshotTxn::commit`] once every source-side condition holds (e.g. pg_dump
/// exited 0). Dropping it without a commit abandons the snapshot.
pub struct SnapshotTxn {
    session: Arc<BackupSession>,
    /// The writer session prune coordinates with (FORMAT.md §17).
    lease: Session,
    index: Arc<ChunkIndex>,
    tree: TreeWriter<tempfile::SpooledTempFile>,
    files: u64,
    started: jiff::Timestamp,
    clock_start: std::time::Instant,
    /// The job claim this backup runs under, if any ([`crate::guarded`]).
    guard: Option<crate::jobs::CommitGuard>,
}

impl SnapshotTxn {
    /// Load the index and open a session. Works with full and agent credentials (any
    /// handle: [`FullRepo`](crate::FullRepo), [`AgentRepo`](crate::AgentRepo), the shared
    /// `Arc<Repository>`).
    pub async fn start(repo: impl Into<Arc<Repository>>) -> Result<SnapshotTxn> {
        let repo: Arc<Repository> = repo.into();
        let started = repo.clock.now();
        // The session exists before anything is read, so prune waits for it (or fences it)
        // before deleting what this backup might reference.
        let (lease, state) = Session::open(&repo, Purpose::Backup).await?;
        let index = Arc::new(repo.load_index_with(&state).await?);
        let session = Arc::new(BackupSession::start(
            repo,
            index.clone(),
            SessionOptions::default(),
        ));
        Ok(SnapshotTxn {
            session,
            lease,
            index,
            tree: TreeWriter::new(tempfile::SpooledTempFile::new(TREE_SPOOL_MEMORY)),
            files: 0,
            started,
            clock_start: std::time::Instant::now(),
            guard: crate::jobs::current_commit_guard(),
        })
    }

    /// Stop renewing the session, as if the process had been stopped (tests of fencing).
    #[cfg(test)]
    pub(crate) fn pause_renewals(&self) {
        self.lease.pause();
    }

    pub fn progress(&self) -> Arc<Progress> {
        self.session.progress.clone()
    }

    /// The session chunks go through (its `write_stream` blocks: call it from a blocking
    /// thread).
    pub fn session(&self) -> &Arc<BackupSession> {
        &self.session
    }

    /// What the repository held when the backup started.
    pub fn index(&self) -> &Arc<ChunkIndex> {
        &self.index
    }

    /// When the backup started, by the repository's clock.
    pub fn started(&self) -> jiff::Timestamp {
        self.started
    }

    /// Date the snapshot `at` instead of its start: an import of an older backup claims
    /// when that backup was made. A claim like any writer's: readers cap it by the store's
    /// acceptance of the manifest ([`Snapshot::effective_time`](crate::snapshot::Snapshot::effective_time)),
    /// and retention ages come from the store's times whatever it says.
    pub fn claim_time(&mut self, at: jiff::Timestamp) {
        self.started = at;
    }

    /// Append one node of the snapshot's tree, with its chunks.
    pub fn node(&mut self, node: &Node, chunks: &[ChunkId]) -> Result<()> {
        if node.node_type == NodeType::File {
            self.files += 1;
        }
        self.tree.node(node, chunks)
    }

    /// Take the tree writer out to fill it on a blocking thread; give it back with
    /// [`SnapshotTxn::put_tree`], adding the number of files written into it.
    pub fn take_tree(&mut self) -> TreeWriter<tempfile::SpooledTempFile> {
        std::mem::replace(
            &mut self.tree,
            TreeWriter::new(tempfile::SpooledTempFile::new(0)),
        )
    }

    /// Give back a tree writer taken with [`SnapshotTxn::take_tree`].
    pub fn put_tree(&mut self, tree: TreeWriter<tempfile::SpooledTempFile>, files: u64) {
        self.tree = tree;
        self.files += files;
    }

    /// Store the tree, make every pack and index durable, then write the manifest: the
    /// snapshot exists from this last create on, and not before.
    pub async fn commit(self, meta: SnapshotMeta) -> Result<BackupOutcome> {
        let session = self.session.clone();
        let mut tree = self.tree.into_inner();
        let (tree_ids, tree_bytes, tree) = crate::blocking(move || {
            std::io::Seek::rewind(&mut tree)?;
            let (ids, bytes) = session.write_stream(&mut tree)?;
            Ok::<_, RepoError>((ids, bytes, tree))
        })
        .await?;
        let stats = self.session.finish().await?;
        let repo = self.session.repo().clone();
        let manifest = Manifest {
            version: 1,
            kind: meta.kind.clone(),
            source: meta.source,
            host: repo.host().to_string(),
            tags: meta.tags,
            time: self.started,
            end_time: repo.clock.now(),
            logical_bytes: stats.read_bytes - tree_bytes,
            added_bytes: stats.new_bytes,
            stored_bytes: stats.stored_bytes,
            files: self.files,
            facts: meta.facts,
            tree: tree_ids.iter().map(hex::encode).collect(),
            tree_bytes,
            session: Some(self.lease.id().to_string()),
            audit_head: repo.audit_head().await?,
        };
        self.lease.check_not_fenced().await?;
        // Last: a claimant that lost its job claim adds no second snapshot of the run.
        if let Some(guard) = &self.guard {
            guard()?;
        }
        let id = repo.commit_manifest(&manifest).await?;
        self.lease.confirm_commit(&id).await?;
        self.lease.end(Some(&id)).await;
        remember_refs(&repo, &id, tree_ids, tree_bytes, tree).await;
        Ok(BackupOutcome {
            id,
            kind: meta.kind,
            logical_bytes: manifest.logical_bytes,
            added_bytes: stats.new_bytes,
            stored_bytes: stats.stored_bytes,
            files: self.files,
            chunks: stats.chunks,
            new_chunks: stats.new_chunks,
            seconds: self.clock_start.elapsed().as_secs_f64(),
        })
    }
}

/// Trees up to this size have their references remembered at commit (about half of it in
/// memory while that is computed).
const REMEMBER_TREE_BYTES: u64 = 128 << 20;

/// With a full key, fill this host's reference cache for the snapshot just committed, from
/// the tree stream it wrote (the bytes a reader of the tree would get), so that a prune on
/// this host need not read the tree back. Best effort: a missing entry costs that one read.
async fn remember_refs(
    repo: &Arc<Repository>,
    id: &str,
    tree_ids: Vec<ChunkId>,
    tree_bytes: u64,
    mut tree: tempfile::SpooledTempFile,
) {
    let Ok(cache) = crate::prune::RefCache::of(repo) else {
        return;
    };
    if tree_bytes > REMEMBER_TREE_BYTES {
        return;
    }
    let id = id.to_string();
    let r = crate::blocking(move || {
        std::io::Seek::rewind(&mut tree)?;
        let reader = TreeReader::new(std::io::BufReader::new(tree));
        let ids = crate::prune::tree_refs(tree_ids, reader)?;
        cache.put(&id, &ids);
        Ok::<_, RepoError>(())
    })
    .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "snapshot references not remembered");
    }
}
