//! Restores: a snapshot's tree into a directory, or its single stream to a writer.
//!
//! A snapshot is untrusted input. Paths that are absolute, contain `..`, or would pass
//! through a symlink (one in the snapshot or one already in the target) are refused. Every
//! file is written under a temporary name in its final directory and renamed into place only
//! after all its chunks authenticated; a failure leaves no file that looks restored.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use arsip_repo::read::Reader;
use arsip_repo::snapshot::{Node, NodeType, Snapshot};
use arsip_repo::{RepoError, Result};
use futures::StreamExt;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreOutcome {
    pub snapshot: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Validate a tree path and join it under `root`, refusing anything that escapes.
pub fn safe_join(root: &Path, path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Err(RepoError::Invalid(format!(
            "refusing unsafe path {path:?} in snapshot (absolute or empty)"
        )));
    }
    let mut out = root.to_path_buf();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => {
                return Err(RepoError::Invalid(format!(
                    "refusing unsafe path {path:?} in snapshot (contains ..)"
                )))
            }
        }
    }
    // No component between root and the entry may be a symlink: a snapshot could otherwise
    // plant `a -> /etc` and then write `a/passwd`.
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = p
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(RepoError::Invalid(format!(
                    "refusing path {path:?}: {} is a symlink",
                    cur.display()
                )))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A subtree of a snapshot restored outside the target directory: the tree path `prefix`
/// (a directory) becomes `dir`, and everything under it goes under `dir`. Used for
/// PostgreSQL tablespaces, which live outside the data directory. `dir` comes from the
/// operator, not from the snapshot; paths below it are checked like any other.
#[derive(Debug, Clone)]
pub struct Graft {
    pub prefix: String,
    pub dir: PathBuf,
}

/// Where a tree path is restored: under the graft whose prefix holds it, else under `root`.
fn resolve(root: &Path, grafts: &[Graft], path: &str) -> Result<PathBuf> {
    for g in grafts {
        if path == g.prefix {
            return Ok(g.dir.clone());
        }
        if let Some(rest) = path
            .strip_prefix(g.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            return safe_join(&g.dir, rest);
        }
    }
    safe_join(root, path)
}

/// Runs of chunks (one ranged read each, `Reader::runs`) in flight ahead of the writer during
/// a directory restore, across file boundaries.
const DIR_READ_AHEAD: usize = 16;
/// Threads that fsync and rename finished files while the next ones are written.
const FINISHERS: usize = 2;

/// One step of a directory restore, in tree order: a node, then (for a file) its chunks.
enum Step {
    Node(Node),
    Data(Vec<u8>),
    EndFile,
}

/// What the fetch stage does with one entry of the expanded tree.
enum Work {
    /// Fetch, authenticate and decompress this run of chunks into one `Step::Data`.
    Fetch(arsip_repo::read::Run),
    /// Hand this step to the writer as it is.
    Pass(Step),
}

