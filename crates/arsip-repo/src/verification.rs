//! Verification records (FORMAT.md §19): what `arsip verify` concluded, kept in the
//! repository as `verify/<time>-<random>`, a signed document (§8.1) by the writer that
//! verified, create-only, anchoring the audit log's head it saw (§18), so a cut tail of the
//! log shows against a later verification as it does against a later snapshot.

use bytes::Bytes;
use futures::TryStreamExt;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::audit::AuditAnchor;
use crate::cap::FullRepo;
use crate::error::{RepoError, Result};
use crate::keys;

pub(crate) const VERIFY_PREFIX: &str = "verify/";

/// The body of a verification record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerificationRecord {
    pub version: u32,
    /// The verifier's clock.
    pub time: jiff::Timestamp,
    pub writer: String,
    pub host: String,
    /// `ok`, `warnings` or `failed`.
    pub status: String,
    /// The newest audit record the verifier saw before storing this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<AuditAnchor>,
    /// The verifier's report (its own format; readers show it, they do not interpret it).
    pub report: serde_json::Value,
}

/// Only full keys verify (verification reads and checks everything), so only they record.
impl FullRepo {
    /// Store a verification record, create-only, signed by this handle's writer, with the
    /// audit head anchored; its object name (`verify/<YYYYMMDDTHHMMSSZ>-<16 hex>`). A report
    /// holding a floating-point number is refused (signed documents have none, §8.1).
    pub async fn verification_put(
        &self,
        status: &str,
        report: serde_json::Value,
    ) -> Result<String> {
        if keys::has_float(&report) {
            return Err(RepoError::Invalid(
                "a verification report must not hold floating-point numbers (FORMAT.md §8.1)"
                    .into(),
            ));
        }
        let time = self.now();
        let rec = VerificationRecord {
            version: 1,
            time,
            writer: hex::encode(self.writer_id),
            host: self.host().to_string(),
            status: status.to_string(),
            audit_head: self.audit_head().await?,
            report,
        };
        let body = keys::sign_doc(self.signer(), &rec);
        let mut r = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut r);
        let name = format!(
            "{VERIFY_PREFIX}{}-{}",
            time.strftime("%Y%m%dT%H%M%SZ"),
            hex::encode(r)
        );
        self.store.create(&name, Bytes::from(body)).await?;
        Ok(name)
    }

    /// The names of the verification records, oldest first (names sort by time).
    pub async fn verification_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .store
            .list(VERIFY_PREFIX)
            .map_ok(|m| m.key)
            .try_collect()
            .await?;
        names.sort();
        Ok(names)
    }

    /// Remove the verification records the store accepted before `before`, except the
    /// newest `keep` (whatever their age); returns how many went, or would go when
    /// `dry_run`. The audit log, which they anchor, is never removed: the newest records
    /// anchor its newest head.
    pub async fn verification_expire(
        &self,
        before: jiff::Timestamp,
        keep: usize,
        dry_run: bool,
    ) -> Result<usize> {
        self.master("expiring verification records")?;
        let mut metas: Vec<arsip_storage::ObjectMeta> =
            self.store.list(VERIFY_PREFIX).try_collect().await?;
        metas.sort_by(|a, b| a.key.cmp(&b.key));
        let old: Vec<String> = metas
            .iter()
            .rev()
            .skip(keep)
            .filter(|m| crate::repo::store_time(m).is_some_and(|t| t < before))
            .map(|m| m.key.clone())
            .collect();
        if !dry_run {
            for name in &old {
                match self.store.delete(name).await {
                    Ok(()) => {}
                    Err(e) if e.kind == arsip_storage::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(old.len())
    }

    /// One verification record, checked under the writer key that signed it.
    pub async fn verification_get(&self, name: &str) -> Result<VerificationRecord> {
        let raw = self.store.get(name).await?;
        let claimed: VerificationRecord = keys::unverified_body(name, &raw)?;
        self.verify_signed_by(name, &raw, &claimed.writer).await
    }
}
