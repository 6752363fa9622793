//! The scheduler's engine: it turns what [`scheduler::due`] says into runs, each run into
//! attempts coordinated with other daemons through job claims in the repository
//! (FORMAT.md §20), and every step into journal entries, durably, before acting on them.
//!
//! Rules (docs/design/CONTROL.md §3.2), each tested in `tests`:
//! - **exclusion**: never two jobs of one source at once; a repository-wide job (forget,
//!   prune, verify) excludes every job of its repository; at most `max_concurrent_jobs` run;
//!   a run that must wait starts as soon as what it waits for is free;
//! - **coalescing**: an occurrence that comes due while the job's previous run is still
//!   pending or running is `skipped`;
//! - **retries**: only transient failures ([`arsip_ops::Error::is_transient`]) are tried
//!   again, after `retry_backoff × 2^(n−1)` (±20 %, at most an hour), at most `retries`
//!   times, and never past the job's next occurrence; the run is then `failed`;
//! - **timeouts**: an attempt that outlives the job's `timeout` (default 6 h) is dropped
//!   (child processes die with it) and counts as interrupted, which is transient;
//! - **a failure never counts as a success**: only `ok` and `warnings` move the job's last
//!   success (see [`scheduler::histories`]);
//! - **one code path with or without peers**: every attempt claims its run in the
//!   repository first; a run a peer already finished, or is running, is watched, and
//!   journaled with the peer's outcome.
//!
//! The engine is driven by [`Runner::step`] (start what is due at a time) and
//! [`Runner::finish_one`] (take in one ended attempt); `arsip serve` loops over both on the
//! real clock, tests on a made-up timeline.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use arsip_ops::repo::{
    guarded, Chain, ClaimSpec, Finish, JobResult, Previous, Repository, RunState,
};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::mpsc;

use crate::config::{CatchUp, Config, Job, JobKind};
use crate::journal::{Event, Facts, Journal, JournalError, Outcome};
use crate::scheduler::{self, History};
use crate::state::{Shared, State};

/// An attempt with no `timeout` configured is stopped after this long.
pub const DEFAULT_TIMEOUT: SignedDuration = SignedDuration::from_hours(6);
/// Backoff between attempts is capped here.
pub const MAX_BACKOFF: SignedDuration = SignedDuration::from_hours(1);

/// What one attempt of a job did.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    /// `Ok`, `Warnings`, `Failed` or `Interrupted`.
    pub outcome: Outcome,
    pub transient: bool,
    pub message: Option<String>,
    pub snapshots: Vec<String>,
    pub verification: Option<String>,
    pub facts: Facts,
}

impl AttemptResult {
    pub fn ok() -> AttemptResult {
        AttemptResult {
            outcome: Outcome::Ok,
            transient: false,
            message: None,
            snapshots: Vec::new(),
            verification: None,
            facts: Facts::default(),
        }
    }

    /// A failed attempt, transient when the error says so.
    pub fn failed(e: &arsip_ops::Error) -> AttemptResult {
        AttemptResult {
            outcome: Outcome::Failed,
            transient: e.is_transient(),
            message: Some(e.to_string()),
            ..AttemptResult::ok()
        }
    }
}

pub type ExecFuture = Pin<Box<dyn Future<Output = AttemptResult> + Send>>;

/// Runs one attempt of a job (the executors of `arsip serve`; tests give their own).
pub trait Executor: Send + Sync {
    fn run(&self, job: &str, def: &Job, scheduled: Timestamp) -> ExecFuture;

    /// Before taking over a run whose claimant (writer `claimant`, hex) lapsed: what that
    /// claimant committed before it died, if it can be found (its snapshot tagged with the
    /// run), so that the run is recorded instead of made twice (FORMAT.md §20.2). `None`:
    /// nothing found, run it.
    fn adopt(&self, job: &str, def: &Job, scheduled: Timestamp, claimant: &str) -> AdoptFuture {
        let _ = (job, def, scheduled, claimant);
        Box::pin(async { None })
    }
}

pub type AdoptFuture = Pin<Box<dyn Future<Output = Option<AttemptResult>> + Send>>;

