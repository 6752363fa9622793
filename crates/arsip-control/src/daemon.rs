//! `arsip serve`: the engine ([`Runner`]) on the process clock, until told to stop.
//!
//! - The state directory holds the journal (locked: one daemon per directory) and this
//!   daemon's id (`daemon-id`, random, made once), which its claims name.
//! - The loop wakes at the next occurrence or retry, when an attempt ends, and at least every
//!   30 s (so that a clock step or a suspend is noticed: a job starts within a second of its
//!   time after a normal sleep, within 30 s after a jump).
//! - On shutdown (SIGTERM): no new attempt starts; running ones get `shutdown_grace` to
//!   finish; what still runs then is stopped and journaled `interrupted` (its claim lapses
//!   and the run is taken over or caught up); the daemon returns.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arsip_ops::repo::clock::Clock;

use crate::config::Config;
use crate::executor::Executors;
use crate::journal::{Event, Journal};
use crate::runner::{Runner, RunnerError};

/// How a daemon runs.
pub struct ServeOptions {
    pub clock: Arc<dyn Clock>,
    /// The longest the loop sleeps without looking at the clock.
    pub tick: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("{0}")]
    Setup(String),
}

/// This daemon's id: made once, kept in the state directory.
pub fn daemon_id(state_dir: &Path) -> Result<String, DaemonError> {
    let path = state_dir.join("daemon-id");
    let setup = |e: std::io::Error| DaemonError::Setup(format!("{}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(setup(e)),
    }
    let mut raw = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(setup)?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(state_dir).map_err(setup)?;
    let tmp = state_dir.join("daemon-id.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(setup)?;
    f.write_all(id.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(setup)?;
    std::fs::rename(&tmp, &path).map_err(setup)?;
    Ok(id)
}

/// Run `config`'s schedules with `executors` until `shutdown` completes.
pub async fn serve(
    config: Config,
    executors: Arc<Executors>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let state = config.daemon.state_dir.clone();
    let now = opts.clock.now();
    let (mut journal, rec) = Journal::open(&state, now)?;
    if rec.truncated > 0 || !rec.interrupted.is_empty() {
        tracing::warn!(
            truncated_bytes = rec.truncated,
            interrupted = rec.interrupted.len(),
            "the journal shows that the daemon stopped abruptly; unfinished attempts are recorded as interrupted"
        );
    }
    journal.append(
        now,
        Event::ConfigLoaded {
            path: config.path.clone(),
        },
    )?;
    let daemon = daemon_id(&state)?;
    // One handle per repository for the claims: agent credentials are enough.
    let mut repos = BTreeMap::new();
    for name in config.repositories.keys() {
        let opened = executors
            .open(name, true)
            .await
            .map_err(DaemonError::Setup)?;
        repos.insert(name.clone(), opened.shared().clone());
    }
    let grace = std::time::Duration::try_from(config.daemon.shutdown_grace)
        .unwrap_or(Duration::from_secs(300));
    let mut runner = Runner::new(
        config,
        daemon.clone(),
        repos,
        Arc::new(executors),
        journal,
        &rec.entries,
    )?;
    tracing::info!(daemon = %daemon, state_dir = %state.display(), "arsip serve: running");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let now = opts.clock.now();
        runner.step(now)?;
        let wait = runner
            .next_wakeup(now)
            .map(|t| std::time::Duration::try_from(t.duration_since(now)).unwrap_or_default())
            .unwrap_or(opts.tick)
            .min(opts.tick);
        let clock = opts.clock.clone();
        tokio::select! {
            _ = &mut shutdown => break,
            r = runner.finish_one(|| clock.now()), if runner.running() > 0 => { r?; }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!(
        running = runner.running(),
        grace_secs = grace.as_secs(),
        "arsip serve: stopping; running jobs get the grace period to finish"
    );
    let deadline = tokio::time::Instant::now() + grace;
    while runner.running() > 0 {
        let clock = opts.clock.clone();
        match tokio::time::timeout_at(deadline, runner.finish_one(|| clock.now())).await {
            Ok(r) => {
                r?;
            }
            Err(_) => break,
        }
    }
    let stopped = runner.stop_all(opts.clock.now())?;
    if stopped > 0 {
        tracing::warn!(
            stopped,
            "arsip serve: stopped jobs still running after the grace period"
        );
    }
    Ok(())
}
