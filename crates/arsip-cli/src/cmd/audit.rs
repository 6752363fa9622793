//! `arsip audit [--since TIME]` and `arsip audit verify`.

use anyhow::Result;
use arsip_ops::audit::{self, AuditCheck, AuditLog};
use arsip_ops::open::Access;

use crate::cli::{AuditArgs, AuditCmd};
use crate::ctx::{Ctx, Render};
use crate::{exit, usage};

impl Render for AuditCheck {
    fn human(&self) -> String {
        let mut out = format!(
            "{} record(s), head {}, {} anchor(s) in snapshots and verification records checked\n",
            self.records,
            self.head
                .as_ref()
                .map(|h| format!("{} ({})", h.seq, &h.hash[..12]))
                .unwrap_or_else(|| "none".into()),
            self.anchors_checked
        );
        for p in &self.problems {
            out += &format!("TAMPERED {p}\n");
        }
        out + if self.ok() {
            "the audit log is intact"
        } else {
            "the audit log was tampered with"
        }
    }
}

impl Render for AuditLog {
    fn human(&self) -> String {
        let mut out = String::new();
        for e in &self.records {
            let r = &e.record;
            let details: Vec<String> = r
                .details
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect();
            out += &format!(
                "{:>6} {} {:<8} {:<7} {}@{} writer {} {}{}\n",
                r.seq,
                r.time.strftime("%Y-%m-%d %H:%M:%S"),
                r.op,
                r.result,
                r.user,
                r.host,
                &r.writer[..8.min(r.writer.len())],
                details.join(" "),
                r.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
        }
        out + &self.check.human()
    }
}

pub async fn run(ctx: &Ctx<'_>, a: &AuditArgs) -> Result<u8> {
    let repo = ctx
        .open_reading(Access::Full, "reading the audit log")
        .await?;
    let check = match a.command {
        Some(AuditCmd::Verify) => {
            let c = audit::verify(&repo).await?;
            ctx.emit(&c)?;
            c
        }
        None => {
            let since = a
                .since
                .as_deref()
                .map(|s| {
                    s.parse::<jiff::Timestamp>()
                        .map_err(|e| usage!("--since {s:?} is not a time (RFC 3339): {e}"))
                })
                .transpose()?;
            let log = audit::list(&repo, since).await?;
            ctx.emit(&log)?;
            log.check
        }
    };
    Ok(if check.ok() { exit::OK } else { exit::DAMAGED })
}
