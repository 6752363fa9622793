//! PostgreSQL operations: logical and physical backups, logical and physical restores, and
//! the WAL archive's `archive_command` / `restore_command` and listing. Each takes options a
//! front end resolved and returns a `Serialize` outcome; the sources, targets and the
//! physical restore plan themselves are `arsip-pg`'s.
//!
//! What can be refused without the repository is checked by functions a front end calls
//! before it opens one ([`check_dbname`], [`Target::parse`], [`TargetAction::parse`],
//! [`data_dir`], [`WalFetch::resolve`]), so a bad argument never costs a password prompt or
//! a network round trip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arsip_repo::BackupOutcome;
use arsip_repo::{select_snapshot, Snapshot};
use arsip_repo::{FullRepo, Repository};

pub use arsip_pg::legacy::{LegacyImport, LegacyImportOutcome, Status as ImportStatus};
pub use arsip_pg::logical::{LogicalRestore, LogicalRestoreOutcome, KIND as LOGICAL_KIND};
pub use arsip_pg::physical::KIND as PHYSICAL_KIND;
pub use arsip_pg::restore::target::{default_zone, parse_time_in, TimeError};
pub use arsip_pg::restore::{
    Credential, PhysicalRestore, PhysicalRestoreOutcome, RestorePlan, Target, TargetAction,
    TargetArgs,
};
pub use arsip_pg::walarchive::Fetched;
pub use arsip_pg::walretention::NamespaceShow as WalShow;
pub use arsip_pg::{PgError, PgSettings};

use crate::Result;

/// Refuse a password inside a connection string (`--dbname`), before anything is opened.
pub fn check_dbname(dbname: Option<&str>) -> Result<()> {
    if let Some(d) = dbname {
        arsip_pg::conn::refuse_password(d)?;
    }
    Ok(())
}

// ---- backups ---------------------------------------------------------------------------

/// A PostgreSQL backup as a front end resolved it.
#[derive(Debug, Clone)]
pub struct Backup {
    /// Database / connection string (no password); `None`: libpq's defaults.
    pub dbname: Option<String>,
    pub method: Method,
    pub tags: BTreeMap<String, String>,
    pub settings: PgSettings,
}

/// How a PostgreSQL backup reads the cluster.
#[derive(Debug, Clone)]
pub enum Method {
    /// `pg_dump` of one database; with `all`, also the globals (roles, tablespaces).
    Logical { all: bool },
    /// A base backup read from the data directory, on the database host.
    Physical {
        pgdata: PathBuf,
        /// Request an immediate checkpoint.
        fast: bool,
        /// How long to wait for the backup's WAL to reach the repository.
        wal_timeout: Duration,
        stanza: String,
    },
}

/// Back up a database (logical) or a cluster (physical).
pub async fn backup(repo: Arc<Repository>, b: &Backup) -> Result<BackupOutcome> {
    check_dbname(b.dbname.as_deref())?;
    let kind = match b.method {
        Method::Logical { .. } => LOGICAL_KIND,
        Method::Physical { .. } => PHYSICAL_KIND,
    };
    let what = crate::audit::details([
        ("kind", kind.into()),
        ("source", b.dbname.clone().unwrap_or_default().into()),
    ]);
    let r = backup_unaudited(repo.clone(), b).await;
    crate::audit::record(&repo, "backup", what, &r, |o, d| {
        d.insert("snapshot".into(), o.id.clone().into());
    })
    .await;
    r
}

async fn backup_unaudited(repo: Arc<Repository>, b: &Backup) -> Result<BackupOutcome> {
    Ok(match &b.method {
        Method::Logical { all } => {
            let opts = arsip_pg::logical::LogicalBackup {
                dbname: b.dbname.clone(),
                all: *all,
                tags: b.tags.clone(),
                settings: b.settings.clone(),
            };
            arsip_pg::logical::backup(repo, &opts).await?
        }
        Method::Physical {
            pgdata,
            fast,
            wal_timeout,
            stanza,
        } => {
            let opts = arsip_pg::physical::PhysicalBackup {
                dbname: b.dbname.clone(),
                pgdata: pgdata.clone(),
                fast: *fast,
                wal_timeout: *wal_timeout,
                stanza: stanza.clone(),
                tags: b.tags.clone(),
                settings: b.settings.clone(),
            };
            arsip_pg::physical::backup(repo, &opts).await?
        }
    })
}

