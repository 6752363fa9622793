//! What each job type does: one attempt is one call of an operation in `arsip-ops`, on a
//! repository opened for that attempt with the credentials the configuration names (agent
//! credentials for backups when there are some: they cannot delete or read; the full key
//! for maintenance). Every snapshot a job makes is tagged `arsip.job` and `arsip.scheduled`,
//! so that a daemon taking over a run whose claimant died after committing finds that
//! snapshot and records it instead of backing up twice (FORMAT.md §20.2), and so that
//! `status` can tell scheduled backups from others.
//!
//! | type | operation |
//! |---|---|
//! | backup, files | `backup::files` |
//! | backup, pg-logical / pg-physical | `pg::backup` |
//! | forget | `forget::run` with the repository's retention, and each source's own where it has one |
//! | prune | `prune::run` with the repository's PITR window |
//! | verify | `verify::run` (with the restore tests when the job asks) |
//!
//! After a backup with a full key, the anomaly checks of `verify` run on the new snapshot
//! against the source's recent ones: an anomaly makes the attempt `warnings` the same day.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arsip_ops::open::{Access, StoreSettings};
use arsip_ops::repo::{clock::Clock, FullRepo, LocalSettings, OpenWith, Opened, SessionTiming};
use arsip_ops::verify::{self, Status, VerifyOptions};
use jiff::Timestamp;
use zeroize::Zeroizing;

use crate::config::{Config, Job, JobKind, Repository, Secret, SourceKind};
use crate::journal::{Facts, Outcome, RestoreTestFact};
use crate::runner::{AdoptFuture, AttemptResult, ExecFuture, Executor};

tokio::task_local! {
    /// The request meter of the attempt running in this task: every repository the attempt
    /// opens counts into it, and its usage is journaled with the attempt's facts.
    static METER: Arc<arsip_ops::storage::metered::Meter>;
}

/// Tags every scheduled snapshot carries.
pub const TAG_JOB: &str = "arsip.job";
pub const TAG_SCHEDULED: &str = "arsip.scheduled";

/// The executors of one daemon.
pub struct Executors {
    config: Config,
    clock: Arc<dyn Clock>,
    /// This binary, which restore tests run as PostgreSQL's `restore_command`.
    arsip_exe: PathBuf,
    pg: arsip_ops::pg::PgSettings,
    host: String,
    user: String,
}

impl Executors {
    pub fn new(
        config: Config,
        clock: Arc<dyn Clock>,
        arsip_exe: PathBuf,
        pg: arsip_ops::pg::PgSettings,
        host: String,
        user: String,
    ) -> Executors {
        Executors {
            config,
            clock,
            arsip_exe,
            pg,
            host,
            user,
        }
    }

    /// The same executors under a reloaded configuration.
    pub fn with_config(&self, config: Config) -> Executors {
        Executors {
            config,
            clock: self.clock.clone(),
            arsip_exe: self.arsip_exe.clone(),
            pg: self.pg.clone(),
            host: self.host.clone(),
            user: self.user.clone(),
        }
    }

    fn local(&self) -> LocalSettings {
        LocalSettings {
            cache_dir: self.config.daemon.state_dir.join("cache"),
            sessions: SessionTiming::from_env(),
            host: self.host.clone(),
            user: self.user.clone(),
            ..Default::default()
        }
    }

    /// Open repository `name` for a job: with agent credentials when `agent_ok` and the
    /// configuration has some, else with the full key.
    pub async fn open(&self, name: &str, agent_ok: bool) -> Result<Opened, String> {
        let r = &self.config.repositories[name];
        let access = if agent_ok {
            Access::AppendOnly
        } else {
            Access::Full
        };
        let with = credentials(r, agent_ok)?;
        let mut settings = store_settings(r)?;
        settings.meter = METER.try_with(|m| m.clone()).ok();
        arsip_ops::open::repository(&settings, with, access, self.local(), self.clock.clone())
            .await
            .map_err(|e| format!("repository {name}: {e}"))
    }

    async fn full(&self, name: &str) -> Result<FullRepo, String> {
        self.open(name, false)
            .await?
            .full("scheduled maintenance")
            .map_err(|e| e.to_string())
    }

