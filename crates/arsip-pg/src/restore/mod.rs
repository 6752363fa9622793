//! Physical restores and point-in-time recovery, as a plan and then steps (pgBackRest's
//! `command/restore` is the model):
//!
//! 1. [`plan`]: a [`RestorePlan`] computed before anything is written — snapshot and
//!    timeline ([`timeline`]), WAL continuity and gaps over the archive ([`wal`]),
//!    tablespace locations ([`tablespace`]), PostgreSQL versions, the target ([`target`]),
//!    the credential `restore_command` will use, the archiving decision and the exact
//!    recovery settings. Every refusal happens here. `--dry-run` prints it and stops.
//! 2. [`materialise`]: the snapshot's files into the data directory and tablespaces.
//! 3. [`recovery_conf`]: the recovery settings, `recovery.signal` and, when needed, the
//!    short-lived recovery key.
//! 4. [`start`] (with `--start`): start the cluster, wait until recovery reaches the target,
//!    and report what it reached, or PostgreSQL's own reason for stopping.

pub mod materialise;
pub mod plan;
pub mod recovery_conf;
pub mod start;
pub mod tablespace;
pub mod target;
pub mod timeline;
pub mod wal;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use arsip_repo::FullRepo;
use arsip_repo::Snapshot;

use crate::control::parse_lsn;
use crate::error::{PgError, Result};

pub use plan::RestorePlan;
pub use recovery_conf::conf_value;
pub use start::{wait_for_recovery, Reached};
pub use tablespace::{format_tablespace_map, parse_tablespace_map};
pub use target::{parse_time, Target, TargetAction, TargetArgs, TimeTarget};
pub use timeline::TimelineView;

/// What the repository was opened with; `restore_command` needs the same access, unattended.
/// (A password's copies are zeroed when dropped.)
#[derive(Clone)]
pub enum Credential {
    /// A full key file (used in place when the postgres OS user can read it).
    KeyFile(PathBuf),
    /// A password: its slot's key is derived once and written as a short-lived recovery key.
    Password(zeroize::Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::KeyFile(p) => write!(f, "KeyFile({})", p.display()),
            Credential::Password(_) => write!(f, "Password(redacted)"),
        }
    }
}

#[derive(Debug, Default)]
pub struct PhysicalRestore {
    pub snapshot: Option<String>,
    pub to: PathBuf,
    pub target: Target,
    pub target_timeline: Option<String>,
    pub target_action: TargetAction,
    pub exclusive: bool,
    pub start: bool,
    pub port: Option<u16>,
    /// Accepted for compatibility: archiving is off unless `promote_as_primary`.
    pub no_archive: bool,
    /// The restored cluster is the new primary: it keeps the backup's archive settings and
    /// archives its new timeline into the source's namespace.
    pub promote_as_primary: bool,
    /// Recover up to a gap in the archive instead of refusing.
    pub allow_gap: bool,
    /// Tablespaces restored somewhere other than their original location: (OID, directory).
    pub tablespace_map: Vec<(String, PathBuf)>,
    pub stanza: String,
    pub arsip_exe: PathBuf,
    pub repo_location: String,
    /// A copy of the repository that `restore_command` reads when the repository is
    /// unreachable or lacks a segment (`--repo-fallback`).
    pub repo_fallback: Option<String>,
    pub credential: Option<Credential>,
    /// Where the PostgreSQL programs are.
    pub settings: crate::PgSettings,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PhysicalRestoreOutcome {
    pub snapshot: String,
    pub to: String,
    pub files: u64,
    pub bytes: u64,
    pub restore_seconds: f64,
    pub wal_checked_to: String,
    /// Where each tablespace went: (OID, directory).
    pub tablespaces: Vec<(String, String)>,
    /// The timeline recovery follows (`recovery_target_timeline`).
    pub timeline_followed: u32,
    pub archiving_into_source: bool,
    /// The recovery key written for restore_command, if any, and whether it is gone.
    pub recovery_key: Option<String>,
    pub recovery_key_removed: bool,
    pub warnings: Vec<String>,
    pub started: bool,
    pub reached_lsn: Option<String>,
    pub reached_time: Option<String>,
    /// PostgreSQL's own line about where it stopped.
    pub reached_stop: Option<String>,
    pub timeline: Option<i32>,
    pub recovery_seconds: Option<f64>,
    /// From the start of the restore until the cluster accepts writes (with --start).
    pub rto_seconds: Option<f64>,
}

impl PhysicalRestoreOutcome {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "restored snapshot {} into {}: {} file(s), {} bytes in {:.1}s; archived WAL continuous to {}; following timeline {}",
            &self.snapshot[..8.min(self.snapshot.len())],
            self.to,
            self.files,
            self.bytes,
            self.restore_seconds,
            self.wal_checked_to,
            self.timeline_followed
        );
        for (oid, dir) in &self.tablespaces {
            s += &format!("\ntablespace {oid} restored into {dir}");
        }
        if !self.archiving_into_source {
            s += "\narchiving is off (not the primary; --promote-as-primary archives into the source's namespace)";
        }
        if let Some(k) = &self.recovery_key {
            s += &if self.recovery_key_removed {
                format!("\nthe recovery key {k} was removed when recovery ended")
            } else {
                format!("\nthe recovery key {k} (restore_command's credential) is removed by recovery_end_command when recovery ends; delete it yourself if you abandon this restore")
            };
        }
        if self.started {
            s += &format!(
                "\nrecovery reached LSN {} (last transaction {}) on timeline {} in {:.1}s; RTO {:.1}s",
                self.reached_lsn.as_deref().unwrap_or("?"),
                self.reached_time.as_deref().unwrap_or("none replayed"),
                self.timeline.map_or("?".into(), |t| t.to_string()),
                self.recovery_seconds.unwrap_or(0.0),
                self.rto_seconds.unwrap_or(0.0)
            );
            if let Some(st) = &self.reached_stop {
                s += &format!("\nPostgreSQL: {st}");
            }
        } else {
            s += "\nstart it with pg_ctl (as the postgres user); recovery.signal is in place";
        }
        s
    }
}