// ---- logical restore -------------------------------------------------------------------

/// Restore the logical snapshot `spec` names (`None`: `latest`) among `snaps` (the
/// repository's [`LOGICAL_KIND`] snapshots), with at least one pg_restore job.
pub async fn restore_logical(
    repo: FullRepo,
    snaps: &[Snapshot],
    spec: Option<&str>,
    opts: &LogicalRestore,
) -> Result<LogicalRestoreOutcome> {
    check_dbname(opts.dbname.as_deref())?;
    let snap = select_snapshot(snaps, spec.unwrap_or("latest"))?.clone();
    let what = crate::audit::details([
        ("snapshot", snap.id.clone().into()),
        ("to", opts.dbname.clone().unwrap_or_default().into()),
    ]);
    let shared = repo.shared();
    let opts = LogicalRestore {
        jobs: opts.jobs.max(1),
        ..opts.clone()
    };
    crate::audit::audited(&shared, "restore", what, async move {
        Ok(arsip_pg::logical::restore(repo, &snap, &opts).await?)
    })
    .await
}

// ---- physical restore ------------------------------------------------------------------

/// A computed restore plan (nothing written yet) and when the restore began.
#[derive(Debug)]
pub struct PlannedRestore {
    pub plan: RestorePlan,
    started: Instant,
}

/// Plan a physical restore among `snaps` (the repository's [`PHYSICAL_KIND`] snapshots):
/// every refusal happens here. `opts.credential` is what opened the repository:
/// `restore_command` needs the same access, unattended.
pub async fn plan_physical(
    repo: &FullRepo,
    snaps: &[Snapshot],
    opts: &PhysicalRestore,
) -> Result<PlannedRestore> {
    let started = Instant::now();
    let plan = arsip_pg::restore::plan(repo, snaps, opts).await?;
    Ok(PlannedRestore { plan, started })
}

/// Execute a plan: materialise, write the recovery configuration, and with `start` start
/// the cluster and wait for recovery to end. Times count from the planning.
pub async fn restore_physical(
    repo: FullRepo,
    planned: &PlannedRestore,
) -> Result<PhysicalRestoreOutcome> {
    let what = crate::audit::details([
        ("snapshot", planned.plan.snapshot.clone().into()),
        ("to", planned.plan.to.display().to_string().into()),
        ("target", planned.plan.target_description.clone().into()),
    ]);
    let shared = repo.shared();
    crate::audit::audited(&shared, "restore", what, async {
        Ok(arsip_pg::restore::execute(repo, &planned.plan, planned.started).await?)
    })
    .await
}

// ---- WAL archive -----------------------------------------------------------------------

/// The data directory an archive or restore command runs in: `pgdata` if given, else the
/// working directory when it is one, else the settings' `PGDATA`, else the working
/// directory.
pub fn data_dir(pgdata: Option<&Path>, settings: &PgSettings) -> Result<PathBuf> {
    Ok(arsip_pg::walarchive::pgdata_or_cwd(pgdata, settings)?)
}

/// What `wal push` archived. (Fields in name order: the JSON form predates this struct.)
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalPushed {
    pub already_stored: bool,
    pub bytes: u64,
    pub file: String,
    /// From `started` (the front end's start) until the file was stored.
    pub ms: f64,
    pub namespace: String,
    pub stored_bytes: u64,
}

/// Archive the WAL file at `path` (relative to `pgdata`, as PostgreSQL passes `%p`) under
/// `stanza`; a different cluster archiving under the same stanza is refused.
pub async fn wal_push(
    repo: &Repository,
    pgdata: &Path,
    path: &Path,
    stanza: &str,
    started: Instant,
) -> Result<WalPushed> {
    let r = arsip_pg::walarchive::push(repo, pgdata, path, stanza).await?;
    Ok(WalPushed {
        already_stored: r.already_stored,
        bytes: r.bytes,
        file: r.file,
        ms: started.elapsed().as_secs_f64() * 1e3,
        namespace: r.namespace,
        stored_bytes: r.stored_bytes,
    })
}

