//! `/metrics`: the daemon's state in Prometheus text format, under a versioned contract
//! ([`METRICS`], rendered into docs/METRICS.md by [`contract_markdown`] and checked against it
//! by a test). A scrape renders the state in memory; it never touches a repository.
//!
//! Rules of the contract:
//! - a source that never succeeded has **no** last-success series (never a 0), and every
//!   configured source and job has a `configured` series, so "never ran" and "stuck" can be
//!   told apart and alerted on;
//! - a series that describes a finished run (last run ok, last duration) appears after the
//!   first such run and stays;
//! - labels are bounded by the configuration (repository, source, job, kind, result): no
//!   per-snapshot or per-tenant labels;
//! - renaming or removing a metric, or changing its labels, bumps [`CONTRACT_VERSION`].

use std::collections::BTreeMap;
use std::fmt::Write;

use jiff::Timestamp;

use crate::config::{Config, JobKind, SourceKind};
use crate::journal::Outcome;
use crate::state::{RunRecord, State};

pub const CONTRACT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One metric of the contract.
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    /// When the series exists.
    pub present: &'static str,
}

const fn gauge(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    present: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        labels,
        help,
        present,
    }
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    present: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        labels,
        help,
        present,
    }
}

const SRC: &[&str] = &["repo", "source"];
const REPO: &[&str] = &["repo"];
const JOB: &[&str] = &["job"];

