//! The files source: directories, files and streams walked or read into a
//! [`SnapshotTxn`], which commits one snapshot (the manifest is written last; see
//! `arsip_repo::txn`).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use arsip_repo::snapshot::{Node, NodeType, TreeWriter};
use arsip_repo::txn::{BackupOutcome, SnapshotMeta, SnapshotTxn};
use arsip_repo::write::BackupSession;
use arsip_repo::{RepoError, Result};

/// Back up files and directories (symlinks kept as links, never followed) into `txn`, then
/// commit it.
pub async fn files(
    mut txn: SnapshotTxn,
    paths: Vec<PathBuf>,
    meta: SnapshotMeta,
) -> Result<BackupOutcome> {
    let session = txn.session().clone();
    let mut tree = txn.take_tree();
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
    txn.put_tree(tree, files);
    txn.commit(meta).await
}

/// Back up one stream under `name` (e.g. a dump piped to stdin) into `txn`, then commit it.
pub async fn stream<R: Read + Send + 'static>(
    mut txn: SnapshotTxn,
    reader: R,
    name: String,
    meta: SnapshotMeta,
) -> Result<BackupOutcome> {
    let session = txn.session().clone();
    let (ids, size) = tokio::task::spawn_blocking(move || session.write_stream(reader))
        .await
        .map_err(|e| RepoError::Invalid(e.to_string()))??;
    let node = Node::stream_file(name, size, txn.started());
    txn.node(&node, &ids)?;
    txn.commit(meta).await
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
        ..Default::default()
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
