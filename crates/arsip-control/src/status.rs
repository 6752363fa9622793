//! `arsip status`: the plan's daily, weekly and monthly report in one answer, from the
//! daemon's state (`GET /api/v1/status`). Per source, problems first: its state word, the
//! last backup (time, size, duration), RPO compliance, the 7-day success rate (successful
//! runs over the runs due, so failed, interrupted and missed ones count against it), the size
//! trend; per repository the storage used and its growth, and an estimated monthly cost from
//! the configured prices.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::config::{Config, JobKind};
use crate::journal::Outcome;
use crate::state::{RunRecord, SourceState, State};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub time: Timestamp,
    pub daemon: String,
    /// Sources, the worst first.
    pub sources: Vec<SourceStatus>,
    pub repositories: Vec<RepositoryStatus>,
    pub open_alerts: Vec<crate::alerts::OpenAlert>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub kind: &'static str,
    pub repository: String,
    /// `failed` (the last run failed), `stale` (no success within the RPO), `never` (no
    /// success yet), `running`, `ok`.
    pub status: &'static str,
    pub rpo_seconds: i64,
    pub rpo_ok: bool,
    pub last_success: Option<Timestamp>,
    /// The last backup this daemon measured.
    pub last_backup: Option<LastBackup>,
    pub running_since: Option<Timestamp>,
    pub consecutive_failures: u32,
    /// Runs due in the last 7 days, and how many succeeded.
    pub runs_7d: u32,
    pub ok_7d: u32,
    pub success_rate_7d: Option<f64>,
    /// Change of the backup's logical size per day over the last 30 days (least squares).
    pub size_trend_bytes_per_day: Option<f64>,
    pub next_run: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastBackup {
    pub finished: Timestamp,
    pub logical_bytes: Option<u64>,
    pub added_bytes: Option<u64>,
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepositoryStatus {
    pub name: String,
    /// The last prune's exact count plus what backups stored since (or, before any prune,
    /// what the backups this daemon measured stored).
    pub stored_bytes: Option<u64>,
    pub quota_bytes: Option<u64>,
    pub quota_used: Option<f64>,
    /// Bytes the backups stored per day, over the last 30 days.
    pub growth_bytes_per_day: Option<f64>,
    /// Store requests of the last 30 days (what the daemon's jobs sent).
    pub requests_30d: arsip_ops::storage::metered::Usage,
    pub cost: Option<Cost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub currency: String,
    pub storage_monthly: f64,
    /// Requests of the last 30 days, at the configured prices.
    pub requests_monthly: f64,
    pub monthly: f64,
}

/// The state word of a source (problems first in [`rank`]).
pub fn word(st: &SourceState, rpo: SignedDuration, now: Timestamp) -> (&'static str, bool) {
    let rpo_ok = st
        .last_success
        .as_ref()
        .is_some_and(|r| now.duration_since(r.finished) <= rpo);
    let w = if st.last_run.as_ref().is_some_and(|r| !r.outcome.succeeded()) {
        "failed"
    } else if st.last_success.is_none() {
        if st.running_since.is_some() {
            "running"
        } else {
            "never"
        }
    } else if !rpo_ok {
        "stale"
    } else if st.running_since.is_some() {
        "running"
    } else {
        "ok"
    };
    (w, rpo_ok)
}

/// Worst first.
pub fn rank(word: &str) -> u8 {
    match word {
        "failed" => 0,
        "stale" => 1,
        "never" => 2,
        "running" => 3,
        _ => 4,
    }
}

const DAY: SignedDuration = SignedDuration::from_hours(24);

fn backup_runs<'a>(
    config: &'a Config,
    state: &'a State,
    source: &'a str,
) -> impl Iterator<Item = &'a RunRecord> + 'a {
    config
        .jobs
        .iter()
        .filter(move |(_, d)| d.kind == JobKind::Backup && d.source.as_deref() == Some(source))
        .filter_map(|(j, _)| state.jobs.get(j))
        .flat_map(|j| j.history.iter())
}