/// How an attempt task ended.
#[derive(Debug)]
enum TaskEnd {
    /// This daemon ran it.
    Ran(Box<AttemptResult>),
    /// Another daemon's attempt decided the run (`transient`: its failure may be retried);
    /// `digest` is the job's configuration digest its claim carried.
    Peer {
        outcome: Outcome,
        transient: bool,
        daemon: String,
        digest: Option<String>,
    },
    /// The run could not be coordinated (the repository did not answer): transient.
    Coordination(String),
    /// Cancelled (by this one) before this daemon claimed it.
    Cancelled(String),
    /// A peer's result that does not hold up (its snapshot does not exist): a failure,
    /// and looking again would find the same.
    Unproven(String),
}

/// A run that is due, waiting, running, or waiting to be retried.
#[derive(Debug)]
struct Run {
    /// The job's definition when the run was taken up (a reload changes it only for runs
    /// not running).
    def: Job,
    scheduled: Timestamp,
    /// Local attempts made so far.
    attempts: u32,
    /// When the next attempt may start.
    start_at: Timestamp,
    running: bool,
}

/// A running attempt's task, and how to reach it.
struct Task {
    handle: tokio::task::JoinHandle<()>,
    /// Who cancelled it, once someone did.
    cancel: tokio::sync::watch::Sender<Option<String>>,
    phase: Arc<std::sync::Mutex<Phase>>,
}

/// Where an attempt task is.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Reading the run's claims, or claiming.
    Looking,
    /// A peer daemon (this id) runs the attempt; the task watches it.
    Watching(String),
    /// This daemon runs it.
    Running,
}

/// What an attempt task sends back.
struct Ended {
    job: String,
    end: TaskEnd,
}

pub struct Runner {
    config: Config,
    daemon: String,
    repos: BTreeMap<String, Arc<Repository>>,
    executor: Arc<dyn Executor>,
    journal: Journal,
    histories: BTreeMap<String, History>,
    /// What the API and `/metrics` read: updated with every journal entry.
    state: Shared,
    runs: BTreeMap<String, Run>,
    /// The task of each running attempt, to stop it at shutdown or when cancelled.
    tasks: BTreeMap<String, Task>,
    done_tx: mpsc::UnboundedSender<Ended>,
    done_rx: mpsc::UnboundedReceiver<Ended>,
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("no such job")]
    NoSuchJob,
    #[error("the job has a run pending or running (scheduled {0})")]
    Busy(Timestamp),
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no such job")]
    NoSuchJob,
    #[error("the job has no run pending or running")]
    Idle,
    #[error("the job's run is the one scheduled {0}, not the one asked for")]
    OtherRun(Timestamp),
    #[error("the run (scheduled {scheduled}) is running at daemon {daemon}; cancel it there")]
    AtPeer {
        scheduled: Timestamp,
        daemon: String,
    },
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("job {job}: repository {repository} is not open")]
    NoRepository { job: String, repository: String },
}

impl Runner {
    /// An engine for `config`'s jobs, journaling into `journal` (opened, with the entries
    /// it recovered in `entries`), claiming runs as `daemon` in `repos` (every repository
    /// the jobs name, opened).
    pub fn new(
        config: Config,
        daemon: String,
        repos: BTreeMap<String, Arc<Repository>>,
        executor: Arc<dyn Executor>,
        journal: Journal,
        entries: &[crate::journal::Entry],
    ) -> Result<Runner, RunnerError> {
        for (job, j) in &config.jobs {
            if !repos.contains_key(&j.repository) {
                return Err(RunnerError::NoRepository {
                    job: job.clone(),
                    repository: j.repository.clone(),
                });
            }
        }
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        // The daemon journals `config_loaded` first: the newest entry is its start.
        let started = entries.last().map_or(Timestamp::UNIX_EPOCH, |e| e.at);
        let mut histories = scheduler::histories(entries);
        // Every configured job is known from this start on at the latest: an occurrence
        // after it that the loop did not wake for (a suspend, a clock step) is caught up or
        // recorded missed, never passed over.
        if !entries.is_empty() {
            for job in config.jobs.keys() {
                histories
                    .entry(job.clone())
                    .or_default()
                    .known_since
                    .get_or_insert(started);
            }
        }
        Ok(Runner {
            histories,
            state: State::new(daemon.clone(), started, entries).shared(),
            config,
            daemon,
            repos,
            executor,
            journal,
            runs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            done_tx,
            done_rx,
        })
    }

    pub fn histories(&self) -> &BTreeMap<String, History> {
        &self.histories
    }

    /// The state the journal adds up to, kept current.
    pub fn state(&self) -> Shared {
        self.state.clone()
    }