/// Restore a snapshot's tree into `target` (created if missing).
///
/// Three stages overlap: chunks are fetched (a run of adjacent ones per ranged read),
/// authenticated and decompressed up to [`DIR_READ_AHEAD`] runs ahead (across file
/// boundaries, so small files do not stall); one writer thread creates entries in tree order;
/// [`FINISHERS`] threads fsync each finished file and only then rename it into place, so the
/// disk flushes one file while the next is written. Directory metadata and directory fsyncs
/// come last.
pub async fn to_dir(
    reader: &Reader,
    snap: &Snapshot,
    target: &Path,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<RestoreOutcome> {
    to_dir_grafted(reader, snap, target, &[], on_bytes).await
}

/// [`to_dir`] with some subtrees restored elsewhere ([`Graft`]).
pub async fn to_dir_grafted(
    reader: &Reader,
    snap: &Snapshot,
    target: &Path,
    grafts: &[Graft],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<RestoreOutcome> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(target)?;
    let root = target.canonicalize()?;
    let grafts = grafts.to_vec();
    let mut tree = reader.tree(&snap.manifest).await?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Step>(DIR_READ_AHEAD);
    let snap_label = format!("snapshot {}", snap.short_id());
    let writer = tokio::task::spawn_blocking(move || write_tree(&root, &grafts, rx, &snap_label));

    // Tree nodes expanded into steps; a tree error ends the sequence with that error.
    let mut queue = std::collections::VecDeque::new();
    let mut tree_done = false;
    let work = std::iter::from_fn(move || loop {
        if let Some(w) = queue.pop_front() {
            return Some(w);
        }
        if tree_done {
            return None;
        }
        match tree.next_node() {
            Ok(Some((node, chunks))) => {
                let file = node.node_type == NodeType::File;
                queue.push_back(Ok(Work::Pass(Step::Node(node))));
                if file {
                    queue.extend(reader.runs(chunks).map(|r| Ok(Work::Fetch(r))));
                    queue.push_back(Ok(Work::Pass(Step::EndFile)));
                }
            }
            Ok(None) => tree_done = true,
            Err(e) => {
                tree_done = true;
                queue.push_back(Err(e));
            }
        }
    });
    let mut steps = std::pin::pin!(futures::stream::iter(work)
        .map(|w: Result<Work>| async move {
            match w? {
                Work::Fetch(run) => reader.run(run).await.map(Step::Data),
                Work::Pass(step) => Ok(step),
            }
        })
        .buffered(DIR_READ_AHEAD));
    let mut fetch_err = None;
    while let Some(step) = steps.next().await {
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                fetch_err = Some(e);
                break;
            }
        };
        if let Step::Data(d) = &step {
            on_bytes(d.len() as u64);
        }
        if tx.send(step).await.is_err() {
            break; // the writer failed; its error is returned below
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| RepoError::Invalid(format!("restore writer: {e}")))?;
    // A fetch error is the root cause: the writer only saw its input end early.
    if let Some(e) = fetch_err {
        return Err(e);
    }
    let mut out = written?;
    out.snapshot = snap.id.clone();
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// A file written in full under its temporary name, waiting for fsync and rename.
struct Finished {
    file: std::fs::File,
    tmp: PathBuf,
    dest: PathBuf,
}

/// The writer stage of [`to_dir`]: creates entries in tree order and hands finished files
/// to the finisher threads. A partial file (input ended early, or an error) is removed.
fn write_tree(
    root: &Path,
    grafts: &[Graft],
    mut rx: tokio::sync::mpsc::Receiver<Step>,
    snap_label: &str,
) -> Result<RestoreOutcome> {
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut out = RestoreOutcome::default();
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Finished>(64);
    let done_rx = std::sync::Mutex::new(done_rx);
    let failed = std::sync::Mutex::new(None::<RepoError>);
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..FINISHERS {
            s.spawn(|| finisher(&done_rx, &failed));
        }
        // The file being written: (handle, temp path, final path, node, bytes so far).
        let mut open: Option<(std::fs::File, PathBuf, PathBuf, Node, u64)> = None;
        let result = (|| -> Result<()> {
            while let Some(step) = rx.blocking_recv() {
                match step {
                    Step::Node(node) => {
                        let dest = resolve(root, grafts, &node.path)?;
                        match node.node_type {
                            NodeType::Dir => {
                                match std::fs::symlink_metadata(&dest) {
                                    Ok(m) if m.is_dir() => {}
                                    Ok(_) => {
                                        return Err(RepoError::Invalid(format!(
                                            "{} exists and is not a directory",
                                            dest.display()
                                        )))
                                    }
                                    Err(_) => std::fs::create_dir_all(&dest)?,
                                }
                                out.dirs += 1;
                                dirs.push((dest, node));
                            }
                            NodeType::Symlink => {
                                let target = node.target.clone().unwrap_or_default();
                                if let Some(parent) = dest.parent() {
                                    std::fs::create_dir_all(parent)?;
                                }
                                let _ = std::fs::remove_file(&dest);
                                std::os::unix::fs::symlink(&target, &dest)?;
                                if is_root {
                                    if let (Some(u), Some(g)) = (node.uid, node.gid) {
                                        let _ = std::os::unix::fs::lchown(&dest, Some(u), Some(g));
                                    }
                                }
                                out.symlinks += 1;
                            }
                            NodeType::Fifo | NodeType::CharDevice | NodeType::BlockDevice => {
                                // Not yet restored: special files are recorded by newer
                                // backups; creating them is the restore's next step.
                                tracing::warn!(path = %dest.display(), "special file not restored");
                            }
                            NodeType::File => {
                                if failed.lock().unwrap().is_some() {
                                    break; // a finisher failed; stop writing
                                }
                                if let Some(parent) = dest.parent() {
                                    std::fs::create_dir_all(parent)?;
                                }
                                let name =
                                    dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
                                let tmp = dest.with_file_name(format!(".{name}.arsip-tmp"));
                                let f = std::fs::OpenOptions::new()
                                    .write(true)
                                    .create(true)
                                    .truncate(true)
                                    .mode_private()
                                    .open(&tmp)?;
                                open = Some((f, tmp, dest, node, 0));
                            }
                        }
                    }
                    Step::Data(d) => {
                        let (f, _, _, _, n) = open
                            .as_mut()
                            .ok_or_else(|| RepoError::Invalid("chunk outside a file".into()))?;
                        f.write_all(&d)?;
                        *n += d.len() as u64;
                    }
                    Step::EndFile => {
                        let (file, tmp, dest, node, written) = open
                            .take()
                            .ok_or_else(|| RepoError::Invalid("end outside a file".into()))?;
                        if written != node.size {
                            let _ = std::fs::remove_file(&tmp);
                            return Err(RepoError::corrupt(
                                snap_label.to_string(),
                                format!(
                                    "{} restored {written} bytes, the tree records {}",
                                    node.path, node.size
                                ),
                            ));
                        }
                        apply_meta(&file, &node, is_root)?;
                        out.files += 1;
                        out.bytes += written;
                        if done_tx.send(Finished { file, tmp, dest }).is_err() {
                            break; // every finisher stopped; their error is reported
                        }
                    }
                }
            }
            Ok(())
        })();
        if let Some((_, tmp, ..)) = open.take() {
            let _ = std::fs::remove_file(tmp);
        }
        drop(done_tx);
        result
    })?;
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }
    // Directory metadata last: creating entries changes a directory's mtime.
    for (path, node) in dirs.iter().rev() {
        let f = std::fs::File::open(path)?;
        apply_meta(&f, node, is_root)?;
        f.sync_all()?;
    }
    // The entries naming the root and each graft (created above if they were missing).
    let parents = grafts.iter().filter_map(|g| g.dir.parent());
    for d in std::iter::once(root).chain(parents) {
        if let Ok(f) = std::fs::File::open(d) {
            f.sync_all()?;
        }
    }
    Ok(out)
}

