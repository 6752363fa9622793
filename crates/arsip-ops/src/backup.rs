//! Backups of files and streams: walk or read the source, write it through a
//! [`BackupSession`], then commit one snapshot. The snapshot is the last object written; an
//! error anywhere before it leaves only unreferenced packs (and perhaps indexes) behind.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arsip_repo::format::ChunkId;
use arsip_repo::index::ChunkIndex;
use arsip_repo::snapshot::{Manifest, Node, NodeType, TreeWriter};
use arsip_repo::write::{BackupSession, Progress, SessionOptions};
use arsip_repo::{RepoError, Repository, Result};

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

/// A backup in progress: an open session plus the spooled tree stream. Sources either use
/// the ready-made [`Backup::files`] / [`Backup::stream`], or write nodes themselves
/// ([`Backup::node`], [`Backup::session`]) and end with [`Backup::commit`] once every
/// source-side condition holds (e.g. pg_dump exited 0).
pub struct Backup {
    session: Arc<BackupSession>,
    index: Arc<ChunkIndex>,
    tree: TreeWriter<tempfile::SpooledTempFile>,
    files: u64,
    started: jiff::Timestamp,
    clock_start: std::time::Instant,
}

impl Backup {
    /// Load the index and open a session. Works with full and agent credentials.
    pub async fn start(repo: Arc<Repository>) -> Result<Backup> {
        let started = repo.clock.now();
        let index = Arc::new(repo.load_index().await?);
        let session = Arc::new(BackupSession::start(
            repo,
            index.clone(),
            SessionOptions::default(),
        ));
        Ok(Backup {
            session,
            index,
            tree: TreeWriter::new(tempfile::SpooledTempFile::new(8 << 20)),
            files: 0,
            started,
            clock_start: std::time::Instant::now(),
        })
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

    /// Append one node of the snapshot's tree, with its chunks.
    pub fn node(&mut self, node: &Node, chunks: &[ChunkId]) -> Result<()> {
        if node.node_type == NodeType::File {
            self.files += 1;
        }
        self.tree.node(node, chunks)
    }

    /// Back up files and directories (symlinks kept as links, never followed).
    pub async fn files(mut self, paths: Vec<PathBuf>, meta: SnapshotMeta) -> Result<BackupOutcome> {
        let session = self.session.clone();
        let mut tree = std::mem::replace(
            &mut self.tree,
            TreeWriter::new(tempfile::SpooledTempFile::new(0)),
        );
        let (tree, files) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut files = 0u64;
            for p in &paths {
                let abs = std::path::absolute(p)?;
                let meta = std::fs::symlink_metadata(&abs).map_err(|e| {
                    RepoError::Invalid(format!("cannot back up {}: {e}", abs.display()))
                })?;
                // Ancestors first, so a restore recreates the directory structure.
                let rel = relative(&abs);
                let mut prefix = PathBuf::new();
                for comp in rel.parent().into_iter().flat_map(|p| p.components()) {
                    prefix.push(comp);
                    let m = std::fs::symlink_metadata(Path::new("/").join(&prefix))?;
                    tree.node(&node_for(&prefix, &m, None)?, &[])?;
                }
                walk(&session, &mut tree, &abs, &meta, &mut files)?;
            }
            Ok((tree, files))
        })
        .await
        .map_err(|e| RepoError::Invalid(e.to_string()))??;
        self.tree = tree;
        self.files += files;
        self.commit(meta).await
    }

    /// Back up one stream under `name` (e.g. a dump piped to stdin).
    pub async fn stream<R: Read + Send + 'static>(
        mut self,
        reader: R,
        name: String,
        meta: SnapshotMeta,
    ) -> Result<BackupOutcome> {
        let session = self.session.clone();
        let (ids, size) = tokio::task::spawn_blocking(move || session.write_stream(reader))
            .await
            .map_err(|e| RepoError::Invalid(e.to_string()))??;
        let node = Node::stream_file(name, size, self.started);
        self.node(&node, &ids)?;
        self.commit(meta).await
    }

    /// Store the tree, make every pack and index durable, then write the manifest: the
    /// snapshot exists from this last create on, and not before.
    pub async fn commit(self, meta: SnapshotMeta) -> Result<BackupOutcome> {
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
            kind: meta.kind.clone(),
            source: meta.source,
            host: arsip_repo::keys::hostname(),
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
        };
        let id = repo.commit_manifest(&manifest).await?;
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

fn relative(abs: &Path) -> PathBuf {
    abs.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

fn node_for(rel: &Path, m: &std::fs::Metadata, target: Option<String>) -> Result<Node> {
    let path = rel
        .to_str()
        .ok_or_else(|| RepoError::Invalid(format!("path is not UTF-8: {}", rel.display())))?
        .to_string();
    let ft = m.file_type();
    let node_type = if ft.is_symlink() {
        NodeType::Symlink
    } else if ft.is_dir() {
        NodeType::Dir
    } else {
        NodeType::File
    };
    let mtime = jiff::Timestamp::new(m.mtime(), m.mtime_nsec() as i32).ok();
    Ok(Node {
        path,
        node_type,
        mode: m.mode() & 0o7777,
        mtime,
        size: if ft.is_file() { m.len() } else { 0 },
        target,
        uid: Some(m.uid()),
        gid: Some(m.gid()),
    })
}

fn walk(
    session: &BackupSession,
    tree: &mut TreeWriter<tempfile::SpooledTempFile>,
    abs: &Path,
    m: &std::fs::Metadata,
    files: &mut u64,
) -> Result<()> {
    let rel = relative(abs);
    let ft = m.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(abs)?;
        let t = target.to_str().ok_or_else(|| {
            RepoError::Invalid(format!("symlink target not UTF-8: {}", abs.display()))
        })?;
        tree.node(&node_for(&rel, m, Some(t.to_string()))?, &[])?;
    } else if ft.is_dir() {
        tree.node(&node_for(&rel, m, None)?, &[])?;
        let mut entries: Vec<_> = std::fs::read_dir(abs)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            match std::fs::symlink_metadata(&p) {
                Ok(cm) => walk(session, tree, &p, &cm, files)?,
                // Vanished between listing and reading: nothing to keep.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err.into()),
            }
        }
    } else if ft.is_file() {
        let f = std::fs::File::open(abs)
            .map_err(|e| RepoError::Invalid(format!("cannot read {}: {e}", abs.display())))?;
        let (ids, size) = session.write_stream(f)?;
        let mut node = node_for(&rel, m, None)?;
        node.size = size;
        tree.node(&node, &ids)?;
        *files += 1;
    } else {
        tracing::warn!(path = %abs.display(), "skipping special file (device, socket or FIFO)");
    }
    Ok(())
}