    async fn attempt(&self, name: &str, job: &Job, scheduled: Timestamp) -> AttemptResult {
        let meter = Arc::new(arsip_ops::storage::metered::Meter::default());
        let work = async {
            match job.kind {
                JobKind::Backup => self.backup(name, job, scheduled).await,
                JobKind::Forget => self.forget(job).await,
                JobKind::Prune => self.prune(job).await,
                JobKind::Verify => self.verify(job).await,
                JobKind::WalCheck => self.wal_check(job).await,
                JobKind::Copy => self.copy(job).await,
            }
        };
        let mut r = METER.scope(meter.clone(), work).await.unwrap_or_else(|e| e);
        let used = meter.usage();
        if used != Default::default() {
            r.facts.requests = Some(used);
        }
        r
    }

    async fn backup(
        &self,
        name: &str,
        job: &Job,
        scheduled: Timestamp,
    ) -> Result<AttemptResult, AttemptResult> {
        let source_name = job.source.as_deref().expect("a backup job has a source");
        let source = &self.config.sources[source_name];
        let tags: BTreeMap<String, String> = [
            (TAG_JOB.to_string(), name.to_string()),
            (TAG_SCHEDULED.to_string(), scheduled.to_string()),
        ]
        .into();
        let repo = self.open(&job.repository, true).await.map_err(setup)?;
        let shared = repo.shared().clone();
        let done = match source.kind {
            SourceKind::Files => {
                let f = arsip_ops::backup::Files {
                    paths: source.paths.clone(),
                    never: vec![self.config.daemon.state_dir.clone()],
                    ..Default::default()
                };
                let common = arsip_ops::backup::Common { tags };
                arsip_ops::backup::files(shared, f, common, |_| {})
                    .await
                    .map_err(|e| AttemptResult::failed(&e))?
                    .backup
            }
            SourceKind::PgLogical | SourceKind::PgPhysical => {
                let method = match source.kind {
                    SourceKind::PgLogical => arsip_ops::pg::Method::Logical { all: false },
                    _ => arsip_ops::pg::Method::Physical {
                        pgdata: arsip_ops::pg::data_dir(source.pgdata.as_deref(), &self.pg)
                            .map_err(|e| AttemptResult::failed(&e))?,
                        fast: true,
                        wal_timeout: std::time::Duration::from_secs(600),
                        stanza: source.stanza.clone().unwrap_or_else(|| source_name.into()),
                    },
                };
                let b = arsip_ops::pg::Backup {
                    dbname: source.dbname.clone(),
                    method,
                    tags,
                    settings: self.pg.clone(),
                };
                arsip_ops::pg::backup(shared, &b)
                    .await
                    .map_err(|e| AttemptResult::failed(&e))?
            }
        };
        let id = done.id.clone();
        let mut result = AttemptResult {
            snapshots: vec![id.clone()],
            facts: Facts {
                logical_bytes: Some(done.logical_bytes),
                added_bytes: Some(done.added_bytes),
                stored_bytes: Some(done.stored_bytes),
                files: Some(done.files),
                seconds: Some(done.seconds),
                ..Facts::default()
            },
            ..AttemptResult::ok()
        };
        // The anomaly checks need to read manifests: only with a full key.
        if let Ok(full) = repo.full("the anomaly checks") {
            if let Some(findings) = self.anomalies(&full, &id).await {
                if !findings.is_empty() {
                    result.outcome = Outcome::Warnings;
                    result.message = Some(findings.join("; "));
                }
            }
        }
        Ok(result)
    }

    /// The anomalies of snapshot `id` against the same source's recent snapshots.
    async fn anomalies(&self, repo: &FullRepo, id: &str) -> Option<Vec<String>> {
        let listing = repo.snapshot_listing().await.ok()?;
        let newest = listing.snapshots.iter().find(|s| s.id == id)?.clone();
        let mut history: Vec<_> = listing
            .snapshots
            .into_iter()
            .filter(|s| {
                s.id != id
                    && s.manifest.kind == newest.manifest.kind
                    && s.manifest.source == newest.manifest.source
                    && s.manifest.host == newest.manifest.host
            })
            .collect();
        history.sort_by_key(|s| s.manifest.time);
        let opts = VerifyOptions {
            size_tolerance: self.config.alerts.size_tolerance,
            duration_factor: self.config.alerts.duration_factor,
            ..Default::default()
        };
        let keep = history.len().saturating_sub(opts.history);
        let history = &history[keep..];
        Some(
            verify::anomalies(&newest, history, &opts)
                .into_iter()
                .map(|f| format!("{}: {}", f.check, f.message))
                .collect(),
        )
    }

