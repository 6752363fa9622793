//! What the daemon knows, folded from its journal: per job the runs it handled and what they
//! measured, per source what its backup jobs add up to. `/metrics`, the API and `status`
//! read this and nothing else, so a scrape never touches the repository, a restart restores
//! every figure from the journal, and a failure never looks like a success (only `ok` and
//! `warnings` runs move a last success).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use serde::Serialize;

use crate::config::{Config, JobKind};
use crate::journal::{Entry, Event, Facts, Outcome};

/// Finished runs kept per job (a year of daily runs, with room).
pub const HISTORY: usize = 400;

/// The daemon's state, shared between its loop (the only writer) and the HTTP server.
pub type Shared = Arc<RwLock<State>>;

#[derive(Debug, Clone, Serialize)]
pub struct State {
    pub daemon: String,
    /// When this daemon process started.
    pub started: Timestamp,
    /// SIGTERM received: no new runs, triggers refused.
    pub stopping: bool,
    pub jobs: BTreeMap<String, JobState>,
    /// When the journal first named each source (a `config_loaded` listing it).
    pub sources_seen: BTreeMap<String, Timestamp>,
    /// Open alerts and the notifications owed.
    pub alerts: crate::alerts::Book,
    /// Per repository, when its oldest key (password or key-file slot, unrevoked agent) was
    /// made: listed at start and every few hours, not journaled.
    pub oldest_key: BTreeMap<String, Timestamp>,
    /// Per job, whether the last peer claim seen carried a different configuration digest
    /// (not journaled: known again after the next peer run).
    pub config_mismatch: BTreeMap<String, bool>,
    /// The last SIGHUP's configuration did not load (the one before stays in force).
    pub config_reload_failed: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct JobState {
    pub last_attempt: Option<Timestamp>,
    /// The attempt running now, here or (watched) at a peer.
    pub running: Option<Running>,
    /// The last successful run (`ok` or `warnings`).
    pub last_success: Option<RunRecord>,
    /// The last successful run this daemon ran itself (its facts are known).
    pub last_measured: Option<RunRecord>,
    /// The last run that ended (missed and skipped ones aside).
    pub last_run: Option<RunRecord>,
    pub consecutive_failures: u32,
    /// Runs by outcome (`ran_by_peer` counts runs another daemon made, beside their
    /// outcome), and attempts by outcome.
    pub runs_total: BTreeMap<String, u64>,
    pub attempts_total: BTreeMap<String, u64>,
    /// Store requests of every attempt journaled (never shortened: a counter).
    pub requests_total: arsip_ops::storage::metered::Usage,
    /// The newest [`HISTORY`] runs, oldest first.
    pub history: VecDeque<RunRecord>,
    /// The run in progress: what its attempts reported so far.
    #[serde(skip)]
    current: Option<RunRecord>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Running {
    pub scheduled: Timestamp,
    pub attempt: u32,
    pub since: Timestamp,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRecord {
    pub scheduled: Timestamp,
    /// When its first attempt started (none for missed and skipped runs).
    pub started: Option<Timestamp>,
    pub finished: Timestamp,
    pub outcome: Outcome,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produced: Option<String>,
    #[serde(skip_serializing_if = "Facts::is_empty")]
    pub facts: Facts,
}

impl RunRecord {
    fn new(scheduled: Timestamp, at: Timestamp) -> RunRecord {
        RunRecord {
            scheduled,
            started: None,
            finished: at,
            outcome: Outcome::Missed,
            attempts: 0,
            peer: None,
            triggered_by: None,
            message: None,
            produced: None,
            facts: Facts::default(),
        }
    }

    /// Seconds from the first attempt's start to the end.
    pub fn elapsed(&self) -> Option<f64> {
        self.started
            .map(|s| self.finished.duration_since(s).as_secs_f64())
    }

    /// How long the work took: as the operation measured it, else start to end.
    pub fn seconds(&self) -> Option<f64> {
        self.facts.seconds.or(self.elapsed())
    }

    /// The backup's logical size.
    pub fn size(&self) -> Option<f64> {
        self.facts.logical_bytes.map(|b| b as f64)
    }
}

pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Warnings => "warnings",
        Outcome::Failed => "failed",
        Outcome::Interrupted => "interrupted",
        Outcome::Missed => "missed",
        Outcome::Skipped => "skipped",
        Outcome::Cancelled => "cancelled",
    }
}

impl State {
    /// The state `entries` (the journal, oldest first) add up to.
    pub fn new(daemon: String, started: Timestamp, entries: &[Entry]) -> State {
        let mut s = State {
            daemon,
            started,
            stopping: false,
            jobs: BTreeMap::new(),
            sources_seen: BTreeMap::new(),
            alerts: Default::default(),
            oldest_key: BTreeMap::new(),
            config_mismatch: BTreeMap::new(),
            config_reload_failed: false,
        };
        for e in entries {
            s.apply(e);
        }
        s
    }