    /// Attempts running now.
    pub fn running(&self) -> usize {
        self.runs.values().filter(|r| r.running).count()
    }

    /// Runs due, waiting or running.
    pub fn pending(&self) -> usize {
        self.runs.len()
    }

    /// Journal an event that is not the engine's own (alerts, deliveries), folded into the
    /// state like the rest.
    pub fn record(&mut self, at: Timestamp, event: Event) -> Result<(), RunnerError> {
        self.journal(at, event)
    }

    fn journal(&mut self, at: Timestamp, event: Event) -> Result<(), RunnerError> {
        let e = self.journal.append(at, event)?;
        scheduler::apply(&mut self.histories, &e);
        self.state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(&e);
        Ok(())
    }

    /// At `now`: record what was missed and what coalesced, take up what is due, start
    /// every attempt whose time has come and whose source is free.
    pub fn step(&mut self, now: Timestamp) -> Result<(), RunnerError> {
        let jobs: Vec<(String, Job)> = self
            .config
            .jobs
            .iter()
            .map(|(n, j)| (n.clone(), j.clone()))
            .collect();
        for (name, job) in &jobs {
            let mut h = self.histories.get(name).cloned().unwrap_or_default();
            if let Some(r) = self.runs.get(name) {
                h.last_handled = h.last_handled.max(Some(r.scheduled));
            }
            let d = scheduler::due(
                &job.schedule,
                &h,
                now,
                self.config.daemon.catch_up,
                self.catch_up_within(),
            );
            for t in d.missed {
                self.finish_run(now, name, t, Outcome::Missed, None)?;
            }
            let Some(t) = d.run else { continue };
            if self.runs.contains_key(name) {
                self.finish_run(now, name, t, Outcome::Skipped, None)?;
                continue;
            }
            self.runs.insert(
                name.clone(),
                Run {
                    def: job.clone(),
                    scheduled: t,
                    attempts: 0,
                    start_at: t,
                    running: false,
                },
            );
        }
        self.start_ready(now)
    }

    /// Run `job` now, as asked by `by` (an API token's name): the run is the occurrence
    /// `now` (to the second), claimed in the repository like a scheduled one, so a trigger
    /// sent to two daemons runs once. Refused while the job has a run pending or running.
    pub fn trigger(
        &mut self,
        now: Timestamp,
        job: &str,
        by: &str,
    ) -> Result<Timestamp, TriggerError> {
        if !self.config.jobs.contains_key(job) {
            return Err(TriggerError::NoSuchJob);
        }
        if let Some(r) = self.runs.get(job) {
            return Err(TriggerError::Busy(r.scheduled));
        }
        let t = Timestamp::from_second(now.as_second()).unwrap_or(now);
        self.journal(
            now,
            Event::Triggered {
                job: job.to_string(),
                scheduled: t,
                by: by.to_string(),
            },
        )?;
        self.runs.insert(
            job.to_string(),
            Run {
                def: self.config.jobs[job].clone(),
                scheduled: t,
                attempts: 0,
                start_at: t,
                running: false,
            },
        );
        self.start_ready(now)?;
        Ok(t)
    }

    /// Cancel `job`'s run (the one scheduled `only`, when given), as asked by `by`: a run
    /// waiting to start or to be retried ends at once; a running attempt is stopped like a
    /// timeout, except that its result in the repository (`cancelled`) is final, so no peer
    /// takes the run over and no retry follows. Either way the run ends `cancelled`. A run
    /// a peer daemon is running is refused: cancel it at that daemon.
    pub fn cancel(
        &mut self,
        now: Timestamp,
        job: &str,
        by: &str,
        only: Option<Timestamp>,
    ) -> Result<Timestamp, CancelError> {
        let Some(run) = self.runs.get(job) else {
            return Err(match self.config.jobs.contains_key(job) {
                true => CancelError::Idle,
                false => CancelError::NoSuchJob,
            });
        };
        let scheduled = run.scheduled;
        if only.is_some_and(|t| t != scheduled) {
            return Err(CancelError::OtherRun(scheduled));
        }
        match self.tasks.get(job) {
            Some(task) => {
                // Under the phase's lock: the task cannot start watching a peer meanwhile.
                let phase = task.phase.lock().unwrap_or_else(|p| p.into_inner());
                if let Phase::Watching(daemon) = &*phase {
                    return Err(CancelError::AtPeer {
                        scheduled,
                        daemon: daemon.clone(),
                    });
                }
                // The task ends the attempt, records `cancelled` in its claim, and reports
                // back through `finish_one` like any attempt.
                task.cancel.send_replace(Some(by.to_string()));
            }
            None => self.finish_run(now, job, scheduled, Outcome::Cancelled, None)?,
        }
        Ok(scheduled)
    }

