//! Alerts from the daemon itself, for sites without Prometheus: the plan's rules, evaluated
//! over the same state `/metrics` renders, under the same names as
//! `deploy/prometheus/arsip-rules.yml`, sent to the configured channels (generic webhook,
//! Slack incoming webhook, PagerDuty Events API v2, e-mail over SMTP with STARTTLS or TLS).
//!
//! - An alert is `(rule, subject)`; its dedup key `arsip:<repository>:<rule>:<subject>` is
//!   the same across restarts and across the daemons of an HA pair (PagerDuty folds their
//!   events into one incident).
//! - Opening an alert notifies each routed channel **once**; repeats are suppressed while it
//!   stays open; when it clears, a resolve is sent. Openings, resolves and every delivery
//!   are journaled, so a restart neither repeats a notification nor forgets one owed.
//! - Delivery runs in tasks of its own (jobs never wait for a channel): retried with backoff
//!   from 5 s to 10 min, honouring `Retry-After` on 429, for up to 24 h; a 4xx other than 408
//!   and 429 is permanent. Failures are logged and counted, and a channel failing is itself
//!   an alert (`ArsipAlertChannelFailing`, sent through the others).
//! - Messages are built from outcome fields and configuration names only: no secret is in
//!   them (the webhook and Slack URLs and the PagerDuty key are never logged).

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::{Config, JobKind, Severity};
use crate::journal::{Entry, Event, Outcome};
use crate::state::State;

/// An alert that holds now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub rule: String,
    pub severity: Severity,
    /// What it is about: a source, a job, a repository (and kind).
    pub subject: String,
    pub repository: String,
    pub summary: String,
    /// The run this alert is about ran here (or it is a condition, not a run's outcome):
    /// only then may this daemon notify it (another daemon's run is its to report).
    #[serde(default = "yes")]
    pub ours: bool,
}

fn yes() -> bool {
    true
}

/// Rules about conditions that hold whoever ran what: sent by the alert leader only.
pub const CONDITION_RULES: &[&str] = &[
    "ArsipKeyRotationDue",
    "ArsipNoBackupWithinRPO",
    "ArsipBackupNeverSucceeded",
    "ArsipBackupStuck",
    "ArsipJobOverdue",
];

impl Firing {
    /// Whether this daemon sends it: conditions from the leader, a run's alerts from the
    /// daemon that ran it.
    pub fn sent_here(&self, leader: bool) -> bool {
        if CONDITION_RULES.contains(&self.rule.as_str()) {
            leader
        } else {
            self.ours
        }
    }

    pub fn key(&self) -> (String, String) {
        (self.rule.clone(), self.subject.clone())
    }

    pub fn dedup_key(&self) -> String {
        format!("arsip:{}:{}:{}", self.repository, self.rule, self.subject)
    }
}

/// Every rule the daemon evaluates, with its severity (the Prometheus rules' names).
pub const RULES: &[(&str, Severity)] = &[
    ("ArsipBackupFailed", Severity::Critical),
    ("ArsipBackupCorrupted", Severity::Critical),
    ("ArsipStorageQuotaHigh", Severity::Critical),
    ("ArsipKeyRotationDue", Severity::Critical),
    ("ArsipRestoreTestFailed", Severity::Critical),
    ("ArsipNoBackupWithinRPO", Severity::Critical),
    ("ArsipBackupNeverSucceeded", Severity::Critical),
    ("ArsipBackupStuck", Severity::Critical),
    ("ArsipJobOverdue", Severity::Critical),
    ("ArsipBackupSizeAnomaly", Severity::Warning),
    ("ArsipBackupDurationAnomaly", Severity::Warning),
    ("ArsipVerificationFailed", Severity::Warning),
    ("ArsipWalArchiveLag", Severity::Warning),
    ("ArsipAlertChannelFailing", Severity::Warning),
    ("ArsipConfigReloadFailed", Severity::Warning),
];

/// `ArsipAlertChannelFailing`: deliveries through a channel have failed for
/// [`CHANNEL_FAILING_FOR`] (retries ride out a blip), and none got through in
/// [`CHANNEL_QUIET`] (the Prometheus rule's window and `for`).
pub const CHANNEL_QUIET: SignedDuration = SignedDuration::from_mins(30);
pub const CHANNEL_FAILING_FOR: SignedDuration = SignedDuration::from_mins(10);

/// How late a job may be before `ArsipJobOverdue`.
pub const OVERDUE: SignedDuration = SignedDuration::from_mins(5);

