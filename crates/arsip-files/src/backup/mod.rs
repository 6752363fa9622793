//! The files source: directories, files, streams and producer programs read into a
//! [`SnapshotTxn`], which commits one snapshot (the manifest is written last; see
//! `arsip_repo::txn`).
//!
//! A files backup ([`files`]) records names and symlink targets as bytes, modes with
//! setuid/setgid/sticky, owners, mtimes, hard links, FIFOs and devices, and extended
//! attributes (POSIX ACLs included); the walk itself is [`walk`]'s. One odd entry never costs
//! the backup: it becomes a [`Warning`], and the snapshot is committed marked partial.

pub mod exclude;
mod node;
mod walk;

#[cfg(test)]
mod hooks;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use arsip_repo::Node;
use arsip_repo::{BackupOutcome, SnapshotMeta, SnapshotTxn};
use arsip_repo::{RepoError, Result};
use serde_json::json;

pub use exclude::read_exclude_file;

use crate::child::ChildReader;

/// What a files backup reads and what it leaves out.
#[derive(Debug, Clone, Default)]
pub struct FilesOptions {
    /// Files and directories to back up (resolved with [`resolve_paths`]).
    pub paths: Vec<PathBuf>,
    /// `--exclude` glob patterns (see [`exclude::Patterns`]).
    pub exclude: Vec<String>,
    /// Paths never backed up, whatever the arguments: the repository (when local), the
    /// cache, the spool. An argument inside one of them is refused.
    pub never: Vec<PathBuf>,
    /// Do not descend into mount points below each argument (`--one-file-system`).
    pub one_file_system: bool,
    /// Descend into virtual filesystems (`proc`, `sysfs`, `devtmpfs`, …, see
    /// [`exclude::VIRTUAL_FS`]) below the arguments; by default only their mount points are
    /// recorded.
    pub include_virtual: bool,
}

/// What happened to an entry a backup could not keep as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Not in the snapshot (unreadable, vanished, replaced while being read).
    Skipped,
    /// In the snapshot, but it changed while it was read: what was read is kept.
    Changed,
    /// In the snapshot without part of it (a directory's contents, some xattrs).
    Incomplete,
}

/// One entry a backup could not keep exactly; `path` is absolute (lossy UTF-8 for display).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub path: String,
    pub action: Action,
    pub reason: String,
}

/// Warnings kept in memory (and in the outcome); counts go on beyond.
pub const MAX_WARNINGS: usize = 1000;
/// Warnings recorded in a partial snapshot's facts (`problems`).
pub const MAX_FACT_PROBLEMS: usize = 100;

/// The warnings of one backup: the first [`MAX_WARNINGS`], and counts of all.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub warnings: Vec<Warning>,
    pub skipped: u64,
    pub changed: u64,
    pub incomplete: u64,
}

impl Report {
    fn add(&mut self, path: String, action: Action, reason: String) {
        match action {
            Action::Skipped => self.skipped += 1,
            Action::Changed => self.changed += 1,
            Action::Incomplete => self.incomplete += 1,
        }
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(Warning {
                path,
                action,
                reason,
            });
        }
    }

    pub fn total(&self) -> u64 {
        self.skipped + self.changed + self.incomplete
    }

    /// Whether the snapshot misses or flags anything.
    pub fn partial(&self) -> bool {
        self.total() > 0
    }

    /// The facts a partial snapshot carries (see docs/FORMAT.md §7.2).
    fn facts(&self) -> Vec<(&'static str, serde_json::Value)> {
        let listed: Vec<&Warning> = self.warnings.iter().take(MAX_FACT_PROBLEMS).collect();
        vec![
            ("partial", json!(true)),
            ("skipped", json!(self.skipped)),
            ("changed", json!(self.changed)),
            ("incomplete", json!(self.incomplete)),
            ("problems", json!(listed)),
            (
                "problems_omitted",
                json!(self.total() - listed.len() as u64),
            ),
        ]
    }
}

/// The outcome of a files backup: the committed snapshot, and what it could not keep.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FilesOutcome {
    #[serde(flatten)]
    pub backup: BackupOutcome,
    /// The snapshot was committed but misses or flags entries (`report` says which).
    pub partial: bool,
    #[serde(flatten)]
    pub report: Report,
}

/// The backup roots for `paths`: absolute and physical (every ancestor resolved, so no
/// symlink lies on the way), the last component itself not followed (a symlink argument is
/// backed up as a symlink), sorted and without duplicates. An argument that does not exist
/// or cannot be reached is an error naming it.
pub fn resolve_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(RepoError::Invalid("no paths to back up".into()));
    }
    let mut out = Vec::new();
    for p in paths {
        let cannot =
            |e: std::io::Error| RepoError::Invalid(format!("cannot back up {}: {e}", p.display()));
        let abs = std::path::absolute(p).map_err(cannot)?;
        let resolved = match (abs.parent(), abs.file_name()) {
            (Some(parent), Some(name)) => std::fs::canonicalize(parent).map_err(cannot)?.join(name),
            // `/`, or a path ending in `..`.
            _ => std::fs::canonicalize(&abs).map_err(cannot)?,
        };
        std::fs::symlink_metadata(&resolved).map_err(cannot)?;
        out.push(resolved);
    }
    out.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    out.dedup();
    Ok(out)
}