    /// The retention of each source in `repository` that has its own, as forget rules for
    /// the snapshots its backup jobs tag.
    fn source_rules(&self, repository: &str) -> Vec<(String, arsip_ops::forget::Policy)> {
        let mut rules = Vec::new();
        for (name, j) in &self.config.jobs {
            let Some(source) = j.source.as_deref().map(|s| &self.config.sources[s]) else {
                continue;
            };
            if let (JobKind::Backup, true, Some(r)) =
                (j.kind, source.repository == repository, &source.retention)
            {
                rules.push((format!("{TAG_JOB}={name}"), r.clone().or_default()));
            }
        }
        rules
    }

    async fn forget(&self, job: &Job) -> Result<AttemptResult, AttemptResult> {
        let repo = self.full(&job.repository).await.map_err(setup)?;
        let r = &self.config.repositories[&job.repository];
        let zone = crate::schedule::zone(job.schedule.zone_name()).map_err(|e| setup(e.0))?;
        let opts = arsip_ops::forget::ForgetOptions {
            policy: r.retention.clone().or_default(),
            by_tag: self.source_rules(&job.repository),
            dry_run: false,
            allow_empty: false,
            revoked: false,
            time_zone: zone,
        };
        let done = arsip_ops::forget::run(&repo, &opts)
            .await
            .map_err(|e| AttemptResult::failed(&e))?;
        Ok(AttemptResult {
            facts: Facts {
                removed_snapshots: Some(done.removed as u64),
                ..Facts::default()
            },
            ..AttemptResult::ok()
        })
    }

    async fn prune(&self, job: &Job) -> Result<AttemptResult, AttemptResult> {
        let repo = self.full(&job.repository).await.map_err(setup)?;
        let r = &self.config.repositories[&job.repository];
        let opts = arsip_ops::prune::Options {
            pitr_window: r.pitr_window,
            ..Default::default()
        };
        let done = arsip_ops::prune::run(&repo, &opts)
            .await
            .map_err(|e| AttemptResult::failed(&e))?;
        Ok(AttemptResult {
            facts: Facts {
                deleted_bytes: Some(done.repo.deleted_bytes),
                deleted_packs: Some(done.repo.deleted_packs as u64),
                repository_bytes: Some(done.repo.stored_bytes),
                ..Facts::default()
            },
            ..AttemptResult::ok()
        })
    }

    async fn verify(&self, job: &Job) -> Result<AttemptResult, AttemptResult> {
        let repo = self.full(&job.repository).await.map_err(setup)?;
        let r = &self.config.repositories[&job.repository];
        let sources: Vec<_> = self
            .config
            .sources
            .values()
            .filter(|s| s.repository == job.repository)
            .collect();
        // The strictest RPO of the repository's sources, and each kind's own.
        let mut rpo_by_kind = BTreeMap::new();
        for s in &sources {
            let kind = match s.kind {
                SourceKind::Files => "files",
                SourceKind::PgLogical => "pg-logical",
                SourceKind::PgPhysical => "pg-physical",
            };
            let e = rpo_by_kind.entry(kind.to_string()).or_insert(s.rpo);
            *e = (*e).min(s.rpo);
        }
        let restore_test = if job.restore_test {
            Some(verify::RestoreTest {
                arsip_exe: self.arsip_exe.clone(),
                repo_location: r.location.clone(),
                credential: recovery_credential(r).map_err(setup)?,
                recovery_timeout: std::time::Duration::from_secs(3600),
            })
        } else {
            None
        };
        let opts = VerifyOptions {
            rpo: sources
                .iter()
                .map(|s| s.rpo)
                .min()
                .unwrap_or(verify::DEFAULT_RPO),
            rpo_by_kind,
            cycle: job.cycle.unwrap_or(verify::DEFAULT_CYCLE),
            dbname: sources.iter().find_map(|s| s.dbname.clone()),
            restore_test,
            sql_checks: job
                .sql_checks
                .iter()
                .map(|c| verify::SqlCheck {
                    database: c.database.clone(),
                    sql: c.sql.clone(),
                })
                .collect(),
            settings: self.pg.clone(),
            size_tolerance: self.config.alerts.size_tolerance,
            duration_factor: self.config.alerts.duration_factor,
            ..Default::default()
        };
        let report = verify::run(&repo, &opts)
            .await
            .map_err(|e| AttemptResult::failed(&e))?;
        let problems: Vec<String> = report
            .findings
            .iter()
            .chain(report.sources.iter().flat_map(|s| s.findings.iter()))
            .filter(|f| f.status != Status::Ok)
            .map(|f| format!("{}: {}", f.check, f.message))
            .collect();
        Ok(AttemptResult {
            outcome: match report.status {
                Status::Ok => Outcome::Ok,
                Status::Warnings => Outcome::Warnings,
                Status::Failed => Outcome::Failed,
            },
            // A verification that found damage is not retried: it would find it again.
            transient: false,
            message: (!problems.is_empty()).then(|| problems.join("; ")),
            snapshots: Vec::new(),
            facts: Facts {
                damaged_objects: Some(report.integrity.problems.len() as u64),
                restore_tests: report
                    .restore_tests
                    .iter()
                    .map(|t| RestoreTestFact {
                        kind: t.kind.clone(),
                        ok: t.ok,
                        rto_seconds: t.rto_ms as f64 / 1000.0,
                    })
                    .collect(),
                ..Facts::default()
            },
            verification: report.record,
        })
    }