/// Least-squares slope of `(t, v)` per day; `None` with fewer than two points or no spread.
fn slope(points: &[(Timestamp, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let x0 = points[0].0;
    let xs: Vec<f64> = points
        .iter()
        .map(|(t, _)| t.duration_since(x0).as_secs_f64() / 86_400.0)
        .collect();
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = xs
        .iter()
        .zip(points)
        .map(|(x, p)| (x - mx) * (p.1 - my))
        .sum();
    Some(sxy / sxx)
}

pub fn report(config: &Config, state: &State, now: Timestamp) -> Report {
    let mut sources: Vec<SourceStatus> = config
        .sources
        .iter()
        .map(|(name, s)| {
            let st = state.source(config, name);
            let (status, rpo_ok) = word(&st, s.rpo, now);
            let week: Vec<&RunRecord> = backup_runs(config, state, name)
                .filter(|r| now.duration_since(r.scheduled) <= 7 * DAY)
                .filter(|r| r.outcome != Outcome::Skipped)
                .collect();
            let ok_7d = week.iter().filter(|r| r.outcome.succeeded()).count() as u32;
            let mut sizes: Vec<(Timestamp, f64)> = backup_runs(config, state, name)
                .filter(|r| r.outcome.succeeded() && now.duration_since(r.finished) <= 30 * DAY)
                .filter_map(|r| Some((r.finished, r.facts.logical_bytes? as f64)))
                .collect();
            sizes.sort_by_key(|p| p.0);
            let next_run = config
                .jobs
                .iter()
                .filter(|(_, d)| d.kind == JobKind::Backup && d.source.as_deref() == Some(name))
                .filter_map(|(j, _)| crate::metrics::next_due(config, state, j))
                .min();
            SourceStatus {
                name: name.clone(),
                kind: crate::metrics::kind_name(s.kind),
                repository: s.repository.clone(),
                status,
                rpo_seconds: s.rpo.as_secs(),
                rpo_ok,
                last_success: st.last_success.as_ref().map(|r| r.finished),
                last_backup: st.last_measured.as_ref().map(|r| LastBackup {
                    finished: r.finished,
                    logical_bytes: r.facts.logical_bytes,
                    added_bytes: r.facts.added_bytes,
                    seconds: r.seconds(),
                }),
                running_since: st.running_since,
                consecutive_failures: st.consecutive_failures,
                runs_7d: week.len() as u32,
                ok_7d,
                success_rate_7d: (!week.is_empty()).then(|| ok_7d as f64 / week.len() as f64),
                size_trend_bytes_per_day: slope(&sizes),
                next_run,
            }
        })
        .collect();
    sources.sort_by_key(|s| (rank(s.status), s.name.clone()));

    let repositories = config
        .repositories
        .iter()
        .map(|(name, r)| {
            let runs: Vec<&RunRecord> = config
                .jobs
                .iter()
                .filter(|(_, d)| &d.repository == name)
                .filter_map(|(j, _)| state.jobs.get(j))
                .flat_map(|j| j.history.iter())
                .collect();
            let last_prune = runs
                .iter()
                .filter(|r| r.outcome.succeeded() && r.facts.repository_bytes.is_some())
                .max_by_key(|r| r.finished);
            let since = last_prune.map(|p| p.finished);
            let stored_after: u64 = runs
                .iter()
                .filter(|r| r.outcome.succeeded() && since.is_none_or(|t| r.finished > t))
                .filter_map(|r| r.facts.stored_bytes)
                .sum();
            let stored = match last_prune {
                Some(p) => Some(p.facts.repository_bytes.unwrap_or(0) + stored_after),
                None if stored_after > 0 => Some(stored_after),
                None => None,
            };
            let month: Vec<&&RunRecord> = runs
                .iter()
                .filter(|r| now.duration_since(r.finished) <= 30 * DAY)
                .collect();
            let mut requests = arsip_ops::storage::metered::Usage::default();
            for r in &month {
                if let Some(u) = &r.facts.requests {
                    crate::state::add_usage(&mut requests, u);
                }
            }
            let first = month.iter().map(|r| r.finished).min();
            let growth = first.map(|f| {
                let days = (now.duration_since(f).as_secs_f64() / 86_400.0).max(1.0);
                month
                    .iter()
                    .filter_map(|r| r.facts.stored_bytes)
                    .sum::<u64>() as f64
                    / days
            });
            let cost = r.price.as_ref().map(|p| {
                let gb = stored.unwrap_or(0) as f64 / 1e9;
                let storage = gb * p.per_gb_month;
                let writes = (requests.put + requests.list + requests.delete) as f64 / 1000.0;
                let reads = (requests.get + requests.head) as f64 / 1000.0;
                let req = writes * p.per_1000_writes + reads * p.per_1000_reads;
                Cost {
                    currency: p.currency.clone(),
                    storage_monthly: storage,
                    requests_monthly: req,
                    monthly: storage + req,
                }
            });
            RepositoryStatus {
                name: name.clone(),
                stored_bytes: stored,
                quota_bytes: r.quota,
                quota_used: r
                    .quota
                    .filter(|q| *q > 0)
                    .and_then(|q| Some(stored? as f64 / q as f64)),
                growth_bytes_per_day: growth,
                requests_30d: requests,
                cost,
            }
        })
        .collect();
    Report {
        time: now,
        daemon: state.daemon.clone(),
        sources,
        repositories,
        open_alerts: state.alerts.open.values().cloned().collect(),
    }
}

#[cfg(test)]
mod tests;

/// Where to ask a running daemon, from its configuration: the address it wrote to its state
/// directory, and the first of its API tokens this user can read.
pub fn daemon_of(config: &Config) -> Result<(String, zeroize::Zeroizing<String>), String> {
    let path = config.daemon.state_dir.join("api-address");
    let base = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e}; is `arsip serve` running with api.tokens configured? (or pass --daemon URL --token-file FILE)",
            path.display()
        )
    })?;
    let token = config
        .api
        .tokens
        .iter()
        .find_map(|t| t.file.read().ok())
        .ok_or("none of api.tokens' files is readable here; pass --token-file FILE")?;
    Ok((base.trim().to_string(), zeroize::Zeroizing::new(token)))
}

