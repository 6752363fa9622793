//! The audit trail (FORMAT.md §18): one create-only, hash-chained record per operation,
//! `audit/<seq>`, signed by the writer that appended it.
//!
//! Appending claims the next sequence number with a create-only write: of two hosts that
//! append at once exactly one gets the number, the other reads the winner, chains onto it
//! and tries the next one, so the log never forks and no record is lost. Each record holds
//! the BLAKE3 hash of the record before it; manifests carry the head they saw (`audit_head`),
//! so a cut tail shows against any later snapshot. Records hold who (writer, key slot, host,
//! OS user), what, when and the result: never secrets.

use std::collections::BTreeMap;

use arsip_storage::ErrorKind;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::cap::FullRepo;
use crate::error::{RepoError, Result};
use crate::keys;
use crate::repo::Repository;

pub(crate) const AUDIT_PREFIX: &str = "audit/";

/// Attempts at claiming a sequence number before giving up (each lost race reads the
/// winner and moves on by one).
const APPEND_ATTEMPTS: usize = 1000;

/// One record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub version: u32,
    pub seq: u64,
    /// `hex(H(previous record object))`; empty for the first record.
    pub prev: String,
    /// The appender's clock.
    pub time: jiff::Timestamp,
    pub writer: String,
    /// The key slot that opened the repository (full keys), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    pub host: String,
    pub user: String,
    /// The operation: `backup`, `restore`, `forget`, `prune`, `key`, `verify`, `repair`, …
    pub op: String,
    /// What it acted on (snapshot ids, sources, counts); never secrets.
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
    /// `ok`, `warnings` or `failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The head of the log as a manifest records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditAnchor {
    pub seq: u64,
    pub hash: String,
}

/// What an operation reports to the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub op: String,
    pub details: BTreeMap<String, serde_json::Value>,
    pub result: String,
    pub message: Option<String>,
}

fn record_name(seq: u64) -> String {
    format!("{AUDIT_PREFIX}{seq:020}")
}