    async fn copy(&self, job: &Job) -> Result<AttemptResult, AttemptResult> {
        let to = job.to.as_deref().expect("a copy job has a destination");
        let from = store_settings(&self.config.repositories[&job.repository]).map_err(setup)?;
        let to = store_settings(&self.config.repositories[to]).map_err(setup)?;
        let done = arsip_ops::copy::run(&from, &to, self.clock.now(), false, &|_, _, _| {})
            .await
            .map_err(|e| AttemptResult::failed(&e))?;
        let mut problems: Vec<String> = Vec::new();
        if !done.damaged.is_empty() {
            problems.push(format!(
                "{} object(s) damaged at the source, not copied (first: {})",
                done.damaged.len(),
                done.damaged[0]
            ));
        }
        if !done.foreign.is_empty() {
            problems.push(format!(
                "{} object(s) at the destination hold other bytes (first: {})",
                done.foreign.len(),
                done.foreign[0]
            ));
        }
        Ok(AttemptResult {
            outcome: match problems.is_empty() {
                true => Outcome::Ok,
                false => Outcome::Failed,
            },
            message: (!problems.is_empty()).then(|| problems.join("; ")),
            facts: Facts {
                copied_objects: Some(done.copied),
                copied_bytes: Some(done.copied_bytes),
                copy_lag_seconds: done.lag_seconds,
                ..Facts::default()
            },
            ..AttemptResult::ok()
        })
    }

    async fn wal_check(&self, job: &Job) -> Result<AttemptResult, AttemptResult> {
        let source =
            &self.config.sources[job.source.as_deref().expect("a wal-check job has a source")];
        let dbname = source.dbname.as_deref().unwrap_or("");
        let repo = self.open(&job.repository, true).await.map_err(setup)?;
        let lag = verify::wal_lag(repo.shared(), dbname, &self.pg)
            .await
            .map_err(|e| AttemptResult::failed(&e))?;
        let message = format!(
            "server at {}, archive at {}{}",
            lag.server_segment,
            lag.newest_archived.as_deref().unwrap_or("nothing"),
            lag.lag_segments
                .map(|l| format!(", {l} segment(s) behind"))
                .unwrap_or_default()
        );
        Ok(AttemptResult {
            // Behind is a finding, not a failure of the check: the next check looks again.
            outcome: if lag.behind() {
                Outcome::Warnings
            } else {
                Outcome::Ok
            },
            message: Some(message),
            facts: Facts {
                wal_lag_segments: lag.lag_segments,
                ..Facts::default()
            },
            ..AttemptResult::ok()
        })
    }
}

/// Each attempt runs on a thread of its own, driving the runtime from there: some
/// operations' futures are not `Send` for every lifetime rustc asks about (streams of
/// closures over borrowed data), and a job must never be refused for that. Dropping the
/// returned future (a timeout, a shutdown) cancels the attempt there, which drops the
/// operation and kills its child processes. The commit guard of the claim the future runs
/// under (a task-local) is carried over.
impl Executor for Arc<Executors> {
    /// With a full key only (agents cannot list snapshots): a snapshot tagged with this
    /// job and occurrence.
    fn adopt(&self, job: &str, def: &Job, scheduled: Timestamp, claimant: &str) -> AdoptFuture {
        let me = self.clone();
        let (job, repo) = (job.to_string(), def.repository.clone());
        let claimant = claimant.to_string();
        Box::pin(async move {
            let full = me.full(&repo).await.ok()?;
            let listing = full.snapshot_listing().await.ok()?;
            let when = scheduled.to_string();
            // Only the dead claimant's own snapshot: another writer's tagged one proves
            // nothing about this run.
            let found = listing.snapshots.into_iter().find(|s| {
                s.writer == claimant
                    && s.manifest.tags.get(TAG_JOB) == Some(&job)
                    && s.manifest.tags.get(TAG_SCHEDULED) == Some(&when)
            })?;
            Some(AttemptResult {
                message: Some(format!(
                    "adopted snapshot {}, committed by the attempt that lapsed",
                    found.id
                )),
                snapshots: vec![found.id],
                ..AttemptResult::ok()
            })
        })
    }