/// The contract, version [`CONTRACT_VERSION`].
pub const METRICS: &[Metric] = &[
    gauge("arsip_build_info", &["version", "contract"], "Always 1: the arsip version and the metric contract version.", "always"),
    gauge("arsip_daemon_start_time_seconds", &[], "When this daemon process started (Unix time).", "always"),
    gauge("arsip_daemon_stopping", &[], "1 once the daemon was told to stop (no new runs start).", "always"),
    gauge("arsip_source_configured", &["repo", "source", "kind"], "Always 1, one series per configured source.", "always"),
    gauge("arsip_source_configured_timestamp_seconds", SRC, "When the daemon's journal first named the source.", "always"),
    gauge("arsip_source_rpo_seconds", SRC, "The source's recovery point objective (configured).", "always"),
    gauge("arsip_source_rto_seconds", SRC, "The source's recovery time objective (configured).", "when configured"),
    gauge("arsip_source_backup_last_attempt_timestamp_seconds", SRC, "When the last backup attempt of the source started.", "after the first attempt"),
    gauge("arsip_source_backup_last_success_timestamp_seconds", SRC, "When the last successful backup of the source finished (here or at a peer daemon).", "only after a success"),
    gauge("arsip_source_backup_running_since_timestamp_seconds", SRC, "When the backup running now started (here, or watched at a peer).", "only while one runs"),
    gauge("arsip_source_backup_last_run_ok", SRC, "1 when the last finished backup run succeeded (after its retries), else 0.", "after the first finished run"),
    gauge("arsip_source_backup_consecutive_failures", SRC, "Backup runs that failed (or were missed) since the last success.", "after the first finished run"),
    gauge("arsip_source_backup_last_duration_seconds", SRC, "How long the last successful backup this daemon ran took.", "after a success this daemon ran"),
    gauge("arsip_source_backup_last_logical_bytes", SRC, "Bytes the last successful backup read.", "after a success this daemon ran"),
    gauge("arsip_source_backup_last_added_bytes", SRC, "New bytes (after deduplication) the last successful backup added.", "after a success this daemon ran"),
    gauge("arsip_source_backup_last_stored_bytes", SRC, "Bytes the last successful backup wrote to the store (compressed, encrypted).", "after a success this daemon ran"),
    gauge("arsip_source_backup_last_dedup_ratio", SRC, "Logical over added bytes of the last successful backup.", "after a success this daemon ran that added bytes"),
    gauge("arsip_source_backup_size_ratio", SRC, "The last backup's logical bytes over the median of the 14 before it.", "after 4 measured successes"),
    gauge("arsip_source_backup_duration_ratio", SRC, "The last backup's duration over the median of the 14 before it.", "after 4 measured successes"),
    gauge("arsip_source_wal_archive_lag_segments", SRC, "WAL segments the server has that the archive lacks (the last wal-check).", "after a wal-check reached the server and found archived WAL"),
    gauge("arsip_source_wal_check_last_ok", SRC, "1 when the last wal-check found the archive current, else 0.", "after the first wal-check"),
    gauge("arsip_verify_last_timestamp_seconds", REPO, "When the last verification of the repository finished.", "after a verify"),
    gauge("arsip_verify_last_status", REPO, "The last verification: 0 ok, 1 warnings, 2 failed.", "after a verify"),
    gauge("arsip_repository_damaged_objects", REPO, "Integrity problems the last verification found (> 0: backup corrupted).", "after a verify that checked integrity"),
    gauge("arsip_restore_test_last_timestamp_seconds", &["repo", "kind"], "When the last restore test of the snapshot kind finished.", "after a restore test"),
    gauge("arsip_restore_test_last_ok", &["repo", "kind"], "1 when the last restore test passed, else 0.", "after a restore test"),
    gauge("arsip_restore_test_rto_seconds", &["repo", "kind"], "The last restore test's measured time to restore (its RTO).", "after a restore test"),
    gauge("arsip_prune_last_success_timestamp_seconds", REPO, "When the last successful prune finished.", "after a successful prune"),
    gauge("arsip_prune_last_deleted_bytes", REPO, "Bytes the last successful prune deleted.", "after a successful prune"),
    gauge("arsip_prune_last_deleted_packs", REPO, "Packs the last successful prune deleted.", "after a successful prune"),
    gauge("arsip_repository_stored_bytes", REPO, "Packed bytes in the repository, as the last successful prune counted them.", "after a successful prune"),
    gauge("arsip_forget_last_removed_snapshots", REPO, "Snapshots the last successful forget removed.", "after a successful forget"),
    gauge("arsip_copy_last_success_timestamp_seconds", &["repo", "to"], "When the last successful copy of the repository into `to` finished: every snapshot older than its start is on the copy.", "after a successful copy"),
    gauge("arsip_copy_lag_seconds", &["repo", "to"], "At the last successful copy's start: the age of the oldest snapshot the copy lacked (0: it lacked none).", "after a successful copy"),
    gauge("arsip_copy_last_copied_bytes", &["repo", "to"], "Bytes the last successful copy wrote to the destination.", "after a successful copy"),
    gauge("arsip_repository_quota_bytes", REPO, "The repository's configured quota.", "when configured"),
    gauge("arsip_repository_key_oldest_created_timestamp_seconds", REPO, "When the repository's oldest key (slot or unrevoked agent) was made.", "when key_rotation is configured, once listed"),
    gauge("arsip_repository_key_rotation_seconds", REPO, "The configured key_rotation period.", "when configured"),
    counter("arsip_storage_requests_total", &["repo", "op"], "Requests the daemon's jobs sent to the repository's store, by op (put, get, head, list, delete), every retry counted.", "after a job's first attempt"),
    counter("arsip_storage_request_errors_total", REPO, "Of those, requests that ended in an error.", "after a job's first attempt"),
    counter("arsip_storage_transferred_bytes_total", &["repo", "direction"], "Bytes the daemon's jobs uploaded to and downloaded from the store.", "after a job's first attempt"),
    gauge("arsip_job_configured", &["job", "type", "target"], "Always 1, one series per configured job.", "always"),
    gauge("arsip_job_next_run_timestamp_seconds", JOB, "The job's next occurrence not yet handled (in the past when the job is overdue).", "always"),
    gauge("arsip_job_timeout_seconds", JOB, "How long an attempt may run before it is stopped.", "always"),
    gauge("arsip_job_last_success_timestamp_seconds", &["job", "type"], "When the job's last successful run finished.", "only after a success"),
    gauge("arsip_job_last_run_ok", &["job", "type"], "1 when the job's last finished run succeeded, else 0.", "after the first finished run"),
    gauge("arsip_job_running_since_timestamp_seconds", JOB, "When the job's running attempt started.", "only while one runs"),
    counter("arsip_job_runs_total", &["job", "result"], "Runs by how they ended: ok, warnings, failed, interrupted, missed, skipped, cancelled; ran_by_peer counts runs a peer daemon made.", "after the first run"),
    counter("arsip_job_attempts_total", &["job", "result"], "Attempts by how they ended.", "after the first attempt"),
    gauge("arsip_alerts_open", &["rule", "severity"], "Alerts of the rule open now (the daemon's own alerting, docs/API.md).", "always, for every rule"),
    counter("arsip_alert_notifications_total", &["channel", "result"], "Alert deliveries by channel and result: sent, failed (retried), dropped (permanent).", "after the channel's first delivery"),
    counter("arsip_api_auth_failures_total", &[], "API requests refused for a missing or wrong token, or a role without the right.", "always"),
    gauge("arsip_config_reload_failed", &[], "1 when the last reload (SIGHUP) of the configuration failed and the one before stays in force.", "always"),
    gauge("arsip_ha_config_mismatch", JOB, "1 when the last peer daemon's claim of the job carried a different configuration digest.", "after a peer's claim of the job"),
];

