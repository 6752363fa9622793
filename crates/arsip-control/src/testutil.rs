//! Helpers shared by the engine's and the executors' tests: a configuration over a
//! temporary directory, its repository, the journal's finished runs.

use std::path::Path;
use std::sync::Arc;

use arsip_ops::repo::{clock::SystemClock, LocalSettings, Repository, SessionTiming};
use jiff::{SignedDuration, Timestamp};

use crate::config::{Config, FileAccess};
use crate::journal::{Entry, Event, Outcome};

/// The repository's password, as the configuration's `password_env` names it.
pub const PASSWORD: &str = "pw";

/// A configuration: one repository `main` with sources `db` and `files`, and `jobs`.
pub fn config(dir: &Path, jobs: &str) -> Config {
    let text = format!(
        r#"version = 1
[daemon]
state_dir = "{state}"
catch_up = "once"
catch_up_within = "24h"
max_concurrent_jobs = 4

[repository.main]
location = "{repo}"
password_env = "ARSIP_PASSWORD"

[source.db]
kind = "pg-physical"
stanza = "db"
repository = "main"
dbname = "dbname=app"
rpo = "24h"

[source.files]
kind = "files"
repository = "main"
paths = ["{data}"]
rpo = "24h"
{jobs}"#,
        state = dir.join("state").display(),
        repo = dir.join("repo").display(),
        data = dir.join("data").display(),
    );
    std::env::set_var("ARSIP_PASSWORD", PASSWORD);
    crate::config::parse(
        &dir.join("arsip.toml"),
        &text,
        FileAccess {
            owner_is_us: true,
            private: true,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

pub const TTL: SignedDuration = SignedDuration::from_secs(3);

pub async fn repo(dir: &Path, init: bool) -> Arc<Repository> {
    std::env::set_var("ARSIP_TEST_WEAK_KDF", "1");
    let settings = arsip_ops::open::StoreSettings {
        location: dir.join("repo").display().to_string(),
        backend: Default::default(),
        faults: None,
        meter: None,
    };
    let local = LocalSettings {
        cache_dir: dir.join("cache"),
        sessions: SessionTiming::with_ttl(TTL),
        ..Default::default()
    };
    if init {
        arsip_ops::open::init(
            &settings,
            PASSWORD.as_bytes(),
            &Default::default(),
            local.clone(),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
    }
    let with =
        arsip_ops::repo::OpenWith::Password(zeroize::Zeroizing::new(PASSWORD.as_bytes().to_vec()));
    arsip_ops::open::repository(
        &settings,
        with,
        arsip_ops::open::Access::Full,
        local,
        Arc::new(SystemClock),
    )
    .await
    .unwrap()
    .into()
}

/// The journal entries of one run of `job` scheduled (and started) at `at`: its one attempt
/// ends at `end` with `outcome` and `facts`; `peer`, when given, is the daemon that ran it.
pub fn run_entries(
    job: &str,
    at: Timestamp,
    end: Timestamp,
    outcome: Outcome,
    facts: crate::journal::Facts,
    peer: Option<&str>,
) -> Vec<Entry> {
    let event = |at, event| Entry { at, event };
    vec![
        event(
            at,
            Event::AttemptStarted {
                job: job.into(),
                scheduled: at,
                attempt: 1,
            },
        ),
        event(
            end,
            Event::AttemptFinished {
                job: job.into(),
                scheduled: at,
                attempt: 1,
                outcome,
                transient: false,
                message: None,
                produced: None,
                facts: Box::new(facts),
            },
        ),
        event(
            end,
            Event::RunFinished {
                job: job.into(),
                scheduled: at,
                outcome,
                peer: peer.map(str::to_string),
            },
        ),
    ]
}

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn finished(state: &Path) -> Vec<(String, Timestamp, Outcome, Option<String>)> {
    let mut out = Vec::new();
    let mut segments: Vec<_> = std::fs::read_dir(state.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    for path in segments {
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            let e: Entry = serde_json::from_str(line).unwrap();
            if let Event::RunFinished {
                job,
                scheduled,
                outcome,
                peer,
            } = e.event
            {
                out.push((job, scheduled, outcome, peer));
            }
        }
    }
    out
}
