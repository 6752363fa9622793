//! Restores of files and stream snapshots: choose the snapshot, then restore its tree into a
//! directory or its single file to a writer through the files target.

use std::io::Write;
use std::path::Path;

pub use arsip_files::restore::{RestoreOptions, RestoreOutcome};
use arsip_repo::FullRepo;
use arsip_repo::Reader;
use arsip_repo::Snapshot;

use crate::snapshots::{self, Filter};
use crate::Result;

/// Where a restore goes.
pub enum Destination<'a> {
    /// A directory, with what to do about entries already there.
    Dir(&'a Path, &'a RestoreOptions),
    Writer(&'a mut dyn Write),
}

/// The snapshot `spec` names among those `filter` keeps.
pub async fn choose(repo: &FullRepo, spec: &str, filter: &Filter) -> Result<Snapshot> {
    let listing = snapshots::list(repo, filter).await?;
    Ok(listing.select(spec)?.clone())
}

/// Restore `snap` to `dest`; `on_bytes` counts restored bytes (progress).
pub async fn run(
    repo: FullRepo,
    snap: &Snapshot,
    dest: Destination<'_>,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<RestoreOutcome> {
    let to = match &dest {
        Destination::Dir(dir, _) => dir.display().to_string(),
        Destination::Writer(_) => "stdout".to_string(),
    };
    let what = crate::audit::details([("snapshot", snap.id.clone().into()), ("to", to.into())]);
    crate::audit::audited(&repo.shared(), "restore", what, async {
        let reader = Reader::open(&repo).await?;
        Ok(match dest {
            Destination::Dir(dir, opts) => {
                arsip_files::restore::to_dir_with(&reader, snap, dir, &[], opts, on_bytes).await?
            }
            Destination::Writer(mut w) => {
                arsip_files::restore::to_writer(&reader, snap, &mut w, on_bytes).await?
            }
        })
    })
    .await
}
