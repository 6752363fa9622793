//! `arsip key add|list|remove|passwd`.

use anyhow::Result;
use arsip_ops::keys::{self, KeyList, Removed};
use arsip_ops::open::Access;
use serde_json::json;

use crate::cli::KeyCmd;
use crate::ctx::{Ctx, Render};
use crate::{exit, secrets};

/// A one-line outcome: its JSON and its sentence.
struct Said(serde_json::Value, String);

impl serde::Serialize for Said {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Render for Said {
    fn human(&self) -> String {
        self.1.clone()
    }
}

impl Render for KeyList {
    fn human(&self) -> String {
        let mut out = Vec::new();
        for s in &self.slots {
            out.push(format!(
                "slot   {}  {:<8}  {}  {}  {}",
                s.id,
                format!("{:?}", s.kind).to_lowercase(),
                s.created.strftime("%Y-%m-%d %H:%M"),
                s.host,
                s.label
            ));
        }
        for a in &self.agents {
            let state = if a.revoked.is_some() {
                "revoked"
            } else {
                "active"
            };
            out.push(format!(
                "agent  {}  {state}  {}  {}",
                a.writer_id,
                a.created.strftime("%Y-%m-%d %H:%M"),
                a.label
            ));
        }
        out.join("\n")
    }
}

pub async fn run(ctx: &Ctx<'_>, k: &KeyCmd) -> Result<u8> {
    let repo = ctx.open(Access::Full).await?;
    match k {
        KeyCmd::Add {
            label,
            agent,
            keyfile,
            out,
        } => {
            if *agent || *keyfile {
                let out = out.as_ref().expect("clap requires --out");
                let reserved = secrets::SecretFile::reserve(out)?;
                if *agent {
                    let file = keys::add_agent(&repo, label).await?;
                    reserved.write(&serde_json::to_vec_pretty(&file)?)?;
                    let text = format!("added agent {} → {}", file.writer_id, out.display());
                    ctx.emit(&Said(json!({"agent": file.writer_id, "out": out}), text))?;
                } else {
                    let (slot, file) = keys::add_keyfile(&repo, label).await?;
                    reserved.write(&serde_json::to_vec_pretty(&file)?)?;
                    let text = format!("added key-file slot {} → {}", slot.id, out.display());
                    ctx.emit(&Said(json!({"slot": slot.id, "out": out}), text))?;
                }
            } else {
                let pw = secrets::new_password()?;
                let slot = keys::add_password(&repo, &pw, label).await?;
                let text = format!("added password slot {}", slot.id);
                ctx.emit(&Said(json!({"slot": slot.id}), text))?;
            }
        }
        KeyCmd::List => ctx.emit(&keys::list(&repo).await?)?,
        KeyCmd::Remove { id } => match keys::remove(&repo, id).await? {
            Removed::Slot(id) => {
                let text = format!("removed key slot {id}");
                ctx.emit(&Said(json!({"removed": id}), text))?
            }
            Removed::Agent(id) => {
                let text = format!("revoked agent {id}");
                ctx.emit(&Said(json!({"revoked": id}), text))?
            }
        },
        KeyCmd::Passwd => {
            let pw = secrets::new_password()?;
            let p = keys::passwd(&repo, &pw).await?;
            let text = format!("password changed (slot {} replaces {})", p.slot, p.removed);
            ctx.emit(&Said(json!({"slot": p.slot, "removed": p.removed}), text))?;
        }
    }
    Ok(exit::OK)
}
