//! Capabilities in types. [`Repository::open`] returns [`Opened`]: a [`FullRepo`] when the
//! credentials hold the master secret (a password or a key file), an [`AgentRepo`] when they
//! are an agent file. Both dereference to the shared [`Repository`], which writes (backups,
//! stream objects, records) and reads nothing sealed. Everything that decrypts or signs as the
//! root exists only on [`FullRepo`]: snapshot listings, [`Reader`](crate::read::Reader),
//! [`check`](crate::check::check), stream-object reads, key and agent management. There is no
//! way from a [`Repository`] or an [`AgentRepo`] to a [`FullRepo`], so an agent path that
//! tries to decrypt does not compile.
//!
//! The run-time check stays as defence in depth: every decrypting method still asks the
//! handle for its master keys and fails with [`RepoError::NeedsFullKey`] without them.

use std::ops::Deref;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::error::{RepoError, Result};
use crate::keys::{AgentFile, KeyFile, KeySlot};
use crate::repo::{LocalSettings, Repository, SnapshotListing, Writer};
use crate::snapshot::Snapshot;

/// A repository opened with a full key: everything [`Repository`] does, and reading.
#[derive(Debug, Clone)]
pub struct FullRepo(Arc<Repository>);

/// A repository opened with agent credentials: only what [`Repository`] does (write backups,
/// stream objects and records; read nothing sealed).
///
/// Reading through an agent handle does not compile:
///
/// ```compile_fail
/// # async fn f(agent: arsip_repo::AgentRepo) {
/// let _ = agent.snapshot_listing().await;
/// # }
/// ```
/// ```compile_fail
/// # async fn f(agent: arsip_repo::AgentRepo) {
/// let _ = arsip_repo::Reader::open(&agent).await;
/// # }
/// ```
/// ```compile_fail
/// # async fn f(agent: arsip_repo::AgentRepo) {
/// let _ = agent.wal_get("ns", "file").await;
/// # }
/// ```
///
/// while the same calls on a full handle do:
///
/// ```
/// # async fn f(full: arsip_repo::FullRepo) -> arsip_repo::Result<()> {
/// let _ = full.snapshot_listing().await?;
/// let _ = arsip_repo::Reader::open(&full).await?;
/// let _ = full.wal_get("ns", "file").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AgentRepo(Arc<Repository>);

/// What [`Repository::open`] opened, by the capability of the credentials.
#[derive(Debug, Clone)]
pub enum Opened {
    Full(FullRepo),
    Agent(AgentRepo),
}

impl Deref for FullRepo {
    type Target = Arc<Repository>;
    fn deref(&self) -> &Arc<Repository> {
        &self.0
    }
}

impl Deref for AgentRepo {
    type Target = Arc<Repository>;
    fn deref(&self) -> &Arc<Repository> {
        &self.0
    }
}

impl From<FullRepo> for Arc<Repository> {
    fn from(r: FullRepo) -> Self {
        r.0
    }
}

impl From<AgentRepo> for Arc<Repository> {
    fn from(r: AgentRepo) -> Self {
        r.0
    }
}

impl From<Opened> for Arc<Repository> {
    fn from(o: Opened) -> Self {
        match o {
            Opened::Full(r) => r.0,
            Opened::Agent(r) => r.0,
        }
    }
}

/// Replace the local settings of a handle nobody shares yet (right after open or init).
fn set_local(repo: Arc<Repository>, local: LocalSettings) -> Arc<Repository> {
    match Arc::try_unwrap(repo) {
        Ok(r) => Arc::new(r.with_local(local)),
        Err(_) => panic!("with_local must be called before the handle is shared"),
    }
}

impl Opened {
    /// The shared handle, whatever the capability (backups, stream objects, records).
    pub fn shared(&self) -> &Arc<Repository> {
        match self {
            Opened::Full(r) => &r.0,
            Opened::Agent(r) => &r.0,
        }
    }

    /// The full-key handle, or [`RepoError::NeedsFullKey`] naming `what` for agent
    /// credentials: where a front end's credentials meet an operation that reads.
    pub fn full(self, what: &'static str) -> Result<FullRepo> {
        match self {
            Opened::Full(r) => Ok(r),
            Opened::Agent(_) => Err(RepoError::NeedsFullKey(what)),
        }
    }

    /// Use these local resources from now on. Call it before cloning the handle.
    ///
    /// # Panics
    /// If the handle was cloned already.
    pub fn with_local(self, local: LocalSettings) -> Self {
        match self {
            Opened::Full(r) => Opened::Full(r.with_local(local)),
            Opened::Agent(r) => Opened::Agent(AgentRepo(set_local(r.0, local))),
        }
    }
}

