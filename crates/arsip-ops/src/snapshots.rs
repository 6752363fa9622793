//! Listing and choosing snapshots: filters, damaged manifests reported beside the listing,
//! and the rule that a damaged manifest matching what the user named is damage, not
//! "not found".

use arsip_repo::snapshot::Snapshot;
use arsip_repo::{RepoError, Repository};

use crate::{Error, Result};

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

/// Snapshots matching a filter, the manifests that could not be read, and the manifests of
/// revoked writers (authentic, no longer accepted; not damage).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Listing {
    pub snapshots: Vec<Snapshot>,
    pub damaged: Vec<Damaged>,
    pub revoked: Vec<Damaged>,
}

pub async fn list(repo: &Repository, filter: &Filter) -> Result<Listing> {
    let l = repo.snapshot_listing().await?;
    let described = |v: Vec<(String, RepoError)>| {
        v.into_iter()
            .map(|(object, e)| Damaged {
                object,
                error: e.to_string(),
            })
            .collect()
    };
    Ok(Listing {
        snapshots: l
            .snapshots
            .into_iter()
            .filter(|s| filter.matches(s))
            .collect(),
        damaged: described(l.damaged),
        revoked: described(l.revoked),
    })
}

impl Listing {
    /// The snapshot `spec` names (`latest`, an id or a unique prefix). A damaged manifest
    /// whose id matches is reported as damage.
    pub fn select(&self, spec: &str) -> Result<&Snapshot> {
        let named = |d: &&Damaged| {
            spec != "latest"
                && d.object
                    .trim_start_matches(arsip_repo::snapshot::SNAPSHOTS_PREFIX)
                    .starts_with(spec)
        };
        match arsip_repo::snapshot::select(&self.snapshots, spec) {
            Ok(s) => Ok(s),
            Err(RepoError::NotFound(_)) if self.revoked.iter().find(named).is_some() => {
                let d = self.revoked.iter().find(named).expect("checked");
                Err(Error::Refused(d.error.clone()))
            }
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
