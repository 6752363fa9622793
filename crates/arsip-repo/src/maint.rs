//! Coordination between writers and prune without locks (FORMAT.md §17).
//!
//! - Every writer session creates `sessions/<id>` (create-only) before it reads the index,
//!   records in it the newest prune generation it knew, then loads the newest **plan** and
//!   renews itself by creating `sessions/<id>.<n>` while it runs.
//! - A prune publishes plans `prune/<g>` (root-signed): the packs it condemned and the chunk
//!   ids (8-byte prefixes) that then have no surviving copy. Writers never deduplicate
//!   against a hidden chunk, so they store it again rather than reference it (invariant a).
//! - Prune deletes what generation `h` condemned only once every session that recorded a
//!   generation below `h` has ended: committed (its manifest is then scanned and what it
//!   references is kept), or stopped renewing for longer than its TTL on the store's clock,
//!   in which case prune **fences** it first (`fences/<id>`, then `fences/<id>.accepted`
//!   listing the manifests of that session it saw). Readers refuse a fenced session's
//!   manifests that the accepted list does not name, and the writer's own commit checks
//!   the fence before and after its manifest (invariant b).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arsip_storage::{ErrorKind, ObjectMeta};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{RepoError, Result};
use crate::format::{ChunkId, WriterId, ROOT_WRITER};
use crate::keys;
use crate::repo::Repository;

pub(crate) const SESSIONS_PREFIX: &str = "sessions/";
pub(crate) const PRUNE_PREFIX: &str = "prune/";
pub(crate) const FENCES_PREFIX: &str = "fences/";
const ACCEPTED_SUFFIX: &str = ".accepted";
const CLAIM_SUFFIX: &str = ".claim";

/// How long sessions live without renewal, and the margins prune allows on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTiming {
    /// A session not renewed for longer than this (plus `margin`) is dead.
    pub ttl: jiff::SignedDuration,
    /// How often a running session renews itself.
    pub renew_every: jiff::SignedDuration,
    /// Slack for clock granularity and in-flight requests.
    pub margin: jiff::SignedDuration,
    /// A session older than this is treated as dead whatever its renewals (a writer cannot
    /// hold prune off forever).
    pub max_age: jiff::SignedDuration,
}

impl Default for SessionTiming {
    fn default() -> Self {
        SessionTiming {
            ttl: jiff::SignedDuration::from_mins(10),
            renew_every: jiff::SignedDuration::from_mins(2),
            margin: jiff::SignedDuration::from_mins(2),
            max_age: jiff::SignedDuration::from_hours(7 * 24),
        }
    }
}

impl SessionTiming {
    /// The default timing. In builds with the `test-hooks` feature (test builds only),
    /// `ARSIP_TEST_SESSION_TTL` (seconds) scales every period from a shorter TTL, so that
    /// end-to-end tests can let a stopped writer's session expire; every other build
    /// ignores the variable.
    pub fn from_env() -> SessionTiming {
        #[cfg(feature = "test-hooks")]
        if let Some(s) = std::env::var("ARSIP_TEST_SESSION_TTL")
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            return SessionTiming::with_ttl(jiff::SignedDuration::from_secs(s.max(1)));
        }
        SessionTiming::default()
    }

    /// Every period scaled from one TTL (tests shorten it to seconds).
    pub fn with_ttl(ttl: jiff::SignedDuration) -> SessionTiming {
        SessionTiming {
            ttl,
            renew_every: ttl / 5,
            margin: ttl / 5,
            ..Default::default()
        }
    }
}

/// What a writer session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Backup,
    Prune,
}

/// `sessions/<id>`, signed by the session's writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionDoc {
    pub version: u32,
    pub session: String,
    pub writer: String,
    pub purpose: Purpose,
    pub host: String,
    pub ttl_secs: u64,
    /// The newest prune generation whose plan the writer knew before creating this object.
    pub generation: u64,
    pub started: jiff::Timestamp,
}