    /// Put a reloaded configuration in force at `now`, with `executor` (built for it).
    /// Attempts running finish under the definition they started with; runs waiting (to
    /// start or for a retry) take the new one, or are dropped when their job is gone; a new
    /// job is known from `now` (nothing before is caught up). Refused, changing nothing,
    /// when a job names a repository this engine has no handle for.
    pub fn reload(
        &mut self,
        config: Config,
        executor: Arc<dyn Executor>,
        now: Timestamp,
    ) -> Result<(), RunnerError> {
        for (job, j) in &config.jobs {
            if !self.repos.contains_key(&j.repository) {
                return Err(RunnerError::NoRepository {
                    job: job.clone(),
                    repository: j.repository.clone(),
                });
            }
        }
        self.runs.retain(|name, r| {
            if r.running {
                return true;
            }
            match config.jobs.get(name) {
                Some(def) => {
                    r.def = def.clone();
                    true
                }
                None => {
                    tracing::warn!(job = %name, scheduled = %r.scheduled, "reload: the job is no longer configured; its waiting run is dropped");
                    false
                }
            }
        });
        for job in config.jobs.keys() {
            self.histories
                .entry(job.clone())
                .or_default()
                .known_since
                .get_or_insert(now);
        }
        self.config = config;
        self.executor = executor;
        Ok(())
    }

    fn catch_up_within(&self) -> SignedDuration {
        match self.config.daemon.catch_up {
            CatchUp::Once => self.config.daemon.catch_up_within,
            CatchUp::Skip => SignedDuration::ZERO,
        }
    }

    /// What a job holds while it runs: its source, or its whole repository.
    fn resources(&self, job: &Job) -> BTreeSet<String> {
        match (&job.source, job.kind) {
            (Some(s), JobKind::Backup | JobKind::WalCheck) => [format!("source:{s}")].into(),
            // A copy reads beside backups; not beside maintenance, which deletes.
            (_, JobKind::Copy) => [format!("repository:{}", job.repository)].into(),
            _ => {
                let mut r: BTreeSet<String> = self
                    .config
                    .sources
                    .iter()
                    .filter(|(_, s)| s.repository == job.repository)
                    .map(|(n, _)| format!("source:{n}"))
                    .collect();
                r.insert(format!("repository:{}", job.repository));
                r
            }
        }
    }

    fn start_ready(&mut self, now: Timestamp) -> Result<(), RunnerError> {
        let mut held: BTreeSet<String> = BTreeSet::new();
        for r in self.runs.values() {
            if r.running {
                held.extend(self.resources(&r.def));
            }
        }
        let mut ready: Vec<(Timestamp, String)> = self
            .runs
            .iter()
            .filter(|(_, r)| !r.running && r.start_at <= now)
            .map(|(n, r)| (r.start_at, n.clone()))
            .collect();
        ready.sort();
        for (_, name) in ready {
            if self.running() >= self.config.daemon.max_concurrent_jobs.max(1) {
                break;
            }
            let needs = self.resources(&self.runs[&name].def);
            let blocked = !held.is_disjoint(&needs);
            // Held either way: a run that waits keeps later ones that need the same
            // sources from going first (a prune is not starved by frequent backups).
            held.extend(needs);
            if blocked {
                continue;
            }
            self.start_attempt(now, &name)?;
        }
        Ok(())
    }

    fn start_attempt(&mut self, now: Timestamp, name: &str) -> Result<(), RunnerError> {
        let (job, scheduled, attempt) = {
            let r = self.runs.get_mut(name).expect("a run to start");
            r.attempts += 1;
            r.running = true;
            (r.def.clone(), r.scheduled, r.attempts)
        };
        self.journal(
            now,
            Event::AttemptStarted {
                job: name.to_string(),
                scheduled,
                attempt,
            },
        )?;
        let (cancel, cancelled) = tokio::sync::watch::channel(None);
        let phase = Arc::new(std::sync::Mutex::new(Phase::Looking));
        let ctx = AttemptCtx {
            cancelled,
            phase: phase.clone(),
            repo: self.repos[&job.repository].clone(),
            executor: self.executor.clone(),
            daemon: self.daemon.clone(),
            name: name.to_string(),
            job,
            scheduled,
            retry: attempt > 1,
            digest: self.config.job_digest(name),
        };
        let tx = self.done_tx.clone();
        let job = name.to_string();
        let handle = tokio::spawn(async move {
            let end = ctx.attempt().await;
            let _ = tx.send(Ended { job, end });
        });
        self.tasks.insert(
            name.to_string(),
            Task {
                handle,
                cancel,
                phase,
            },
        );
        Ok(())
    }

