//! Job claims and leases (FORMAT.md §20): how daemons that share a repository agree on who
//! runs one scheduled run of a job, and who leads, through create-only objects and the
//! store's clock alone, as writer sessions do (§17). No lock server, no deletes: agent
//! credentials are enough to take part, and only prune (a full key) removes old claims.
//!
//! A **chain** is the set of attempts at one thing: `jobs/<job>/<T>/` for the run of `job`
//! scheduled at `T`, or `leases/<name>/` for a leadership lease whose attempts are epochs.
//! Attempt `a` is the object `<chain>/<a>` (a signed [`ClaimDoc`]), renewed by creating
//! `<a>.<n>` while its holder works, and ended by `<a>.done` (a signed [`DoneDoc`]). Whoever
//! creates `<a>` holds it: create-only writes make exactly one winner per number.
//!
//! An attempt without `.done` has **lapsed** at store time `now` when its newest object is
//! older than its TTL plus the margin, or its claim is older than its timeout plus its TTL
//! (a holder that keeps renewing cannot hold a run forever). A taker judges that first by
//! its own clock, then creates the next attempt and judges it again by that create's store
//! time, the only clock that counts; if the lapse does not hold it withdraws
//! (`.done withdrawn`) and goes back to watching.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use arsip_storage::{ErrorKind, ObjectMeta};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::cap::FullRepo;
use crate::error::{RepoError, Result};
use crate::keys;
use crate::maint::Renewals;
use crate::record::check_name;
use crate::repo::Repository;

pub(crate) const JOBS_PREFIX: &str = "jobs/";
pub(crate) const LEASES_PREFIX: &str = "leases/";
const DONE: &str = "done";
/// Attempt numbers above this are never created by arsip: a name that says more was
/// planted, and occupies nothing.
pub const MAX_ATTEMPT: u64 = 9_999;
/// Attempt numbers this far above the newest claim of a chain are not counted when choosing
/// the next one.
const PLANTED_WINDOW: u64 = 64;
/// `<T>` in `jobs/<job>/<T>/`.
const RUN_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The attempts at one thing: a scheduled run of a job, or a lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Chain(String);

impl Chain {
    /// `jobs/<job>/<T>`: the run of `job` scheduled at `scheduled` (whole seconds, UTC).
    pub fn run(job: &str, scheduled: Timestamp) -> Result<Chain> {
        check_name(job, "job name")?;
        let t = scheduled.strftime(RUN_TIME_FORMAT).to_string();
        Ok(Chain(format!("{JOBS_PREFIX}{job}/{t}")))
    }

