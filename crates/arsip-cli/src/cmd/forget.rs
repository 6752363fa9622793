//! `arsip forget [--keep-* …] [--dry-run]`.

use anyhow::Result;
use arsip_ops::forget::{self, ForgetOptions, ForgetOutcome, Policy};
use arsip_ops::open::Access;
use arsip_ops::prune::{self, PruneOutcome};

use crate::cli::ForgetArgs;
use crate::ctx::{Ctx, Render};
use crate::{exit, usage};

/// `forget --prune`: both outcomes.
#[derive(serde::Serialize)]
struct ForgetPrune {
    forget: ForgetOutcome,
    prune: PruneOutcome,
}

impl Render for ForgetPrune {
    fn human(&self) -> String {
        let note = if self.forget.dry_run {
            "\n(a dry run: prune's figures do not count the snapshots forget would remove)"
        } else {
            ""
        };
        format!("{}\n{}{note}", self.forget.human(), self.prune.human())
    }
}

impl Render for ForgetOutcome {
    fn human(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            out += &format!(
                "{} {} on {} (writer {}): keep {}, forget {}\n",
                g.kind,
                g.source,
                g.host,
                &g.writer[..8.min(g.writer.len())],
                g.keep.len(),
                g.remove.len()
            );
            for d in &g.keep {
                out += &format!(
                    "  keep   {} {}  {}\n",
                    &d.id[..12],
                    d.stored.map(|t| t.to_string()).unwrap_or_default(),
                    d.reasons.join(", ")
                );
            }
            for d in &g.remove {
                out += &format!(
                    "  forget {} {}\n",
                    &d.id[..12],
                    d.stored.map(|t| t.to_string()).unwrap_or_default()
                );
            }
        }
        for id in &self.revoked_removed {
            out += &format!("forget {} (revoked writer)\n", &id[..12.min(id.len())]);
        }
        let verb = if self.dry_run {
            "would forget"
        } else {
            "forgot"
        };
        out += &format!(
            "{verb} {} snapshot(s), kept {}{}",
            self.removed + self.revoked_removed.len(),
            self.kept,
            if self.dry_run {
                ""
            } else {
                "; `arsip prune` removes their data"
            }
        );
        out
    }
}

pub async fn run(ctx: &Ctx<'_>, a: &ForgetArgs) -> Result<u8> {
    let keep_within = a
        .keep_within
        .as_deref()
        .map(forget::parse_duration)
        .transpose()?;
    let time_zone = match a.time_zone.as_deref().filter(|s| !s.is_empty()) {
        Some(tz) => jiff::tz::TimeZone::get(tz.trim_start_matches(':'))
            .map_err(|e| usage!("time zone {tz:?}: {e}"))?,
        None => jiff::tz::TimeZone::system(),
    };
    let opts = ForgetOptions {
        policy: Policy {
            keep_last: a.keep_last,
            keep_hourly: a.keep_hourly,
            keep_daily: a.keep_daily,
            keep_weekly: a.keep_weekly,
            keep_monthly: a.keep_monthly,
            keep_yearly: a.keep_yearly,
            keep_within,
            keep_tags: a.keep_tag.clone(),
        }
        .or_default(),
        by_tag: Vec::new(),
        dry_run: a.dry_run,
        allow_empty: a.allow_empty,
        revoked: a.revoked,
        time_zone,
    };
    // Checked before anything is forgotten: a bad prune option must not leave half the job done.
    let prune_opts = a
        .prune
        .then(|| super::prune::options(&a.prune_settings, a.dry_run))
        .transpose()?;
    let repo = ctx.open_full(Access::Full, "forget").await?;
    let forget = forget::run(&repo, &opts).await?;
    match prune_opts {
        None => ctx.emit(&forget)?,
        Some(p) => {
            let prune = prune::run(&repo, &p).await?;
            ctx.emit(&ForgetPrune { forget, prune })?
        }
    }
    Ok(exit::OK)
}