/// `GET /api/v1/status` of the daemon at `base`.
pub async fn fetch(
    base: &str,
    token: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<serde_json::Value, String> {
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let cert =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    let client = b.build().map_err(|e| e.to_string())?;
    let url = format!("{}/api/v1/status", base.trim_end_matches('/'));
    let r = client
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .map_err(|e| format!("cannot reach the daemon at {base}: {e}"))?;
    let code = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !code.is_success() {
        return Err(format!("the daemon at {base} answered {code}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("the daemon's answer is not JSON: {e}"))
}

/// The state a daemon would have, read straight from the repositories (for `arsip status`
/// without a daemon): every job's runs from its claims (`jobs/`, FORMAT.md §20: results
/// are recorded there, failures included, so the success rate stays honest), sizes and
/// durations from the snapshots the runs made (`full`: repositories opened with a full key,
/// by name; without one, the runs alone).
pub async fn state_from_repositories(
    config: &Config,
    repos: &std::collections::BTreeMap<String, std::sync::Arc<arsip_ops::repo::Repository>>,
    full: &std::collections::BTreeMap<String, arsip_ops::repo::FullRepo>,
    now: Timestamp,
) -> Result<State, String> {
    use crate::journal::{Entry, Event, Facts};
    use arsip_ops::repo::{JobResult, RunState};
    let mut manifests = std::collections::BTreeMap::new();
    for (name, repo) in full {
        let listing = repo
            .snapshot_listing()
            .await
            .map_err(|e| format!("repository {name}: {e}"))?;
        for s in listing.snapshots {
            manifests.insert(s.id.clone(), s.manifest);
        }
    }
    let mut entries: Vec<Entry> = Vec::new();
    for (job, def) in &config.jobs {
        let Some(repo) = repos.get(&def.repository) else {
            continue;
        };
        let runs = repo
            .job_runs(job)
            .await
            .map_err(|e| format!("repository {}: {e}", def.repository))?;
        let margin = repo.session_timing().margin;
        for view in runs {
            let Some((_, scheduled)) = view.chain.job_run() else {
                continue;
            };
            let (attempt, running) = match view.state(now, margin) {
                RunState::Free => continue,
                RunState::Live(a) => (a, true),
                RunState::Succeeded(a) | RunState::Lapsed(a) | RunState::Ended(a) => (a, false),
            };
            let n = attempt.attempt as u32;
            entries.push(Entry {
                at: attempt.claimed_at,
                event: Event::AttemptStarted {
                    job: job.clone(),
                    scheduled,
                    attempt: n,
                },
            });
            if running {
                continue;
            }
            let (outcome, finished, message, produced) = match &attempt.done {
                Some(d) => (
                    match d.result {
                        JobResult::Ok => Outcome::Ok,
                        JobResult::Warnings => Outcome::Warnings,
                        JobResult::Failed => Outcome::Failed,
                        JobResult::Cancelled => Outcome::Cancelled,
                        _ => Outcome::Interrupted,
                    },
                    d.finished,
                    d.message.clone(),
                    d.snapshots.first().cloned().or(d.verification.clone()),
                ),
                // Lapsed: it died without a result.
                None => (Outcome::Interrupted, attempt.last_seen, None, None),
            };
            let facts = produced
                .as_ref()
                .and_then(|id| manifests.get(id))
                .map(|m| Facts {
                    logical_bytes: Some(m.logical_bytes),
                    added_bytes: Some(m.added_bytes),
                    stored_bytes: Some(m.stored_bytes),
                    files: Some(m.files),
                    seconds: Some(m.end_time.duration_since(m.time).as_secs_f64()),
                    ..Facts::default()
                })
                .unwrap_or_default();
            entries.push(Entry {
                at: finished,
                event: Event::AttemptFinished {
                    job: job.clone(),
                    scheduled,
                    attempt: n,
                    outcome,
                    transient: false,
                    message,
                    produced,
                    facts: Box::new(facts),
                },
            });
            entries.push(Entry {
                at: finished,
                event: Event::RunFinished {
                    job: job.clone(),
                    scheduled,
                    outcome,
                    peer: None,
                },
            });
        }
    }
    entries.sort_by_key(|e| e.at);
    Ok(State::new("repository".into(), now, &entries))
}