    /// `leases/<name>`: a leadership lease (its attempts are epochs).
    pub fn lease(name: &str) -> Result<Chain> {
        check_name(name, "lease name")?;
        Ok(Chain(format!("{LEASES_PREFIX}{name}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The job and scheduled time of a run chain.
    pub fn job_run(&self) -> Option<(&str, Timestamp)> {
        let rest = self.0.strip_prefix(JOBS_PREFIX)?;
        let (job, t) = rest.split_once('/')?;
        Some((job, parse_run_time(t)?))
    }

    fn prefix(&self) -> String {
        format!("{}/", self.0)
    }

    fn attempt_name(&self, a: u64) -> String {
        format!("{}/{a}", self.0)
    }
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_run_time(t: &str) -> Option<Timestamp> {
    if t.len() != 16 {
        return None;
    }
    let ts = jiff::fmt::strtime::parse(RUN_TIME_FORMAT, t)
        .ok()?
        .to_datetime()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    // Only the canonical spelling: one name per run.
    (ts.strftime(RUN_TIME_FORMAT).to_string() == t).then_some(ts)
}

/// A canonical attempt number: decimal, no leading zero, 1 ..= [`MAX_ATTEMPT`].
fn parse_attempt(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 4 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|a| (1..=MAX_ATTEMPT).contains(a))
}

/// What an object name inside a chain is.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Claim,
    Renewal,
    Done,
}

/// `<a>`, `<a>.<n>`, `<a>.done`.
fn parse_part(rest: &str) -> Option<(u64, Part)> {
    let (a, tail) = match rest.split_once('.') {
        Some((a, t)) => (a, Some(t)),
        None => (rest, None),
    };
    let a = parse_attempt(a)?;
    let part = match tail {
        None => Part::Claim,
        Some(DONE) => Part::Done,
        Some(n) if !n.is_empty() && n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit()) => {
            Part::Renewal
        }
        Some(_) => return None,
    };
    Some((a, part))
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobResult {
    Ok,
    Warnings,
    Failed,
    /// Stopped before it finished (shutdown, a lost lease, a timeout).
    Interrupted,
    /// A taker found the attempt it meant to replace alive after all, and stepped back.
    Withdrawn,
    /// Stopped by an operator: the run ended, no other attempt takes it up.
    Cancelled,
}

impl JobResult {
    /// The run is done and needs no other attempt.
    pub fn succeeded(self) -> bool {
        matches!(self, JobResult::Ok | JobResult::Warnings)
    }
}

/// The attempt before this one, as the claimant saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    pub attempt: u64,
    /// `None`: it lapsed without a result.
    pub result: Option<JobResult>,
}

/// `<chain>/<a>`, signed by the claimant's writer key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimDoc {
    pub version: u32,
    /// The chain it claims in (a claim copied to another chain does not count).
    pub chain: String,
    pub attempt: u64,
    /// The claiming daemon's id (random, kept in its state directory).
    pub daemon: String,
    pub host: String,
    pub writer: String,
    pub ttl_secs: u64,
    pub timeout_secs: u64,
    /// H of the canonical job definition: daemons with different configurations show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// The claimant's clock (informational).
    pub started: Timestamp,
}

/// `<chain>/<a>.done`, signed by the claimant's writer key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneDoc {
    pub version: u32,
    pub chain: String,
    pub attempt: u64,
    pub writer: String,
    pub result: JobResult,
    /// A failure worth another attempt (a storage error, a refusal that says "run again").
    pub transient: bool,
    /// Snapshots the attempt committed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// The verification record it stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started: Timestamp,
    pub finished: Timestamp,
}

/// What a claimant reports when it finishes.
#[derive(Debug, Clone)]
pub struct Finish {
    pub result: JobResult,
    pub transient: bool,
    pub snapshots: Vec<String>,
    pub verification: Option<String>,
    pub error_class: Option<String>,
    pub message: Option<String>,
}

impl Finish {
    pub fn ok() -> Finish {
        Finish::with(JobResult::Ok)
    }

    pub fn with(result: JobResult) -> Finish {
        Finish {
            result,
            transient: false,
            snapshots: Vec::new(),
            verification: None,
            error_class: None,
            message: None,
        }
    }
}

/// One authentic attempt of a chain.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt: u64,
    pub claim: ClaimDoc,
    /// The store's time of the claim, and of its newest object (claim or renewal).
    pub claimed_at: Timestamp,
    pub last_seen: Timestamp,
    pub done: Option<DoneDoc>,
    /// The store's time of the `.done`.
    pub done_at: Option<Timestamp>,
}

/// A claim's own TTL and timeout count up to these: a claimant that names longer ones
/// (a hostile agent) cannot hold a run beyond them.
pub const MAX_CLAIM_TTL: SignedDuration = SignedDuration::from_hours(1);
pub const MAX_CLAIM_TIMEOUT: SignedDuration = SignedDuration::from_hours(24);

impl Attempt {
    fn ttl(&self) -> SignedDuration {
        secs(self.claim.ttl_secs).min(MAX_CLAIM_TTL)
    }

    /// Without a result and dead at store time `now` (see the module docs).
    pub fn lapsed(&self, now: Timestamp, margin: SignedDuration) -> bool {
        let timeout = secs(self.claim.timeout_secs).min(MAX_CLAIM_TIMEOUT);
        self.done.is_none()
            && (now.duration_since(self.last_seen) > self.ttl() + margin
                || now.duration_since(self.claimed_at) > timeout + self.ttl())
    }

    pub fn result(&self) -> Option<JobResult> {
        self.done.as_ref().map(|d| d.result)
    }
}

fn secs(s: u64) -> SignedDuration {
    SignedDuration::from_secs(s.min(i64::MAX as u64 / 2) as i64)
}

