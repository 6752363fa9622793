//! `check`: the repository's structure, and with a read fraction its content, verified by
//! the repository's checker; the report names damaged objects and affected snapshots.

use arsip_repo::FullRepo;
pub use arsip_repo::{CheckReport, ReadData};

use crate::{Error, Result};

/// Parse a read-data percentage (`10`, `10%`, `0.5`), in (0, 100].
pub fn parse_subset(p: &str) -> Result<ReadData> {
    let pct: f64 = p
        .trim_end_matches('%')
        .parse()
        .map_err(|_| Error::usage(format!("read-data subset {p:?} is not a percentage")))?;
    if !(pct > 0.0 && pct <= 100.0) {
        return Err(Error::usage(format!(
            "read-data subset {p:?} must be in (0, 100]"
        )));
    }
    Ok(ReadData::Subset(pct))
}

pub async fn run(repo: FullRepo, read: ReadData) -> Result<CheckReport> {
    Ok(arsip_repo::check(repo, read).await?)
}