    /// Wait for one attempt to end and take it in at the time `now()` gives then; `false`
    /// when none runs.
    pub async fn finish_one(&mut self, now: impl Fn() -> Timestamp) -> Result<bool, RunnerError> {
        if self.running() == 0 {
            return Ok(false);
        }
        let Some(e) = self.done_rx.recv().await else {
            return Ok(false);
        };
        self.ended(now(), e)?;
        Ok(true)
    }

    /// Take in every attempt that has ended, without waiting.
    pub fn finish_ready(&mut self, now: Timestamp) -> Result<usize, RunnerError> {
        let mut n = 0;
        while let Ok(e) = self.done_rx.try_recv() {
            self.ended(now, e)?;
            n += 1;
        }
        Ok(n)
    }

    /// Run everything due at `now` to its end (retries included, each at its time as far as
    /// `now` allows): the driver of tests on a made-up timeline.
    pub async fn settle(&mut self, now: Timestamp) -> Result<(), RunnerError> {
        self.step(now)?;
        while self.finish_one(|| now).await? {
            self.step(now)?;
        }
        Ok(())
    }

    /// When the engine next has something to do by the clock: the next occurrence of any
    /// job or the next retry.
    pub fn next_wakeup(&self, now: Timestamp) -> Option<Timestamp> {
        // Runs due and waiting for a source start when an attempt ends, not by the clock.
        let retries = self
            .runs
            .values()
            .filter(|r| !r.running && r.start_at > now)
            .map(|r| r.start_at);
        let occurrences = self
            .config
            .jobs
            .values()
            .filter_map(|j| j.schedule.next_after(now).map(|z| z.timestamp()));
        retries.chain(occurrences).min()
    }

    /// Shutdown: stop every running attempt (its claim lapses; a peer takes the run over,
    /// or this daemon catches it up when it starts again) and journal it `interrupted`.
    /// Returns how many were stopped.
    pub fn stop_all(&mut self, now: Timestamp) -> Result<usize, RunnerError> {
        let running: Vec<(String, Timestamp, u32)> = self
            .runs
            .iter()
            .filter(|(_, r)| r.running)
            .map(|(n, r)| (n.clone(), r.scheduled, r.attempts))
            .collect();
        for (job, scheduled, attempt) in &running {
            if let Some(t) = self.tasks.remove(job) {
                t.handle.abort();
            }
            self.journal(
                now,
                Event::AttemptFinished {
                    job: job.clone(),
                    scheduled: *scheduled,
                    attempt: *attempt,
                    outcome: Outcome::Interrupted,
                    transient: true,
                    message: Some("stopped at shutdown".into()),
                    produced: None,
                    facts: Box::default(),
                },
            )?;
            self.runs.remove(job);
        }
        Ok(running.len())
    }