/// `sessions/<id>.end`, signed by the session's writer: the session committed (or gave up)
/// and will reference nothing more.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EndDoc {
    pub version: u32,
    pub session: String,
    pub writer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// One pack a plan condemns, and the generation that condemned it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Condemned {
    pub pack: String,
    pub since: u64,
}

/// `prune/<g>`, signed by the root writer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PlanDoc {
    pub version: u32,
    pub generation: u64,
    pub session: String,
    pub created: jiff::Timestamp,
    /// Packs condemned and perhaps already deleted (deletion is recorded by the next plan).
    pub condemned: Vec<Condemned>,
    /// Packs deleted that some index still names.
    pub deleted: Vec<String>,
    /// Chunk ids with no surviving copy: the first 8 bytes of each, hex, concatenated.
    pub hidden: String,
}

/// `prune/<g>.claim`, signed by the root writer: one prune at a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClaimDoc {
    pub version: u32,
    pub generation: u64,
    pub session: String,
    pub host: String,
    pub started: jiff::Timestamp,
}

/// `fences/<id>` (intent) and `fences/<id>.accepted`, signed by the root writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FenceDoc {
    pub version: u32,
    pub session: String,
    pub writer: String,
    pub created: jiff::Timestamp,
    /// Only in `.accepted`: the manifests of the session that count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Vec<String>>,
}

/// The newest plan as writers and readers use it.
#[derive(Debug, Clone, Default)]
pub struct MaintState {
    pub(crate) generation: u64,
    pub(crate) condemned: HashMap<[u8; 32], u64>,
    pub(crate) deleted: HashSet<[u8; 32]>,
    pub(crate) hidden: HashSet<u64>,
}

impl MaintState {
    #[cfg(test)]
    fn is_hidden(&self, id: &ChunkId) -> bool {
        !self.hidden.is_empty() && self.hidden.contains(&prefix(id))
    }

    /// Condemned or deleted: the pack may be gone.
    pub(crate) fn is_removed(&self, pack: &[u8; 32]) -> bool {
        self.condemned.contains_key(pack) || self.deleted.contains(pack)
    }

    fn from_plan(p: &PlanDoc, object: &str) -> Result<MaintState> {
        let bad = |what: &str| RepoError::corrupt(object, format!("bad {what}"));
        let mut s = MaintState {
            generation: p.generation,
            ..Default::default()
        };
        for c in &p.condemned {
            s.condemned.insert(
                keys::decode32(&c.pack, "pack id").map_err(|_| bad("pack id"))?,
                c.since,
            );
        }
        for d in &p.deleted {
            s.deleted
                .insert(keys::decode32(d, "pack id").map_err(|_| bad("pack id"))?);
        }
        if !p.hidden.len().is_multiple_of(16) {
            return Err(bad("hidden list"));
        }
        let raw = hex::decode(&p.hidden).map_err(|_| bad("hidden list"))?;
        s.hidden = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect();
        Ok(s)
    }
}

pub(crate) fn prefix(id: &ChunkId) -> u64 {
    u64::from_be_bytes(id[..8].try_into().unwrap())
}

pub(crate) fn encode_hidden(ids: impl IntoIterator<Item = u64>) -> String {
    let mut v: Vec<u64> = ids.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out = String::with_capacity(v.len() * 16);
    for p in v {
        out.push_str(&hex::encode(p.to_be_bytes()));
    }
    out
}

pub(crate) fn plan_name(g: u64) -> String {
    format!("{PRUNE_PREFIX}{g:020}")
}

pub(crate) fn claim_name(g: u64) -> String {
    format!("{PRUNE_PREFIX}{g:020}{CLAIM_SUFFIX}")
}

/// What a name under `prune/` is: `(generation, is_claim)`.
pub(crate) fn parse_prune_name(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix(PRUNE_PREFIX)?;
    let (num, claim) = match rest.strip_suffix(CLAIM_SUFFIX) {
        Some(n) => (n, true),
        None => (rest, false),
    };
    if num.len() != 20 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, claim))
}

