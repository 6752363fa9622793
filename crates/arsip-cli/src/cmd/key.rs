//! `arsip key add|list|remove|passwd`.

use anyhow::Result;
use arsip_ops::keys::{self, CompromisePlan, KeyList};
use arsip_ops::open::Access;
use arsip_ops::repo::Standing;
use arsip_ops::repo::{FullRepo, Opened};
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
            let state = match &a.standing {
                Standing::Active => "active",
                Standing::Retired { .. } => "retired",
                Standing::Compromised { .. } => "compromised",
                Standing::Unknown => "unknown",
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

/// What declaring an agent compromised would make unreadable, for stderr.
fn describe_loss(plan: &CompromisePlan) -> String {
    let mut out = format!(
        "declaring agent {} ({}) compromised makes {} snapshot(s) unreadable:",
        plan.agent.writer_id,
        plan.agent.label,
        plan.unreadable.len()
    );
    for s in &plan.unreadable {
        out += &format!(
            "\n  {}  {}  {}  {}  {}",
            &s.id[..8],
            s.time.strftime("%Y-%m-%d %H:%M:%S"),
            s.kind,
            s.host,
            s.source
        );
    }
    out
}

/// Ask on the terminal; `false` when stdin is not a terminal or the answer is not "yes".
fn confirm(n: usize) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("type yes to make these {n} snapshot(s) unreadable: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

/// The full-key handle for `what`, refused for agent credentials.
fn full(repo: &Opened, what: &'static str) -> Result<FullRepo> {
    Ok(repo.clone().full(what)?)
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
                    let file = keys::add_agent(&full(&repo, "adding an agent")?, label).await?;
                    reserved.write(&serde_json::to_vec_pretty(&file)?)?;
                    let text = format!("added agent {} → {}", file.writer_id, out.display());
                    ctx.emit(&Said(json!({"agent": file.writer_id, "out": out}), text))?;
                } else {
                    let (slot, file) =
                        keys::add_keyfile(&full(&repo, "adding a key")?, label).await?;
                    reserved.write(&serde_json::to_vec_pretty(&file)?)?;
                    let text = format!("added key-file slot {} → {}", slot.id, out.display());
                    ctx.emit(&Said(json!({"slot": slot.id, "out": out}), text))?;
                }
            } else {
                let pw = secrets::new_password()?;
                let slot = keys::add_password(&full(&repo, "adding a key")?, &pw, label).await?;
                let text = format!("added password slot {}", slot.id);
                ctx.emit(&Said(json!({"slot": slot.id}), text))?;
            }
        }
        KeyCmd::List => ctx.emit(&keys::list(&repo).await?)?,
        KeyCmd::Remove {
            id,
            compromised: false,
            ..
        } => {
            let id = keys::remove_slot(&full(&repo, "removing a key")?, id)
                .await
                .map_err(|e| {
                    if matches!(e, arsip_ops::Error::Usage(_)) {
                        anyhow::Error::new(e).context(
                            "`arsip key retire ID` retires an agent; `arsip key remove \
                         --compromised ID` declares it compromised",
                        )
                    } else {
                        e.into()
                    }
                })?;
            let text = format!("removed key slot {id}");
            ctx.emit(&Said(json!({"removed": id}), text))?
        }
        KeyCmd::Remove {
            id,
            compromised: true,
            yes,
        } => {
            let plan = keys::plan_compromise(&full(&repo, "listing snapshots")?, id).await?;
            if !plan.unreadable.is_empty() {
                eprintln!("{}", describe_loss(&plan));
                if !*yes && !confirm(plan.unreadable.len())? {
                    return Err(arsip_ops::Error::Refused(format!(
                        "not declaring agent {id} compromised: {} snapshot(s) would become \
                         unreadable and this was not confirmed (pass --yes, or run it on a \
                         terminal)",
                        plan.unreadable.len()
                    ))
                    .into());
                }
            }
            let c = keys::compromise(&full(&repo, "revoking an agent")?, id).await?;
            let text = format!(
                "agent {id} ({}) declared compromised: readers refuse everything it signed; \
                 {} snapshot(s) became unreadable. Take a fresh backup of what it covered with a \
                 full key or a new agent; a later maintenance command removes its objects",
                c.agent.label,
                c.unreadable.len()
            );
            ctx.emit(&Said(serde_json::to_value(&c)?, text))?
        }
        KeyCmd::Retire { id } => {
            let r = keys::retire(&full(&repo, "revoking an agent")?, id).await?;
            let cutoff = match &r.agent.standing {
                Standing::Retired {
                    cutoff: Some(c), ..
                } => c.to_string(),
                _ => "unknown".into(),
            };
            let text = format!(
                "agent {id} ({}) retired: the store accepted the retirement at {cutoff}; its {} \
                 snapshot(s) from before stay restorable, and nothing it writes from now on is \
                 accepted (its next backup fails)",
                r.agent.label,
                r.kept.len()
            );
            ctx.emit(&Said(serde_json::to_value(&r)?, text))?
        }
        KeyCmd::Passwd => {
            let pw = secrets::new_password()?;
            let p = keys::passwd(&repo, &pw).await?;
            let text = format!("password changed (slot {} replaces {})", p.slot, p.removed);
            ctx.emit(&Said(json!({"slot": p.slot, "removed": p.removed}), text))?;
        }
    }
    Ok(exit::OK)
}
