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
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{Channel, Config, JobKind, Severity};
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
];

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
        let size = st.ratio(|r| r.facts.logical_bytes.map(|b| b as f64));
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
        let duration = st.ratio(|r| r.facts.seconds.or(r.elapsed()));
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
}

impl Book {
    pub fn apply(&mut self, e: &Entry) {
        match &e.event {
            Event::AlertOpened { alert } => {
                self.open.entry(alert.key()).or_insert(OpenAlert {
                    firing: alert.clone(),
                    opened: e.at,
                    delivered: BTreeSet::new(),
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
                if result == "failed" {
                    return;
                }
                match status {
                    Status::Firing => {
                        if let Some(a) = self.open.get_mut(&key) {
                            a.delivered.insert(channel.clone());
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
    /// A resolve is owed only to channels the opening reached; nothing is owed past
    /// [`GIVE_UP`]. Settled resolves are forgotten.
    pub fn owed(
        &mut self,
        config: &Config,
        now: Timestamp,
    ) -> Vec<(String, Status, Firing, Timestamp)> {
        let mut out = Vec::new();
        let routes = |sev: Severity| config.alerts.routes.get(&sev).cloned().unwrap_or_default();
        for a in self.open.values() {
            if now.duration_since(a.opened) > GIVE_UP {
                continue;
            }
            for c in routes(a.firing.severity) {
                if !a.delivered.contains(&c) {
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

/// One notification to send.
#[derive(Debug, Clone)]
pub struct Notification {
    pub channel: String,
    pub status: Status,
    pub firing: Firing,
    /// When the alert opened, and (for a resolve) when it cleared.
    pub opened: Timestamp,
    pub at: Timestamp,
    pub daemon: String,
    pub host: String,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Sent,
    /// Tried again later (with how long to wait, if the receiver said).
    Retry(String, Option<Duration>),
    /// Will never work as it is (a 4xx, a bad URL): reported, not retried.
    Permanent(String),
}

/// The request a notification makes on its channel: (URL, JSON body).
pub fn request(
    channel: &Channel,
    n: &Notification,
) -> Result<Option<(String, serde_json::Value)>, String> {
    let f = &n.firing;
    let sev = match f.severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    };
    let status = match n.status {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    };
    Ok(Some(match channel {
        Channel::Webhook { url } => (
            url.read()?,
            json!({
                "version": 1,
                "status": status,
                "rule": f.rule,
                "severity": sev,
                "subject": f.subject,
                "repository": f.repository,
                "summary": f.summary,
                "started_at": n.opened,
                "resolved_at": (n.status == Status::Resolved).then_some(n.at),
                "dedup_key": f.dedup_key(),
                "daemon": n.daemon,
                "host": n.host,
            }),
        ),
        Channel::Slack { url } => {
            let head = match n.status {
                Status::Firing => format!("[{}] {}", sev.to_uppercase(), f.rule),
                Status::Resolved => format!("[RESOLVED] {}", f.rule),
            };
            (
                url.read()?,
                json!({ "text": format!("{head}: {} (arsip on {})", f.summary, n.host) }),
            )
        }
        Channel::Pagerduty { routing_key, url } => {
            let key = routing_key.read()?;
            let body = match n.status {
                Status::Firing => json!({
                    "routing_key": key,
                    "event_action": "trigger",
                    "dedup_key": f.dedup_key(),
                    "payload": {
                        "summary": truncate(&f.summary, 1024),
                        "source": n.host,
                        "severity": sev,
                        "timestamp": n.opened,
                        "component": f.subject,
                        "group": f.repository,
                        "class": f.rule,
                        "custom_details": { "daemon": n.daemon },
                    },
                }),
                Status::Resolved => json!({
                    "routing_key": key,
                    "event_action": "resolve",
                    "dedup_key": f.dedup_key(),
                }),
            };
            (url.clone(), body)
        }
        // E-mail goes over SMTP (`send_email`): nothing to POST.
        Channel::Email { .. } => return Ok(None),
    }))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The subject and text of a notification's e-mail.
pub fn email_text(n: &Notification) -> (String, String) {
    let f = &n.firing;
    let head = match (n.status, f.severity) {
        (Status::Resolved, _) => "RESOLVED",
        (Status::Firing, Severity::Critical) => "CRITICAL",
        (Status::Firing, Severity::Warning) => "WARNING",
    };
    let subject = format!("[arsip {head}] {}: {}", f.rule, f.subject);
    let mut body = format!(
        "{}\n\nrule: {}\nsubject: {}\nrepository: {}\nsince: {}\n",
        f.summary, f.rule, f.subject, f.repository, n.opened
    );
    if n.status == Status::Resolved {
        body.push_str(&format!("resolved: {}\n", n.at));
    }
    body.push_str(&format!(
        "daemon: {} on {}\ndedup key: {}\n",
        n.daemon,
        n.host,
        f.dedup_key()
    ));
    (subject, body)
}

/// Send one notification as e-mail: STARTTLS (required: a server that does not offer it
/// gets nothing, credentials included) or TLS from the first byte; AUTH only inside TLS.
async fn send_email(channel: &Channel, n: &Notification) -> Delivery {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let Channel::Email {
        host,
        port,
        tls,
        ca_file,
        username,
        password,
        from,
        to,
    } = channel
    else {
        return Delivery::Permanent("not an e-mail channel".into());
    };
    let (subject, body) = email_text(n);
    let id = blake3::hash(format!("{}:{:?}", n.firing.dedup_key(), n.status).as_bytes());
    let mut m = Message::builder()
        .subject(subject)
        .message_id(Some(format!("<{}@arsip>", &id.to_hex()[..32])));
    match from.parse() {
        Ok(a) => m = m.from(a),
        Err(_) => return Delivery::Permanent(format!("from {from:?} is not an address")),
    }
    for t in to {
        match t.parse() {
            Ok(a) => m = m.to(a),
            Err(_) => return Delivery::Permanent(format!("to {t:?} is not an address")),
        }
    }
    let message = match m.body(body) {
        Ok(m) => m,
        Err(e) => return Delivery::Permanent(format!("cannot build the message: {e}")),
    };
    let mut params = TlsParameters::builder(host.clone());
    if let Some(ca) = ca_file {
        let pem = match std::fs::read(ca) {
            Ok(p) => p,
            Err(e) => return Delivery::Retry(format!("ca_file {}: {e}", ca.display()), None),
        };
        match Certificate::from_pem(&pem) {
            Ok(c) => params = params.add_root_certificate(c),
            Err(e) => return Delivery::Permanent(format!("ca_file {}: {e}", ca.display())),
        }
    }
    let params = match params.build_rustls() {
        Ok(p) => p,
        Err(e) => return Delivery::Permanent(format!("TLS set-up: {e}")),
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(*port)
        .timeout(Some(Duration::from_secs(30)))
        .tls(match tls {
            crate::config::SmtpTls::Starttls => Tls::Required(params),
            crate::config::SmtpTls::Tls => Tls::Wrapper(params),
        });
    if let Some(user) = username {
        let pass = match password.as_ref().map(|p| p.read()).transpose() {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => return Delivery::Retry(e, None),
        };
        // PLAIN inside TLS: the one mechanism every server has.
        b = b
            .credentials(Credentials::new(user.clone(), pass))
            .authentication(vec![Mechanism::Plain]);
    }
    match b.build().send(message).await {
        Ok(_) => Delivery::Sent,
        Err(e) if e.is_permanent() => {
            Delivery::Permanent(format!("the SMTP server refused it: {e}"))
        }
        Err(e) if e.is_tls() => Delivery::Retry(
            format!(
                "TLS with the SMTP server failed (STARTTLS required, certificate checked): {e}"
            ),
            None,
        ),
        Err(e) => Delivery::Retry(format!("SMTP: {e}"), None),
    }
}

/// Send one notification once.
pub async fn deliver(client: &reqwest::Client, channel: &Channel, n: &Notification) -> Delivery {
    let (url, body) = match request(channel, n) {
        Ok(Some(x)) => x,
        Ok(None) => return send_email(channel, n).await,
        Err(e) => return Delivery::Retry(e, None),
    };
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    // Errors name the channel, never its URL (a Slack URL is a secret).
    match r {
        Err(e) if e.is_builder() => Delivery::Permanent("the channel's URL is not valid".into()),
        Err(e) => Delivery::Retry(
            format!(
                "cannot reach the receiver ({})",
                if e.is_timeout() {
                    "timeout"
                } else {
                    "connection failed"
                }
            ),
            None,
        ),
        Ok(resp) => {
            let code = resp.status().as_u16();
            let after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            match code {
                200..=299 => Delivery::Sent,
                408 | 429 => Delivery::Retry(format!("the receiver answered {code}"), after),
                400..=499 => Delivery::Permanent(format!("the receiver refused it ({code})")),
                _ => Delivery::Retry(format!("the receiver answered {code}"), after),
            }
        }
    }
}

/// Wait before the `n`-th retry (from 1): 5 s doubling, at most 10 min.
pub fn retry_wait(n: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1u64 << n.saturating_sub(1).min(7)))
        .min(Duration::from_secs(600))
}

#[cfg(test)]
mod tests;

type Key = (String, Status, String, String);

/// The daemon's side of delivery: which notifications are on their way, which wait for a
/// retry, and where finished deliveries report back.
pub struct Notifier {
    client: reqwest::Client,
    daemon: String,
    host: String,
    inflight: BTreeSet<Key>,
    retry: BTreeMap<Key, (tokio::time::Instant, u32)>,
    tx: tokio::sync::mpsc::UnboundedSender<(Key, Delivery)>,
    rx: tokio::sync::mpsc::UnboundedReceiver<(Key, Delivery)>,
}

impl Notifier {
    pub fn new(daemon: String, host: String) -> Notifier {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Notifier {
            client: reqwest::Client::new(),
            daemon,
            host,
            inflight: BTreeSet::new(),
            retry: BTreeMap::new(),
            tx,
            rx,
        }
    }

    /// Evaluate the rules at `now`: the events that open and resolve alerts (to journal),
    /// after which [`Notifier::send_owed`] starts what is owed.
    pub fn evaluate(&self, config: &Config, state: &State, now: Timestamp) -> Vec<Event> {
        state.alerts.diff(&evaluate(config, state, now))
    }

    /// Start a delivery task for every notification owed that is neither on its way nor
    /// waiting for its retry time.
    pub fn send_owed(&mut self, config: &Config, state: &mut State, now: Timestamp, leader: bool) {
        let mut owed = state.alerts.owed(config, now);
        owed.retain(|(_, _, f, _)| f.sent_here(leader));
        let live: BTreeSet<Key> = owed
            .iter()
            .map(|(c, s, f, _)| (c.clone(), *s, f.rule.clone(), f.subject.clone()))
            .collect();
        self.retry.retain(|k, _| live.contains(k));
        for (channel, status, firing, since) in owed {
            let key = (
                channel.clone(),
                status,
                firing.rule.clone(),
                firing.subject.clone(),
            );
            if self.inflight.contains(&key)
                || self
                    .retry
                    .get(&key)
                    .is_some_and(|(at, _)| *at > tokio::time::Instant::now())
            {
                continue;
            }
            let Some(def) = config.channels.get(&channel).cloned() else {
                continue;
            };
            let n = Notification {
                channel: channel.clone(),
                status,
                opened: match status {
                    Status::Firing => since,
                    Status::Resolved => state
                        .alerts
                        .resolving
                        .get(&firing.key())
                        .map_or(since, |r| r.alert.opened),
                },
                at: since,
                firing,
                daemon: self.daemon.clone(),
                host: self.host.clone(),
            };
            self.inflight.insert(key.clone());
            let (client, tx) = (self.client.clone(), self.tx.clone());
            tokio::spawn(async move {
                let d = deliver(&client, &def, &n).await;
                let _ = tx.send((key, d));
            });
        }
    }

    /// The next finished delivery, as the event to journal.
    pub async fn finished(&mut self) -> Event {
        let ((channel, status, rule, subject), d) =
            self.rx.recv().await.expect("the notifier holds a sender");
        let key = (channel.clone(), status, rule.clone(), subject.clone());
        self.inflight.remove(&key);
        let result = match &d {
            Delivery::Sent => {
                self.retry.remove(&key);
                tracing::info!(%channel, %rule, %subject, ?status, "alert notification sent");
                "sent"
            }
            Delivery::Retry(why, after) => {
                let n = self.retry.get(&key).map_or(1, |(_, n)| n + 1);
                let wait = after
                    .unwrap_or_else(|| retry_wait(n))
                    .min(Duration::from_secs(600));
                self.retry
                    .insert(key, (tokio::time::Instant::now() + wait, n));
                tracing::warn!(%channel, %rule, %subject, attempt = n, retry_in_secs = wait.as_secs(), "alert notification failed: {why}; retrying");
                "failed"
            }
            Delivery::Permanent(why) => {
                self.retry.remove(&key);
                tracing::error!(%channel, %rule, %subject, "alert notification dropped: {why}");
                "dropped"
            }
        };
        Event::Notified {
            rule,
            subject,
            channel,
            status,
            result: result.into(),
        }
    }
}

/// Whether this daemon is the alert leader: it holds the lease chain `leases/alerts/` of the
/// configuration's first repository (FORMAT.md §20), claimed, renewed and lapsing like a
/// job's run. Condition alerts (RPO, never succeeded, overdue, stuck) are sent by the
/// leader only, so an HA pair never pages twice; a run's own alerts (failed, anomalies,
/// verification) by the daemon that ran it. A lone daemon leads once its first claim lands.
pub struct Leadership {
    leader: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    pub fn start(
        repo: std::sync::Arc<arsip_ops::repo::Repository>,
        daemon: String,
        clock: std::sync::Arc<dyn arsip_ops::repo::clock::Clock>,
    ) -> Leadership {
        use std::sync::atomic::Ordering;
        let leader = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = leader.clone();
        let task = tokio::spawn(async move {
            let chain = arsip_ops::repo::Chain::lease("alerts").expect("a valid lease name");
            let timing = repo.session_timing();
            let pause = std::time::Duration::try_from(timing.ttl / 5)
                .unwrap_or(Duration::from_secs(60))
                .clamp(Duration::from_millis(200), Duration::from_secs(60));
            let mut held: Option<arsip_ops::repo::Claim> = None;
            loop {
                if held.as_ref().is_some_and(|c| c.held()) {
                    flag.store(true, Ordering::Relaxed);
                    tokio::time::sleep(pause).await;
                    continue;
                }
                flag.store(false, Ordering::Relaxed);
                held = None;
                match Self::try_lead(&repo, &chain, &daemon, clock.now()).await {
                    Ok(Some(c)) => {
                        tracing::info!(
                            epoch = c.attempt(),
                            "alerts: this daemon leads (it sends the condition alerts)"
                        );
                        held = Some(c);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(
                        error = %e,
                        "alerts: cannot reach the lease; condition alerts wait"
                    ),
                }
                tokio::time::sleep(pause).await;
            }
        });
        Leadership { leader, task }
    }

    async fn try_lead(
        repo: &std::sync::Arc<arsip_ops::repo::Repository>,
        chain: &arsip_ops::repo::Chain,
        daemon: &str,
        now: Timestamp,
    ) -> arsip_ops::repo::Result<Option<arsip_ops::repo::Claim>> {
        use arsip_ops::repo::RunState;
        let view = repo.chain_view(chain).await?;
        let timing = repo.session_timing();
        if let RunState::Live(_) = view.state(now, timing.margin) {
            return Ok(None);
        }
        let spec = arsip_ops::repo::ClaimSpec {
            daemon: daemon.to_string(),
            // Capped at the claims' longest timeout: the leader then claims a new epoch.
            timeout: SignedDuration::from_hours(24),
            config_digest: None,
            previous: None,
        };
        let Some(claim) = repo.claim(chain, view.next, &spec).await? else {
            return Ok(None);
        };
        if claim.confirm().await? {
            return Ok(Some(claim));
        }
        claim.withdraw().await?;
        Ok(None)
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often the daemon lists each repository's keys for [`Leadership`]'s condition rules
/// (`ArsipKeyRotationDue`) and `/metrics`.
pub const KEY_LISTING_EVERY: Duration = Duration::from_secs(6 * 3600);

/// List the keys of every repository with `key_rotation` now and every
/// [`KEY_LISTING_EVERY`], recording the oldest in `state`.
pub fn watch_keys(
    config: std::sync::Arc<Config>,
    repos: std::collections::BTreeMap<String, std::sync::Arc<arsip_ops::repo::Repository>>,
    state: crate::state::Shared,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for (name, r) in &config.repositories {
                let (true, Some(repo)) = (r.key_rotation.is_some(), repos.get(name)) else {
                    continue;
                };
                match arsip_ops::keys::list(repo).await {
                    Ok(list) => {
                        let agents = list
                            .agents
                            .iter()
                            .filter(|a| a.revoked.is_none())
                            .map(|a| a.created);
                        let oldest = list.slots.iter().map(|s| s.created).chain(agents).min();
                        let mut s = state.write().unwrap_or_else(|p| p.into_inner());
                        match oldest {
                            Some(t) => s.oldest_key.insert(name.clone(), t),
                            None => s.oldest_key.remove(name),
                        };
                    }
                    Err(e) => {
                        tracing::warn!(repository = %name, error = %e, "cannot list the keys (key rotation is not checked)")
                    }
                }
            }
            tokio::time::sleep(KEY_LISTING_EVERY).await;
        }
    })
}