    pub fn shared(self) -> Shared {
        Arc::new(RwLock::new(self))
    }

    /// Fold one more journal entry in.
    pub fn apply(&mut self, e: &Entry) {
        match &e.event {
            Event::ConfigLoaded { sources, .. } => {
                for s in sources {
                    self.sources_seen.entry(s.clone()).or_insert(e.at);
                }
            }
            Event::AlertOpened { .. } | Event::AlertResolved { .. } | Event::Notified { .. } => {
                self.alerts.apply(e)
            }
            Event::Triggered { job, scheduled, by } => {
                let j = self.jobs.entry(job.clone()).or_default();
                let mut r = RunRecord::new(*scheduled, e.at);
                r.triggered_by = Some(by.clone());
                j.current = Some(r);
            }
            Event::AttemptStarted {
                job,
                scheduled,
                attempt,
            } => {
                let j = self.jobs.entry(job.clone()).or_default();
                j.last_attempt = Some(e.at);
                j.running = Some(Running {
                    scheduled: *scheduled,
                    attempt: *attempt,
                    since: e.at,
                });
                let r = j.current_run(*scheduled, e.at);
                r.started.get_or_insert(e.at);
                r.attempts = r.attempts.max(*attempt);
            }
            Event::AttemptFinished {
                job,
                scheduled,
                outcome,
                message,
                produced,
                facts,
                ..
            } => {
                let j = self.jobs.entry(job.clone()).or_default();
                j.running = None;
                *j.attempts_total
                    .entry(outcome_name(*outcome).into())
                    .or_default() += 1;
                if let Some(u) = &facts.requests {
                    add_usage(&mut j.requests_total, u);
                }
                let r = j.current_run(*scheduled, e.at);
                r.message.clone_from(message);
                r.produced.clone_from(produced);
                r.facts = (**facts).clone();
            }
            Event::RunFinished {
                job,
                scheduled,
                outcome,
                peer,
            } => {
                let j = self.jobs.entry(job.clone()).or_default();
                let mut r = match j.current.take() {
                    Some(r) if r.scheduled == *scheduled => r,
                    other => {
                        j.current = other;
                        RunRecord::new(*scheduled, e.at)
                    }
                };
                r.finished = e.at;
                r.outcome = *outcome;
                r.peer.clone_from(peer);
                if j.running
                    .as_ref()
                    .is_some_and(|x| x.scheduled == *scheduled)
                {
                    j.running = None;
                }
                *j.runs_total
                    .entry(outcome_name(*outcome).into())
                    .or_default() += 1;
                if peer.is_some() {
                    *j.runs_total.entry("ran_by_peer".into()).or_default() += 1;
                }
                match outcome {
                    Outcome::Ok | Outcome::Warnings => {
                        j.consecutive_failures = 0;
                        j.last_success = Some(r.clone());
                        if peer.is_none() {
                            j.last_measured = Some(r.clone());
                        }
                        j.last_run = Some(r.clone());
                    }
                    // A cancelled run made no backup either.
                    Outcome::Failed
                    | Outcome::Interrupted
                    | Outcome::Missed
                    | Outcome::Cancelled => {
                        j.consecutive_failures += 1;
                        j.last_run = Some(r.clone());
                    }
                    // The previous run was still going: nothing new about the job.
                    Outcome::Skipped => {}
                }
                j.history.push_back(r);
                while j.history.len() > HISTORY {
                    j.history.pop_front();
                }
            }
        }
    }