/// One `restore_command` request, resolved against the data directory.
#[derive(Debug, Clone)]
pub struct WalFetch {
    pub file: String,
    /// Absolute destination.
    pub dest: PathBuf,
    /// `<system-identifier>-<major>`.
    pub namespace: String,
    pub pgdata: PathBuf,
    /// Segments to prefetch after this one (0: off).
    pub prefetch: usize,
    /// The timeline recovery follows.
    pub timeline: Option<u32>,
}

impl WalFetch {
    /// Resolve a request before the repository is opened: the data directory (see
    /// [`data_dir`]), the namespace (`None`: read from the data directory's `pg_control`)
    /// and a relative `dest` against the data directory.
    #[allow(clippy::too_many_arguments)]
    pub fn resolve(
        file: &str,
        dest: &Path,
        namespace: Option<&str>,
        pgdata: Option<&Path>,
        prefetch: usize,
        timeline: Option<u32>,
        settings: &PgSettings,
    ) -> Result<WalFetch> {
        let pgdata = data_dir(pgdata, settings)?;
        let namespace = match namespace {
            Some(n) => n.to_string(),
            None => arsip_pg::control::ClusterId::read(&pgdata)?.namespace(),
        };
        let dest = if dest.is_absolute() {
            dest.to_path_buf()
        } else {
            pgdata.join(dest)
        };
        Ok(WalFetch {
            file: file.to_string(),
            dest,
            namespace,
            pgdata,
            prefetch,
            timeline,
        })
    }
}

/// Fetch one WAL file into its destination, prefetching later segments into the spool
/// under the data directory. [`Fetched::Missing`] only when the repository does not hold it.
pub async fn wal_fetch(repo: &FullRepo, f: &WalFetch) -> Result<Fetched> {
    Ok(arsip_pg::walarchive::fetch(
        repo,
        &f.namespace,
        &f.file,
        &f.dest,
        &f.pgdata,
        f.prefetch,
        f.timeline,
    )
    .await?)
}

/// Archived WAL files by namespace.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(transparent)]
pub struct WalListing(pub BTreeMap<String, Vec<String>>);

/// The archived WAL files of `namespace`, or of every namespace.
pub async fn wal_list(repo: &Repository, namespace: Option<&str>) -> Result<WalListing> {
    let nss = match namespace {
        Some(n) => vec![n.to_string()],
        None => repo.wal_namespaces().await?,
    };
    let mut out = BTreeMap::new();
    for ns in nss {
        let files = repo.wal_list(&ns).await?;
        out.insert(ns, files);
    }
    Ok(WalListing(out))
}

/// `wal show`: per namespace, the archived runs of segments, the gaps between them, and the
/// oldest and newest points a restore can reach.
pub async fn wal_show(repo: &FullRepo) -> Result<Vec<WalShow>> {
    Ok(arsip_pg::walretention::show(repo).await?)
}

// ---- import ------------------------------------------------------------------------------

/// `import legacy-dump`: the old system's encrypted dumps as pg-logical snapshots, each
/// verified in full before it is committed (`arsip_pg::legacy`).
pub async fn import_legacy(repo: FullRepo, opts: &LegacyImport) -> Result<LegacyImportOutcome> {
    let shared = repo.shared();
    let what = crate::audit::details([("files", opts.files.len().into())]);
    let r = async { Ok(arsip_pg::legacy::import(repo, opts).await?) }.await;
    crate::audit::record(&shared, "import", what, &r, |o: &LegacyImportOutcome, d| {
        d.insert("imported".into(), o.imported.into());
        d.insert("skipped".into(), o.skipped.into());
        d.insert("refused".into(), o.refused.into());
    })
    .await;
    r
}