pub(crate) fn fence_name(session: &str) -> String {
    format!("{FENCES_PREFIX}{session}")
}

pub(crate) fn accepted_name(session: &str) -> String {
    format!("{FENCES_PREFIX}{session}{ACCEPTED_SUFFIX}")
}

/// A session id: 16 random bytes, hex.
fn is_session_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Which session a name under `sessions/` belongs to, and whether it is the session object
/// itself (not a renewal).
pub(crate) fn parse_session_name(name: &str) -> Option<(&str, bool)> {
    let rest = name.strip_prefix(SESSIONS_PREFIX)?;
    let (id, tail) = match rest.split_once('.') {
        Some((id, n)) => (id, Some(n)),
        None => (rest, None),
    };
    if !is_session_id(id) {
        return None;
    }
    match tail {
        None => Some((id, true)),
        Some("end") => Some((id, false)),
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => Some((id, false)),
        Some(_) => None,
    }
}

/// A fence as readers apply it: `None` while prune has not yet listed the session's
/// manifests (nothing it condemned can have been deleted yet), else the manifests that count.
pub(crate) type Fences = HashMap<String, Option<HashSet<String>>>;

impl Repository {
    /// The newest plan that verifies under the root key (an unsigned or forged object under
    /// `prune/` is ignored with a warning: any credential could have planted it).
    pub(crate) async fn maint_state(&self) -> Result<MaintState> {
        let mut plans: Vec<(u64, String)> = self
            .store
            .list(PRUNE_PREFIX)
            .try_filter_map(|m| async move {
                Ok(parse_prune_name(&m.key)
                    .filter(|(_, claim)| !claim)
                    .map(|(g, _)| (g, m.key)))
            })
            .try_collect()
            .await?;
        plans.sort();
        while let Some((_, name)) = plans.pop() {
            let raw = match self.store.get(&name).await {
                Ok(r) => r,
                // Removed by a newer prune after we listed it: a newer plan exists.
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            match keys::verify_doc::<PlanDoc>(&name, &raw, &self.root_verify_key())
                .and_then(|p| MaintState::from_plan(&p, &name))
            {
                Ok(s) => return Ok(s),
                Err(e) => tracing::warn!(object = %name, error = %e, "ignoring prune plan"),
            }
        }
        Ok(MaintState::default())
    }

    /// Every fence that verifies under the root key.
    pub(crate) async fn fences(&self) -> Result<Fences> {
        let metas: Vec<ObjectMeta> = self.store.list(FENCES_PREFIX).try_collect().await?;
        let mut out: Fences = HashMap::new();
        let mut accepted: Vec<(String, String)> = Vec::new();
        for m in &metas {
            let rest = &m.key[FENCES_PREFIX.len()..];
            match rest.strip_suffix(ACCEPTED_SUFFIX) {
                Some(id) if is_session_id(id) => accepted.push((id.to_string(), m.key.clone())),
                None if is_session_id(rest) => {
                    if self.read_fence(&m.key).await?.is_some() {
                        out.entry(rest.to_string()).or_insert(None);
                    }
                }
                _ => tracing::warn!(object = %m.key, "ignoring unknown object under fences/"),
            }
        }
        for (id, name) in accepted {
            if let Some(doc) = self.read_fence(&name).await? {
                if doc.session == id {
                    out.insert(
                        id,
                        Some(doc.accepted.unwrap_or_default().into_iter().collect()),
                    );
                }
            }
        }
        Ok(out)
    }

    async fn read_fence(&self, name: &str) -> Result<Option<FenceDoc>> {
        let raw = match self.store.get(name).await {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match keys::verify_doc::<FenceDoc>(name, &raw, &self.root_verify_key()) {
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                tracing::warn!(object = %name, error = %e, "ignoring fence");
                Ok(None)
            }
        }
    }

    fn root_verify_key(&self) -> [u8; 32] {
        self.root_verify
    }

    /// Has prune fenced session `id` (its intent exists and verifies)?
    async fn fenced(&self, id: &str) -> Result<bool> {
        Ok(self.read_fence(&fence_name(id)).await?.is_some())
    }

    /// The store's clock now: the time the store gives a fresh object of this session.
    pub(crate) async fn stamp(&self, name: &str, body: Bytes) -> Result<jiff::Timestamp> {
        let meta = self.store.create_with_meta(name, body).await?;
        Ok(meta.last_modified)
    }
}

/// A running writer session (FORMAT.md §17.2). Dropping it stops the renewals; the session
/// then expires, and prune removes its objects.
pub struct Session {
    id: String,
    repo: Arc<Repository>,
    started_store: jiff::Timestamp,
    renewals: Arc<Renewals>,
    renewer: tokio::task::JoinHandle<()>,
}

/// The renewals of a session or a job claim (`<base>.<n>`, FORMAT.md §17.2, §20): the next
/// sequence number, and when the last one was acknowledged ([`crate::clock::since_boot`],
/// which counts while the machine sleeps, so a suspended holder sees its lease as stale).
#[derive(Debug)]
pub(crate) struct Renewals {
    base: String,
    /// The lifetime without renewal: once a gap between acknowledgements exceeded it, the
    /// holder is [`Renewals::lost`] for good, whatever later renewals say (another holder
    /// may have taken over meanwhile).
    ttl: std::time::Duration,
    last: std::sync::Mutex<std::time::Duration>,
    lost: std::sync::atomic::AtomicBool,
}

impl Renewals {
    /// Renewals of the object `base`, which was just created, by a holder that promised to
    /// renew within `ttl`.
    pub(crate) fn new(base: String, ttl: jiff::SignedDuration) -> Arc<Renewals> {
        Arc::new(Renewals {
            base,
            ttl: std::time::Duration::try_from(ttl).unwrap_or_default(),
            last: std::sync::Mutex::new(crate::clock::since_boot()),
            lost: false.into(),
        })
    }