/// Every alert that holds at `now`.
pub fn evaluate(config: &Config, state: &State, now: Timestamp) -> Vec<Firing> {
    let mut out = Vec::new();
    let mut fire = |rule: &str, severity, subject: &str, repository: &str, summary: String| {
        out.push(Firing {
            rule: rule.into(),
            severity,
            subject: subject.into(),
            repository: repository.into(),
            summary,
            ours: true,
        })
    };
    use Severity::{Critical, Warning};
    for (name, s) in &config.sources {
        let st = state.source(config, name);
        let repo = s.repository.as_str();
        if let Some(r) = st.last_run.as_ref().filter(|r| !r.outcome.succeeded()) {
            let why = r.message.as_deref().unwrap_or("no message");
            fire(
                "ArsipBackupFailed",
                Critical,
                name,
                repo,
                format!(
                    "backup of {name} failed ({} run(s) in a row): {why}",
                    st.consecutive_failures
                ),
            );
        }
        // While a backup of the source runs, the RPO alerts wait for it (a hung one is
        // ArsipBackupStuck's).
        match &st.last_success {
            _ if st.running_since.is_some() => {}
            Some(r) if now.duration_since(r.finished) > s.rpo => fire(
                "ArsipNoBackupWithinRPO",
                Critical,
                name,
                repo,
                format!(
                    "no backup of {name} within its RPO of {:#}: the newest finished {}",
                    s.rpo, r.finished
                ),
            ),
            Some(_) => {}
            None => {
                let since = state
                    .sources_seen
                    .get(name)
                    .copied()
                    .unwrap_or(state.started);
                if now.duration_since(since) > s.rpo {
                    fire(
                        "ArsipBackupNeverSucceeded",
                        Critical,
                        name,
                        repo,
                        format!("{name} has never been backed up (configured since {since})"),
                    );
                }
            }
        }
        let size = st.ratio(crate::state::RunRecord::size);
        if let Some(v) = size.filter(|v| (v - 1.0).abs() > config.alerts.size_tolerance) {
            fire(
                "ArsipBackupSizeAnomaly",
                Warning,
                name,
                repo,
                format!(
                    "backup of {name} is {:.0} % of its usual size (tolerance ±{:.0} %)",
                    v * 100.0,
                    config.alerts.size_tolerance * 100.0
                ),
            );
        }
        let duration = st.ratio(crate::state::RunRecord::seconds);
        if let Some(v) = duration.filter(|v| *v > config.alerts.duration_factor) {
            fire(
                "ArsipBackupDurationAnomaly",
                Warning,
                name,
                repo,
                format!("backup of {name} took {v:.1}× its usual time"),
            );
        }
        if let Some(lag) = state
            .wal_check(config, name)
            .and_then(|r| r.facts.wal_lag_segments)
            .filter(|l| *l > arsip_ops::verify::MAX_WAL_LAG_SEGMENTS)
        {
            fire(
                "ArsipWalArchiveLag",
                Warning,
                name,
                repo,
                format!("WAL archive of {name} is {lag} segments behind the server"),
            );
        }
    }
    for (name, r) in &config.repositories {
        if let Some(v) = state.repository_job(config, name, JobKind::Verify) {
            if let Some(d) = v.facts.damaged_objects.filter(|d| *d > 0) {
                fire(
                    "ArsipBackupCorrupted",
                    Critical,
                    name,
                    name,
                    format!("repository {name} has {d} damaged or missing object(s); run `arsip check --read-data` and `arsip repair`"),
                );
            }
            if v.outcome == Outcome::Failed {
                let why = v.message.as_deref().unwrap_or("no message");
                fire(
                    "ArsipVerificationFailed",
                    Warning,
                    name,
                    name,
                    format!("verification of {name} failed: {why}"),
                );
            }
            for t in v.facts.restore_tests.iter().filter(|t| !t.ok) {
                fire(
                    "ArsipRestoreTestFailed",
                    Critical,
                    &format!("{name}/{}", t.kind),
                    name,
                    format!("the {} restore test of {name} failed", t.kind),
                );
            }
        }
        if let (Some(quota), Some(p)) = (
            r.quota,
            config
                .jobs
                .iter()
                .filter(|(_, d)| d.kind == JobKind::Prune && &d.repository == name)
                .filter_map(|(j, _)| state.jobs.get(j)?.last_success.as_ref())
                .max_by_key(|r| r.finished),
        ) {
            if let Some(used) = p.facts.repository_bytes {
                let ratio = used as f64 / quota as f64;
                if quota > 0 && ratio > config.alerts.quota_ratio {
                    fire(
                        "ArsipStorageQuotaHigh",
                        Critical,
                        name,
                        name,
                        format!("repository {name} uses {:.0} % of its quota", ratio * 100.0),
                    );
                }
            }
        }
    }
    for (name, r) in &config.repositories {
        let (Some(every), Some(oldest)) = (r.key_rotation, state.oldest_key.get(name)) else {
            continue;
        };
        if now.duration_since(*oldest) > every {
            fire(
                "ArsipKeyRotationDue",
                Critical,
                name,
                name,
                format!(
                    "a key of repository {name} was made {oldest}, longer than key_rotation ({every:#}) ago: add a new one (`arsip key add`), then remove the old (`arsip key remove`)"
                ),
            );
        }
    }
    for (name, def) in &config.jobs {
        let running = state.jobs.get(name).and_then(|j| j.running.as_ref());
        let timeout = def.timeout.unwrap_or(crate::runner::DEFAULT_TIMEOUT);
        if let Some(r) = running.filter(|r| now.duration_since(r.since) > timeout) {
            fire(
                "ArsipBackupStuck",
                Critical,
                name,
                &def.repository,
                format!("job {name} has run since {} (timeout {timeout:#})", r.since),
            );
        }
        let due = crate::metrics::next_due(config, state, name);
        if let Some(due) = due.filter(|d| running.is_none() && now.duration_since(*d) > OVERDUE) {
            fire(
                "ArsipJobOverdue",
                Critical,
                name,
                &def.repository,
                format!("job {name} was due at {due} and has not started"),
            );
        }
    }
    // This daemon's own deliveries and configuration (a peer's are its own to report).
    if let Some(first) = config.repositories.keys().next() {
        if state.config_reload_failed {
            fire(
                "ArsipConfigReloadFailed",
                Warning,
                &state.daemon,
                first,
                format!(
                    "arsip serve refused to reload {}: it runs the configuration it had before; its log says why (`arsip config check` too)",
                    config.path.display()
                ),
            );
        }
        for (name, h) in &state.alerts.channels {
            let Some(since) = h.failing_since else {
                continue;
            };
            if !config.channels.contains_key(name)
                || now.duration_since(since) < CHANNEL_FAILING_FOR
                || h.last_sent
                    .is_some_and(|t| now.duration_since(t) <= CHANNEL_QUIET)
            {
                continue;
            }
            fire(
                "ArsipAlertChannelFailing",
                Warning,
                name,
                first,
                format!(
                    "alerts to channel {name} are not getting through: deliveries failed since {since}{}; other channels still get alerts (see the daemon's log)",
                    h.last_sent.map_or(String::new(), |t| format!(", the last one through was at {t}"))
                ),
            );
        }
    }
    // The alerts about a run's outcome that every daemon knows (a peer's result is
    // journaled too): this daemon's to send only if it ran the run. The others come from
    // facts only the runner has.
    for f in &mut out {
        let run = match f.rule.as_str() {
            "ArsipBackupFailed" => state.source(config, &f.subject).last_run,
            "ArsipVerificationFailed" => state
                .repository_job(config, &f.repository, JobKind::Verify)
                .cloned(),
            _ => continue,
        };
        f.ours = run.is_none_or(|r| r.peer.is_none());
    }
    out
}