/// fsync, then rename into place. After the first failure, remaining files are removed
/// instead (their temp names never become restored files).
fn finisher(
    rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Finished>>,
    failed: &std::sync::Mutex<Option<RepoError>>,
) {
    loop {
        let next = rx.lock().unwrap().recv();
        let Ok(Finished { file, tmp, dest }) = next else {
            return;
        };
        if failed.lock().unwrap().is_some() {
            let _ = std::fs::remove_file(&tmp);
            continue;
        }
        let r = file.sync_all().and_then(|()| std::fs::rename(&tmp, &dest));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            failed.lock().unwrap().get_or_insert(e.into());
        }
    }
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn apply_meta(f: &std::fs::File, node: &Node, is_root: bool) -> Result<()> {
    if node.mode != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(node.mode))?;
    }
    if is_root {
        if let (Some(u), Some(g)) = (node.uid, node.gid) {
            std::os::unix::fs::fchown(f, Some(u), Some(g))?;
        }
    }
    if let Some(t) = node.mtime {
        let st = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::new(
                t.as_second().max(0) as u64,
                t.subsec_nanosecond().max(0) as u32,
            );
        f.set_times(std::fs::FileTimes::new().set_modified(st))?;
    }
    Ok(())
}

async fn write_chunks<W: Write>(
    reader: &Reader,
    chunks: Vec<[u8; 32]>,
    out: &mut W,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let mut s = std::pin::pin!(reader.stream(chunks));
    let mut n = 0u64;
    while let Some(c) = s.next().await {
        let c = c?;
        out.write_all(&c)?;
        n += c.len() as u64;
        on_bytes(c.len() as u64);
    }
    Ok(n)
}

/// Stream a snapshot holding exactly one file (a `stdin` backup, a dump) to `out`.
pub async fn to_writer<W: Write>(
    reader: &Reader,
    snap: &Snapshot,
    out: &mut W,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<RestoreOutcome> {
    let started = std::time::Instant::now();
    let mut tree = reader.tree(&snap.manifest).await?;
    let mut found = None;
    while let Some((node, chunks)) = tree.next_node()? {
        if node.node_type == NodeType::File {
            if found.is_some() {
                return Err(RepoError::Invalid(format!(
                    "snapshot {} holds more than one file; restore it with --to DIR",
                    snap.short_id()
                )));
            }
            found = Some((node, chunks));
        }
    }
    let (node, chunks) = found
        .ok_or_else(|| RepoError::Invalid(format!("snapshot {} holds no file", snap.short_id())))?;
    let n = write_chunks(reader, chunks, out, on_bytes).await?;
    out.flush()?;
    if n != node.size {
        return Err(RepoError::corrupt(
            format!("snapshot {}", snap.short_id()),
            format!("restored {n} bytes, the tree records {}", node.size),
        ));
    }
    Ok(RestoreOutcome {
        snapshot: snap.id.clone(),
        files: 1,
        bytes: n,
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escaping_paths() {
        let d = tempfile::tempdir().unwrap();
        assert!(safe_join(d.path(), "/etc/passwd").is_err());
        assert!(safe_join(d.path(), "a/../../x").is_err());
        assert!(safe_join(d.path(), "").is_err());
        std::os::unix::fs::symlink("/etc", d.path().join("ln")).unwrap();
        assert!(safe_join(d.path(), "ln/passwd").is_err());
        assert_eq!(safe_join(d.path(), "a/./b").unwrap(), d.path().join("a/b"));
    }

    #[test]
    fn grafts_take_whole_components_only() {
        let root = Path::new("/r");
        let grafts = [Graft {
            prefix: "pg_tblspc/16384".into(),
            dir: "/ts".into(),
        }];
        let at = |p: &str| resolve(root, &grafts, p).unwrap();
        assert_eq!(at("pg_tblspc/16384"), Path::new("/ts"));
        assert_eq!(
            at("pg_tblspc/16384/PG_15/5/1259"),
            Path::new("/ts/PG_15/5/1259")
        );
        assert_eq!(at("pg_tblspc/163840/x"), Path::new("/r/pg_tblspc/163840/x"));
        assert_eq!(at("pg_tblspc"), Path::new("/r/pg_tblspc"));
        assert!(resolve(root, &grafts, "pg_tblspc/16384/../../etc").is_err());
    }
}