/// A chain as listed: its authentic attempts, ascending, and what else is there.
#[derive(Debug, Clone, Serialize)]
pub struct ChainView {
    pub chain: Chain,
    pub attempts: Vec<Attempt>,
    /// The attempt number after every one in use (authentic or not).
    pub next: u64,
    /// Objects that are no authentic part of the chain (planted, or names arsip never
    /// writes); they only use up attempt numbers.
    pub ignored: Vec<String>,
}

/// Where a chain stands, for whoever decides whether to claim in it.
#[derive(Debug, Clone, Copy)]
pub enum RunState<'a> {
    /// No authentic attempt.
    Free,
    /// An attempt ended `ok` or `warnings`: the run is done.
    Succeeded(&'a Attempt),
    /// The newest attempt (withdrawals aside) runs.
    Live(&'a Attempt),
    /// The newest attempt died without a result.
    Lapsed(&'a Attempt),
    /// The newest attempt ended `failed`, `interrupted` or `cancelled`; its `transient` says whether
    /// another attempt is worth it.
    Ended(&'a Attempt),
}

impl ChainView {
    /// Where the chain stands at store time `now` (a taker's own clock first; see
    /// [`Claim::confirm`]).
    pub fn state(&self, now: Timestamp, margin: SignedDuration) -> RunState<'_> {
        if let Some(a) = self
            .attempts
            .iter()
            .find(|a| a.result().is_some_and(JobResult::succeeded))
        {
            return RunState::Succeeded(a);
        }
        match self
            .attempts
            .iter()
            .rev()
            .find(|a| a.result() != Some(JobResult::Withdrawn))
        {
            None => RunState::Free,
            Some(a) if a.done.is_some() => RunState::Ended(a),
            Some(a) if a.lapsed(now, margin) => RunState::Lapsed(a),
            Some(a) => RunState::Live(a),
        }
    }

    pub fn attempt(&self, a: u64) -> Option<&Attempt> {
        self.attempts.iter().find(|x| x.attempt == a)
    }
}

/// What a claimant asks for.
#[derive(Debug, Clone)]
pub struct ClaimSpec {
    pub daemon: String,
    /// After this long the attempt counts as dead even while it renews.
    pub timeout: SignedDuration,
    pub config_digest: Option<String>,
    pub previous: Option<Previous>,
}

/// A check that the holder of a claim still holds it, run by a [`SnapshotTxn`] just before
/// its manifest (see [`guarded`]).
///
/// [`SnapshotTxn`]: crate::SnapshotTxn
pub type CommitGuard = Arc<dyn Fn() -> Result<()> + Send + Sync>;

tokio::task_local! {
    static COMMIT_GUARD: CommitGuard;
}

/// Run `f` with `guard` in force: every snapshot transaction started inside it checks the
/// guard just before creating its manifest and commits nothing when it fails (a claimant
/// that lost its claim must not add a second snapshot of the run).
pub async fn guarded<F: Future>(guard: CommitGuard, f: F) -> F::Output {
    COMMIT_GUARD.scope(guard, f).await
}

/// The guard in force for the current task, if any (taken when a transaction starts; a
/// caller that moves work to another thread carries it over with [`guarded`]).
pub fn current_commit_guard() -> Option<CommitGuard> {
    COMMIT_GUARD.try_with(|g| g.clone()).ok()
}

impl Repository {
    /// List chain `chain`: every authentic attempt (its claim verifies under the key of the
    /// writer it names, and names this chain and number), with its renewals and result.
    pub async fn chain_view(&self, chain: &Chain) -> Result<ChainView> {
        let prefix = chain.prefix();
        let metas: Vec<ObjectMeta> = self.store.list(&prefix).try_collect().await?;
        self.view_of(chain, &prefix, metas).await
    }

    async fn view_of(
        &self,
        chain: &Chain,
        prefix: &str,
        metas: Vec<ObjectMeta>,
    ) -> Result<ChainView> {
        // Owned metadata: a closure over borrowed parts makes a future rustc cannot prove
        // `Send` for every lifetime, and daemons list chains in spawned tasks.
        let mut parts: BTreeMap<u64, Vec<(Part, ObjectMeta)>> = BTreeMap::new();
        let mut ignored = Vec::new();
        for m in metas {
            match m.key.strip_prefix(prefix).and_then(parse_part) {
                Some((a, p)) => parts.entry(a).or_default().push((p, m)),
                None => ignored.push(m.key),
            }
        }
        // Past every number with any object, so that a result planted for a future attempt
        // is not there when that attempt is made; but numbers far above the newest claim
        // are planted and occupy nothing (or one planted name would end the chain).
        let claims_max = parts
            .iter()
            .filter(|(_, ps)| ps.iter().any(|(p, _)| *p == Part::Claim))
            .map(|(a, _)| *a)
            .max()
            .unwrap_or(0);
        let next = parts
            .keys()
            .copied()
            .filter(|a| *a <= claims_max + PLANTED_WINDOW)
            .max()
            .unwrap_or(0)
            + 1;
        let read = futures::stream::iter(parts.into_iter().map(|(a, ps)| async move {
            let Some((_, claim_meta)) = ps.iter().find(|(p, _)| *p == Part::Claim) else {
                return Ok::<_, RepoError>(Err(ps
                    .iter()
                    .map(|(_, m)| m.key.clone())
                    .collect::<Vec<_>>()));
            };
            let Some(claim) = self
                .read_claim(chain, a, &claim_meta.key, claim_meta.last_modified)
                .await?
            else {
                return Ok(Err(ps.iter().map(|(_, m)| m.key.clone()).collect()));
            };
            let last_seen = ps
                .iter()
                .filter(|(p, _)| *p != Part::Done)
                .map(|(_, m)| m.last_modified)
                .max()
                .unwrap_or(claim_meta.last_modified);
            let (mut done, mut done_at) = (None, None);
            if let Some((_, m)) = ps.iter().find(|(p, _)| *p == Part::Done) {
                if let Some(d) = self
                    .read_signed_by::<DoneDoc>(&m.key, &claim.writer)
                    .await?
                {
                    if d.chain == chain.0
                        && d.attempt == a
                        && d.writer == claim.writer
                        && self.stood(&claim.writer, m.last_modified).await?
                    {
                        done = Some(d);
                        done_at = Some(m.last_modified);
                    }
                }
            }
            Ok(Ok(Attempt {
                attempt: a,
                claimed_at: claim_meta.last_modified,
                last_seen,
                claim,
                done,
                done_at,
            }))
        }))
        .buffer_unordered(crate::repo::FETCH_CONCURRENCY);
        let mut read = std::pin::pin!(read);
        let mut attempts = Vec::new();
        while let Some(r) = read.next().await {
            match r? {
                Ok(a) => attempts.push(a),
                Err(junk) => ignored.extend(junk),
            }
        }
        attempts.sort_by_key(|a| a.attempt);
        ignored.sort();
        Ok(ChainView {
            chain: chain.clone(),
            attempts,
            next,
            ignored,
        })
    }

    /// Whether writer `writer` (hex) stood so that the store's acceptance of an object at
    /// `stored` counts (a compromised writer's never do, a retired one's only from before).
    async fn stood(&self, writer: &str, stored: Timestamp) -> Result<bool> {
        let Some(id) = hex::decode(writer)
            .ok()
            .and_then(|v| <crate::format::WriterId>::try_from(v).ok())
        else {
            return Ok(false);
        };
        Ok(self.writer_verdict(&id).await?.1.accepts(Some(stored)))
    }

    async fn read_claim(
        &self,
        chain: &Chain,
        a: u64,
        name: &str,
        stored: Timestamp,
    ) -> Result<Option<ClaimDoc>> {
        let raw = match self.store.get(name).await {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Ok(claimed) = keys::unverified_body::<ClaimDoc>(name, &raw) else {
            tracing::warn!(object = %name, "ignoring a claim that is not one");
            return Ok(None);
        };
        match self
            .verify_signed_by::<ClaimDoc>(name, &raw, &claimed.writer)
            .await
        {
            Ok(doc) if doc.chain == chain.0 && doc.attempt == a => {
                if self.stood(&doc.writer, stored).await? {
                    Ok(Some(doc))
                } else {
                    tracing::warn!(object = %name, "ignoring a claim of a revoked writer");
                    Ok(None)
                }
            }
            Ok(_) => {
                tracing::warn!(object = %name, "ignoring a claim copied from elsewhere");
                Ok(None)
            }
            Err(e @ RepoError::Storage(_)) => Err(e),
            Err(e) => {
                tracing::warn!(object = %name, error = %e, "ignoring a claim that does not verify");
                Ok(None)
            }
        }
    }

    /// Whether snapshot `id` (a hex id) exists: what a result that names it is checked
    /// against (agent credentials suffice: one HEAD, nothing read).
    pub async fn snapshot_exists(&self, id: &str) -> Result<bool> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        match self
            .store
            .head(&format!("{}{id}", crate::snapshot::SNAPSHOTS_PREFIX))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every run of `job` kept in the repository, oldest first.
    pub async fn job_runs(&self, job: &str) -> Result<Vec<ChainView>> {
        check_name(job, "job name")?;
        let prefix = format!("{JOBS_PREFIX}{job}/");
        let metas: Vec<ObjectMeta> = self.store.list(&prefix).try_collect().await?;
        let mut by_run: BTreeMap<Timestamp, Vec<ObjectMeta>> = BTreeMap::new();
        for m in metas {
            let Some((t, _)) = m.key[prefix.len()..].split_once('/') else {
                continue;
            };
            if let Some(t) = parse_run_time(t) {
                by_run.entry(t).or_default().push(m);
            }
        }
        let mut out = Vec::with_capacity(by_run.len());
        for (t, metas) in by_run {
            let chain = Chain::run(job, t)?;
            out.push(self.view_of(&chain, &chain.prefix(), metas).await?);
        }
        Ok(out)
    }

    /// Try to create attempt `attempt` of `chain`. `None`: the number is taken (another
    /// daemon won it, or something was planted there): list the chain again.
    pub async fn claim(
        self: &Arc<Self>,
        chain: &Chain,
        attempt: u64,
        spec: &ClaimSpec,
    ) -> Result<Option<Claim>> {
        if !(1..=MAX_ATTEMPT).contains(&attempt) {
            return Err(RepoError::Refused(format!(
                "{chain}: attempt {attempt} is past the last one arsip makes ({MAX_ATTEMPT}); \
                 the chain is full of planted names: remove them with a full key"
            )));
        }
        let timing = self.session_timing();
        let doc = ClaimDoc {
            version: 1,
            chain: chain.0.clone(),
            attempt,
            daemon: spec.daemon.clone(),
            host: self.host().to_string(),
            writer: hex::encode(self.writer_id),
            ttl_secs: timing.ttl.as_secs().max(1) as u64,
            timeout_secs: spec.timeout.as_secs().max(1) as u64,
            config_digest: spec.config_digest.clone(),
            previous: spec.previous,
            started: self.clock.now(),
        };
        let name = chain.attempt_name(attempt);
        let body = Bytes::from(keys::sign_doc(self.signer(), &doc));
        let claimed_at = match self.stamp(&name, body).await {
            Ok(t) => t,
            Err(RepoError::Storage(e)) if e.kind == ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(e),
        };
        let renewals = Renewals::new(name, timing.ttl);
        let renewer = renewals.spawn(self.clone(), timing.renew_every);
        Ok(Some(Claim {
            repo: self.clone(),
            chain: chain.clone(),
            doc,
            claimed_at,
            deadline: crate::clock::since_boot()
                + std::time::Duration::try_from(spec.timeout.min(MAX_CLAIM_TIMEOUT))
                    .unwrap_or_default(),
            margin: timing.margin,
            renewals,
            renewer,
        }))
    }
}

/// A held attempt. Dropping it stops the renewals: the attempt then lapses, and another
/// daemon takes the run over.
pub struct Claim {
    repo: Arc<Repository>,
    chain: Chain,
    doc: ClaimDoc,
    claimed_at: Timestamp,
    /// Past this (boot clock), the attempt's timeout: peers count it as lapsed.
    deadline: std::time::Duration,
    margin: SignedDuration,
    renewals: Arc<Renewals>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.renewer.abort();
        self.renewals.lose();
    }
}

impl Claim {
    pub fn attempt(&self) -> u64 {
        self.doc.attempt
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// The store's time of the claim.
    pub fn claimed_at(&self) -> Timestamp {
        self.claimed_at
    }

    /// Still held: no gap between renewals (measured on this machine's boot clock) ever
    /// exceeded the TTL, the attempt's timeout has not passed, and it was not finished or
    /// dropped. Once false, false for good: a process stopped, suspended or cut off from the
    /// store for longer has perhaps been taken over, and must act no more even after it
    /// renews again.
    pub fn held(&self) -> bool {
        held(&self.renewals, self.deadline)
    }

    /// The commit guard of this claim ([`guarded`]): it fails once [`Claim::held`] does,
    /// including after the claim is finished or dropped (work it started must not commit
    /// late).
    pub fn guard(&self) -> CommitGuard {
        let renewals = self.renewals.clone();
        let deadline = self.deadline;
        let chain = self.chain.clone();
        let attempt = self.doc.attempt;
        Arc::new(move || {
            if held(&renewals, deadline) {
                return Ok(());
            }
            Err(RepoError::Busy(format!(
                "attempt {attempt} of {chain} is no longer held (it went unrenewed for longer \
                 than its lifetime, passed its timeout, or ended), so another daemon may have \
                 taken the run over; nothing was committed"
            )))
        })
    }

    /// Renew now (a renewal is also made every TTL/5 in the background).
    pub async fn renew_now(&self) -> Result<Timestamp> {
        self.renewals.renew(&self.repo).await
    }

    /// After claiming: list the chain again and check, at this claim's store time, that
    /// no other attempt decides the run: none succeeded, and none that is neither ended,
    /// lapsed nor withdrawn was claimed at the same time as this one or earlier (by the
    /// store's clock). `false`: [`Claim::withdraw`] and watch again. Every claimant checks
    /// this, whatever made it claim (a free chain, a retry, a lapse), so two daemons that
    /// chose different numbers (a planted object between their listings) never both run:
    /// the later one sees the earlier; at the same instant both step back.
    pub async fn confirm(&self) -> Result<bool> {
        let view = self.repo.chain_view(&self.chain).await?;
        let mine = self.doc.attempt;
        Ok(
            !view.attempts.iter().filter(|a| a.attempt != mine).any(|a| {
                a.result().is_some_and(JobResult::succeeded)
                    || (a.done.is_none()
                        && !a.lapsed(self.claimed_at, self.margin)
                        && a.claimed_at <= self.claimed_at)
            }),
        )
    }

    /// Step back from the run: `.done withdrawn`.
    pub async fn withdraw(self) -> Result<()> {
        self.finish(Finish::with(JobResult::Withdrawn)).await
    }

    /// Record the result (`<a>.done`) and stop renewing.
    pub async fn finish(self, f: Finish) -> Result<()> {
        self.renewer.abort();
        self.renewals.lose();
        let doc = DoneDoc {
            version: 1,
            chain: self.chain.0.clone(),
            attempt: self.doc.attempt,
            writer: self.doc.writer.clone(),
            result: f.result,
            transient: f.transient,
            snapshots: f.snapshots,
            verification: f.verification,
            error_class: f.error_class,
            message: f.message,
            started: self.doc.started,
            finished: self.repo.clock.now(),
        };
        let name = format!("{}.{DONE}", self.chain.attempt_name(self.doc.attempt));
        let body = Bytes::from(keys::sign_doc(self.repo.signer(), &doc));
        match self.repo.store.create(&name, body).await {
            Ok(()) => Ok(()),
            // Planted before us: readers ignore what does not verify, so the attempt will
            // read as lapsed and be taken over; nothing better can be done without deletes.
            Err(e) if e.kind == ErrorKind::AlreadyExists => Err(RepoError::Refused(format!(
                "{name} exists and was not written by this daemon (planted?): the run will be \
                 taken over when the attempt lapses; remove the object with a full key"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

fn held(renewals: &Renewals, deadline: std::time::Duration) -> bool {
    !renewals.lost() && crate::clock::since_boot() <= deadline
}

/// What [`FullRepo::jobs_expire`] removed (or would).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobsExpired {
    /// Whole runs older than the kept period (beyond the newest kept per job).
    pub runs: usize,
    /// Renewals of runs old enough that every attempt in them has lapsed or ended.
    pub renewals: usize,
    /// Old epochs of leases.
    pub epochs: usize,
    /// Old objects under `jobs/` that belong to no run (planted).
    pub planted: usize,
}

/// Renewals only decide lapses; once every attempt is older than any timeout could be, they
/// decide nothing. Claims with longer timeouts keep theirs.
const RENEWALS_DECIDE_FOR: SignedDuration = SignedDuration::from_hours(48);

/// Lease epochs kept whatever their age.
const KEEP_EPOCHS: usize = 3;

impl FullRepo {
    /// Housekeeping for prune (FORMAT.md §20.4): remove the runs of each job whose newest
    /// object the store accepted before `before`, except the newest `keep` runs of the job;
    /// the renewals of older runs whose attempts can no longer be live; lease epochs below
    /// the newest [`KEEP_EPOCHS`] once they are old. Returns what went, or would go when
    /// `dry_run`.
    pub async fn jobs_expire(
        &self,
        before: Timestamp,
        keep: usize,
        dry_run: bool,
    ) -> Result<JobsExpired> {
        self.master("expiring job claims")?;
        let now = self.now();
        let (jobs, leases) = futures::try_join!(
            self.store
                .list(JOBS_PREFIX)
                .try_collect::<Vec<ObjectMeta>>(),
            self.store
                .list(LEASES_PREFIX)
                .try_collect::<Vec<ObjectMeta>>()
        )?;
        let mut out = JobsExpired::default();
        let mut remove = Vec::new();
        // job → run → objects
        let mut runs: BTreeMap<&str, BTreeMap<&str, Vec<&ObjectMeta>>> = BTreeMap::new();
        let mut junk = 0;
        for m in &jobs {
            let mut it = m.key[JOBS_PREFIX.len()..].splitn(3, '/');
            match (it.next(), it.next(), it.next()) {
                (Some(job), Some(t), Some(_)) if parse_run_time(t).is_some() => {
                    runs.entry(job).or_default().entry(t).or_default().push(m);
                }
                // Not a run of any job (planted): it never counts among the kept runs, and
                // goes once it is old.
                _ if now.duration_since(m.last_modified) > RENEWALS_DECIDE_FOR => {
                    junk += 1;
                    remove.push(m.key.clone());
                }
                _ => {}
            }
        }
        out.planted = junk;
        for per_job in runs.values() {
            for (i, objs) in per_job.values().rev().enumerate() {
                let newest = objs.iter().map(|m| m.last_modified).max();
                if i >= keep && newest.is_some_and(|t| t < before) {
                    out.runs += 1;
                    remove.extend(objs.iter().map(|m| m.key.clone()));
                } else if newest.is_some_and(|t| now.duration_since(t) > RENEWALS_DECIDE_FOR) {
                    let renewals: Vec<String> = objs
                        .iter()
                        .filter(|m| {
                            m.key
                                .rsplit_once('/')
                                .and_then(|(_, r)| parse_part(r))
                                .is_some_and(|(_, p)| p == Part::Renewal)
                        })
                        .map(|m| m.key.clone())
                        .collect();
                    out.renewals += renewals.len();
                    remove.extend(renewals);
                }
            }
        }
        let mut epochs: BTreeMap<&str, BTreeMap<u64, Vec<&ObjectMeta>>> = BTreeMap::new();
        for m in &leases {
            if let Some((name, rest)) = m.key[LEASES_PREFIX.len()..].split_once('/') {
                if let Some((a, _)) = parse_part(rest) {
                    epochs
                        .entry(name)
                        .or_default()
                        .entry(a)
                        .or_default()
                        .push(m);
                }
            }
        }
        for per_lease in epochs.values() {
            for objs in per_lease.values().rev().skip(KEEP_EPOCHS) {
                if objs
                    .iter()
                    .all(|m| now.duration_since(m.last_modified) > RENEWALS_DECIDE_FOR)
                {
                    out.epochs += 1;
                    remove.extend(objs.iter().map(|m| m.key.clone()));
                }
            }
        }
        if !dry_run {
            // Owned names: a closure over borrowed ones makes a future rustc cannot prove
            // `Send` for every lifetime (daemons run prune in a task).
            futures::stream::iter(remove.clone().into_iter().map(|name| async move {
                match self.store.delete(&name).await {
                    Err(e) if e.kind != ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }))
            .buffer_unordered(crate::repo::FETCH_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