    /// What `config`'s source `name` adds up to: its backup jobs' states, newest first.
    pub fn source(&self, config: &Config, name: &str) -> SourceState {
        let mut out = SourceState::default();
        for (job, def) in &config.jobs {
            if def.kind != JobKind::Backup || def.source.as_deref() != Some(name) {
                continue;
            }
            let Some(j) = self.jobs.get(job) else {
                continue;
            };
            let newer = |a: &Option<RunRecord>, b: &Option<RunRecord>| match (a, b) {
                (Some(a), Some(b)) => a.finished > b.finished,
                (Some(_), None) => true,
                _ => false,
            };
            if newer(&j.last_success, &out.last_success) {
                out.last_success.clone_from(&j.last_success);
            }
            if newer(&j.last_measured, &out.last_measured) {
                out.last_measured.clone_from(&j.last_measured);
                out.measured = j.measured().collect();
            }
            if newer(&j.last_run, &out.last_run) {
                out.last_run.clone_from(&j.last_run);
                out.consecutive_failures = j.consecutive_failures;
            }
            out.last_attempt = out.last_attempt.max(j.last_attempt);
            if let Some(r) = &j.running {
                if out.running_since.is_none_or(|t| r.since < t) {
                    out.running_since = Some(r.since);
                }
            }
        }
        out
    }

    /// The newest finished run of `config`'s wal-check jobs of source `name`.
    pub fn wal_check(&self, config: &Config, name: &str) -> Option<&RunRecord> {
        config
            .jobs
            .iter()
            .filter(|(_, d)| d.kind == JobKind::WalCheck && d.source.as_deref() == Some(name))
            .filter_map(|(j, _)| self.jobs.get(j)?.last_run.as_ref())
            .max_by_key(|r| r.finished)
    }

    /// The newest run of `config`'s jobs of `kind` on repository `repo` that ended (for
    /// verify, prune and forget figures).
    pub fn repository_job(&self, config: &Config, repo: &str, kind: JobKind) -> Option<&RunRecord> {
        config
            .jobs
            .iter()
            .filter(|(_, d)| d.kind == kind && d.repository == repo)
            .filter_map(|(j, _)| self.jobs.get(j)?.last_run.as_ref())
            .max_by_key(|r| r.finished)
    }
}

pub fn add_usage(
    to: &mut arsip_ops::storage::metered::Usage,
    u: &arsip_ops::storage::metered::Usage,
) {
    to.put += u.put;
    to.get += u.get;
    to.head += u.head;
    to.list += u.list;
    to.delete += u.delete;
    to.failed += u.failed;
    to.uploaded_bytes += u.uploaded_bytes;
    to.downloaded_bytes += u.downloaded_bytes;
}

impl JobState {
    fn current_run(&mut self, scheduled: Timestamp, at: Timestamp) -> &mut RunRecord {
        if self
            .current
            .as_ref()
            .is_none_or(|r| r.scheduled != scheduled)
        {
            self.current = Some(RunRecord::new(scheduled, at));
        }
        self.current.as_mut().expect("just set")
    }

    /// Successful runs this daemon measured, oldest first.
    fn measured(&self) -> impl Iterator<Item = RunRecord> + '_ {
        self.history
            .iter()
            .filter(|r| r.outcome.succeeded() && r.peer.is_none() && !r.facts.is_empty())
            .cloned()
    }
}

/// A source's backup jobs, added up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceState {
    pub last_attempt: Option<Timestamp>,
    pub running_since: Option<Timestamp>,
    pub last_success: Option<RunRecord>,
    pub last_measured: Option<RunRecord>,
    pub last_run: Option<RunRecord>,
    pub consecutive_failures: u32,
    /// The measured successful runs of the job that made `last_measured`, oldest first.
    #[serde(skip)]
    pub measured: Vec<RunRecord>,
}

impl SourceState {
    /// The last measured backup's `f` over the median of the (up to) 14 before it; `None`
    /// with fewer than 3 to compare with.
    pub fn ratio(&self, f: impl Fn(&RunRecord) -> Option<f64>) -> Option<f64> {
        let (last, before) = self.measured.split_last()?;
        let mut prev: Vec<f64> = before.iter().rev().take(14).filter_map(&f).collect();
        if prev.len() < 3 {
            return None;
        }
        prev.sort_by(f64::total_cmp);
        let n = prev.len();
        let median = if n % 2 == 1 {
            prev[n / 2]
        } else {
            (prev[n / 2 - 1] + prev[n / 2]) / 2.0
        };
        (median > 0.0).then(|| f(last).map(|v| v / median))?
    }
}

#[cfg(test)]
mod tests;
