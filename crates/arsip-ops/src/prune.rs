//! `prune`: remove data no snapshot references and repack mostly unused packs, beside live
//! backups, without locks (the protocol is the repository's: FORMAT.md §17); then remove
//! the WAL that no retained physical backup and no point of the PITR window needs
//! (`arsip_pg::walretention`).

use arsip_pg::walretention::{self, WalRetention};
use arsip_repo::{FullRepo, JobsExpired};
pub use arsip_repo::{PruneOptions, PruneReport};
use serde::Serialize;

use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Options {
    pub repo: PruneOptions,
    /// Keep the WAL that reaches every point of this window from a retained backup.
    pub pitr_window: jiff::SignedDuration,
    /// Keep verification records this long (and always the newest [`KEEP_VERIFICATIONS`]).
    pub keep_verifications: jiff::SignedDuration,
    /// Keep the claims of scheduled runs this long (and always the newest [`KEEP_JOB_RUNS`]
    /// of each job).
    pub keep_jobs: jiff::SignedDuration,
}

/// Verification records are kept 90 days by default: three default read-data cycles.
pub const DEFAULT_KEEP_VERIFICATIONS: jiff::SignedDuration =
    jiff::SignedDuration::from_hours(90 * 24);
/// The newest verification records always kept, whatever their age.
pub const KEEP_VERIFICATIONS: usize = 30;
/// Job runs' claims (FORMAT.md §20) are kept as long as verification records.
pub const DEFAULT_KEEP_JOBS: jiff::SignedDuration = DEFAULT_KEEP_VERIFICATIONS;
/// The newest runs of each job always kept.
pub const KEEP_JOB_RUNS: usize = 30;

impl Default for Options {
    fn default() -> Self {
        Options {
            repo: PruneOptions::default(),
            pitr_window: walretention::DEFAULT_PITR_WINDOW,
            keep_verifications: DEFAULT_KEEP_VERIFICATIONS,
            keep_jobs: DEFAULT_KEEP_JOBS,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneOutcome {
    #[serde(flatten)]
    pub repo: PruneReport,
    pub wal: WalRetention,
    /// Verification records older than the kept period removed (or that would be).
    pub verifications_removed: usize,
    /// Old job runs' claims and lease epochs removed (or that would be).
    pub jobs: JobsExpired,
}

/// Parse `--max-unused`: a percentage (`5`, `5%`, `0.5`) in [0, 100].
pub fn parse_max_unused(s: &str) -> Result<f64> {
    let pct: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| Error::usage(format!("max-unused {s:?} is not a percentage")))?;
    if !(0.0..=100.0).contains(&pct) {
        return Err(Error::usage(format!(
            "max-unused {s:?} must be in [0, 100]"
        )));
    }
    Ok(pct / 100.0)
}

pub async fn run(repo: &FullRepo, opts: &Options) -> Result<PruneOutcome> {
    let r = async {
        // Independent sets of objects: packs and indexes under prune's protocol, WAL,
        // verification records and job claims by their own rules (deleting what none of
        // them needs is safe beside anything), so they run at once.
        let now = repo.now();
        let (report, wal, verifications_removed, jobs) = tokio::try_join!(
            async { Ok::<_, Error>(arsip_repo::prune(repo, &opts.repo).await?) },
            async { Ok(walretention::apply(repo, opts.pitr_window, opts.repo.dry_run).await?) },
            async {
                Ok(repo
                    .verification_expire(
                        now - opts.keep_verifications,
                        KEEP_VERIFICATIONS,
                        opts.repo.dry_run,
                    )
                    .await?)
            },
            async {
                Ok(repo
                    .jobs_expire(now - opts.keep_jobs, KEEP_JOB_RUNS, opts.repo.dry_run)
                    .await?)
            },
        )?;
        Ok(PruneOutcome {
            repo: report,
            wal,
            verifications_removed,
            jobs,
        })
    }
    .await;
    if !opts.repo.dry_run {
        crate::audit::record(repo, "prune", Default::default(), &r, |o, d| {
            d.insert("generation".into(), o.repo.generation.into());
            d.insert("deleted_packs".into(), o.repo.deleted_packs.into());
            d.insert("deleted_bytes".into(), o.repo.deleted_bytes.into());
            d.insert("repacked_packs".into(), o.repo.repacked_packs.into());
            d.insert("wal_removed".into(), o.wal.removed_files.into());
            d.insert(
                "verifications_removed".into(),
                o.verifications_removed.into(),
            );
            d.insert("job_runs_removed".into(), o.jobs.runs.into());
        })
        .await;
    }
    r
}