    fn run(&self, job: &str, def: &Job, scheduled: Timestamp) -> ExecFuture {
        let me = self.clone();
        let (job, def) = (job.to_string(), def.clone());
        Box::pin(async move {
            let guard = arsip_ops::repo::current_commit_guard();
            let handle = tokio::runtime::Handle::current();
            let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::task::spawn_blocking(move || {
                handle.block_on(async move {
                    let work = me.attempt(&job, &def, scheduled);
                    let work = async move {
                        match guard {
                            Some(g) => arsip_ops::repo::guarded(g, work).await,
                            None => work.await,
                        }
                    };
                    tokio::select! {
                        r = work => r,
                        _ = cancelled => AttemptResult {
                            outcome: Outcome::Interrupted,
                            transient: true,
                            message: Some("cancelled".into()),
                            ..AttemptResult::ok()
                        },
                    }
                })
            });
            let _cancel_on_drop = cancel;
            task.await.unwrap_or_else(|e| AttemptResult {
                outcome: Outcome::Failed,
                transient: false,
                message: Some(format!(
                    "the attempt stopped abnormally: {e}; this is a defect in arsip"
                )),
                ..AttemptResult::ok()
            })
        })
    }
}

/// A failure before the operation ran (credentials, configuration): not transient.
fn setup(message: String) -> AttemptResult {
    AttemptResult {
        outcome: Outcome::Failed,
        transient: false,
        message: Some(message),
        ..AttemptResult::ok()
    }
}

/// What opens repository `r`: for backups (`agent_ok`) its agent file if it has one, else
/// its key file, else its password.
fn credentials(r: &Repository, agent_ok: bool) -> Result<OpenWith, String> {
    let file = |s: &Secret, what: &str| -> Result<OpenWith, String> {
        let raw = Zeroizing::new(s.read()?.into_bytes());
        arsip_ops::open::credentials(&raw, &format!("the {what} ({})", s.describe()))
            .map_err(|e| e.to_string())
    };
    if agent_ok {
        if let Some(a) = &r.agent_file {
            return file(a, "agent file");
        }
    }
    if let Some(k) = &r.key_file {
        return file(k, "key file");
    }
    if let Some(p) = &r.password {
        return Ok(OpenWith::Password(Zeroizing::new(p.read()?.into_bytes())));
    }
    Err(format!(
        "repository {}: no full key (key_file or password) for maintenance",
        r.location
    ))
}

/// What a physical restore test's `restore_command` opens the repository with.
fn recovery_credential(r: &Repository) -> Result<arsip_ops::pg::Credential, String> {
    match (&r.key_file, &r.password) {
        (Some(Secret::File(p)), _) => Ok(arsip_ops::pg::Credential::KeyFile(p.clone())),
        (_, Some(p)) => Ok(arsip_ops::pg::Credential::Password(Zeroizing::new(
            p.read()?.into_bytes(),
        ))),
        _ => Err("a restore test needs a key file or a password for the repository".into()),
    }
}

/// How to reach repository `r`'s store.
fn store_settings(r: &Repository) -> Result<StoreSettings, String> {
    let mut backend = arsip_ops::storage::StoreSettings::default();
    if r.location.starts_with("s3://") {
        let mut vars: Vec<(String, String)> = Vec::new();
        if let Some(e) = &r.endpoint {
            vars.push(("ARSIP_S3_ENDPOINT".into(), e.clone()));
        }
        if let Some(region) = &r.region {
            vars.push(("ARSIP_S3_REGION".into(), region.clone()));
        }
        if let Some(k) = &r.access_key_id {
            vars.push(("AWS_ACCESS_KEY_ID".into(), k.read()?));
        }
        if let Some(k) = &r.secret_access_key {
            vars.push(("AWS_SECRET_ACCESS_KEY".into(), k.read()?));
        }
        backend.s3 =
            arsip_ops::storage::S3Settings::from_vars(vars).map_err(|e| e.message.clone())?;
    }
    Ok(StoreSettings {
        location: r.location.clone(),
        backend,
        faults: None,
        meter: None,
    })
}

#[cfg(test)]
mod tests;