fn parse_record_name(name: &str) -> Option<u64> {
    let n = name.strip_prefix(AUDIT_PREFIX)?;
    (n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

impl Repository {
    /// Append one record; returns its sequence number.
    pub async fn audit_append(&self, event: AuditEvent) -> Result<u64> {
        let mut head = self.audit_head().await?;
        for _ in 0..APPEND_ATTEMPTS {
            let seq = head.as_ref().map_or(1, |h| h.seq + 1);
            let rec = AuditRecord {
                version: 1,
                seq,
                prev: head.as_ref().map(|h| h.hash.clone()).unwrap_or_default(),
                time: self.clock.now(),
                writer: hex::encode(self.writer_id),
                slot: self.opened_slot().map(str::to_string),
                host: self.local.host.clone(),
                user: self.local.user.clone(),
                op: event.op.clone(),
                details: event.details.clone(),
                result: event.result.clone(),
                message: event.message.clone(),
            };
            let body = keys::sign_doc(self.signer(), &rec);
            let hash = blake3::hash(&body).to_hex().to_string();
            match self
                .store
                .create(&record_name(seq), Bytes::from(body))
                .await
            {
                Ok(()) => {
                    self.cache_head(&AuditAnchor { seq, hash });
                    return Ok(seq);
                }
                Err(e) if e.kind == ErrorKind::AlreadyExists => {
                    let got = self.store.get(&record_name(seq)).await?;
                    head = Some(AuditAnchor {
                        seq,
                        hash: blake3::hash(&got).to_hex().to_string(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Refused(format!(
            "could not append to the audit log: {APPEND_ATTEMPTS} other records were appended \
             while trying"
        )))
    }

    /// The newest record: from the local cache when it still names a record with that hash
    /// and nothing follows it, else from a listing.
    pub async fn audit_head(&self) -> Result<Option<AuditAnchor>> {
        if let Some(c) = self.cached_head() {
            if let Ok(b) = self.store.get(&record_name(c.seq)).await {
                if blake3::hash(&b).to_hex().as_str() == c.hash {
                    return self.walk_forward(c).await.map(Some);
                }
            }
        }
        let mut top: Option<u64> = None;
        let mut listing = self.store.list(AUDIT_PREFIX);
        while let Some(m) = listing.try_next().await? {
            if let Some(n) = parse_record_name(&m.key) {
                top = Some(top.map_or(n, |t| t.max(n)));
            }
        }
        drop(listing);
        let Some(n) = top else { return Ok(None) };
        let b = self.store.get(&record_name(n)).await?;
        let a = AuditAnchor {
            seq: n,
            hash: blake3::hash(&b).to_hex().to_string(),
        };
        self.cache_head(&a);
        Ok(Some(a))
    }

    /// From a known record, follow the records appended after it.
    async fn walk_forward(&self, mut a: AuditAnchor) -> Result<AuditAnchor> {
        loop {
            match self.store.get(&record_name(a.seq + 1)).await {
                Ok(b) => {
                    a = AuditAnchor {
                        seq: a.seq + 1,
                        hash: blake3::hash(&b).to_hex().to_string(),
                    }
                }
                Err(e) if e.kind == ErrorKind::NotFound => return Ok(a),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn head_cache(&self) -> std::path::PathBuf {
        self.repo_cache_dir().join("audit-head")
    }

    fn cached_head(&self) -> Option<AuditAnchor> {
        let b = std::fs::read(self.head_cache()).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Best effort: the cache only saves a listing.
    fn cache_head(&self, a: &AuditAnchor) {
        let path = self.head_cache();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(path, serde_json::to_vec(a).expect("serialisable"));
    }
}

/// A record as listed, with whether its signature verified.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    #[serde(flatten)]
    pub record: AuditRecord,
    pub hash: String,
}

/// What `audit verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditCheck {
    pub records: u64,
    pub head: Option<AuditAnchor>,
    /// Anchors in snapshots and verification records (§19) that were checked against the log.
    pub anchors_checked: usize,
    pub problems: Vec<String>,
}

impl AuditCheck {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl FullRepo {
    /// Every record, in order, and the problems that make the log untrustworthy: a record
    /// that does not verify, a number missing, a broken chain, and (against the anchors of
    /// the snapshots) an edited or cut tail.
    pub async fn audit_check(&self) -> Result<(Vec<AuditEntry>, AuditCheck)> {
        let mut names: Vec<(u64, String)> = Vec::new();
        let mut check = AuditCheck::default();
        let mut listing = self.store.list(AUDIT_PREFIX);
        while let Some(m) = listing.try_next().await? {
            match parse_record_name(&m.key) {
                Some(n) => names.push((n, m.key)),
                None => check
                    .problems
                    .push(format!("{}: not an audit record name", m.key)),
            }
        }
        drop(listing);
        names.sort();
        let mut entries: Vec<AuditEntry> = Vec::new();
        let mut hashes: BTreeMap<u64, String> = BTreeMap::new();
        let mut expect = 1;
        let mut prev_hash = String::new();
        for (n, name) in names {
            if n != expect {
                check.problems.push(format!(
                    "records {expect}..{} are missing (removed from the log)",
                    n - 1
                ));
                prev_hash.clear();
            }
            expect = n + 1;
            let raw = self.store.get(&name).await?;
            let hash = blake3::hash(&raw).to_hex().to_string();
            hashes.insert(n, hash.clone());
            let rec = match self.verify_record(&name, &raw).await {
                Ok(r) => r,
                Err(e) => {
                    check.problems.push(format!("{name}: {e}"));
                    prev_hash = hash;
                    continue;
                }
            };
            if rec.seq != n {
                check
                    .problems
                    .push(format!("{name}: holds record {} (moved)", rec.seq));
            }
            if n > 1 && !prev_hash.is_empty() && rec.prev != prev_hash {
                check.problems.push(format!(
                    "{name}: does not chain onto record {} (the log was edited or reordered)",
                    n - 1
                ));
            }
            prev_hash = hash.clone();
            entries.push(AuditEntry { record: rec, hash });
        }
        check.records = entries.len() as u64;
        check.head = hashes.iter().next_back().map(|(s, h)| AuditAnchor {
            seq: *s,
            hash: h.clone(),
        });
        let snaps = self.snapshot_listing().await?.snapshots;
        for s in &snaps {
            let Some(a) = &s.manifest.audit_head else {
                continue;
            };
            check.anchors_checked += 1;
            match hashes.get(&a.seq) {
                Some(h) if *h == a.hash => {}
                Some(_) => check.problems.push(format!(
                    "record {} differs from the one snapshot {} saw (the log was edited)",
                    a.seq,
                    s.short_id()
                )),
                None => check.problems.push(format!(
                    "record {} that snapshot {} saw is gone (the log was cut)",
                    a.seq,
                    s.short_id()
                )),
            }
        }
        // Verification records anchor the head they saw too (FORMAT.md §19).
        for name in self.verification_names().await? {
            let rec = match self.verification_get(&name).await {
                Ok(r) => r,
                Err(e) => {
                    check.problems.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let Some(a) = &rec.audit_head else {
                continue;
            };
            check.anchors_checked += 1;
            match hashes.get(&a.seq) {
                Some(h) if *h == a.hash => {}
                Some(_) => check.problems.push(format!(
                    "record {} differs from the one {name} saw (the log was edited)",
                    a.seq
                )),
                None => check.problems.push(format!(
                    "record {} that {name} saw is gone (the log was cut)",
                    a.seq
                )),
            }
        }
        check.problems.sort();
        check.problems.dedup();
        Ok((entries, check))
    }

    async fn verify_record(&self, name: &str, raw: &[u8]) -> Result<AuditRecord> {
        let claimed: AuditRecord = keys::unverified_body(name, raw)?;
        self.verify_signed_by(name, raw, &claimed.writer).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SystemClock;
    use crate::{InitOptions, LocalSettings};

    #[test]
    fn names() {
        assert_eq!(record_name(3), "audit/00000000000000000003");
        assert_eq!(parse_record_name(&record_name(3)), Some(3));
        assert_eq!(parse_record_name("audit/3"), None);
    }

    async fn repo(cache: &std::path::Path) -> FullRepo {
        let store =
            arsip_storage::backend::open(&arsip_storage::backend::Location::Memory, false).unwrap();
        std::env::set_var("ARSIP_TEST_WEAK_KDF", "1");
        Repository::init(
            store.clone(),
            Some(b"pw"),
            &InitOptions::default(),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        open(store, cache).await
    }

    async fn open(store: arsip_storage::DynStore, cache: &std::path::Path) -> FullRepo {
        let with = crate::OpenWith::Password(zeroize::Zeroizing::new(b"pw".to_vec()));
        Repository::open(store, with, Arc::new(SystemClock))
            .await
            .unwrap()
            .full("test")
            .unwrap()
            .with_local(LocalSettings {
                cache_dir: cache.to_path_buf(),
                ..Default::default()
            })
    }

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            op: "backup".into(),
            details: [("n".to_string(), serde_json::Value::from(n))].into(),
            result: "ok".into(),
            message: None,
        }
    }

    /// A verification record anchors the head it saw: a log cut behind it shows, and a
    /// report with a float (which no verifier could check) is refused.
    #[tokio::test]
    async fn verification_records_anchor_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path()).await;
        for i in 0..3 {
            r.audit_append(event(i)).await.unwrap();
        }
        let name = r
            .verification_put("ok", serde_json::json!({"sources": 1}))
            .await
            .unwrap();
        assert!(name.starts_with("verify/"), "{name}");
        assert_eq!(r.verification_names().await.unwrap(), vec![name.clone()]);
        let rec = r.verification_get(&name).await.unwrap();
        assert_eq!(rec.status, "ok");
        assert_eq!(rec.audit_head.as_ref().unwrap().seq, 3);
        let (_, check) = r.audit_check().await.unwrap();
        assert!(check.ok(), "{:?}", check.problems);
        assert_eq!(check.anchors_checked, 1);
        assert!(r
            .verification_put("ok", serde_json::json!({"seconds": 1.5}))
            .await
            .is_err());
        // cut the tail the record saw
        r.store.delete(&record_name(3)).await.unwrap();
        let fresh = open(r.store.clone(), tempfile::tempdir().unwrap().path()).await;
        let (_, check) = fresh.audit_check().await.unwrap();
        assert!(
            check
                .problems
                .iter()
                .any(|p| p.contains(&name) && p.contains("gone")),
            "{:?}",
            check.problems
        );
    }

    /// Appenders racing on one repository (each with its own cache, as separate hosts have)
    /// never fork the log and never lose a record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appenders_neither_fork_nor_lose() {
        let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let first = repo(dirs[0].path()).await;
        let mut handles = Vec::new();
        for d in &dirs {
            handles.push(open(first.store.clone(), d.path()).await);
        }
        let tasks: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(h, r)| {
                tokio::spawn(async move {
                    for i in 0..10 {
                        r.audit_append(event(h * 100 + i)).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let (entries, check) = first.audit_check().await.unwrap();
        assert!(check.ok(), "{:?}", check.problems);
        assert_eq!(entries.len(), 40);
        let mut ns: Vec<u64> = entries
            .iter()
            .map(|e| e.record.details["n"].as_u64().unwrap())
            .collect();
        ns.sort();
        ns.dedup();
        assert_eq!(ns.len(), 40, "every record is there once");
    }

    /// Each kind of tamper is caught: an edited record, a removed one, two swapped, a cut
    /// tail (against a manifest's anchor, simulated by the check's head).
    #[tokio::test]
    async fn tampering_is_detected() {
        let d = tempfile::tempdir().unwrap();
        for tamper in ["edit", "remove", "swap", "plant"] {
            let r = repo(d.path()).await;
            for i in 0..5 {
                r.audit_append(event(i)).await.unwrap();
            }
            assert!(r.audit_check().await.unwrap().1.ok());
            let store = &r.store;
            let two = store.get(&record_name(2)).await.unwrap();
            let three = store.get(&record_name(3)).await.unwrap();
            match tamper {
                "edit" => {
                    let edited = String::from_utf8(two.to_vec())
                        .unwrap()
                        .replace("\"backup\"", "\"restore\"");
                    store.delete(&record_name(2)).await.unwrap();
                    store.create(&record_name(2), edited.into()).await.unwrap();
                }
                "remove" => store.delete(&record_name(2)).await.unwrap(),
                "swap" => {
                    store.delete(&record_name(2)).await.unwrap();
                    store.delete(&record_name(3)).await.unwrap();
                    store.create(&record_name(2), three).await.unwrap();
                    store.create(&record_name(3), two).await.unwrap();
                }
                _ => store.create(&record_name(9), two).await.unwrap(),
            }
            let c = r.audit_check().await.unwrap().1;
            assert!(!c.ok(), "{tamper} not detected");
        }
    }
}
