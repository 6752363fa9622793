//! What the API shows of the repositories themselves (snapshots, the audit log), listed
//! after each run ends and at start, never per request: a scrape or a page view costs the
//! store nothing. Repositories without a full key in the configuration are not listed
//! (agents cannot read manifests).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use serde::Serialize;

use crate::config::Config;
use crate::executor::Executors;

/// A snapshot as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotSummary {
    pub id: String,
    pub kind: String,
    pub source: String,
    pub host: String,
    pub writer: String,
    pub time: Timestamp,
    pub stored: Option<Timestamp>,
    pub logical_bytes: u64,
    pub added_bytes: u64,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoCache {
    /// When it was listed.
    pub listed: Option<Timestamp>,
    /// Newest first.
    pub snapshots: Vec<SnapshotSummary>,
    /// The audit log's newest [`AUDIT_KEPT`] records, oldest first, and whether the whole
    /// log verified.
    pub audit: Vec<arsip_ops::audit::AuditEntry>,
    pub audit_ok: Option<bool>,
    /// Why the last listing failed, if it did.
    pub error: Option<String>,
}

pub type Caches = Arc<RwLock<BTreeMap<String, RepoCache>>>;

/// Audit records kept per repository (the newest).
pub const AUDIT_KEPT: usize = 1000;

/// List every repository that has a full key now, and again each time `refresh` is notified.
pub fn start(
    config: Arc<Config>,
    executors: Arc<Executors>,
    clock: Arc<dyn arsip_ops::repo::clock::Clock>,
    refresh: Arc<tokio::sync::Notify>,
) -> (Caches, tokio::task::JoinHandle<()>) {
    let caches: Caches = Default::default();
    let out = caches.clone();
    let task = tokio::spawn(async move {
        loop {
            for (name, r) in &config.repositories {
                if !r.has_full_key() || !config.runs_in(name) {
                    continue;
                }
                let listed = list(&executors, name).await;
                let mut c = out.write().unwrap_or_else(|p| p.into_inner());
                let entry = c.entry(name.clone()).or_default();
                match listed {
                    Ok(fresh) => {
                        *entry = RepoCache {
                            listed: Some(clock.now()),
                            ..fresh
                        }
                    }
                    Err(e) => {
                        tracing::warn!(repository = %name, error = %e, "cannot list the repository for the API");
                        entry.error = Some(e);
                    }
                }
            }
            refresh.notified().await;
        }
    });
    (caches, task)
}

async fn list(executors: &Executors, name: &str) -> Result<RepoCache, String> {
    let repo = executors
        .open(name, false)
        .await?
        .full("the API's listing")
        .map_err(|e| e.to_string())?;
    let listing = repo.snapshot_listing().await.map_err(|e| e.to_string())?;
    let mut snapshots: Vec<SnapshotSummary> = listing
        .snapshots
        .into_iter()
        .map(|s| SnapshotSummary {
            id: s.id,
            kind: s.manifest.kind,
            source: s.manifest.source,
            host: s.manifest.host,
            writer: s.writer,
            time: s.manifest.time,
            stored: s.stored,
            logical_bytes: s.manifest.logical_bytes,
            added_bytes: s.manifest.added_bytes,
            tags: s.manifest.tags,
        })
        .collect();
    snapshots.sort_by_key(|s| std::cmp::Reverse(s.time));
    let (audit, audit_ok) = match arsip_ops::audit::list(&repo, None).await {
        Ok(log) => {
            let ok = log.check.ok();
            // The newest records only: the log grows for good, the daemon's memory must not.
            let mut records = log.records;
            records.drain(..records.len().saturating_sub(AUDIT_KEPT));
            (records, Some(ok))
        }
        Err(e) => {
            tracing::warn!(repository = %name, error = %e, "cannot read the audit log for the API");
            (Vec::new(), None)
        }
    };
    Ok(RepoCache {
        listed: None,
        snapshots,
        audit,
        audit_ok,
        error: None,
    })
}