    /// Create a renewal object; its store time. Names are `<base>.<random>`, so that
    /// objects planted under the next names cannot make a renewal loop.
    pub(crate) async fn renew(&self, repo: &Repository) -> Result<jiff::Timestamp> {
        self.check_gap();
        loop {
            let n = u64::from_le_bytes(crypto::random_bytes::<8>()) >> 1;
            let name = format!("{}.{n}", self.base);
            match repo
                .store
                .create_with_meta(&name, Bytes::from_static(b"1"))
                .await
            {
                Ok(meta) => {
                    self.check_gap();
                    *self.last.lock().unwrap() = crate::clock::since_boot();
                    return Ok(meta.last_modified);
                }
                Err(e) if e.kind == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Latch [`Renewals::lost`] when the time since the last acknowledgement exceeds the TTL.
    fn check_gap(&self) {
        if self.age() > self.ttl {
            self.lose();
        }
    }

    /// Since the last acknowledged renewal (or the creation of the base object).
    pub(crate) fn age(&self) -> std::time::Duration {
        crate::clock::since_boot().saturating_sub(*self.last.lock().unwrap())
    }

    /// The holder stops holding (it finished, dropped its claim, or missed a renewal).
    pub(crate) fn lose(&self) {
        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Not held any more: a renewal gap exceeded the TTL at some point (now included), or
    /// the holder let go. Never becomes false again.
    pub(crate) fn lost(&self) -> bool {
        self.check_gap();
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Renew every `every` until the returned task is aborted. A failed renewal is retried
    /// at the next tick: a holder that cannot renew expires, and its commit is then refused.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        repo: Arc<Repository>,
        every: jiff::SignedDuration,
    ) -> tokio::task::JoinHandle<()> {
        let every =
            std::time::Duration::try_from(every).unwrap_or(std::time::Duration::from_secs(60));
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = me.renew(&repo).await {
                    tracing::warn!(object = %me.base, error = %e, "could not renew");
                }
            }
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl Session {
    /// Open a session: read the newest generation, create the session object, then load the
    /// newest plan (which may be newer than the one recorded: the writer then knows more
    /// than prune assumes, never less).
    pub(crate) async fn open(
        repo: &Arc<Repository>,
        purpose: Purpose,
    ) -> Result<(Session, MaintState)> {
        let timing = repo.session_timing();
        let known = repo.maint_state().await?;
        let id = hex::encode(crypto::random_bytes::<16>());
        let doc = SessionDoc {
            version: 1,
            session: id.clone(),
            writer: hex::encode(repo.writer_id),
            purpose,
            host: repo.host().to_string(),
            ttl_secs: timing.ttl.as_secs().max(1) as u64,
            generation: known.generation,
            started: repo.clock.now(),
        };
        let body = keys::sign_doc(repo.signer(), &doc);
        let started_store = repo
            .stamp(&format!("{SESSIONS_PREFIX}{id}"), Bytes::from(body))
            .await?;
        let state = repo.maint_state().await?;
        let renewals = Renewals::new(format!("{SESSIONS_PREFIX}{id}"), timing.ttl);
        let renewer = renewals.spawn(repo.clone(), timing.renew_every);
        Ok((
            Session {
                id,
                repo: repo.clone(),
                started_store,
                renewals,
                renewer,
            },
            state,
        ))
    }

    /// Renew now; the store's time of the renewal (the store's clock, now).
    pub(crate) async fn renew_now(&self) -> Result<jiff::Timestamp> {
        self.renewals.renew(&self.repo).await
    }

    /// For a lease holder about to delete: renew when the last renewal is older than half
    /// the TTL, and refuse once any gap between renewals exceeded the TTL (this process was
    /// stopped or cut off long enough for another prune to take over; a renewal after that
    /// does not make its view fresh again).
    pub(crate) async fn fresh(&self, t: &SessionTiming) -> Result<()> {
        let age = self.renewals.age();
        let ttl = std::time::Duration::try_from(t.ttl).unwrap_or_default();
        if self.renewals.lost() {
            return Err(RepoError::Busy(format!(
                "this prune's session {} went unrenewed for longer than its lifetime ({} s) at \
                 some point (the process was paused or cut off from the store); it stops so \
                 that it cannot act on a stale view. Run prune again",
                self.id,
                ttl.as_secs()
            )));
        }
        if age > ttl / 2 {
            self.renew_now().await?;
        }
        Ok(())
    }

    /// Say that the session is over (after its manifest, which it names): prune then need
    /// not wait for it. Best effort: without it the session simply expires.
    pub(crate) async fn end(&self, snapshot: Option<&str>) {
        self.renewer.abort();
        let doc = EndDoc {
            version: 1,
            session: self.id.clone(),
            writer: hex::encode(self.repo.writer_id),
            snapshot: snapshot.map(str::to_string),
        };
        let body = keys::sign_doc(self.repo.signer(), &doc);
        let name = format!("{SESSIONS_PREFIX}{}.end", self.id);
        if let Err(e) = self.repo.store.create(&name, Bytes::from(body)).await {
            tracing::warn!(session = %self.id, error = %e, "could not record the end of the session");
        }
    }

    /// End the session and remove its objects (maintenance credentials only: writers leave
    /// theirs for prune).
    pub(crate) async fn close(self) -> Result<()> {
        self.renewer.abort();
        let prefix = format!("{SESSIONS_PREFIX}{}", self.id);
        let names: Vec<String> =
            self.repo
                .store
                .list(SESSIONS_PREFIX)
                .try_filter_map(|m| {
                    let p = prefix.clone();
                    async move {
                        Ok((m.key == p || m.key.starts_with(&format!("{p}."))).then_some(m.key))
                    }
                })
                .try_collect()
                .await?;
        for n in names {
            self.repo.store.delete(&n).await?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn pause(&self) {
        self.renewer.abort();
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the store created the session object (the store's clock).
    pub fn started_store(&self) -> jiff::Timestamp {
        self.started_store
    }

    /// Before the manifest: refuse if prune has fenced this session (it stopped renewing
    /// long enough for prune to treat it as dead and perhaps delete what it references).
    pub(crate) async fn check_not_fenced(&self) -> Result<()> {
        if self.repo.fenced(&self.id).await? {
            return Err(self.fenced_error(None));
        }
        Ok(())
    }

    /// After the manifest `snapshot` was created: a fence that appeared meanwhile may or may
    /// not have seen it, so the backup is reported as failed unless the fence accepted it.
    pub(crate) async fn confirm_commit(&self, snapshot: &str) -> Result<()> {
        if !self.repo.fenced(&self.id).await? {
            return Ok(());
        }
        if let Some(doc) = self.repo.read_fence(&accepted_name(&self.id)).await? {
            if doc
                .accepted
                .unwrap_or_default()
                .iter()
                .any(|s| s == snapshot)
            {
                return Ok(());
            }
        }
        Err(self.fenced_error(Some(snapshot)))
    }

    fn fenced_error(&self, snapshot: Option<&str>) -> RepoError {
        let what = match snapshot {
            Some(id) => {
                format!("snapshot {id} was written after prune fenced it and does not count")
            }
            None => "nothing was committed".to_string(),
        };
        RepoError::Busy(format!(
            "this backup's session {} stopped renewing for longer than its lifetime (the process \
             was paused or cut off from the store) and prune fenced it, so data it references may \
             have been removed; {what}. Run the backup again",
            self.id
        ))
    }
}

/// A session as prune sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub session: String,
    pub writer: String,
    pub purpose: Purpose,
    pub host: String,
    pub generation: u64,
    /// The store's time of its first and newest objects.
    pub first_seen: jiff::Timestamp,
    pub last_seen: jiff::Timestamp,
    /// Its writer recorded its end.
    pub ended: bool,
    #[serde(skip)]
    pub(crate) ttl: jiff::SignedDuration,
    #[serde(skip)]
    pub(crate) objects: Vec<String>,
}

impl SessionInfo {
    /// Dead at store time `now`: not renewed within its TTL plus the margin, or older than
    /// the maximum age.
    pub(crate) fn dead(&self, now: jiff::Timestamp, t: &SessionTiming) -> bool {
        now.duration_since(self.last_seen) > self.ttl + t.margin
            || now.duration_since(self.first_seen) > t.max_age
    }
}

impl Repository {
    /// Every session whose object verifies under its writer's key, and the names of objects
    /// under `sessions/` that belong to no such session (planted or orphaned renewals).
    pub(crate) async fn sessions(&self) -> Result<(Vec<SessionInfo>, Vec<String>)> {
        let metas: Vec<ObjectMeta> = self.store.list(SESSIONS_PREFIX).try_collect().await?;
        let mut by_id: HashMap<String, Vec<&ObjectMeta>> = HashMap::new();
        let mut junk = Vec::new();
        for m in &metas {
            match parse_session_name(&m.key) {
                Some((id, _)) => by_id.entry(id.to_string()).or_default().push(m),
                None => junk.push(m.key.clone()),
            }
        }
        let read = futures::stream::iter(by_id.into_iter().map(|(id, objs)| async move {
            let main = format!("{SESSIONS_PREFIX}{id}");
            let doc = match self.read_session(&main).await? {
                Some(d) if d.session == id => d,
                _ => return Ok(Err(objs)),
            };
            let end = format!("{main}.end");
            let ended = objs.iter().any(|m| m.key == end)
                && self
                    .read_signed_by::<EndDoc>(&end, &doc.writer)
                    .await?
                    .is_some_and(|e| e.session == id && e.writer == doc.writer);
            let first = objs
                .iter()
                .find(|m| m.key == main)
                .map(|m| m.last_modified)
                .unwrap_or_else(|| objs[0].last_modified);
            let last = objs.iter().map(|m| m.last_modified).max().unwrap_or(first);
            Ok::<_, RepoError>(Ok(SessionInfo {
                session: id,
                writer: doc.writer,
                purpose: doc.purpose,
                host: doc.host,
                generation: doc.generation,
                ended,
                first_seen: first,
                last_seen: last,
                ttl: jiff::SignedDuration::from_secs(doc.ttl_secs.min(i64::MAX as u64) as i64),
                objects: objs.iter().map(|m| m.key.clone()).collect(),
            }))
        }))
        .buffer_unordered(crate::repo::FETCH_CONCURRENCY);
        let mut out = Vec::new();
        let mut read = std::pin::pin!(read);
        while let Some(r) = read.next().await {
            match r? {
                Ok(info) => out.push(info),
                Err(objs) => junk.extend(objs.iter().map(|m| m.key.clone())),
            }
        }
        junk.sort();
        out.sort_by_key(|s| s.first_seen);
        Ok((out, junk))
    }

    /// A session object, if it verifies under the key of the writer it names.
    async fn read_session(&self, name: &str) -> Result<Option<SessionDoc>> {
        let raw = match self.store.get(name).await {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Ok(claimed) = keys::unverified_body::<SessionDoc>(name, &raw) else {
            return Ok(None);
        };
        self.verify_by(name, &raw, &claimed.writer).await
    }

    /// A document at `name` signed by `writer` (hex), if it verifies.
    pub(crate) async fn read_signed_by<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
        writer: &str,
    ) -> Result<Option<T>> {
        let raw = match self.store.get(name).await {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.verify_by(name, &raw, writer).await
    }

    async fn verify_by<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
        raw: &[u8],
        writer: &str,
    ) -> Result<Option<T>> {
        match self.verify_signed_by(name, raw, writer).await {
            Ok(doc) => Ok(Some(doc)),
            Err(e @ RepoError::Storage(_)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// A signed document (§8.1) at `name` that verifies under the key of `writer` (hex):
    /// the root's, or a registered writer's. Damage names the object.
    pub(crate) async fn verify_signed_by<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
        raw: &[u8],
        writer: &str,
    ) -> Result<T> {
        let writer: WriterId = hex::decode(writer)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| RepoError::corrupt(name, "bad writer id"))?;
        let key = if writer == ROOT_WRITER {
            Some(self.root_verify)
        } else {
            self.writer_verdict(&writer).await?.0
        };
        let key = key.ok_or_else(|| RepoError::corrupt(name, "written by an unknown writer"))?;
        keys::verify_doc(name, raw, &key)
    }
}

/// Create a root-signed document at `name`, create-only.
pub(crate) async fn create_signed<T: Serialize>(
    repo: &Repository,
    name: &str,
    doc: &T,
) -> Result<()> {
    let body = keys::sign_doc(repo.signer(), doc);
    Ok(repo.store.create(name, Bytes::from(body)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(plan_name(7), "prune/00000000000000000007");
        assert_eq!(parse_prune_name(&plan_name(7)), Some((7, false)));
        assert_eq!(parse_prune_name(&claim_name(9)), Some((9, true)));
        for bad in [
            "prune/7",
            "prune/0000000000000000000x",
            "prune/00000000000000000007.x",
        ] {
            assert_eq!(parse_prune_name(bad), None, "{bad}");
        }
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_session_name(&format!("sessions/{id}")),
            Some((id, true))
        );
        assert_eq!(
            parse_session_name(&format!("sessions/{id}.12")),
            Some((id, false))
        );
        for bad in ["sessions/x", "sessions/0123.1", &format!("sessions/{id}.a")] {
            assert_eq!(parse_session_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn hidden_round_trip() {
        let ids: Vec<ChunkId> = (0..5u8).map(|n| *blake3::hash(&[n]).as_bytes()).collect();
        let doc = PlanDoc {
            version: 1,
            generation: 3,
            hidden: encode_hidden(ids[..3].iter().map(prefix)),
            ..Default::default()
        };
        let s = MaintState::from_plan(&doc, "prune/x").unwrap();
        assert!(ids[..3].iter().all(|i| s.is_hidden(i)));
        assert!(ids[3..].iter().all(|i| !s.is_hidden(i)));
    }
}
