//! Listing and choosing snapshots: filters, damaged manifests reported beside the listing,
//! and the rule that a damaged manifest matching what the user named is damage, not
//! "not found".

use std::collections::BTreeMap;

use arsip_repo::Snapshot;
use arsip_repo::{FullRepo, RepoError};

use crate::{Error, Result};

/// Which snapshots an operation considers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub source: Option<String>,
    /// `root`, an agent's label, or a writer id (or a prefix of one).
    pub writer: Option<String>,
    /// The host the snapshot claims (as the writer said).
    pub host: Option<String>,
}

impl Filter {
    pub fn kind(kind: &str) -> Filter {
        Filter {
            kind: Some(kind.to_string()),
            ..Default::default()
        }
    }

    fn matches(&self, s: &Snapshot, labels: &BTreeMap<String, String>) -> bool {
        self.kind.as_ref().is_none_or(|k| &s.manifest.kind == k)
            && self.source.as_ref().is_none_or(|k| &s.manifest.source == k)
            && self.host.as_ref().is_none_or(|h| &s.manifest.host == h)
            && self.writer.as_ref().is_none_or(|w| {
                labels.get(&s.writer) == Some(w) || (!w.is_empty() && s.writer.starts_with(w))
            })
    }
}

/// The root writer's id as snapshots carry it.
pub fn is_root(writer: &str) -> bool {
    writer.bytes().all(|b| b == b'0')
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
    /// Writer id → label (`root` for the root writer).
    pub writers: BTreeMap<String, String>,
}

/// The snapshot kinds this version writes (`--kind` takes one of them).
pub const KINDS: [&str; 5] = [
    "files",
    "stdin",
    "command",
    arsip_pg::logical::KIND,
    arsip_pg::physical::KIND,
];

pub async fn list(repo: &FullRepo, filter: &Filter) -> Result<Listing> {
    if let Some(k) = filter.kind.as_deref().filter(|k| !KINDS.contains(k)) {
        return Err(Error::usage(format!(
            "unknown snapshot kind {k:?}: one of {}",
            KINDS.join(", ")
        )));
    }
    let l = repo.snapshot_listing().await?;
    let described = |v: Vec<(String, RepoError)>| {
        v.into_iter()
            .map(|(object, e)| Damaged {
                object,
                error: e.to_string(),
            })
            .collect()
    };
    let mut writers: BTreeMap<String, String> = repo
        .writer_list()
        .await?
        .into_iter()
        .map(|w| (w.record.writer_id, w.record.label))
        .collect();
    writers.insert(hex::encode(arsip_repo::ROOT_WRITER), "root".into());
    Ok(Listing {
        snapshots: l
            .snapshots
            .into_iter()
            .filter(|s| filter.matches(s, &writers))
            .collect(),
        writers,
        damaged: described(l.damaged),
        revoked: described(l.revoked),
    })
}

impl Listing {
    /// A writer's label for display: `root`, the agent's label, or its id.
    pub fn writer_label<'a>(&'a self, writer: &'a str) -> &'a str {
        self.writers.get(writer).map_or(writer, String::as_str)
    }

    /// The snapshot `spec` names, and a warning when `latest` passed over a newer snapshot
    /// of the same source by a writer that does not own it.
    ///
    /// `latest` rule (FORMAT.md §7.2): take the newest snapshot by effective time; its
    /// source's **owner** is the root writer if root wrote any listed snapshot of it, else
    /// the writer of most of them (ties: the earliest); `latest` is the owner's newest
    /// snapshot of that source. An agent's snapshot therefore never silently becomes the
    /// default restore of a source another writer owns, whatever time it claims.
    pub fn select_explained(&self, spec: &str) -> Result<(&Snapshot, Option<String>)> {
        let is_id = !spec.is_empty()
            && spec.len() <= 64
            && spec
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if spec != "latest" && !is_id {
            return Err(Error::usage(format!(
                "{spec:?} is not a snapshot: name one by `latest`, its id or a unique prefix of \
                 the id (lower-case hex)"
            )));
        }
        if spec != "latest" {
            return Ok((self.select_id(spec)?, None));
        }
        let newest = self.select_id(spec)?;
        let (kind, source) = (&newest.manifest.kind, &newest.manifest.source);
        let same: Vec<&Snapshot> = self
            .snapshots
            .iter()
            .filter(|s| &s.manifest.kind == kind && &s.manifest.source == source)
            .collect();
        let owner = if same.iter().any(|s| is_root(&s.writer)) {
            hex::encode(arsip_repo::ROOT_WRITER)
        } else {
            let mut count: BTreeMap<&str, (usize, jiff::Timestamp)> = BTreeMap::new();
            for s in &same {
                let e = count.entry(&s.writer).or_insert((0, s.effective_time()));
                e.0 += 1;
                e.1 = e.1.min(s.effective_time());
            }
            count
                .into_iter()
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
                .map(|(w, _)| w.to_string())
                .unwrap_or_default()
        };
        if newest.writer == owner {
            return Ok((newest, None));
        }
        let chosen = same
            .iter()
            .filter(|s| s.writer == owner)
            .max_by_key(|s| s.effective_time())
            .copied()
            .unwrap_or(newest);
        let note = format!(
            "latest of {kind} {source:?} is {} by {} ({}); a newer-looking snapshot {} by {} \
             ({}) was passed over because that writer does not own this source; name it by id, \
             or select by writer, to restore it",
            chosen.short_id(),
            self.writer_label(&chosen.writer),
            chosen.effective_time(),
            newest.short_id(),
            self.writer_label(&newest.writer),
            newest.manifest.time,
        );
        Ok((chosen, Some(note)))
    }

    /// The snapshot `spec` names, by the `latest` rule of [`Listing::select_explained`].
    pub fn select(&self, spec: &str) -> Result<&Snapshot> {
        Ok(self.select_explained(spec)?.0)
    }

    /// The snapshot `spec` names (`latest`: the newest by effective time, an id or a unique
    /// prefix). A damaged manifest whose id matches is reported as damage, a revoked
    /// writer's as refused.
    fn select_id(&self, spec: &str) -> Result<&Snapshot> {
        let named = |d: &&Damaged| {
            spec != "latest"
                && d.object
                    .trim_start_matches(arsip_repo::SNAPSHOTS_PREFIX)
                    .starts_with(spec)
        };
        match arsip_repo::select_snapshot(&self.snapshots, spec) {
            Ok(s) => Ok(s),
            Err(RepoError::NotFound(_)) if self.revoked.iter().find(named).is_some() => {
                let d = self.revoked.iter().find(named).expect("checked");
                Err(Error::Refused(d.error.clone()))
            }
            Err(RepoError::NotFound(_))
                if self.damaged.iter().any(|d| {
                    d.object
                        .trim_start_matches(arsip_repo::SNAPSHOTS_PREFIX)
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

/// A source as retention and verification group snapshots: kind, source, host and the
/// (authenticated) writer, so that one writer's snapshots never stand in for another's.
pub type SourceKey = (String, String, String, String);

/// `snaps` grouped by [`SourceKey`], each group in the order given.
pub fn by_source(
    snaps: impl IntoIterator<Item = Snapshot>,
) -> std::collections::BTreeMap<SourceKey, Vec<Snapshot>> {
    let mut groups: std::collections::BTreeMap<SourceKey, Vec<Snapshot>> = Default::default();
    for s in snaps {
        let key = (
            s.manifest.kind.clone(),
            s.manifest.source.clone(),
            s.manifest.host.clone(),
            s.writer.clone(),
        );
        groups.entry(key).or_default().push(s);
    }
    groups
}
