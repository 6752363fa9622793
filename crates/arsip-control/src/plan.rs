//! The resolved plan of a configuration: what runs when (each job's next runs in its zone and
//! in UTC), against what, with which retries; sources with their RPO and RTO; channels with
//! their secrets named, never shown.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::config::{Config, JobKind, Repository, Source};

/// Runs of each job shown by default.
pub const NEXT_RUNS: u16 = 3;

#[derive(Debug, Clone, Serialize)]
pub struct NextRun {
    /// In the job's time zone, with its offset (`2026-12-03T02:00:00+07:00[Asia/Jakarta]`).
    pub local: String,
    pub utc: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobPlan {
    pub name: String,
    pub kind: JobKind,
    /// The source for backups and WAL checks, else the repository.
    pub target: String,
    pub repository: String,
    pub schedule: crate::Schedule,
    pub next: Vec<NextRun>,
    pub retries: u32,
    #[serde(with = "opt_secs")]
    pub timeout: Option<jiff::SignedDuration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub config: std::path::PathBuf,
    pub now: Timestamp,
    pub jobs: Vec<JobPlan>,
    pub sources: BTreeMap<String, Source>,
    pub repositories: BTreeMap<String, Repository>,
    pub channels: BTreeMap<String, crate::config::Channel>,
    pub routes: BTreeMap<crate::config::Severity, Vec<String>>,
    /// Sources no job backs up (their RPO cannot be met by this daemon).
    pub unscheduled_sources: Vec<String>,
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<jiff::SignedDuration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

impl Plan {
    pub fn new(config: &Config, now: Timestamp, runs: usize) -> Plan {
        let jobs = config
            .jobs
            .iter()
            .map(|(name, j)| JobPlan {
                name: name.clone(),
                kind: j.kind,
                target: j.source.clone().unwrap_or_else(|| j.repository.clone()),
                repository: j.repository.clone(),
                schedule: j.schedule.clone(),
                next: j
                    .schedule
                    .upcoming(now, runs)
                    .into_iter()
                    .map(|z| NextRun {
                        local: z.strftime("%Y-%m-%d %H:%M %:z").to_string()
                            + &format!(" ({})", z.strftime("%a")),
                        utc: z.timestamp(),
                    })
                    .collect(),
                retries: j.retries,
                timeout: j.timeout,
            })
            .collect();
        let unscheduled_sources = config
            .sources
            .keys()
            .filter(|s| {
                !config
                    .jobs
                    .values()
                    .any(|j| j.kind == JobKind::Backup && j.source.as_deref() == Some(s))
            })
            .cloned()
            .collect();
        Plan {
            config: config.path.clone(),
            now,
            jobs,
            sources: config.sources.clone(),
            repositories: config.repositories.clone(),
            channels: config.channels.clone(),
            routes: config.alerts.routes.clone(),
            unscheduled_sources,
        }
    }
}