/// What `/metrics` adds beside the journal's state.
#[derive(Debug, Default, Clone)]
pub struct Extra {
    pub auth_failures: u64,
}

type Labels = Vec<(&'static str, String)>;

struct Out {
    samples: BTreeMap<&'static str, Vec<(Labels, f64)>>,
}

impl Out {
    fn add(&mut self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        debug_assert!(
            METRICS.iter().any(|m| m.name == name
                && m.labels.len() == labels.len()
                && m.labels.iter().zip(labels).all(|(a, (b, _))| a == b)),
            "{name} {labels:?} is not in the contract"
        );
        self.samples
            .entry(name)
            .or_default()
            .push((labels.iter().map(|(k, v)| (*k, v.to_string())).collect(), v));
    }

    fn time(&mut self, name: &'static str, labels: &[(&'static str, &str)], t: Option<Timestamp>) {
        if let Some(t) = t {
            self.add(name, labels, seconds(t));
        }
    }
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

pub fn kind_name(k: SourceKind) -> &'static str {
    match k {
        SourceKind::Files => "files",
        SourceKind::PgLogical => "pg-logical",
        SourceKind::PgPhysical => "pg-physical",
    }
}

pub fn job_type(k: JobKind) -> &'static str {
    match k {
        JobKind::Backup => "backup",
        JobKind::WalCheck => "wal-check",
        JobKind::Forget => "forget",
        JobKind::Prune => "prune",
        JobKind::Verify => "verify",
        JobKind::Copy => "copy",
    }
}

/// The job's next occurrence after the newest one it handled (or is running), else after
/// the daemon's start: in the past when the job is overdue.
pub fn next_due(config: &Config, state: &State, job: &str) -> Option<Timestamp> {
    let def = config.jobs.get(job)?;
    let j = state.jobs.get(job);
    let handled = j.and_then(|j| {
        let finished = j.history.iter().map(|r| r.scheduled).max();
        finished.max(j.running.as_ref().map(|r| r.scheduled))
    });
    let from = handled.unwrap_or(state.started - crate::scheduler::ON_TIME);
    def.schedule.next_after(from).map(|z| z.timestamp())
}

/// The store requests of every job of repository `repo`, once one of them has run.
pub fn repository_requests(
    config: &Config,
    state: &State,
    repo: &str,
) -> Option<arsip_ops::storage::metered::Usage> {
    let mut total = None;
    for (job, def) in &config.jobs {
        if def.repository != repo {
            continue;
        }
        if let Some(j) = state.jobs.get(job).filter(|j| !j.attempts_total.is_empty()) {
            crate::state::add_usage(
                total.get_or_insert_with(Default::default),
                &j.requests_total,
            );
        }
    }
    total
}

