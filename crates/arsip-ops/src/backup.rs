//! Backups of files and streams: start a snapshot transaction (a front end may follow its
//! progress), hand it to the files source, return what was committed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use arsip_repo::txn::{BackupOutcome, SnapshotMeta, SnapshotTxn};
use arsip_repo::write::Progress;
use arsip_repo::Repository;

use crate::{Error, Result};

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

/// Back up files and directories. `progress` receives the session's counters once it
/// starts.
pub async fn files(
    repo: Arc<Repository>,
    paths: Vec<PathBuf>,
    common: Common,
    progress: impl FnOnce(Arc<Progress>),
) -> Result<BackupOutcome> {
    let source = paths
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .unwrap_or(p.clone())
                .display()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(" ");
    let txn = SnapshotTxn::start(repo).await?;
    progress(txn.progress());
    let meta = SnapshotMeta {
        kind: "files".into(),
        source,
        tags: common.tags,
        facts: BTreeMap::new(),
    };
    Ok(arsip_files::backup::files(txn, paths, meta).await?)
}

/// Back up one stream under `name`.
pub async fn stream<R: Read + Send + 'static>(
    repo: Arc<Repository>,
    reader: R,
    name: String,
    common: Common,
    progress: impl FnOnce(Arc<Progress>),
) -> Result<BackupOutcome> {
    let txn = SnapshotTxn::start(repo).await?;
    progress(txn.progress());
    let meta = SnapshotMeta {
        kind: "stdin".into(),
        source: name.clone(),
        tags: common.tags,
        facts: BTreeMap::new(),
    };
    Ok(arsip_files::backup::stream(txn, reader, name, meta).await?)
}