impl Deref for Opened {
    type Target = Arc<Repository>;
    fn deref(&self) -> &Arc<Repository> {
        self.shared()
    }
}

impl FullRepo {
    /// Wrap a handle that holds the master secret. Crate-private: capabilities come only
    /// from opening with full credentials (or `init`).
    pub(crate) fn new(repo: Arc<Repository>) -> FullRepo {
        debug_assert!(!repo.is_agent());
        FullRepo(repo)
    }

    /// The shared handle (for [`SnapshotTxn`](crate::txn::SnapshotTxn) and sessions).
    pub fn shared(&self) -> Arc<Repository> {
        self.0.clone()
    }

    /// Use these local resources from now on; see [`Opened::with_local`].
    pub fn with_local(self, local: LocalSettings) -> Self {
        FullRepo(set_local(self.0, local))
    }

    // ---- snapshots ----------------------------------------------------------------------

    /// Every snapshot that authenticates, oldest first, and the object names and errors of
    /// manifests that do not, snapshots of revoked writers included (callers MUST show
    /// those: a snapshot list must not silently shrink).
    pub async fn snapshots_report(&self) -> Result<(Vec<Snapshot>, Vec<(String, RepoError)>)> {
        self.0.snapshots_report().await
    }

    /// Every snapshot, sorted into those readers accept (oldest first by effective time),
    /// damaged manifests, and manifests of revoked writers (authentic, but no longer
    /// accepted: not damage).
    pub async fn snapshot_listing(&self) -> Result<SnapshotListing> {
        self.0.snapshot_listing().await
    }

    // ---- stream objects -----------------------------------------------------------------

    /// Fetch one file of a stream: `Ok(None)` only when no such object exists. Verifies the
    /// writer's signature, decrypts and checks the content hash.
    /// Forget snapshots: delete their manifests (the data goes at the next prune). A
    /// snapshot already gone is not an error: another `forget` got there first.
    pub async fn forget(&self, ids: &[String]) -> Result<()> {
        self.master("forget")?;
        for id in ids {
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(RepoError::Invalid(format!("{id:?} is not a snapshot id")));
            }
            self.0
                .store
                .delete(&format!("{}{id}", crate::snapshot::SNAPSHOTS_PREFIX))
                .await?;
        }
        Ok(())
    }

    /// Delete `names`, a few at a time (missing objects are no error).
    pub(crate) async fn delete_all(&self, names: Vec<String>) -> Result<()> {
        futures::stream::iter(names)
            .map(|name| async move { self.0.store.delete(&name).await })
            .buffer_unordered(crate::repo::FETCH_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Remove stream objects (WAL retention; maintenance credentials only). Missing ones
    /// are not an error.
    pub async fn wal_remove(&self, namespace: &str, files: &[String]) -> Result<()> {
        self.master("removing WAL")?;
        let names = files
            .iter()
            .map(|f| crate::wal::object_name(namespace, f))
            .collect::<Result<Vec<String>>>()?;
        self.delete_all(names).await
    }

    pub async fn wal_get(&self, namespace: &str, file: &str) -> Result<Option<Vec<u8>>> {
        self.0.wal_get(namespace, file).await
    }

    // ---- key slots and agents -----------------------------------------------------------

    pub async fn add_password(&self, password: &[u8], label: &str) -> Result<KeySlot> {
        self.0.add_password(password, label).await
    }

    pub async fn add_keyfile(&self, label: &str) -> Result<(KeySlot, KeyFile)> {
        self.0.add_keyfile(label).await
    }

    /// Remove a key slot. Refuses to remove the last one.
    pub async fn remove_slot(&self, id: &str) -> Result<()> {
        self.0.remove_slot(id).await
    }

    /// Register a new agent writer and return its credentials file.
    pub async fn add_agent(&self, label: &str) -> Result<AgentFile> {
        self.0.add_agent(label).await
    }

    /// Declare an agent compromised: readers refuse everything it ever signed.
    pub async fn revoke_agent(&self, writer_hex: &str) -> Result<Writer> {
        self.0.revoke_agent(writer_hex).await
    }

    /// Retire an agent: what the store accepted from it before this call stays valid,
    /// nothing after. Refused on a store that reports no object times.
    pub async fn retire_agent(&self, writer_hex: &str) -> Result<Writer> {
        self.0.retire_agent(writer_hex).await
    }
}

impl AgentRepo {
    pub(crate) fn new(repo: Arc<Repository>) -> AgentRepo {
        AgentRepo(repo)
    }

    /// The shared handle.
    pub fn shared(&self) -> Arc<Repository> {
        self.0.clone()
    }
}