/// The Prometheus text of `state` under `config`.
pub fn render(config: &Config, state: &State, extra: &Extra) -> String {
    let mut o = Out {
        samples: BTreeMap::new(),
    };
    let contract = CONTRACT_VERSION.to_string();
    o.add(
        "arsip_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("contract", &contract),
        ],
        1.0,
    );
    o.time("arsip_daemon_start_time_seconds", &[], Some(state.started));
    o.add("arsip_daemon_stopping", &[], flag(state.stopping));
    o.add(
        "arsip_api_auth_failures_total",
        &[],
        extra.auth_failures as f64,
    );
    o.add(
        "arsip_config_reload_failed",
        &[],
        flag(state.config_reload_failed),
    );
    for (job, differs) in &state.config_mismatch {
        if config.jobs.contains_key(job) {
            o.add("arsip_ha_config_mismatch", &[("job", job)], flag(*differs));
        }
    }

    for (rule, severity) in crate::alerts::RULES {
        let open = state.alerts.open.keys().filter(|(r, _)| r == rule).count();
        let sev = match severity {
            crate::config::Severity::Critical => "critical",
            crate::config::Severity::Warning => "warning",
        };
        o.add(
            "arsip_alerts_open",
            &[("rule", rule), ("severity", sev)],
            open as f64,
        );
    }
    for ((channel, result), n) in &state.alerts.notifications {
        o.add(
            "arsip_alert_notifications_total",
            &[("channel", channel), ("result", result)],
            *n as f64,
        );
    }

    for (name, s) in &config.sources {
        let l = [("repo", s.repository.as_str()), ("source", name.as_str())];
        o.add(
            "arsip_source_configured",
            &[l[0], l[1], ("kind", kind_name(s.kind))],
            1.0,
        );
        o.time(
            "arsip_source_configured_timestamp_seconds",
            &l,
            Some(
                state
                    .sources_seen
                    .get(name)
                    .copied()
                    .unwrap_or(state.started),
            ),
        );
        o.add("arsip_source_rpo_seconds", &l, s.rpo.as_secs_f64());
        if let Some(rto) = s.rto {
            o.add("arsip_source_rto_seconds", &l, rto.as_secs_f64());
        }
        let st = state.source(config, name);
        o.time(
            "arsip_source_backup_last_attempt_timestamp_seconds",
            &l,
            st.last_attempt,
        );
        o.time(
            "arsip_source_backup_last_success_timestamp_seconds",
            &l,
            st.last_success.as_ref().map(|r| r.finished),
        );
        o.time(
            "arsip_source_backup_running_since_timestamp_seconds",
            &l,
            st.running_since,
        );
        if let Some(r) = &st.last_run {
            o.add(
                "arsip_source_backup_last_run_ok",
                &l,
                flag(r.outcome.succeeded()),
            );
            o.add(
                "arsip_source_backup_consecutive_failures",
                &l,
                st.consecutive_failures as f64,
            );
        }
        if let Some(r) = &st.last_measured {
            let f = &r.facts;
            if let Some(s) = r.seconds() {
                o.add("arsip_source_backup_last_duration_seconds", &l, s);
            }
            let bytes = [
                ("arsip_source_backup_last_logical_bytes", f.logical_bytes),
                ("arsip_source_backup_last_added_bytes", f.added_bytes),
                ("arsip_source_backup_last_stored_bytes", f.stored_bytes),
            ];
            for (m, v) in bytes {
                if let Some(v) = v {
                    o.add(m, &l, v as f64);
                }
            }
            if let (Some(logical), Some(added)) = (f.logical_bytes, f.added_bytes) {
                if added > 0 {
                    o.add(
                        "arsip_source_backup_last_dedup_ratio",
                        &l,
                        logical as f64 / added as f64,
                    );
                }
            }
        }
        if let Some(v) = st.ratio(RunRecord::size) {
            o.add("arsip_source_backup_size_ratio", &l, v);
        }
        if let Some(v) = st.ratio(RunRecord::seconds) {
            o.add("arsip_source_backup_duration_ratio", &l, v);
        }
        if let Some(r) = state.wal_check(config, name) {
            o.add(
                "arsip_source_wal_check_last_ok",
                &l,
                flag(r.outcome == Outcome::Ok),
            );
            if let Some(lag) = r.facts.wal_lag_segments {
                o.add("arsip_source_wal_archive_lag_segments", &l, lag as f64);
            }
        }
    }

    for (name, r) in &config.repositories {
        let l = [("repo", name.as_str())];
        if let Some(q) = r.quota {
            o.add("arsip_repository_quota_bytes", &l, q as f64);
        }
        if let Some(every) = r.key_rotation {
            o.add(
                "arsip_repository_key_rotation_seconds",
                &l,
                every.as_secs_f64(),
            );
        }
        o.time(
            "arsip_repository_key_oldest_created_timestamp_seconds",
            &l,
            state.oldest_key.get(name).copied(),
        );
        if let Some(v) = state.repository_job(config, name, JobKind::Verify) {
            o.time("arsip_verify_last_timestamp_seconds", &l, Some(v.finished));
            let status = match v.outcome {
                Outcome::Ok => 0.0,
                Outcome::Warnings => 1.0,
                _ => 2.0,
            };
            o.add("arsip_verify_last_status", &l, status);
            if let Some(d) = v.facts.damaged_objects {
                o.add("arsip_repository_damaged_objects", &l, d as f64);
            }
        }
        // Restore tests: each kind's newest, over every verify job of the repository.
        let mut tests: BTreeMap<&str, (Timestamp, bool, f64)> = BTreeMap::new();
        for (job, def) in &config.jobs {
            if def.kind != JobKind::Verify || &def.repository != name {
                continue;
            }
            for run in state.jobs.get(job).into_iter().flat_map(|j| &j.history) {
                for t in &run.facts.restore_tests {
                    let e =
                        tests
                            .entry(t.kind.as_str())
                            .or_insert((run.finished, t.ok, t.rto_seconds));
                    if run.finished >= e.0 {
                        *e = (run.finished, t.ok, t.rto_seconds);
                    }
                }
            }
        }
        for (kind, (at, ok, rto)) in tests {
            let l = [("repo", name.as_str()), ("kind", kind)];
            o.time("arsip_restore_test_last_timestamp_seconds", &l, Some(at));
            o.add("arsip_restore_test_last_ok", &l, flag(ok));
            o.add("arsip_restore_test_rto_seconds", &l, rto);
        }
        let last_ok = |kind| {
            config
                .jobs
                .iter()
                .filter(|(_, d)| d.kind == kind && &d.repository == name)
                .filter_map(|(j, _)| state.jobs.get(j)?.last_success.as_ref())
                .max_by_key(|r| r.finished)
        };
        if let Some(p) = last_ok(JobKind::Prune) {
            o.time(
                "arsip_prune_last_success_timestamp_seconds",
                &l,
                Some(p.finished),
            );
            let f = &p.facts;
            let figures = [
                ("arsip_prune_last_deleted_bytes", f.deleted_bytes),
                ("arsip_prune_last_deleted_packs", f.deleted_packs),
                ("arsip_repository_stored_bytes", f.repository_bytes),
            ];
            for (m, v) in figures {
                if let Some(v) = v {
                    o.add(m, &l, v as f64);
                }
            }
        }
        if let Some(n) = last_ok(JobKind::Forget).and_then(|f| f.facts.removed_snapshots) {
            o.add("arsip_forget_last_removed_snapshots", &l, n as f64);
        }
        for (job, def) in config
            .jobs
            .iter()
            .filter(|(_, d)| d.kind == JobKind::Copy && &d.repository == name)
        {
            let (Some(to), Some(r)) = (
                &def.to,
                state.jobs.get(job).and_then(|j| j.last_success.as_ref()),
            ) else {
                continue;
            };
            let lt = [("repo", name.as_str()), ("to", to.as_str())];
            o.time(
                "arsip_copy_last_success_timestamp_seconds",
                &lt,
                Some(r.finished),
            );
            o.add(
                "arsip_copy_lag_seconds",
                &lt,
                r.facts.copy_lag_seconds.unwrap_or(0.0),
            );
            if let Some(b) = r.facts.copied_bytes {
                o.add("arsip_copy_last_copied_bytes", &lt, b as f64);
            }
        }
        if let Some(u) = repository_requests(config, state, name) {
            let ops = [
                ("put", u.put),
                ("get", u.get),
                ("head", u.head),
                ("list", u.list),
                ("delete", u.delete),
            ];
            for (op, n) in ops {
                o.add(
                    "arsip_storage_requests_total",
                    &[l[0], ("op", op)],
                    n as f64,
                );
            }
            o.add("arsip_storage_request_errors_total", &l, u.failed as f64);
            let bytes = [("up", u.uploaded_bytes), ("down", u.downloaded_bytes)];
            for (direction, n) in bytes {
                o.add(
                    "arsip_storage_transferred_bytes_total",
                    &[l[0], ("direction", direction)],
                    n as f64,
                );
            }
        }
    }

    for (name, def) in &config.jobs {
        let t = job_type(def.kind);
        let target = def.source.as_deref().unwrap_or(&def.repository);
        o.add(
            "arsip_job_configured",
            &[("job", name), ("type", t), ("target", target)],
            1.0,
        );
        o.time(
            "arsip_job_next_run_timestamp_seconds",
            &[("job", name)],
            next_due(config, state, name),
        );
        let timeout = def.timeout.unwrap_or(crate::runner::DEFAULT_TIMEOUT);
        o.add(
            "arsip_job_timeout_seconds",
            &[("job", name)],
            timeout.as_secs_f64(),
        );
        let Some(j) = state.jobs.get(name) else {
            continue;
        };
        let lt = [("job", name.as_str()), ("type", t)];
        o.time(
            "arsip_job_last_success_timestamp_seconds",
            &lt,
            j.last_success.as_ref().map(|r| r.finished),
        );
        if let Some(r) = &j.last_run {
            o.add("arsip_job_last_run_ok", &lt, flag(r.outcome.succeeded()));
        }
        o.time(
            "arsip_job_running_since_timestamp_seconds",
            &[("job", name)],
            j.running.as_ref().map(|r| r.since),
        );
        for (result, n) in &j.runs_total {
            o.add(
                "arsip_job_runs_total",
                &[("job", name), ("result", result)],
                *n as f64,
            );
        }
        for (result, n) in &j.attempts_total {
            o.add(
                "arsip_job_attempts_total",
                &[("job", name), ("result", result)],
                *n as f64,
            );
        }
    }
    o.text()
}