    fn ended(&mut self, now: Timestamp, e: Ended) -> Result<(), RunnerError> {
        self.tasks.remove(&e.job);
        let Some(run) = self.runs.get_mut(&e.job) else {
            return Ok(());
        };
        run.running = false;
        let (def, scheduled, attempt) = (run.def.clone(), run.scheduled, run.attempts);
        let (result, peer) = match e.end {
            TaskEnd::Ran(r) => (*r, None),
            TaskEnd::Peer {
                outcome,
                transient,
                daemon,
                digest,
            } => (
                {
                    self.compare_digest(&e.job, &daemon, digest);
                    AttemptResult {
                        outcome,
                        transient,
                        message: Some(format!("run by daemon {daemon}")),
                        ..AttemptResult::ok()
                    }
                },
                Some(daemon),
            ),
            TaskEnd::Coordination(m) => (
                AttemptResult {
                    outcome: Outcome::Failed,
                    transient: true,
                    message: Some(m),
                    ..AttemptResult::ok()
                },
                None,
            ),
            TaskEnd::Unproven(m) => (
                AttemptResult {
                    outcome: Outcome::Failed,
                    transient: false,
                    message: Some(m),
                    ..AttemptResult::ok()
                },
                None,
            ),
            TaskEnd::Cancelled(by) => (cancelled_by(&by), None),
        };
        self.journal(
            now,
            Event::AttemptFinished {
                job: e.job.clone(),
                scheduled,
                attempt,
                outcome: result.outcome,
                transient: result.transient,
                message: result.message.clone(),
                produced: result
                    .snapshots
                    .first()
                    .cloned()
                    .or(result.verification.clone()),
                facts: Box::new(result.facts.clone()),
            },
        )?;
        let job = &def;
        if result.outcome.succeeded() || !result.transient || attempt > job.retries {
            // An attempt cut off (a timeout) that ends the run leaves it failed; a cancelled
            // one, cancelled.
            let outcome = match result.outcome {
                Outcome::Interrupted => Outcome::Failed,
                o => o,
            };
            return self.finish_run(now, &e.job, scheduled, outcome, peer);
        }
        let at = now + backoff(job.retry_backoff, &e.job, scheduled, attempt);
        let next = job.schedule.next_after(scheduled).map(|z| z.timestamp());
        if next.is_some_and(|n| at >= n) {
            tracing::warn!(job = %e.job, %scheduled, "no time to retry before the next run");
            return self.finish_run(now, &e.job, scheduled, Outcome::Failed, peer);
        }
        if let Some(run) = self.runs.get_mut(&e.job) {
            run.start_at = at;
        }
        Ok(())
    }

