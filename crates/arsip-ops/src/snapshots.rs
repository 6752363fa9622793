//! Listing and choosing snapshots: filters, damaged manifests reported beside the listing,
//! and the rule that a damaged manifest matching what the user named is damage, not
//! "not found".

use arsip_repo::snapshot::Snapshot;
use arsip_repo::{RepoError, Repository};

use crate::Result;

/// Which snapshots an operation considers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub source: Option<String>,
}

impl Filter {
    pub fn kind(kind: &str) -> Filter {
        Filter {
            kind: Some(kind.to_string()),
            source: None,
        }
    }

    fn matches(&self, s: &Snapshot) -> bool {
        self.kind.as_ref().is_none_or(|k| &s.manifest.kind == k)
            && self.source.as_ref().is_none_or(|k| &s.manifest.source == k)
    }
}

/// A manifest that could not be read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Damaged {
    pub object: String,
    pub error: String,
}

/// Snapshots matching a filter, and the manifests that could not be read.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Listing {
    pub snapshots: Vec<Snapshot>,
    pub damaged: Vec<Damaged>,
}

pub async fn list(repo: &Repository, filter: &Filter) -> Result<Listing> {
    let (snaps, bad) = repo.snapshots_report().await?;
    Ok(Listing {
        snapshots: snaps.into_iter().filter(|s| filter.matches(s)).collect(),
        damaged: bad
            .into_iter()
            .map(|(object, e)| Damaged {
                object,
                error: e.to_string(),
            })
            .collect(),
    })
}

impl Listing {
    /// The snapshot `spec` names (`latest`, an id or a unique prefix). A damaged manifest
    /// whose id matches is reported as damage.
    pub fn select(&self, spec: &str) -> Result<&Snapshot> {
        match arsip_repo::snapshot::select(&self.snapshots, spec) {
            Ok(s) => Ok(s),
            Err(RepoError::NotFound(_))
                if self.damaged.iter().any(|d| {
                    d.object
                        .trim_start_matches(arsip_repo::snapshot::SNAPSHOTS_PREFIX)
                        .starts_with(spec)
                }) =>
            {
                Err(
                    RepoError::corrupt(format!("snapshot {spec}"), "its manifest is damaged")
                        .into(),
                )
            }
            Err(e) => Err(e.into()),
        }
    }
}
