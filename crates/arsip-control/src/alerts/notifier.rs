//! The daemon's side of alerting: the deliveries under way and their retries
//! ([`Notifier`]), the alert lease that picks who sends condition alerts ([`Leadership`]),
//! and the key listing behind `ArsipKeyRotationDue` ([`watch_keys`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::channels::{deliver, retry_wait, Delivery, Notification};
use super::{evaluate, Status};
use crate::config::Config;
use crate::journal::Event;
use crate::state::State;

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
