//! `stats`: what the repository holds, from the snapshot listing, the index and a streamed
//! listing of the store.

use arsip_repo::FullRepo;

use crate::snapshots::{self, Filter};
use crate::Result;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub snapshots: usize,
    /// Sum of the snapshots' logical sizes.
    pub logical_bytes: u64,
    /// Bytes of every object in the store.
    pub stored_bytes: u64,
    /// Plaintext bytes of the distinct chunks (before compression).
    pub unique_bytes: u64,
    pub chunks: usize,
    pub packs: u64,
    pub objects: u64,
    /// Logical over stored bytes.
    pub dedup_ratio: f64,
    pub index_memory_bytes: usize,
}

pub async fn run(repo: &FullRepo) -> Result<Stats> {
    let listing = snapshots::list(repo, &Filter::default()).await?;
    let index = repo.load_index().await?;
    let usage = repo.usage().await?;
    let logical_bytes: u64 = listing
        .snapshots
        .iter()
        .map(|s| s.manifest.logical_bytes)
        .sum();
    Ok(Stats {
        snapshots: listing.snapshots.len(),
        logical_bytes,
        stored_bytes: usage.stored_bytes,
        unique_bytes: index.unique_raw_bytes(),
        chunks: index.len(),
        packs: usage.packs,
        objects: usage.objects,
        dedup_ratio: if usage.stored_bytes > 0 {
            logical_bytes as f64 / usage.stored_bytes as f64
        } else {
            0.0
        },
        index_memory_bytes: index.memory_bytes(),
    })
}
