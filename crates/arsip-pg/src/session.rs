//! A backup session with a tree the PostgreSQL sources write node by node, committed as one
//! snapshot after every source-side condition holds (pg_dump exited 0, the base backup's WAL
//! is archived). Mirrors `arsip_ops::backup::Backup` but leaves the commit to the caller.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use arsip_ops::backup::BackupOutcome;
use arsip_repo::format::ChunkId;
use arsip_repo::snapshot::{Manifest, Node, TreeWriter};
use arsip_repo::write::{BackupSession, SessionOptions};
use arsip_repo::{RepoError, Repository};

use crate::error::Result;

pub struct PgSession {
    pub session: Arc<BackupSession>,
    /// What the repository held when the session started (own and trusted chunks).
    pub index: Arc<arsip_repo::index::ChunkIndex>,
    pub tree: TreeWriter<tempfile::SpooledTempFile>,
    pub files: u64,
    pub started: jiff::Timestamp,
    clock_start: std::time::Instant,
}

impl PgSession {
    pub async fn start(repo: Arc<Repository>) -> Result<PgSession> {
        let started = repo.clock.now();
        let index = Arc::new(repo.load_index().await?);
        let session = Arc::new(BackupSession::start(
            repo,
            index.clone(),
            SessionOptions::default(),
        ));
        Ok(PgSession {
            session,
            index,
            tree: TreeWriter::new(tempfile::SpooledTempFile::new(8 << 20)),
            files: 0,
            started,
            clock_start: std::time::Instant::now(),
        })
    }

    pub fn repo(&self) -> &Arc<Repository> {
        self.session.repo()
    }

    /// Store a stream (blocking: call from a blocking thread).
    pub fn write_stream<R: Read>(session: &BackupSession, r: R) -> Result<(Vec<ChunkId>, u64)> {
        Ok(session.write_stream(r)?)
    }

    pub fn node(&mut self, node: &Node, chunks: &[ChunkId]) -> Result<()> {
        if node.node_type == arsip_repo::snapshot::NodeType::File {
            self.files += 1;
        }
        Ok(self.tree.node(node, chunks)?)
    }

    /// Write the tree, finish the session (packs and index durable), then the manifest.
    pub async fn commit(
        self,
        kind: &str,
        source: String,
        tags: BTreeMap<String, String>,
        facts: BTreeMap<String, serde_json::Value>,
    ) -> Result<BackupOutcome> {
        let session = self.session.clone();
        let mut tree = self.tree.into_inner();
        let (tree_ids, tree_bytes) = tokio::task::spawn_blocking(move || {
            std::io::Seek::rewind(&mut tree)?;
            session.write_stream(tree)
        })
        .await
        .map_err(|e| RepoError::Invalid(e.to_string()))??;
        let stats = self.session.finish().await?;
        let repo = self.session.repo().clone();
        let manifest = Manifest {
            version: 1,
            kind: kind.into(),
            source,
            host: arsip_repo::keys::hostname(),
            tags,
            time: self.started,
            end_time: repo.clock.now(),
            logical_bytes: stats.read_bytes - tree_bytes,
            added_bytes: stats.new_bytes,
            stored_bytes: stats.stored_bytes,
            files: self.files,
            facts,
            tree: tree_ids.iter().map(hex::encode).collect(),
            tree_bytes,
        };
        let id = repo.commit_manifest(&manifest).await?;
        Ok(BackupOutcome {
            id,
            kind: kind.into(),
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
