//! Key management: password and key-file slots, agent credentials, revocation, password
//! change. Secrets come in and key material goes out as values; writing them to files is
//! the front end's job (it knows where and with which permissions).

use arsip_repo::keys::{AgentFile, KeyFile, KeySlot, SlotKind};
use arsip_repo::Repository;

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
    pub revoked: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyList {
    pub slots: Vec<SlotInfo>,
    pub agents: Vec<AgentInfo>,
}

pub async fn list(repo: &Repository) -> Result<KeyList> {
    let slots = repo.slots().await?.iter().map(SlotInfo::from).collect();
    let agents = repo
        .writers()
        .await?
        .into_iter()
        .map(|w| AgentInfo {
            writer_id: w.writer_id,
            label: w.label,
            created: w.created,
            revoked: w.revoked,
        })
        .collect();
    Ok(KeyList { slots, agents })
}

pub async fn add_password(repo: &Repository, password: &[u8], label: &str) -> Result<SlotInfo> {
    Ok(SlotInfo::from(&repo.add_password(password, label).await?))
}

pub async fn add_keyfile(repo: &Repository, label: &str) -> Result<(SlotInfo, KeyFile)> {
    let (slot, file) = repo.add_keyfile(label).await?;
    Ok((SlotInfo::from(&slot), file))
}

pub async fn add_agent(repo: &Repository, label: &str) -> Result<AgentFile> {
    Ok(repo.add_agent(label).await?)
}

/// What `remove` did: a slot removed, or an agent revoked.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Removed {
    Slot(String),
    Agent(String),
}

/// Remove the slot `id`, or revoke the agent `id`.
pub async fn remove(repo: &Repository, id: &str) -> Result<Removed> {
    if repo.slots().await?.iter().any(|s| s.id == id) {
        repo.remove_slot(id).await?;
        Ok(Removed::Slot(id.to_string()))
    } else {
        repo.revoke_agent(id).await?;
        Ok(Removed::Agent(id.to_string()))
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Passwd {
    pub slot: String,
    pub removed: String,
}

/// Change the password: add a slot for `new`, then remove the password slot this handle
/// was opened with.
pub async fn passwd(repo: &Repository, new: &[u8]) -> Result<Passwd> {
    let old = repo.opened_slot().map(str::to_string);
    let slots = repo.slots().await?;
    let old = old
        .filter(|id| {
            slots
                .iter()
                .any(|s| &s.id == id && s.kind == SlotKind::Password)
        })
        .ok_or_else(|| {
            Error::usage(
                "changing a password needs the repository opened with that password, not a key \
                 file or agent credentials",
            )
        })?;
    let slot = repo.add_password(new, "passwd").await?;
    repo.remove_slot(&old).await?;
    Ok(Passwd {
        slot: slot.id,
        removed: old,
    })
}
