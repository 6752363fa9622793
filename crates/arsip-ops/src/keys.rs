//! Key management: password and key-file slots, agent credentials, revocation, password
//! change. Secrets come in and key material goes out as values; writing them to files is
//! the front end's job (it knows where and with which permissions).

use arsip_repo::Snapshot;
use arsip_repo::{AgentFile, KeyFile, KeySlot, SlotKind};
use arsip_repo::{FullRepo, Opened, RepoError, Repository};
use arsip_repo::{Standing, Writer};

use crate::audit::{audited, details, record};
use crate::{Error, Result};

/// A key slot as listed: no wrapped key material.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotInfo {
    pub id: String,
    pub kind: SlotKind,
    pub label: String,
    pub host: String,
    pub created: jiff::Timestamp,
}

impl From<&KeySlot> for SlotInfo {
    fn from(s: &KeySlot) -> SlotInfo {
        SlotInfo {
            id: s.id.clone(),
            kind: s.kind,
            label: s.label.clone(),
            host: s.host.clone(),
            created: s.created,
        }
    }
}

/// An agent as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentInfo {
    pub writer_id: String,
    pub label: String,
    pub created: jiff::Timestamp,
    /// When it was retired or declared compromised (the root's clock).
    pub revoked: Option<jiff::Timestamp>,
    pub standing: Standing,
}

impl From<Writer> for AgentInfo {
    fn from(w: Writer) -> AgentInfo {
        AgentInfo {
            writer_id: w.record.writer_id,
            label: w.record.label,
            created: w.record.created,
            revoked: w.record.revoked,
            standing: w.standing,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyList {
    pub slots: Vec<SlotInfo>,
    pub agents: Vec<AgentInfo>,
}

pub async fn list(repo: &Repository) -> Result<KeyList> {
    let slots = repo.slots().await?.iter().map(SlotInfo::from).collect();
    let agents = repo
        .writer_list()
        .await?
        .into_iter()
        .map(AgentInfo::from)
        .collect();
    Ok(KeyList { slots, agents })
}

pub async fn add_password(repo: &FullRepo, password: &[u8], label: &str) -> Result<SlotInfo> {
    let what = details([("add", "password".into()), ("label", label.into())]);
    audited(repo, "key", what, async {
        Ok(SlotInfo::from(&repo.add_password(password, label).await?))
    })
    .await
}

pub async fn add_keyfile(repo: &FullRepo, label: &str) -> Result<(SlotInfo, KeyFile)> {
    let what = details([("add", "key-file".into()), ("label", label.into())]);
    audited(repo, "key", what, async {
        let (slot, file) = repo.add_keyfile(label).await?;
        Ok((SlotInfo::from(&slot), file))
    })
    .await
}

pub async fn add_agent(repo: &FullRepo, label: &str) -> Result<AgentFile> {
    let what = details([("add", "agent".into()), ("label", label.into())]);
    let r = async { Ok(repo.add_agent(label).await?) }.await;
    record(repo, "key", what, &r, |a: &AgentFile, d| {
        d.insert("agent".into(), a.writer_id.clone().into());
    })
    .await;
    r
}

/// Remove the key slot `id`. Agents are not slots: they are retired or declared
/// compromised ([`retire`], [`compromise`]), which say different things about what they
/// wrote.
pub async fn remove_slot(repo: &FullRepo, id: &str) -> Result<String> {
    let what = details([("remove", "slot".into()), ("slot", id.into())]);
    audited(repo, "key", what, remove_slot_unaudited(repo, id)).await
}

async fn remove_slot_unaudited(repo: &FullRepo, id: &str) -> Result<String> {
    if !repo.slots().await?.iter().any(|s| s.id == id)
        && repo.writers().await?.iter().any(|w| w.writer_id == id)
    {
        return Err(Error::usage(format!(
            "{id} is an agent, not a key slot: retire it (what it backed up stays restorable) \
             or declare it compromised (nothing it wrote is accepted any more)"
        )));
    }
    repo.remove_slot(id).await?;
    Ok(id.to_string())
}

/// A snapshot named in an outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotRef {
    pub id: String,
    pub time: jiff::Timestamp,
    pub kind: String,
    pub source: String,
    pub host: String,
}

impl From<&Snapshot> for SnapshotRef {
    fn from(s: &Snapshot) -> SnapshotRef {
        SnapshotRef {
            id: s.id.clone(),
            time: s.manifest.time,
            kind: s.manifest.kind.clone(),
            source: s.manifest.source.clone(),
            host: s.manifest.host.clone(),
        }
    }
}

/// What declaring an agent compromised would take back: every snapshot of it that readers
/// accept now becomes unreadable.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompromisePlan {
    pub agent: AgentInfo,
    pub unreadable: Vec<SnapshotRef>,
}

async fn agent(repo: &FullRepo, id: &str) -> Result<Writer> {
    repo.writer_list()
        .await?
        .into_iter()
        .find(|w| w.record.writer_id == id)
        .ok_or_else(|| RepoError::NotFound(format!("no agent {id}")).into())
}

/// What [`compromise`] would make unreadable, without changing anything.
pub async fn plan_compromise(repo: &FullRepo, id: &str) -> Result<CompromisePlan> {
    let agent = agent(repo, id).await?;
    let snaps = repo.snapshot_listing().await?.snapshots;
    Ok(CompromisePlan {
        agent: agent.into(),
        unreadable: snaps
            .iter()
            .filter(|s| s.writer == id)
            .map(SnapshotRef::from)
            .collect(),
    })
}

/// The outcome of [`compromise`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compromised {
    pub agent: AgentInfo,
    /// The snapshots that became unreadable.
    pub unreadable: Vec<SnapshotRef>,
}

