//! `arsip serve`: the engine ([`Runner`]) on the process clock, until told to stop.
//!
//! - The state directory holds the journal (locked: one daemon per directory) and this
//!   daemon's id (`daemon-id`, random, made once), which its claims name.
//! - The loop wakes at the next occurrence or retry, when an attempt ends, and at least every
//!   30 s (so that a clock step or a suspend is noticed: a job starts within a second of its
//!   time after a normal sleep, within 30 s after a jump).
//! - On a reload (SIGHUP, sent by the front end through [`ServeOptions::reloads`]): the
//!   configuration file is read again and put in force whole (schedules, sources, jobs,
//!   retention, alerts, channels, API tokens, the TLS certificate), or, when it does not
//!   resolve or changes what only a restart can (the state directory, the API's address,
//!   the repositories), refused with every reason logged, the old one kept and
//!   `arsip_config_reload_failed` set to 1.
//! - On shutdown (SIGTERM): no new attempt starts; running ones get `shutdown_grace` to
//!   finish; what still runs then is stopped and journaled `interrupted` (its claim lapses
//!   and the run is taken over or caught up); the daemon returns.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arsip_ops::repo::clock::Clock;

use crate::alerts::{Leadership, Notifier};
use crate::api::{self, CancelRefused, Command, TriggerRefused};
use crate::config::Config;
use crate::executor::Executors;
use crate::journal::{Event, Journal};
use crate::runner::{CancelError, Runner, RunnerError, TriggerError};

