//! `repair`: put back what a repository lost but can rebuild from what it still holds.
//! Today one repair: the index, rebuilt from the self-describing packs (FORMAT.md §5.2)
//! when index objects were deleted or lost. Repairs only create objects; they never delete.

use arsip_repo::FullRepo;
pub use arsip_repo::IndexRepair;

use crate::Result;

/// Rebuild index entries for every pack no accepted index names (each pack verified in
/// full before a new root-signed index names it).
pub async fn index(repo: FullRepo) -> Result<IndexRepair> {
    let what = crate::audit::details([("repair", "index".into())]);
    let shared = repo.shared();
    crate::audit::audited(&shared, "repair", what, async {
        Ok(arsip_repo::repair_index(repo).await?)
    })
    .await
}