/// Declare the agent `id` compromised: readers refuse everything it ever signed, whenever
/// it was written (FORMAT.md §8.6). Callers show [`plan_compromise`] first.
pub async fn compromise(repo: &FullRepo, id: &str) -> Result<Compromised> {
    let what = details([("compromise", "agent".into()), ("agent", id.into())]);
    audited(repo, "key", what, compromise_unaudited(repo, id)).await
}

async fn compromise_unaudited(repo: &FullRepo, id: &str) -> Result<Compromised> {
    let plan = plan_compromise(repo, id).await?;
    let w = repo.revoke_agent(id).await?;
    Ok(Compromised {
        agent: w.into(),
        unreadable: plan.unreadable,
    })
}

/// The outcome of [`retire`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Retired {
    pub agent: AgentInfo,
    /// Its snapshots that stay valid (the store accepted them before the cut-off).
    pub kept: Vec<SnapshotRef>,
}

/// Retire the agent `id`: what the store accepted from it so far stays valid, anything it
/// writes from now on is refused, by readers and by the agent itself.
pub async fn retire(repo: &FullRepo, id: &str) -> Result<Retired> {
    let what = details([("retire", "agent".into()), ("agent", id.into())]);
    audited(repo, "key", what, retire_unaudited(repo, id)).await
}

async fn retire_unaudited(repo: &FullRepo, id: &str) -> Result<Retired> {
    let w = repo.retire_agent(id).await?;
    let snaps = repo.snapshot_listing().await?.snapshots;
    Ok(Retired {
        agent: w.into(),
        kept: snaps
            .iter()
            .filter(|s| s.writer == id)
            .map(SnapshotRef::from)
            .collect(),
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Passwd {
    pub slot: String,
    pub removed: String,
}

const PASSWD_NEEDS_PASSWORD: &str = "changing a password needs the repository opened with \
     that password, not a key file or agent credentials";

/// Change the password: add a slot for `new`, then remove the password slot this handle
/// was opened with (a usage error for handles opened otherwise, agents included).
pub async fn passwd(repo: &Opened, new: &[u8]) -> Result<Passwd> {
    let what = details([("passwd", "password".into())]);
    audited(repo, "key", what, passwd_unaudited(repo, new)).await
}

async fn passwd_unaudited(repo: &Opened, new: &[u8]) -> Result<Passwd> {
    let old = repo.opened_slot().map(str::to_string);
    let slots = repo.slots().await?;
    let old = old
        .filter(|id| {
            slots
                .iter()
                .any(|s| &s.id == id && s.kind == SlotKind::Password)
        })
        .ok_or_else(|| Error::usage(PASSWD_NEEDS_PASSWORD))?;
    let Opened::Full(repo) = repo else {
        return Err(Error::usage(PASSWD_NEEDS_PASSWORD));
    };
    let slot = repo.add_password(new, "passwd").await?;
    repo.remove_slot(&old).await?;
    Ok(Passwd {
        slot: slot.id,
        removed: old,
    })
}