/// An alert's notification: opened (`firing`) or cleared (`resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenAlert {
    pub firing: Firing,
    pub opened: Timestamp,
    /// Channels the opening was delivered to (or given up on).
    pub delivered: BTreeSet<String>,
    /// When each channel last got it (for `repeat_after`).
    pub last_sent: BTreeMap<String, Timestamp>,
}

/// How deliveries through a channel go.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChannelHealth {
    /// The last delivery that got through.
    pub last_sent: Option<Timestamp>,
    /// The first failure since then, while no delivery got through.
    pub failing_since: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    pub alert: OpenAlert,
    pub resolved: Timestamp,
    pub delivered: BTreeSet<String>,
}

/// Notifications owed are given up after this long.
pub const GIVE_UP: SignedDuration = SignedDuration::from_hours(24);

/// The alerts' state, folded from the journal.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Book {
    pub open: BTreeMap<(String, String), OpenAlert>,
    /// Cleared alerts whose resolve some channel still owes.
    pub resolving: BTreeMap<(String, String), Resolved>,
    /// Deliveries by channel and result (`sent`, `failed`, `dropped`).
    pub notifications: BTreeMap<(String, String), u64>,
    /// Per channel, whether deliveries get through.
    pub channels: BTreeMap<String, ChannelHealth>,
}

