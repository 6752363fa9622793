//! Restores of files and stream snapshots: choose the snapshot, then restore its tree into a
//! directory or its single file to a writer through the files target.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arsip_files::restore::RestoreOutcome;
use arsip_repo::read::Reader;
use arsip_repo::snapshot::Snapshot;
use arsip_repo::Repository;

use crate::snapshots::{self, Filter};
use crate::Result;

/// Where a restore goes.
pub enum Destination<'a> {
    Dir(&'a Path),
    Writer(&'a mut dyn Write),
}

/// The snapshot `spec` names among those `filter` keeps.
pub async fn choose(repo: &Repository, spec: &str, filter: &Filter) -> Result<Snapshot> {
    let listing = snapshots::list(repo, filter).await?;
    Ok(listing.select(spec)?.clone())
}

/// Restore `snap` to `dest`; `on_bytes` counts restored bytes (progress).
pub async fn run(
    repo: Arc<Repository>,
    snap: &Snapshot,
    dest: Destination<'_>,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<RestoreOutcome> {
    let reader = Reader::open(repo).await?;
    Ok(match dest {
        Destination::Dir(dir) => arsip_files::restore::to_dir(&reader, snap, dir, on_bytes).await?,
        Destination::Writer(mut w) => {
            arsip_files::restore::to_writer(&reader, snap, &mut w, on_bytes).await?
        }
    })
}