/// Back up files and directories into `txn`, then commit it.
///
/// The tree holds every path once, parents before children, whatever the arguments (nested,
/// repeated, `/`); symlinks are kept as links, never followed. Entries that cannot be kept
/// as they are become warnings ([`Report`]); the snapshot is still committed, with
/// `partial: true` and the first [`MAX_FACT_PROBLEMS`] of them in its facts. Only errors of
/// the repository side (storage, spool) fail the backup.
pub async fn files(
    mut txn: SnapshotTxn,
    opts: FilesOptions,
    mut meta: SnapshotMeta,
) -> Result<FilesOutcome> {
    let roots = resolve_paths(&opts.paths)?;
    let never = exclude::Never::new(&opts.never);
    for r in &roots {
        if let Some(n) = never.holding(r.as_os_str().as_bytes()) {
            return Err(RepoError::Invalid(format!(
                "refusing to back up {}: it is inside {}, arsip's own repository, cache or spool",
                r.display(),
                String::from_utf8_lossy(n)
            )));
        }
    }
    let rules = walk::Rules {
        patterns: exclude::Patterns::new(&opts.exclude)?,
        never,
        one_file_system: opts.one_file_system,
        include_virtual: opts.include_virtual,
        devtmpfs: if opts.include_virtual {
            Vec::new()
        } else {
            exclude::devtmpfs_devices()
        },
    };
    let roots: Vec<Vec<u8>> = roots
        .iter()
        .map(|r| r.as_os_str().as_bytes().to_vec())
        .collect();
    let session = txn.session().clone();
    let mut tree = txn.take_tree();
    let (tree, files, report) = arsip_repo::blocking(move || -> Result<_> {
        let mut w = walk::Walker::new(&session, &mut tree, &rules, &roots);
        w.run()?;
        let (files, report) = (w.files, std::mem::take(&mut w.report));
        Ok((tree, files, report))
    })
    .await?;
    txn.put_tree(tree, files);
    let partial = report.partial();
    if partial {
        for (k, v) in report.facts() {
            meta.facts.insert(k.into(), v);
        }
    }
    let backup = txn.commit(meta).await?;
    Ok(FilesOutcome {
        backup,
        partial,
        report,
    })
}

/// Check a stream's name (`backup stdin --name`, `backup command --name`): a relative path
/// of non-empty components, none `.` or `..` or a restore's staging name, no NUL, so that a
/// restore into a directory writes it where its name says.
pub fn check_stream_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(RepoError::Invalid(format!(
            "stream name {name:?} {why}; give a relative name such as app.dump or db/app.dump"
        )))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.starts_with('/') {
        return bad("is absolute");
    }
    if name.contains('\0') {
        return bad("contains NUL");
    }
    for c in name.split('/') {
        match c {
            "" => return bad("has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return bad(&format!("has a `{c}` component")),
            c if crate::is_restore_staging(c.as_bytes()) => {
                return bad(&format!(
                    "has a component {c:?} that looks like a restore's staging name"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Back up one stream under `name` (e.g. a dump piped to stdin) into `txn`, then commit it.
pub async fn stream<R: Read + Send + 'static>(
    mut txn: SnapshotTxn,
    reader: R,
    name: String,
    meta: SnapshotMeta,
) -> Result<BackupOutcome> {
    check_stream_name(&name)?;
    let session = txn.session().clone();
    let (ids, size) = arsip_repo::blocking(move || session.write_stream(reader)).await?;
    let node = Node::stream_file(name, size, txn.started());
    txn.node(&node, &ids)?;
    txn.commit(meta).await
}

/// Run a producer program (`argv` as given, no shell) and back up its stdout under `name`,
/// committing only when it exits 0. A non-zero exit or a signal commits nothing and fails
/// with its status and the end of its stderr.
///
/// The facts record `command` (argv\[0\] only: the other arguments may carry secrets, such
/// as a connection string with a password, and manifests are read by anyone holding a full
/// key) and `exit_status`.
pub async fn command(
    mut txn: SnapshotTxn,
    argv: Vec<OsString>,
    name: String,
    mut meta: SnapshotMeta,
) -> Result<BackupOutcome> {
    check_stream_name(&name)?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| RepoError::Invalid("no command given to run".into()))?;
    let what = Path::new(program).display().to_string();
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let mut reader =
        ChildReader::spawn(cmd, &what).map_err(|e| RepoError::Invalid(e.to_string()))?;
    let session = txn.session().clone();
    let (written, reader) = arsip_repo::blocking(move || {
        let r = session.write_stream(&mut reader);
        Ok::<_, RepoError>((r, reader))
    })
    .await?;
    let (ids, size) = match written {
        Ok(w) => w,
        // The producer failed: its status and stderr are the error, not an I/O failure.
        Err(RepoError::Io(e)) if reader.status().is_some_and(|s| !s.success()) => {
            return Err(RepoError::Source(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    let status = reader.status().ok_or_else(|| {
        RepoError::Invalid(format!("{what}: stream ended before the program did"))
    })?;
    meta.facts.insert("command".into(), json!(what));
    meta.facts
        .insert("exit_status".into(), json!(status.code()));
    let node = Node::stream_file(name, size, txn.started());
    txn.node(&node, &ids)?;
    txn.commit(meta).await
}
