//! The audit trail from the operations' side: every operation appends one record (who, what,
//! when, result) through [`record`], and `audit` lists and verifies the log. The log itself
//! (create-only, hash-chained, anchored in manifests) is the repository's: FORMAT.md §18.

use std::collections::BTreeMap;

pub use arsip_repo::{AuditCheck, AuditEntry, AuditEvent, AuditRecord};
use arsip_repo::{FullRepo, Repository};
use serde::Serialize;
use serde_json::Value;

use crate::Result;

/// What an operation acted on.
pub type Details = BTreeMap<String, Value>;

/// `details` from pairs.
pub fn details<const N: usize>(pairs: [(&str, Value); N]) -> Details {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Append the record of operation `op` with its result. `more` adds what only a success
/// knows (the snapshot id). Best effort: an operation that did its work is not turned into
/// a failure because the log could not be written (the warning says so).
pub async fn record<T>(
    repo: &Repository,
    op: &str,
    mut details: Details,
    result: &Result<T>,
    more: impl FnOnce(&T, &mut Details),
) {
    let (result, message) = match result {
        Ok(v) => {
            more(v, &mut details);
            ("ok".to_string(), None)
        }
        Err(e) => ("failed".to_string(), Some(e.to_string())),
    };
    let event = AuditEvent {
        op: op.to_string(),
        details,
        result,
        message,
    };
    if let Err(e) = repo.audit_append(event).await {
        tracing::warn!(op, error = %e, "could not append to the audit log");
    }
}

/// Run `op` and record it, with no details beyond `details`.
pub async fn audited<T>(
    repo: &Repository,
    op: &str,
    details: Details,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let r = fut.await;
    record(repo, op, details, &r, |_, _| {}).await;
    r
}

/// `audit`: the records (newest last), optionally since a time.
#[derive(Debug, Clone, Serialize)]
pub struct AuditLog {
    pub records: Vec<AuditEntry>,
    pub check: AuditCheck,
}

pub async fn list(repo: &FullRepo, since: Option<jiff::Timestamp>) -> Result<AuditLog> {
    let (mut records, check) = repo.audit_check().await?;
    if let Some(t) = since {
        records.retain(|r| r.record.time >= t);
    }
    Ok(AuditLog { records, check })
}

/// `audit verify`.
pub async fn verify(repo: &FullRepo) -> Result<AuditCheck> {
    Ok(repo.audit_check().await?.1)
}
