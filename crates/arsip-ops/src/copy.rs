//! `copy --to LOCATION`: the repository mirrored into another store with storage
//! credentials only (FORMAT.md §21, `arsip_repo::mirror`): byte for byte, in dependency
//! order, verified, resumable. Neither store is opened as a repository: nothing is
//! decrypted, no key is needed. Both stores are opened append-only: a copy never deletes.

pub use arsip_repo::MirrorOutcome;

use crate::open::{store, Access, StoreSettings};
use crate::Result;

/// Copy the repository at `from` into `to` at `now` (the replication lag is measured
/// against it); `dry_run` counts what would be copied. `progress(phase, done, of)`.
pub async fn run(
    from: &StoreSettings,
    to: &StoreSettings,
    now: jiff::Timestamp,
    dry_run: bool,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<MirrorOutcome> {
    if from.location == to.location {
        return Err(crate::Error::usage(
            "the copy's destination is the repository itself; give another location with --to",
        ));
    }
    let src = store(from, false, Access::AppendOnly)?;
    // A dry run into a directory that does not exist yet counts against an empty store
    // and creates nothing.
    let absent =
        dry_run && !to.location.contains(':') && !std::path::Path::new(&to.location).exists();
    let dst = match absent {
        true => store(
            &StoreSettings {
                location: "memory:".into(),
                ..to.clone()
            },
            false,
            Access::AppendOnly,
        )?,
        false => store(to, !dry_run, Access::AppendOnly)?,
    };
    Ok(arsip_repo::mirror(&src, &dst, now, dry_run, progress).await?)
}
