//! Restores: a snapshot's tree into a directory ([`to_dir_with`]), or its single stream to a
//! writer ([`to_writer`]). This module owns the directory target, the one hardened path by
//! which a snapshot's content reaches a disk (PostgreSQL's physical restores included).
//!
//! # Safety design
//!
//! A snapshot is untrusted input (any user whose files are backed up, or a write-only agent,
//! can shape it), and so is a target that already holds entries. A restore, root's included,
//! never writes outside its target:
//!
//! - **Paths** are validated before anything is written ([`plan`]): no absolute path, no
//!   `..`, `.` or empty component, no NUL, no component with the restore's staging prefix
//!   ([`is_restore_staging`]). Names are bytes (`Node::path_bytes`), never re-encoded.
//! - **Handles, not paths** ([`fs`]): the restore opens the target (and each graft's
//!   directory) itself, then reaches every directory with `openat(O_DIRECTORY|O_NOFOLLOW)`
//!   from those handles, so a symlink anywhere on the way (in the snapshot, or planted in
//!   the target, before or during the restore) is refused, never followed. Entries are made
//!   with `mkdirat`, `symlinkat`, `mknodat`, `linkat` relative to those handles; all fail on
//!   an existing name (a link included) instead of opening it.
//! - **Files have no name until they are complete**: each file is an `O_TMPFILE` in its
//!   final directory, written, given its owner, mode, xattrs and times through the handle,
//!   fsynced by a finisher thread, and only then linked to its name (`linkat`, which fails
//!   if the name exists). There is no temporary name at all, so nothing a snapshot or a
//!   target holds can collide with one, and a restore killed with `kill -9` leaves no
//!   partial file: nameless files vanish with the process.
//! - **Staging names**, the fallback where `O_TMPFILE` is missing and the way `overwrite`
//!   replaces an entry, are `.arsip-restore-<random>`: created exclusively
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`, or `linkat`/`symlinkat`/`mknodat`, which never follow),
//!   then renamed over the final name (`renameat` replaces a link, never follows it). A
//!   snapshot path holding that prefix is refused, so no snapshot entry can be, or race
//!   with, a staging name; a planted one only makes the exclusive create pick another.
//!   Leftovers of a killed restore are skipped by the files backup
//!   ([`is_restore_staging`]) and removed by the next restore into the same directory.
//! - **Existing entries** are refused by default, before anything is written, naming the
//!   first ones ([`RestoreOptions`]); `overwrite` replaces them (a link is replaced, not
//!   followed; a directory in the way of a file is removed), `delete` removes what the
//!   snapshot does not hold. Directories already there are merged into.
//! - **Metadata order**, as root: data, then owner (`fchown` clears setuid/setgid and
//!   `security.capability`), then mode, then extended attributes (ACLs, capabilities), then
//!   times. Symlinks and special files get owner and times with `AT_SYMLINK_NOFOLLOW` and
//!   mode and xattrs through an `O_PATH` handle of the entry itself. Directories get theirs
//!   last, deepest first, after checking they are still the inode the restore made, so a
//!   directory is handed to its owner only when the restore no longer writes into it.
//! - **Sparse files** stay sparse: aligned zero blocks ([`fs::HOLE`]) are skipped, the
//!   length set with `ftruncate`. Hard links are linked to the group's first name at the
//!   end. Devices are made only as root (otherwise a warning).
//!
//! # Pipeline
//!
//! Three stages overlap, as before: chunks are fetched (a run of adjacent ones per ranged
//! read), authenticated and decompressed up to [`DIR_READ_AHEAD`] runs ahead; one writer
//! thread creates entries in tree order ([`write`]); finisher threads fsync and name each
//! finished file (every file of one name goes to the same finisher, so with `overwrite` the
//! last of duplicate names wins), so the disk flushes one file while the next is written.
//! The first pass over the tree ([`plan`]) reads the spooled tree only; it checks the target
//! only when the target (or a graft's directory) was not empty.

mod fs;
mod path;
mod plan;
mod write;

use std::io::Write;
use std::path::{Path, PathBuf};

use arsip_repo::Reader;
use arsip_repo::{Node, NodeType, Snapshot};
use arsip_repo::{RepoError, Result};
use futures::StreamExt;

pub use path::is_restore_staging;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreOutcome {
    pub snapshot: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// FIFOs and devices.
    pub specials: u64,
    /// Later names of hard-link groups, linked to the first.
    pub hardlinks: u64,
    /// Entries removed because the snapshot does not hold them (`delete`).
    pub deleted: u64,
    pub bytes: u64,
    /// Attributes not restored (logged with their path): an xattr the filesystem refuses,
    /// a device without root.
    pub warnings: u64,
    pub seconds: f64,
}

/// How a directory restore treats a target that already holds entries.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Replace entries that exist at paths the snapshot writes (never following a link: a
    /// link at a name is replaced, not written through). Without it such a restore is
    /// refused before anything is written, naming the first conflicts.
    pub overwrite: bool,
    /// Remove entries of restored directories (the target's included) that the snapshot
    /// does not hold.
    pub delete: bool,
    /// Use staging names even where `O_TMPFILE` works (tests of the fallback).
    #[doc(hidden)]
    pub staging_names: bool,
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

/// Runs of chunks (one ranged read each, `Reader::runs`) in flight ahead of the writer during
/// a directory restore, across file boundaries.
const DIR_READ_AHEAD: usize = 16;

/// One step of a directory restore, in tree order: a node, then (for a file) its chunks.
enum Step {
    Node(Node),
    Data(Vec<u8>),
    EndFile,
}

/// What the fetch stage does with one entry of the expanded tree.
enum Work {
    /// Fetch, authenticate and decompress this run of chunks into one `Step::Data`.
    Fetch(arsip_repo::Run),
    /// Hand this step to the writer as it is.
    Pass(Step),
}

/// Restore a snapshot's tree into `target` (created if missing) with the default options:
/// refused if it would write a path that exists.
pub async fn to_dir(
    reader: &Reader,
    snap: &Snapshot,
    target: &Path,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<RestoreOutcome> {
    to_dir_grafted(reader, snap, target, &[], on_bytes).await
}

/// [`to_dir`] with some subtrees restored elsewhere ([`Graft`]), default options (callers
/// such as PostgreSQL's restore have already refused non-empty locations).
pub async fn to_dir_grafted(
    reader: &Reader,
    snap: &Snapshot,
    target: &Path,
    grafts: &[Graft],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<RestoreOutcome> {
    to_dir_with(
        reader,
        snap,
        target,
        grafts,
        &RestoreOptions::default(),
        on_bytes,
    )
    .await
}

/// Restore a snapshot's tree into `target` (created if missing), with grafts and options.
pub async fn to_dir_with(
    reader: &Reader,
    snap: &Snapshot,
    target: &Path,
    grafts: &[Graft],
    opts: &RestoreOptions,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<RestoreOutcome> {
    let started = std::time::Instant::now();
    let snap_label = format!("snapshot {}", snap.short_id());
    let graft_paths = path::Grafts::new(grafts).map_err(RepoError::Invalid)?;
    let dirs: Vec<PathBuf> = std::iter::once(target.to_path_buf())
        .chain(grafts.iter().map(|g| g.dir.clone()))
        .collect();
    let is_root = rustix::process::geteuid().is_root();
    let warnings = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));

    // First pass: validate the tree and look at the target, before writing anything.
    let mut tree = reader.tree(&snap.manifest).await?;
    let (bases, graft_paths, keep) = {
        let opts = opts.clone();
        let label = snap_label.clone();
        let warnings = warnings.clone();
        arsip_repo::blocking(move || -> Result<_> {
            let bases = dirs
                .iter()
                .map(|d| fs::Base::open(d))
                .collect::<std::io::Result<Vec<_>>>()?;
            let warn = fs::Warn(&warnings);
            let plan = plan::check(&mut tree, &bases, &graft_paths, &opts, &label, &warn)?;
            Ok((bases, graft_paths, plan.keep))
        })
        .await?
    };

    let mut tree = reader.tree(&snap.manifest).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Step>(DIR_READ_AHEAD);
    let writer = {
        let opts = opts.clone();
        let label = snap_label.clone();
        let warnings = warnings.clone();
        arsip_repo::blocking(move || {
            let cx = write::Ctx {
                bases: &bases,
                grafts: &graft_paths,
                opts: &opts,
                keep,
                is_root,
                warnings: &warnings,
                snap: &label,
            };
            write::write_tree(cx, rx)
        })
    };

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
    let written = writer.await;
    // A fetch error is the root cause: the writer only saw its input end early.
    if let Some(e) = fetch_err {
        return Err(e);
    }
    let mut out = written?;
    out.snapshot = snap.id.clone();
    out.warnings = warnings.load(std::sync::atomic::Ordering::Relaxed);
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
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
