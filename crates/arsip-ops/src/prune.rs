//! `prune`: remove data no snapshot references and repack mostly unused packs, beside live
//! backups, without locks (the protocol is the repository's: FORMAT.md §17).

pub use arsip_repo::prune::{PruneOptions, PruneReport};
use arsip_repo::FullRepo;

use crate::{Error, Result};

/// Parse `--max-unused`: a percentage (`5`, `5%`, `0.5`) in [0, 100].
pub fn parse_max_unused(s: &str) -> Result<f64> {
    let pct: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| Error::usage(format!("max-unused {s:?} is not a percentage")))?;
    if !(0.0..=100.0).contains(&pct) {
        return Err(Error::usage(format!("max-unused {s:?} must be in [0, 100]")));
    }
    Ok(pct / 100.0)
}

pub async fn run(repo: &FullRepo, opts: &PruneOptions) -> Result<PruneReport> {
    Ok(arsip_repo::prune::prune(repo, opts).await?)
}