/// The plan only (`--dry-run`): nothing is written.
pub async fn plan(repo: &FullRepo, snaps: &[Snapshot], o: &PhysicalRestore) -> Result<RestorePlan> {
    RestorePlan::compute(repo, snaps, o).await
}

/// Plan, then materialise, write the recovery configuration, and with `start` start and
/// wait.
pub async fn restore(
    repo: FullRepo,
    snaps: &[Snapshot],
    o: &PhysicalRestore,
) -> Result<PhysicalRestoreOutcome> {
    let t0 = Instant::now();
    let plan = RestorePlan::compute(&repo, snaps, o).await?;
    execute(repo, &plan, t0).await
}

/// Execute a plan computed by [`RestorePlan::compute`].
pub async fn execute(
    repo: FullRepo,
    plan: &RestorePlan,
    t0: Instant,
) -> Result<PhysicalRestoreOutcome> {
    let m = materialise::materialise(repo, plan).await?;
    recovery_conf::write(&m.to, plan, plan.recovery_key.as_ref().map(|k| &k.0))?;
    materialise::finish(&m)?;

    let mut out = PhysicalRestoreOutcome {
        snapshot: plan.snapshot.clone(),
        to: m.to.display().to_string(),
        files: m.files,
        bytes: m.bytes,
        restore_seconds: t0.elapsed().as_secs_f64(),
        wal_checked_to: plan.wal.continuous_to.clone(),
        tablespaces: plan
            .tablespaces
            .iter()
            .map(|t| (t.oid.clone(), t.dir.display().to_string()))
            .collect(),
        timeline_followed: plan.timeline.follow,
        archiving_into_source: plan.archiving.into_source_namespace,
        recovery_key: plan
            .credential
            .recovery_key
            .as_ref()
            .map(|p| p.display().to_string()),
        recovery_key_removed: false,
        warnings: plan.warnings.clone(),
        started: false,
        reached_lsn: None,
        reached_time: None,
        reached_stop: None,
        timeline: None,
        recovery_seconds: None,
        rto_seconds: None,
    };
    if !plan.start {
        return Ok(out);
    }
    let log_dir = m.to.join("log");
    std::fs::create_dir_all(&log_dir).map_err(|e| crate::os::io_at(&log_dir, e))?;
    if crate::os::is_root() {
        crate::os::chown_tree(&log_dir, m.owner.0, m.owner.1)?;
    }
    let log = log_dir.join("arsip-recovery.log");
    let t1 = Instant::now();
    start::pg_ctl_start(&plan.pg_bin, &m.to, &log).await?;
    let host = conf_value(&m.to, "unix_socket_directories")
        .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/var/run/postgresql".into());
    let port: u16 = plan
        .port
        .or_else(|| conf_value(&m.to, "port").and_then(|p| p.parse().ok()))
        .unwrap_or(5432);
    let reached = wait_for_recovery(
        &plan.pg_bin,
        &host,
        port,
        plan.target_action.as_str(),
        Duration::from_secs(24 * 3600),
        &m.to,
        &log,
    )
    .await?;
    out.started = true;
    out.reached_lsn = reached.lsn.clone();
    out.reached_time = reached.time.clone();
    out.reached_stop = reached.stopped.clone();
    out.timeline = reached.timeline;
    out.recovery_seconds = Some(t1.elapsed().as_secs_f64());
    out.rto_seconds = Some(t0.elapsed().as_secs_f64());
    if let Some(k) = &plan.credential.recovery_key {
        // recovery_end_command removes it at promotion; make sure (and say so) once the
        // server has promoted. Paused or shut down, recovery still needs it.
        if plan.target_action == TargetAction::Promote || plan.target == Target::End {
            match std::fs::remove_file(k) {
                Ok(()) => out.recovery_key_removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    out.recovery_key_removed = true
                }
                Err(e) => out.warnings.push(format!(
                    "the recovery key {} could not be removed ({e}): delete it",
                    k.display()
                )),
            }
        }
    }
    if let (Target::Lsn(l), Some(r)) = (&plan.target, reached.lsn.as_deref().and_then(parse_lsn)) {
        if r < *l {
            return Err(PgError::refused(
                format!(
                    "recovery reached {} only, short of the target {}",
                    reached.lsn.unwrap_or_default(),
                    crate::control::format_lsn(*l)
                ),
                "WAL up to the target is missing from the repository",
            ));
        }
    }
    Ok(out)
}
