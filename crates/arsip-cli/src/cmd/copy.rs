//! `arsip copy --to LOCATION [--dry-run]`: the repository mirrored into another location.

use anyhow::Result;
use arsip_ops::copy::{self, MirrorOutcome};

use crate::cli::CopyArgs;
use crate::ctx::{human, Ctx, Render};
use crate::exit;

impl Render for MirrorOutcome {
    fn human(&self) -> String {
        let verb = if self.dry_run { "would copy" } else { "copied" };
        let mut out = format!(
            "{verb} {} object(s), {}; {} already there",
            self.copied,
            human(self.copied_bytes),
            self.present
        );
        if self.forgotten > 0 {
            out += &format!(
                "; {} snapshot(s) forgotten at the source meanwhile",
                self.forgotten
            );
        }
        out += &match self.lag_seconds {
            Some(s) => format!(
                "\nbefore this run the copy lacked {} snapshot(s), the oldest {:.0} s old",
                self.missing_manifests, s
            ),
            None => "\nthe copy had every snapshot before this run".into(),
        };
        for d in &self.damaged {
            out += &format!("\nDAMAGED at the source, not copied: {d}");
        }
        for f in &self.foreign {
            out += &format!(
                "\nFOREIGN at the destination (other bytes under this name), left alone: {f}"
            );
        }
        out
    }
}

pub async fn run(ctx: &Ctx<'_>, a: &CopyArgs) -> Result<u8> {
    let from = ctx.store_settings()?;
    let to = ctx.store_settings_of(&a.to, "ARSIP_TO_")?;
    let bar = crate::progress::bytes_bar(ctx.progress(), None, "copying");
    let progress = |phase: &str, done: u64, of: u64| {
        bar.set_message(format!("copying {phase} {done}/{of}"));
    };
    let now = arsip_ops::repo::clock::from_env().now();
    let outcome = copy::run(&from, &to, now, a.dry_run, &progress).await?;
    bar.finish_and_clear();
    ctx.emit(&outcome)?;
    if !outcome.clean() {
        eprintln!("HINT: damaged source objects are `arsip check --read-data`'s to find and `arsip repair`'s to mend; a foreign object at the destination means it is not only this repository's copy");
        return Ok(exit::DAMAGED);
    }
    Ok(exit::OK)
}