impl Out {
    fn text(self) -> String {
        let mut s = String::new();
        for m in METRICS {
            let Some(samples) = self.samples.get(m.name) else {
                continue;
            };
            let kind = match m.kind {
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
            };
            let _ = writeln!(s, "# HELP {} {}", m.name, escape_help(m.help));
            let _ = writeln!(s, "# TYPE {} {kind}", m.name);
            for (labels, v) in samples {
                s.push_str(m.name);
                if !labels.is_empty() {
                    s.push('{');
                    for (i, (k, val)) in labels.iter().enumerate() {
                        if i > 0 {
                            s.push(',');
                        }
                        let _ = write!(s, "{k}=\"{}\"", escape_label(val));
                    }
                    s.push('}');
                }
                let _ = writeln!(s, " {}", number(*v));
            }
        }
        s
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values: backslash, double quote and line feed escaped.
pub fn escape_label(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// HELP text: backslash and line feed escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', r"\\").replace('\n', r"\n")
}

/// docs/METRICS.md's table, made from [`METRICS`] (a test keeps the file in step).
pub fn contract_markdown() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| metric | type | labels | present | meaning |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for m in METRICS {
        let kind = match m.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(
            s,
            "| `{}` | {kind} | {} | {} | {} |",
            m.name,
            m.labels.join(", "),
            m.present,
            m.help
        );
    }
    s
}

#[cfg(test)]
mod tests;
