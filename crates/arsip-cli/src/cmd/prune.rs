//! `arsip prune [--max-unused PCT] [--dry-run]`.

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::prune::{self, PruneOptions, PruneOutcome, PruneReport};

use crate::cli::{PruneArgs, PruneSettings};
use crate::ctx::{human, Ctx, Render};
use crate::exit;

impl Render for PruneReport {
    fn human(&self) -> String {
        let mut out = format!(
            "{} snapshot(s), {} pack(s) ({}), {} in use\n",
            self.snapshots,
            self.packs,
            human(self.stored_bytes),
            human(self.used_bytes)
        );
        if self.dry_run {
            out += &format!(
                "would condemn {} pack(s) ({}), repacking {} of them ({} read)",
                self.condemned_packs,
                human(self.condemned_bytes),
                self.repacked_packs,
                human(self.repack_read_bytes)
            );
            return out;
        }
        out += &format!(
            "generation {}: condemned {} pack(s) ({}); repacked {} ({} read, {} written); \
             deleted {} pack(s) ({}); {} index(es) rewritten, {} removed",
            self.generation,
            self.condemned_packs,
            human(self.condemned_bytes),
            self.repacked_packs,
            human(self.repack_read_bytes),
            human(self.repack_written_bytes),
            self.deleted_packs,
            human(self.deleted_bytes),
            self.indexes_rewritten,
            self.indexes_deleted
        );
        if self.rescued_packs > 0 {
            out += &format!(
                "\n{} condemned pack(s) referenced again: kept",
                self.rescued_packs
            );
        }
        if self.waiting_packs > 0 {
            out += &format!(
                "\n{} condemned pack(s) wait for {} running backup session(s); the next prune \
                 after they end deletes them",
                self.waiting_packs,
                self.waiting_for.len()
            );
            for s in &self.waiting_for {
                out += &format!(
                    "\n  session {} on {} since {}",
                    &s.session[..12],
                    s.host,
                    s.first_seen
                );
            }
        }
        if !self.fenced_sessions.is_empty() {
            out += &format!(
                "\nfenced {} session(s) that stopped renewing (their late commits will not count)",
                self.fenced_sessions.len()
            );
        }
        for (name, why) in &self.ignored_manifests {
            out += &format!("\nIGNORED {name}: {why}");
        }
        out
    }
}

impl Render for PruneOutcome {
    fn human(&self) -> String {
        let mut out = self.repo.human();
        let verb = if self.repo.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for ns in &self.wal.namespaces {
            out += &if ns.physical_backups == 0 {
                format!(
                    "\nWAL {}: no retained physical backup, nothing removed",
                    ns.namespace
                )
            } else {
                format!(
                    "\nWAL {}: {verb} {} file(s), kept {} for {} physical backup(s) and the \
                     PITR window",
                    ns.namespace,
                    ns.removed.len(),
                    ns.kept_files,
                    ns.physical_backups
                )
            };
        }
        if self.verifications_removed > 0 {
            out += &format!(
                "\nverification records: {verb} {} older than the kept period",
                self.verifications_removed
            );
        }
        let j = &self.jobs;
        if j.runs + j.renewals + j.epochs + j.planted > 0 {
            out += &format!(
                "\njob claims: {verb} {} old run(s), {} renewal(s) of finished runs, {} old \
                 lease epoch(s), {} planted object(s)",
                j.runs, j.renewals, j.epochs, j.planted
            );
        }
        out
    }
}

/// Prune's options from the command line.
pub fn options(a: &PruneSettings, dry_run: bool) -> Result<prune::Options> {
    Ok(prune::Options {
        repo: PruneOptions {
            max_unused: prune::parse_max_unused(&a.max_unused)?,
            dry_run,
            ..Default::default()
        },
        pitr_window: arsip_ops::forget::parse_duration(&a.pitr_window)?,
        keep_verifications: arsip_ops::forget::parse_duration(&a.keep_verifications)?,
        keep_jobs: arsip_ops::forget::parse_duration(&a.keep_jobs)?,
    })
}

pub async fn run(ctx: &Ctx<'_>, a: &PruneArgs) -> Result<u8> {
    let opts = options(&a.settings, a.dry_run)?;
    let repo = ctx.open_full(Access::Full, "prune").await?;
    ctx.emit(&prune::run(&repo, &opts).await?)?;
    Ok(exit::OK)
}