/// How a daemon runs.
pub struct ServeOptions {
    pub clock: Arc<dyn Clock>,
    /// The longest the loop sleeps without looking at the clock.
    pub tick: Duration,
    /// This host's name, in alert messages.
    pub host: String,
    /// Each message asks for the configuration file to be loaded again (SIGHUP).
    pub reloads: Option<tokio::sync::mpsc::Receiver<()>>,
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
    let id = crate::random_hex(8)
        .map_err(DaemonError::Setup)?
        .to_string();
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
    mut opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let state = config.daemon.state_dir.clone();
    let now = opts.clock.now();
    let (mut journal, mut rec) = Journal::open(&state, now)?;
    if rec.truncated > 0 || !rec.interrupted.is_empty() {
        tracing::warn!(
            truncated_bytes = rec.truncated,
            interrupted = rec.interrupted.len(),
            "the journal shows that the daemon stopped abruptly; unfinished attempts are recorded as interrupted"
        );
    }
    // The state folds this entry too: it dates the daemon's start and new sources.
    let loaded = journal.append(
        now,
        Event::ConfigLoaded {
            path: config.path.clone(),
            sources: config.sources.keys().cloned().collect(),
        },
    )?;
    rec.entries.push(loaded);
    let daemon = daemon_id(&state)?;
    // One handle per repository for the claims: agent credentials are enough. A repository
    // that is only a copy's destination is not opened (it may hold nothing yet): its copy
    // jobs claim their runs in the repository they copy.
    let mut repos = BTreeMap::new();
    for name in config.repositories.keys().filter(|r| config.runs_in(r)) {
        let opened = executors
            .open(name, true)
            .await
            .map_err(DaemonError::Setup)?;
        repos.insert(name.clone(), opened.shared().clone());
    }
    let grace = std::time::Duration::try_from(config.daemon.shutdown_grace)
        .unwrap_or(Duration::from_secs(300));
    let mut config = Arc::new(config);
    let mut runner = Runner::new(
        (*config).clone(),
        daemon.clone(),
        repos.clone(),
        Arc::new(executors.clone()),
        journal,
        &rec.entries,
    )?;
    let shared = runner.state();
    let refresh = Arc::new(tokio::sync::Notify::new());
    let (caches, lister) = crate::cache::start(
        config.clone(),
        executors.clone(),
        opts.clock.clone(),
        refresh.clone(),
    );
    let (commands, mut command_rx) = tokio::sync::mpsc::channel(16);
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let (api, api_handle, tls) = start_api(
        &config,
        shared.clone(),
        commands,
        repos.clone(),
        caches,
        opts.clock.clone(),
        async {
            let _ = api_stopped.await;
        },
    )
    .await?
    .map_or((None, None, None), |(task, api, tls)| {
        (Some(task), Some(api), tls)
    });
    let mut reloads = opts.reloads.take();
    let mut notifier = Notifier::new(daemon.clone(), opts.host.clone());
    // The alert lease lives in the first repository (every daemon of a site names it).
    let lease_repo = repos
        .values()
        .next()
        .cloned()
        .ok_or_else(|| DaemonError::Setup("the configuration names no repository".into()))?;
    let leader = Leadership::start(lease_repo, daemon.clone(), opts.clock.clone());
    let keys = crate::alerts::watch_keys(config.clone(), repos.clone(), shared.clone());
    tracing::info!(daemon = %daemon, state_dir = %state.display(), "arsip serve: running");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let now = opts.clock.now();
        runner.step(now)?;
        alerting(&mut runner, &shared, &config, &mut notifier, &leader, now)?;
        let wait = runner
            .next_wakeup(now)
            .map(|t| std::time::Duration::try_from(t.duration_since(now)).unwrap_or_default())
            .unwrap_or(opts.tick)
            .min(opts.tick);
        let clock = opts.clock.clone();
        tokio::select! {
            _ = &mut shutdown => break,
            r = runner.finish_one(|| clock.now()), if runner.running() > 0 => {
                r?;
                // What the run made shows in the API's listings.
                refresh.notify_one();
            }
            Some(c) = command_rx.recv() => command(&mut runner, clock.now(), c),
            e = notifier.finished() => runner.record(clock.now(), e)?,
            Some(()) = async { reloads.as_mut()?.recv().await }, if reloads.is_some() => {
                let live = Live {
                    runner: &mut runner,
                    executors: &executors,
                    api: api_handle.as_ref(),
                    tls: tls.as_ref(),
                };
                match reload(&config, live, clock.now()).await {
                    Ok(new) => {
                        config = new;
                        shared.write().unwrap_or_else(|p| p.into_inner()).config_reload_failed = false;
                    }
                    Err(why) => {
                        for w in &why {
                            tracing::error!("configuration reload refused: {w}");
                        }
                        tracing::error!(path = %config.path.display(), "arsip serve: the configuration was not reloaded; the one loaded before stays in force");
                        shared.write().unwrap_or_else(|p| p.into_inner()).config_reload_failed = true;
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    shared.write().unwrap_or_else(|p| p.into_inner()).stopping = true;
    tracing::info!(
        running = runner.running(),
        grace_secs = grace.as_secs(),
        "arsip serve: stopping; running jobs get the grace period to finish"
    );
    let deadline = tokio::time::Instant::now() + grace;
    while runner.running() > 0 {
        let clock = opts.clock.clone();
        tokio::select! {
            r = runner.finish_one(|| clock.now()) => { r?; }
            Some(c) = command_rx.recv() => refuse(c),
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let stopped = runner.stop_all(opts.clock.now())?;
    if stopped > 0 {
        tracing::warn!(
            stopped,
            "arsip serve: stopped jobs still running after the grace period"
        );
    }
    keys.abort();
    lister.abort();
    let _ = api_stop.send(());
    if let Some(api) = api {
        let _ = api.await;
    }
    Ok(())
}

/// What a reload replaces.
struct Live<'a> {
    runner: &'a mut Runner,
    executors: &'a Executors,
    api: Option<&'a api::Api>,
    tls: Option<&'a api::Tls>,
}

/// Load `old`'s file again and put it in force, or say every reason it cannot be.
async fn reload(
    old: &Config,
    live: Live<'_>,
    now: jiff::Timestamp,
) -> Result<Arc<Config>, Vec<String>> {
    let new = crate::load(&old.path).map_err(|e| {
        e.errors
            .iter()
            .map(|x| format!("{}:{}: {}: {}", e.path.display(), x.line, x.key, x.message))
            .collect::<Vec<_>>()
    })?;
    let restart = old.restart_needed(&new);
    if !restart.is_empty() {
        return Err(vec![format!(
            "{} changed: restart arsip serve to apply that (or undo the change and reload)",
            restart.join(", ")
        )]);
    }
    // Everything that can fail is read before anything changes.
    let tokens = match live.api {
        Some(_) => Some(api::load_tokens(&new).map_err(|e| vec![e])?),
        None => None,
    };
    let acceptor = match (&new.api.tls, live.tls) {
        (Some((cert, key)), Some(_)) => {
            let key = zeroize::Zeroizing::new(key.read().map_err(|e| vec![e])?);
            Some(api::tls_acceptor(cert, key.as_bytes()).map_err(|e| vec![e])?)
        }
        _ => None,
    };
    let executor = Arc::new(Arc::new(live.executors.with_config(new.clone())));
    live.runner
        .reload(new.clone(), executor, now)
        .map_err(|e| vec![e.to_string()])?;
    let new = Arc::new(new);
    if let (Some(api), Some(tokens)) = (live.api, tokens) {
        api.reload(new.clone(), tokens);
    }
    if let (Some(tls), Some(acceptor)) = (live.tls, acceptor) {
        *tls.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
    }
    // Dates the sources that are new (their RPO clock starts now).
    live.runner
        .record(
            now,
            Event::ConfigLoaded {
                path: new.path.clone(),
                sources: new.sources.keys().cloned().collect(),
            },
        )
        .map_err(|e| vec![e.to_string()])?;
    tracing::info!(
        jobs = new.jobs.len(),
        sources = new.sources.len(),
        "arsip serve: configuration reloaded"
    );
    Ok(new)
}

/// Journal the alerts that opened and cleared, then send what is owed.
fn alerting(
    runner: &mut Runner,
    shared: &crate::state::Shared,
    config: &Config,
    notifier: &mut Notifier,
    leader: &Leadership,
    now: jiff::Timestamp,
) -> Result<(), DaemonError> {
    let events = notifier.evaluate(
        config,
        &shared.read().unwrap_or_else(|p| p.into_inner()),
        now,
    );
    for e in events {
        if let Event::AlertOpened { alert } = &e {
            tracing::warn!(rule = %alert.rule, subject = %alert.subject, "alert: {}", alert.summary);
        }
        runner.record(now, e)?;
    }
    notifier.send_owed(
        config,
        &mut shared.write().unwrap_or_else(|p| p.into_inner()),
        now,
        leader.is_leader(),
    );
    Ok(())
}

fn command(runner: &mut Runner, now: jiff::Timestamp, c: Command) {
    match c {
        Command::Trigger { job, by, reply } => {
            let r = runner.trigger(now, &job, &by).map_err(|e| match e {
                TriggerError::NoSuchJob => TriggerRefused::NoSuchJob,
                TriggerError::Busy(t) => TriggerRefused::Busy(t),
                TriggerError::Runner(e) => TriggerRefused::Failed(e.to_string()),
            });
            if let Ok(t) = &r {
                tracing::info!(%job, scheduled = %t, token = %by, "run triggered through the API");
            }
            let _ = reply.send(r);
        }
        Command::Cancel {
            job,
            by,
            scheduled,
            reply,
        } => {
            let r = runner
                .cancel(now, &job, &by, scheduled)
                .map_err(|e| match e {
                    CancelError::NoSuchJob => CancelRefused::NoSuchJob,
                    CancelError::Idle => CancelRefused::Idle,
                    CancelError::OtherRun(t) => CancelRefused::OtherRun(t),
                    CancelError::AtPeer { daemon, .. } => CancelRefused::AtPeer(daemon),
                    CancelError::Runner(e) => CancelRefused::Failed(e.to_string()),
                });
            if let Ok(t) = &r {
                tracing::warn!(%job, scheduled = %t, token = %by, "run cancelled through the API");
            }
            let _ = reply.send(r);
        }
    }
}

fn refuse(c: Command) {
    match c {
        Command::Trigger { reply, .. } => {
            let _ = reply.send(Err(TriggerRefused::Stopping));
        }
        Command::Cancel { reply, .. } => {
            let _ = reply.send(Err(CancelRefused::Stopping));
        }
    }
}

/// Start the HTTP API when the configuration has tokens (every request needs one): bind,
/// record the address bound in `STATE_DIR/api-address` (port 0 picks a free one), serve
/// until `stop`.
async fn start_api(
    config: &Arc<Config>,
    state: crate::state::Shared,
    commands: tokio::sync::mpsc::Sender<Command>,
    repos: BTreeMap<String, Arc<arsip_ops::repo::Repository>>,
    caches: crate::cache::Caches,
    clock: Arc<dyn Clock>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<(tokio::task::JoinHandle<()>, api::Api, Option<api::Tls>)>, DaemonError> {
    if config.api.tokens.is_empty() {
        tracing::info!("arsip serve: no api.tokens configured; the HTTP API and /metrics are off");
        return Ok(None);
    }
    let tokens = api::load_tokens(config).map_err(DaemonError::Setup)?;
    let tls = match &config.api.tls {
        Some((cert, key)) => {
            let key = zeroize::Zeroizing::new(key.read().map_err(DaemonError::Setup)?);
            Some(api::tls_acceptor(cert, key.as_bytes()).map_err(DaemonError::Setup)?)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|e| DaemonError::Setup(format!("api.listen {}: {e}", config.api.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DaemonError::Setup(format!("api.listen: {e}")))?;
    let path = config.daemon.state_dir.join("api-address");
    let tmp = path.with_extension("tmp");
    let scheme = if tls.is_some() { "https" } else { "http" };
    std::fs::write(&tmp, format!("{scheme}://{addr}\n"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| DaemonError::Setup(format!("{}: {e}", path.display())))?;
    tracing::info!(address = %format!("{scheme}://{addr}"), "arsip serve: API listening");
    let api = api::Api::new(config.clone(), state, commands, tokens, repos, clock)
        .with_tls(tls.is_some())
        .with_caches(caches);
    let tls = tls.map(|t| Arc::new(std::sync::RwLock::new(t)));
    let task = tokio::spawn(api::serve(
        listener,
        tls.clone(),
        api.router(),
        stop,
        Duration::from_secs(5),
    ));
    Ok(Some((task, api, tls)))
}
