//! Backups of files, streams and producer commands: start a snapshot transaction (a front
//! end may follow its progress), hand it to the files source, return what was committed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use arsip_files::backup::FilesOutcome;
use arsip_repo::Progress;
use arsip_repo::Repository;
use arsip_repo::{BackupOutcome, SnapshotMeta, SnapshotTxn};

use crate::{audit, Error, Result};

/// What every backup takes besides its source.
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub tags: BTreeMap<String, String>,
}

/// Parse `KEY=VALUE` tags.
pub fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>> {
    tags.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::usage(format!("tag {s:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// What a files backup reads and leaves out, as a front end resolved it.
#[derive(Debug, Clone, Default)]
pub struct Files {
    pub paths: Vec<PathBuf>,
    /// Glob patterns (`--exclude`).
    pub exclude: Vec<String>,
    /// Files of patterns, one a line (`--exclude-file`).
    pub exclude_files: Vec<PathBuf>,
    pub one_file_system: bool,
    pub include_virtual: bool,
    /// Paths never backed up: the repository when it is a local directory, the cache and
    /// spool directory.
    pub never: Vec<PathBuf>,
}

/// Back up files and directories. `progress` receives the session's counters once it
/// starts. A snapshot that misses or flags entries is still committed: the outcome says so
/// (`partial`) and lists them.
pub async fn files(
    repo: Arc<Repository>,
    f: Files,
    common: Common,
    progress: impl FnOnce(Arc<Progress>),
) -> Result<FilesOutcome> {
    let mut exclude = f.exclude;
    for file in &f.exclude_files {
        exclude.extend(arsip_files::backup::read_exclude_file(file)?);
    }
    let roots = arsip_files::backup::resolve_paths(&f.paths)?;
    let source = roots
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let what = details("files", &source);
    let r = async {
        let txn = SnapshotTxn::start(repo.clone()).await?;
        progress(txn.progress());
        let meta = SnapshotMeta {
            kind: "files".into(),
            source,
            tags: common.tags,
            facts: BTreeMap::new(),
        };
        let opts = arsip_files::backup::FilesOptions {
            paths: roots,
            exclude,
            never: f.never,
            one_file_system: f.one_file_system,
            include_virtual: f.include_virtual,
        };
        Ok(arsip_files::backup::files(txn, opts, meta).await?)
    }
    .await;
    audit::record(&repo, "backup", what, &r, |o, d| {
        d.insert("snapshot".into(), o.backup.id.clone().into());
    })
    .await;
    r
}

/// What the audit record of a backup names before it runs.
fn details(kind: &str, source: &str) -> audit::Details {
    audit::details([("kind", kind.into()), ("source", source.into())])
}

/// Check a stream's name before anything is opened (see
/// `arsip_files::backup::check_stream_name`).
pub fn check_stream_name(name: &str) -> Result<()> {
    arsip_files::backup::check_stream_name(name).map_err(|e| match e {
        arsip_repo::RepoError::Invalid(m) => Error::usage(m),
        other => other.into(),
    })
}

/// Back up one stream under `name`.
pub async fn stream<R: Read + Send + 'static>(
    repo: Arc<Repository>,
    reader: R,
    name: String,
    common: Common,
    progress: impl FnOnce(Arc<Progress>),
) -> Result<BackupOutcome> {
    check_stream_name(&name)?;
    let what = details("stdin", &name);
    let r = async {
        let txn = SnapshotTxn::start(repo.clone()).await?;
        progress(txn.progress());
        let meta = SnapshotMeta {
            kind: "stdin".into(),
            source: name.clone(),
            tags: common.tags,
            facts: BTreeMap::new(),
        };
        Ok(arsip_files::backup::stream(txn, reader, name, meta).await?)
    }
    .await;
    audit::record(&repo, "backup", what, &r, |o: &BackupOutcome, d| {
        d.insert("snapshot".into(), o.id.clone().into());
    })
    .await;
    r
}

/// Run `argv` (no shell) and back up its stdout under `name`; commits only when it exits 0.
pub async fn command(
    repo: Arc<Repository>,
    argv: Vec<OsString>,
    name: String,
    common: Common,
    progress: impl FnOnce(Arc<Progress>),
) -> Result<BackupOutcome> {
    check_stream_name(&name)?;
    if argv.is_empty() {
        return Err(Error::usage(
            "no command given: `backup command --name NAME -- PROGRAM [ARGS…]`",
        ));
    }
    let what = details("command", &name);
    let r = async {
        let txn = SnapshotTxn::start(repo.clone()).await?;
        progress(txn.progress());
        let meta = SnapshotMeta {
            kind: "command".into(),
            source: name.clone(),
            tags: common.tags,
            facts: BTreeMap::new(),
        };
        Ok(arsip_files::backup::command(txn, argv, name, meta).await?)
    }
    .await;
    audit::record(&repo, "backup", what, &r, |o: &BackupOutcome, d| {
        d.insert("snapshot".into(), o.id.clone().into());
    })
    .await;
    r
}