    /// After a successful backup run of `job`, the copy jobs of its repository that follow
    /// backups start a run now (unless one is pending), claimed like any run.
    fn follow_backup(&mut self, now: Timestamp, job: &str) -> Result<(), RunnerError> {
        let Some(def) = self
            .config
            .jobs
            .get(job)
            .filter(|d| d.kind == JobKind::Backup)
        else {
            return Ok(());
        };
        let copies: Vec<String> = self
            .config
            .jobs
            .iter()
            .filter(|(_, c)| {
                c.kind == JobKind::Copy && c.after_backups && c.repository == def.repository
            })
            .map(|(n, _)| n.clone())
            .collect();
        for copy in copies {
            match self.trigger(now, &copy, &format!("after backup {job}")) {
                Ok(_) | Err(TriggerError::Busy(_)) => {}
                Err(TriggerError::NoSuchJob) => {}
                Err(TriggerError::Runner(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// A peer ran `job` with the configuration digest `theirs`: note whether it differs
    /// from ours (the claim is respected either way; FORMAT.md §20.8).
    fn compare_digest(&mut self, job: &str, daemon: &str, theirs: Option<String>) {
        // A claim without a digest (an older daemon) says nothing either way.
        let Some(theirs) = theirs else { return };
        let differs = self
            .config
            .job_digest(job)
            .is_some_and(|ours| ours != theirs);
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let was = state.config_mismatch.insert(job.to_string(), differs);
        if differs && was != Some(true) {
            tracing::warn!(
                %job, peer = %daemon,
                "a peer daemon runs this job with a different configuration; make the daemons' configurations the same"
            );
        }
    }

    fn finish_run(
        &mut self,
        now: Timestamp,
        job: &str,
        scheduled: Timestamp,
        outcome: Outcome,
        peer: Option<String>,
    ) -> Result<(), RunnerError> {
        if self.runs.get(job).is_some_and(|r| r.scheduled == scheduled) {
            self.runs.remove(job);
        }
        if outcome.succeeded() {
            self.follow_backup(now, job)?;
        }
        self.journal(
            now,
            Event::RunFinished {
                job: job.to_string(),
                scheduled,
                outcome,
                peer,
            },
        )
    }
}

/// The wait before local attempt `attempt + 1`: `base × 2^(attempt−1)`, ±20 % (a jitter
/// from the run's identity), at most [`MAX_BACKOFF`].
pub fn backoff(
    base: SignedDuration,
    job: &str,
    scheduled: Timestamp,
    attempt: u32,
) -> SignedDuration {
    let exp = base.saturating_mul(1i32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(MAX_BACKOFF);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (job, scheduled.as_second(), attempt).hash(&mut h);
    // 0.8 … 1.2
    let f = 0.8 + (h.finish() % 401) as f64 / 1000.0;
    SignedDuration::from_secs_f64(capped.as_secs_f64() * f).min(MAX_BACKOFF)
}

/// Everything an attempt task needs.
struct AttemptCtx {
    /// Set (to who asked) when the run is cancelled.
    cancelled: tokio::sync::watch::Receiver<Option<String>>,
    phase: Arc<std::sync::Mutex<Phase>>,
    repo: Arc<Repository>,
    executor: Arc<dyn Executor>,
    daemon: String,
    name: String,
    job: Job,
    scheduled: Timestamp,
    /// A retry after a failure (ours or a peer's): an ended chain is claimed again.
    retry: bool,
    /// The job's configuration digest, which its claims carry.
    digest: Option<String>,
}

impl AttemptCtx {
    async fn attempt(self) -> TaskEnd {
        match self.claim_and_run().await {
            Ok(end) => end,
            Err(e) => TaskEnd::Coordination(format!(
                "could not coordinate the run through the repository: {e}"
            )),
        }
    }

    /// Move to `phase`, unless the run was cancelled (then: who cancelled it). Under the
    /// phase's lock, so [`Runner::cancel`] sees either the old phase or the cancel here.
    fn enter(&self, phase: Phase) -> Result<(), String> {
        let mut p = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(by) = self.cancelled.borrow().clone() {
            return Err(by);
        }
        *p = phase;
        Ok(())
    }

    async fn claim_and_run(&self) -> arsip_ops::repo::Result<TaskEnd> {
        let chain = Chain::run(&self.name, self.scheduled)?;
        let timing = self.repo.session_timing();
        let timeout = self.job.timeout.unwrap_or(DEFAULT_TIMEOUT);
        loop {
            if let Err(by) = self.enter(Phase::Looking) {
                return Ok(TaskEnd::Cancelled(by));
            }
            let view = self.repo.chain_view(&chain).await?;
            let (previous, lapsed) = match view.state(self.repo.now(), timing.margin) {
                RunState::Succeeded(a) => {
                    // A result is the claimant's word: a backup's counts only if the
                    // snapshots it names exist (a planted `ok` must not silence alerts).
                    let named = &a.done.as_ref().expect("a result").snapshots;
                    let mut proven = self.job.kind != JobKind::Backup || !named.is_empty();
                    for id in named {
                        proven &= self.repo.snapshot_exists(id).await?;
                    }
                    if !proven {
                        return Ok(TaskEnd::Unproven(format!(
                            "daemon {} recorded this run as done, but the snapshot it names \
                             does not exist; the run is counted as failed",
                            a.claim.daemon
                        )));
                    }
                    return Ok(TaskEnd::Peer {
                        outcome: outcome_of(a.result()),
                        transient: false,
                        daemon: a.claim.daemon.clone(),
                        digest: a.claim.config_digest.clone(),
                    });
                }
                RunState::Live(a) => {
                    // A peer runs it: watch until it ends or lapses.
                    if let Err(by) = self.enter(Phase::Watching(a.claim.daemon.clone())) {
                        return Ok(TaskEnd::Cancelled(by));
                    }
                    let every = (timing.ttl / 5).min(SignedDuration::from_secs(60));
                    tokio::time::sleep(every.try_into().unwrap_or_default()).await;
                    continue;
                }
                RunState::Free => (None, None),
                RunState::Lapsed(a) => (
                    Some(Previous {
                        attempt: a.attempt,
                        result: None,
                    }),
                    Some(a.attempt),
                ),
                RunState::Ended(a) => {
                    let transient = a.done.as_ref().is_some_and(|d| d.transient);
                    if !self.retry || !transient || made(&view) > self.job.retries {
                        return Ok(TaskEnd::Peer {
                            outcome: outcome_of(a.result()),
                            transient,
                            daemon: a.claim.daemon.clone(),
                            digest: a.claim.config_digest.clone(),
                        });
                    }
                    (
                        Some(Previous {
                            attempt: a.attempt,
                            result: a.result(),
                        }),
                        None,
                    )
                }
            };
            let spec = ClaimSpec {
                daemon: self.daemon.clone(),
                timeout,
                config_digest: self.digest.clone(),
                previous,
            };
            let Some(claim) = self.repo.claim(&chain, view.next, &spec).await? else {
                continue; // a peer took that number first: look again
            };
            if !claim.confirm().await? {
                // Another attempt decides the run (or one claimed at the same instant):
                // step back, and look again after a moment, not at once.
                claim.withdraw().await?;
                tokio::time::sleep(withdraw_pause(&self.daemon, view.next)).await;
                continue;
            }
            // The attempt judged dead may have ended meanwhile (the judgement came from this
            // machine's clock and a listing made before the claim): if it has a result now,
            // that result decides; step back and read it.
            if let Some(p) = lapsed {
                let fresh = self.repo.chain_view(&chain).await?;
                if fresh.attempt(p).is_some_and(|a| a.done.is_some()) {
                    claim.withdraw().await?;
                    continue;
                }
            }
            let adopted = match lapsed.and_then(|p| view.attempt(p)) {
                Some(dead) => {
                    self.executor
                        .adopt(&self.name, &self.job, self.scheduled, &dead.claim.writer)
                        .await
                }
                None => None,
            };
            // Attempts that died count against the retries too (this claim is one more):
            // a job that kills its daemon is not taken over forever. Adopting what the dead
            // one committed is no new attempt.
            let exhausted = lapsed.is_some() && made(&view) > self.job.retries;
            let run: ExecFuture = match adopted {
                Some(r) => Box::pin(async move { r }),
                None if exhausted => Box::pin(async {
                    AttemptResult {
                        outcome: Outcome::Failed,
                        transient: false,
                        message: Some(
                            "the previous attempt died without a result and no retry is left"
                                .into(),
                        ),
                        ..AttemptResult::ok()
                    }
                }),
                None => self.executor.run(&self.name, &self.job, self.scheduled),
            };
            let dur = std::time::Duration::try_from(timeout).unwrap_or(std::time::Duration::MAX);
            let mut cancelled = self.cancelled.clone();
            let result = match self.enter(Phase::Running) {
                Err(by) => cancelled_by(&by),
                Ok(()) => tokio::select! {
                    r = tokio::time::timeout(dur, guarded(claim.guard(), run)) => match r {
                        Ok(r) => r,
                        Err(_) => AttemptResult {
                            outcome: Outcome::Interrupted,
                            transient: true,
                            message: Some(format!("timed out after {}", fmt_duration(timeout))),
                            ..AttemptResult::ok()
                        },
                    },
                    // Dropping the attempt's future stops it (child processes die with it).
                    Ok(by) = cancelled.wait_for(Option::is_some) => {
                        cancelled_by(by.as_deref().unwrap_or_default())
                    }
                },
            };
            let finish = Finish {
                result: match result.outcome {
                    Outcome::Ok => JobResult::Ok,
                    Outcome::Warnings => JobResult::Warnings,
                    Outcome::Interrupted => JobResult::Interrupted,
                    Outcome::Cancelled => JobResult::Cancelled,
                    _ => JobResult::Failed,
                },
                transient: result.transient,
                snapshots: result.snapshots.clone(),
                verification: result.verification.clone(),
                error_class: None,
                message: result.message.clone(),
            };
            if let Err(e) = claim.finish(finish).await {
                tracing::warn!(job = %self.name, error = %e, "could not record the attempt's result in the repository");
            }
            return Ok(TaskEnd::Ran(Box::new(result)));
        }
    }
}

/// The result of an attempt cancelled by `by`: final, never retried.
fn cancelled_by(by: &str) -> AttemptResult {
    AttemptResult {
        outcome: Outcome::Cancelled,
        transient: false,
        message: Some(format!("cancelled by {by}")),
        ..AttemptResult::ok()
    }
}

/// Attempts made in a chain, withdrawals aside.
fn made(view: &arsip_ops::repo::ChainView) -> u32 {
    view.attempts
        .iter()
        .filter(|x| x.result() != Some(JobResult::Withdrawn))
        .count() as u32
}

/// 1–3 s, different per daemon and attempt: two daemons that stepped back together do
/// not claim together again.
fn withdraw_pause(daemon: &str, attempt: u64) -> std::time::Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (daemon, attempt).hash(&mut h);
    std::time::Duration::from_millis(1000 + h.finish() % 2000)
}

fn outcome_of(r: Option<JobResult>) -> Outcome {
    match r {
        Some(JobResult::Ok) => Outcome::Ok,
        Some(JobResult::Warnings) => Outcome::Warnings,
        Some(JobResult::Interrupted) => Outcome::Interrupted,
        Some(JobResult::Cancelled) => Outcome::Cancelled,
        _ => Outcome::Failed,
    }
}

fn fmt_duration(d: SignedDuration) -> String {
    format!("{:#}", d)
}

#[cfg(test)]
mod tests;