impl Book {
    pub fn apply(&mut self, e: &Entry) {
        match &e.event {
            Event::AlertOpened { alert } => {
                self.open.entry(alert.key()).or_insert(OpenAlert {
                    firing: alert.clone(),
                    opened: e.at,
                    delivered: BTreeSet::new(),
                    last_sent: BTreeMap::new(),
                });
            }
            Event::AlertResolved { rule, subject } => {
                let key = (rule.clone(), subject.clone());
                if let Some(a) = self.open.remove(&key) {
                    self.resolving.insert(
                        key,
                        Resolved {
                            alert: a,
                            resolved: e.at,
                            delivered: BTreeSet::new(),
                        },
                    );
                }
            }
            Event::Notified {
                rule,
                subject,
                channel,
                status,
                result,
            } => {
                let key = (rule.clone(), subject.clone());
                *self
                    .notifications
                    .entry((channel.clone(), result.clone()))
                    .or_default() += 1;
                let health = self.channels.entry(channel.clone()).or_default();
                if result == "sent" {
                    health.last_sent = Some(e.at);
                    health.failing_since = None;
                } else {
                    health.failing_since.get_or_insert(e.at);
                }
                if result == "failed" {
                    return;
                }
                match status {
                    Status::Firing => {
                        if let Some(a) = self.open.get_mut(&key) {
                            a.delivered.insert(channel.clone());
                            if result == "sent" {
                                a.last_sent.insert(channel.clone(), e.at);
                            }
                        } else if let Some(r) = self.resolving.get_mut(&key) {
                            r.alert.delivered.insert(channel.clone());
                        }
                    }
                    Status::Resolved => {
                        if let Some(r) = self.resolving.get_mut(&key) {
                            r.delivered.insert(channel.clone());
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// What the alerts that hold now change: alerts to open, alerts to resolve.
    pub fn diff(&self, firing: &[Firing]) -> Vec<Event> {
        let now: BTreeMap<_, _> = firing.iter().map(|f| (f.key(), f)).collect();
        let mut out = Vec::new();
        for (key, f) in &now {
            if !self.open.contains_key(key) {
                out.push(Event::AlertOpened {
                    alert: (*f).clone(),
                });
            }
        }
        for key in self.open.keys() {
            if !now.contains_key(key) {
                out.push(Event::AlertResolved {
                    rule: key.0.clone(),
                    subject: key.1.clone(),
                });
            }
        }
        out
    }

    /// Notifications owed at `now`: (channel, status, the alert, since when it is owed).
    /// An open alert is owed again `repeat_after` after a channel last got it; a resolve
    /// only to channels the opening reached; a channel's own failing alert goes to the
    /// others only; nothing is owed past [`GIVE_UP`] (repeats aside). Settled resolves are
    /// forgotten.
    pub fn owed(
        &mut self,
        config: &Config,
        now: Timestamp,
    ) -> Vec<(String, Status, Firing, Timestamp)> {
        let mut out = Vec::new();
        let routes = |sev: Severity| config.alerts.routes.get(&sev).cloned().unwrap_or_default();
        let repeat = config.alerts.repeat_after;
        for a in self.open.values() {
            for c in routes(a.firing.severity) {
                if a.firing.rule == "ArsipAlertChannelFailing" && a.firing.subject == c {
                    continue;
                }
                let due = match a.last_sent.get(&c) {
                    Some(last) => repeat.is_some_and(|r| now.duration_since(*last) >= r),
                    // Given up on (dropped): not again.
                    None if a.delivered.contains(&c) => false,
                    None => now.duration_since(a.opened) <= GIVE_UP,
                };
                if due {
                    out.push((c, Status::Firing, a.firing.clone(), a.opened));
                }
            }
        }
        self.resolving.retain(|_, r| {
            let owed: Vec<String> = r
                .alert
                .delivered
                .iter()
                .filter(|c| !r.delivered.contains(*c))
                .cloned()
                .collect();
            if owed.is_empty() || now.duration_since(r.resolved) > GIVE_UP {
                return false;
            }
            for c in owed {
                out.push((c, Status::Resolved, r.alert.firing.clone(), r.resolved));
            }
            true
        });
        out
    }
}

mod channels;
mod notifier;

pub use channels::{deliver, email_text, request, retry_wait, Delivery, Notification};
pub use notifier::{watch_keys, Leadership, Notifier, KEY_LISTING_EVERY};

#[cfg(test)]
mod tests;
