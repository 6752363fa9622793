//! An opened repository: its store, config and credentials, and the operations on the
//! objects that describe it (key slots, writers, indexes, snapshot manifests).
//!
//! Credentials decide what a handle can do, in types (`cap.rs`): [`Repository::open`]
//! returns a [`FullRepo`] (the master secret: it can read everything) or an [`AgentRepo`]
//! (it can chunk, deduplicate against trusted index entries, write packs, indexes and
//! manifests, and read nothing sealed). The methods here that decrypt or sign as the root are
//! crate-private and reached through [`FullRepo`]; they still return
//! [`RepoError::NeedsFullKey`] for agents (defence in depth).

use std::sync::{Arc, Mutex};

use arsip_storage::{DynStore, ErrorKind, ObjectMeta};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::cap::{AgentRepo, FullRepo, Opened};
use crate::clock::Clock;
use crate::crypto::{self, Key, WriterKey};
use crate::error::{RepoError, Result};
use crate::format::{self, ObjectType, WriterId, ROOT_WRITER};
use crate::index::{ChunkIndex, IndexBuilder, PackInfo, Trust};
use crate::keys::{
    self, AgentFile, ChunkerParams, Config, KeyFile, KeySlot, MasterKeys, RevocationMode, Secret,
    WriterRecord,
};
use crate::snapshot::{Manifest, Snapshot, SNAPSHOTS_PREFIX};

pub const INDEX_PREFIX: &str = "index/";
pub const DATA_PREFIX: &str = "data/";
/// How many objects are fetched at once when loading indexes or manifests.
pub(crate) const FETCH_CONCURRENCY: usize = 16;

/// What opens a repository.
pub enum OpenWith {
    Password(zeroize::Zeroizing<Vec<u8>>),
    KeyFile(KeyFile),
    Agent(AgentFile),
}

pub(crate) enum Access {
    Full(Box<MasterKeys>),
    Agent,
}

/// zstd level of a new repository. Backups of fresh data are bound by compression. Level 1
/// compresses 1.3–1.6× faster than level 2 for 0.5–2.2% more bytes on database dumps, and
/// stores 16 KiB relation blocks no larger (docs/BENCHMARKS-PG.md, "Compression level").
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// Relation-file block size of a new repository: two PostgreSQL pages. Daily backups after
/// `VACUUM` change a few rows on most pages; 16 KiB blocks store a 7-day week in 0.44× of
/// pgBackRest's bytes where 128 KiB blocks need 0.70× (docs/BENCHMARKS-PG.md).
pub const DEFAULT_BLOCK_SIZE: u32 = 16 * 1024;

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_size: u32,
    pub block_size: u32,
    /// The host name the initial key slot records (the front end's [`LocalSettings::host`]).
    pub host: String,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            pack_size: 32 << 20,
            block_size: DEFAULT_BLOCK_SIZE,
            host: UNKNOWN_HOST.into(),
        }
    }
}

/// An opened repository. Its store, config and credentials are private: callers above this
/// crate see them only through the narrow accessors below and the operations of this crate
/// (they never write raw objects).
pub struct Repository {
    pub(crate) store: DynStore,
    pub(crate) config: Config,
    pub(crate) access: Access,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) writer_id: WriterId,
    signer: WriterKey,
    id_key: Key,
    chunker_seed: u64,
    public: [u8; 32],
    pub(crate) root_verify: [u8; 32],
    writers: Mutex<std::collections::HashMap<WriterId, Verdict>>,
    pub(crate) local: LocalSettings,
    opened_slot: Option<String>,
}

/// When the store accepted an object, by the store's clock (S3: `Last-Modified`; local: the
/// file's mtime), or `None` where the store reports no time. Writers cannot backdate it
/// (FORMAT.md §8.6, §7.4).
pub fn store_time(meta: &ObjectMeta) -> Option<jiff::Timestamp> {
    Some(meta.last_modified)
}

/// Where a writer stands (FORMAT.md §8.6).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Standing {
    /// Registered and not revoked (the root writer always is).
    Active,
    /// Retired at `at` (the root's clock): objects the store accepted before `cutoff` (the
    /// store's time of the retirement) stay valid. `cutoff` is `None` when the store gave
    /// no time for it; then nothing the writer signed can be placed before it.
    Retired {
        at: jiff::Timestamp,
        cutoff: Option<jiff::Timestamp>,
    },
    /// Declared compromised at `at`: nothing it ever signed is accepted.
    Compromised { at: jiff::Timestamp },
    /// No valid registration (never registered, or its record was lost or forged).
    Unknown,
}

impl Standing {
    /// Does a reader accept an object of this writer that the store accepted at `stored`?
    pub fn accepts(&self, stored: Option<jiff::Timestamp>) -> bool {
        match self {
            Standing::Active => true,
            Standing::Retired {
                cutoff: Some(c), ..
            } => stored.is_some_and(|t| t < *c),
            _ => false,
        }
    }

    /// "was retired at T", "was declared compromised at T", "is not registered".
    pub fn describe(&self) -> String {
        match self {
            Standing::Active => "is active".into(),
            Standing::Retired { at, .. } => format!("was retired at {at}"),
            Standing::Compromised { at } => format!("was declared compromised at {at}"),
            Standing::Unknown => "is not registered in this repository".into(),
        }
    }

    /// Why an object the store accepted at `stored` is refused.
    pub fn refusal(&self, stored: Option<jiff::Timestamp>) -> String {
        match (self, stored) {
            (
                Standing::Retired {
                    cutoff: Some(c), ..
                },
                Some(t),
            ) => format!(
                "{}, and the store accepted this object at {t}, not before the cut-off {c}",
                self.describe()
            ),
            (Standing::Retired { .. }, _) => format!(
                "{}, and the store gives no time that places this object before the cut-off",
                self.describe()
            ),
            (Standing::Compromised { .. }, _) => {
                format!("{}: nothing it signed is accepted", self.describe())
            }
            _ => self.describe(),
        }
    }
}

/// A writer's verify key (if registered) and standing.
pub type Verdict = (Option<[u8; 32]>, Standing);

/// A registered writer and where it stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Writer {
    pub record: WriterRecord,
    pub standing: Standing,
}

/// What a repository's objects add up to ([`Repository::usage`]).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    pub objects: u64,
    pub stored_bytes: u64,
    pub packs: u64,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

/// Local resources of an opened repository (the host's side, not the repository's), resolved
/// by the front end from its flags, environment or configuration and passed down; the
/// library reads no environment variables for them.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// Local caches and index spill files.
    pub cache_dir: std::path::PathBuf,
    /// Memory budget of the index table before it spills to a mapped file in `cache_dir`.
    pub index_memory: usize,
    /// Lifetime and renewal of writer sessions (FORMAT.md §17).
    pub sessions: crate::maint::SessionTiming,
    /// This host's name, recorded in manifests, key slots, sessions and audit records.
    pub host: String,
    /// The OS user, as audit records name it.
    pub user: String,
}

/// The host name of settings that name none.
pub const UNKNOWN_HOST: &str = "unknown";

/// Default index memory budget: 256 MiB ≈ 5 million chunks.
pub const DEFAULT_INDEX_MEMORY: usize = 256 << 20;

impl Default for LocalSettings {
    /// Nothing configured: `/tmp/arsip-cache`, the default budget, an unknown host (front
    /// ends resolve the temporary directory and the host name themselves).
    fn default() -> Self {
        LocalSettings {
            cache_dir: std::path::PathBuf::from("/tmp/arsip-cache"),
            index_memory: DEFAULT_INDEX_MEMORY,
            sessions: Default::default(),
            host: UNKNOWN_HOST.into(),
            user: "unknown".into(),
        }
    }
}

impl Repository {
    /// Create a repository. Refuses a location that already holds one, and a store that
    /// does not honour create-only writes. Returns the opened repository.
    pub async fn init(
        store: DynStore,
        password: Option<&[u8]>,
        opts: &InitOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<(FullRepo, Option<KeyFile>)> {
        opts.chunker.validate()?;
        if !(1..=22).contains(&opts.compression_level) && opts.compression_level != 0 {
            return Err(RepoError::Invalid(
                "compression level must be 0 (off) or 1..22".into(),
            ));
        }
        if !(1 << 16..=1 << 30).contains(&opts.pack_size) {
            return Err(RepoError::Invalid(
                "pack size must be between 64 KiB and 1 GiB".into(),
            ));
        }
        keys::validate_block_size(opts.block_size)?;
        refuse_used_location(&store).await?;
        probe_conditional_create(&store).await?;

        let now = clock.now();
        let master = Key::random();
        let mk = MasterKeys::new(master);
        let repo_id = hex::encode(crypto::random_bytes::<32>());
        let config = Config {
            version: 1,
            repo_id: repo_id.clone(),
            created: now,
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
            block_size: opts.block_size,
            public_key: hex::encode(mk.repo_secret.public()),
            root_verify_key: hex::encode(mk.root.verify_key()),
        };
        // Key slot first, config last: `config` is what makes a location a repository.
        let keyfile = match password {
            Some(p) => {
                let slot =
                    KeySlot::new_password(&repo_id, &mk.master, p, "initial", &opts.host, now)?;
                store
                    .create(
                        &slot.object_name(),
                        Bytes::from(serde_json::to_vec_pretty(&slot).unwrap()),
                    )
                    .await?;
                None
            }
            None => {
                let (slot, file) =
                    KeySlot::new_keyfile(&repo_id, &mk.master, "initial", &opts.host, now);
                store
                    .create(
                        &slot.object_name(),
                        Bytes::from(serde_json::to_vec_pretty(&slot).unwrap()),
                    )
                    .await?;
                Some(file)
            }
        };
        store
            .create(
                keys::CONFIG_OBJECT,
                Bytes::from(keys::sign_doc(&mk.root, &config)),
            )
            .await?;
        let repo = Self::assemble(store, config, Access::Full(Box::new(mk)), None, clock)?;
        Ok((FullRepo::new(Arc::new(repo)), keyfile))
    }

    /// Open the repository in `store` with `with`: a [`FullRepo`] for a password or key
    /// file, an [`AgentRepo`] for an agent file (whose standing is
    /// checked first: a retired or compromised agent is refused).
    pub async fn open(store: DynStore, with: OpenWith, clock: Arc<dyn Clock>) -> Result<Opened> {
        let repo = Arc::new(Self::open_any(store, with, clock).await?);
        Ok(if repo.is_agent() {
            Opened::Agent(AgentRepo::new(repo))
        } else {
            Opened::Full(FullRepo::new(repo))
        })
    }

    async fn open_any(
        store: DynStore,
        with: OpenWith,
        clock: Arc<dyn Clock>,
    ) -> Result<Repository> {
        let raw = match store.get(keys::CONFIG_OBJECT).await {
            Ok(b) => b,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(RepoError::NotARepository(store.describe()))
            }
            Err(e) => return Err(e.into()),
        };
        let claimed: Config = keys::unverified_body(keys::CONFIG_OBJECT, &raw)?;
        if claimed.version != 1 {
            return Err(RepoError::Unsupported(format!(
                "repository version {}",
                claimed.version
            )));
        }
        match with {
            OpenWith::Agent(agent) => {
                if agent.repo_id != claimed.repo_id {
                    return Err(RepoError::Invalid(
                        "this agent file belongs to another repository".into(),
                    ));
                }
                let root = keys::decode32(&agent.root_verify_key, "agent file")?;
                let config: Config = keys::verify_doc(keys::CONFIG_OBJECT, &raw, &root)?;
                let repo = Self::assemble(store, config, Access::Agent, Some(agent), clock)?;
                // Before writing anything: a retired or compromised agent's backup would
                // commit a snapshot no reader accepts.
                repo.check_own_standing().await?;
                Ok(repo)
            }
            OpenWith::KeyFile(f) => {
                if f.repo_id != claimed.repo_id {
                    return Err(RepoError::Invalid(
                        "this key file belongs to another repository".into(),
                    ));
                }
                let slot = read_slot(&store, &f.slot_id).await?;
                let master = slot
                    .open(&claimed.repo_id, &Secret::KeyFile(&f))?
                    .ok_or(RepoError::WrongKey)?;
                let mut repo = Self::open_full(store, &raw, master, clock)?;
                repo.opened_slot = Some(slot.id);
                Ok(repo)
            }
            OpenWith::Password(p) => {
                let (slots, damaged) = list_slots(&store).await?;
                let mut tried = 0;
                for slot in slots.iter().filter(|s| s.kind == keys::SlotKind::Password) {
                    tried += 1;
                    if let Some(master) = slot.open(&claimed.repo_id, &Secret::Password(&p))? {
                        let mut repo = Self::open_full(store, &raw, master, clock)?;
                        repo.opened_slot = Some(slot.id.clone());
                        return Ok(repo);
                    }
                }
                // No password slot at all is not a wrong password: nothing could open it.
                // Key-file slots alone are usable, but only with their key file.
                if tried == 0 {
                    let found = describe_slots(&slots, &damaged);
                    return Err(RepoError::NoUsableSlot(if slots.is_empty() {
                        found
                    } else {
                        format!(
                            "no password slot ({found}); a key-file slot opens only with its \
                             key file"
                        )
                    }));
                }
                Err(RepoError::WrongKey)
            }
        }
    }

    fn open_full(
        store: DynStore,
        raw: &[u8],
        master: Key,
        clock: Arc<dyn Clock>,
    ) -> Result<Repository> {
        let mk = MasterKeys::new(master);
        let config: Config = keys::verify_doc(keys::CONFIG_OBJECT, raw, &mk.root.verify_key())?;
        if config.public_key()? != mk.repo_secret.public() {
            return Err(RepoError::corrupt(
                keys::CONFIG_OBJECT,
                "public key does not match the master secret",
            ));
        }
        Self::assemble(store, config, Access::Full(Box::new(mk)), None, clock)
    }

    fn assemble(
        store: DynStore,
        config: Config,
        access: Access,
        agent: Option<AgentFile>,
        clock: Arc<dyn Clock>,
    ) -> Result<Repository> {
        keys::validate_block_size(config.block_size)
            .map_err(|e| RepoError::corrupt(keys::CONFIG_OBJECT, e.to_string()))?;
        let public = config.public_key()?;
        let root_verify = config.root_verify_key()?;
        let (writer_id, signer, id_key, chunker_seed) = match (&access, agent) {
            (Access::Full(mk), _) => (
                ROOT_WRITER,
                mk.root.clone(),
                keys::chunk_id_key(&mk.master, 0),
                keys::chunker_seed(&mk.master),
            ),
            (Access::Agent, Some(a)) => {
                let wid: WriterId = hex::decode(&a.writer_id)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| RepoError::Invalid("agent file: bad writer id".into()))?;
                let seed = keys::decode32(&a.signing_seed, "agent file")?;
                (
                    wid,
                    WriterKey::from_seed(&seed),
                    Key(keys::decode32(&a.chunk_id_key, "agent file")?),
                    a.chunker_seed,
                )
            }
            (Access::Agent, None) => unreachable!("agent access always comes with its file"),
        };
        Ok(Repository {
            store,
            config,
            access,
            clock,
            writer_id,
            signer,
            id_key,
            chunker_seed,
            public,
            root_verify,
            writers: Mutex::default(),
            local: LocalSettings::default(),
            opened_slot: None,
        })
    }

    /// The repository's id (hex, from its config).
    pub fn repo_id(&self) -> &str {
        &self.config.repo_id
    }

    /// Where the repository lives, as its store describes itself (a path, `s3://…`).
    pub fn location(&self) -> String {
        self.store.describe()
    }

    /// Block size of relation-file style sources (FORMAT.md §8.2 `block_size`).
    pub fn block_size(&self) -> u32 {
        self.config.block_size
    }

    /// The time by this handle's clock (tests pin it).
    pub fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    /// The key slot this handle was opened with (`None` for agent credentials).
    pub fn opened_slot(&self) -> Option<&str> {
        self.opened_slot.as_deref()
    }

    /// Objects and bytes in the store, streamed (a listing of millions of objects is never
    /// held in memory).
    pub async fn usage(&self) -> Result<Usage> {
        use futures::TryStreamExt;
        Ok(self
            .store
            .list("")
            .try_fold(Usage::default(), |mut u, o| async move {
                u.objects += 1;
                u.stored_bytes += o.size;
                u.packs += u64::from(o.key.starts_with(DATA_PREFIX));
                Ok(u)
            })
            .await?)
    }

    pub fn is_agent(&self) -> bool {
        matches!(self.access, Access::Agent)
    }

    pub(crate) fn master(&self, what: &'static str) -> Result<&MasterKeys> {
        match &self.access {
            Access::Full(mk) => Ok(mk),
            Access::Agent => Err(RepoError::NeedsFullKey(what)),
        }
    }

    pub(crate) fn id_key(&self) -> &Key {
        &self.id_key
    }
    pub(crate) fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }
    pub(crate) fn public_key(&self) -> &[u8; 32] {
        &self.public
    }
    pub(crate) fn signer(&self) -> &WriterKey {
        &self.signer
    }
    /// How long this handle's sessions and job claims live without renewal.
    pub fn session_timing(&self) -> crate::maint::SessionTiming {
        self.local.sessions
    }

    pub fn cache_dir(&self) -> &std::path::Path {
        &self.local.cache_dir
    }

    /// This repository's own part of the cache directory (several repositories may share
    /// one cache directory).
    pub fn repo_cache_dir(&self) -> std::path::PathBuf {
        let id = self.repo_id();
        // `init` writes 64 hex digits; a config that says otherwise names no path.
        let name = if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            id.to_string()
        } else {
            blake3::hash(id.as_bytes()).to_hex().to_string()
        };
        self.local.cache_dir.join(name)
    }
    /// A content-addressed object (an index or a manifest), from this host's copy when it
    /// matches its name, else from the store ([`crate::objcache`]).
    pub(crate) async fn get_addressed(
        &self,
        name: &str,
    ) -> std::result::Result<bytes::Bytes, arsip_storage::StorageError> {
        self.object_cache().get(&self.store, name).await
    }

    /// [`Repository::get_addressed`], or straight from the store for `Fetch::Store`.
    async fn fetch(
        &self,
        name: &str,
        from: Fetch,
    ) -> std::result::Result<bytes::Bytes, arsip_storage::StorageError> {
        match from {
            Fetch::Cached => self.get_addressed(name).await,
            Fetch::Store => self.store.get(name).await,
        }
    }

    pub(crate) fn object_cache(&self) -> crate::objcache::ObjectCache {
        crate::objcache::ObjectCache::new(self.repo_cache_dir())
    }

    /// This host's name, as the front end resolved it ([`LocalSettings::host`]).
    pub fn host(&self) -> &str {
        &self.local.host
    }

    /// Use these local resources from now on (they come from the front end; the default is
    /// [`LocalSettings::default`]).
    pub(crate) fn with_local(mut self, local: LocalSettings) -> Self {
        self.local = local;
        self
    }

    // ---- key slots -------------------------------------------------------------------

    pub(crate) async fn add_password(&self, password: &[u8], label: &str) -> Result<KeySlot> {
        let mk = self.master("adding a key")?;
        let slot = KeySlot::new_password(
            &self.config.repo_id,
            &mk.master,
            password,
            label,
            &self.local.host,
            self.clock.now(),
        )?;
        self.store
            .create(
                &slot.object_name(),
                Bytes::from(serde_json::to_vec_pretty(&slot).unwrap()),
            )
            .await?;
        Ok(slot)
    }

    pub(crate) async fn add_keyfile(&self, label: &str) -> Result<(KeySlot, KeyFile)> {
        let mk = self.master("adding a key")?;
        let (slot, file) = KeySlot::new_keyfile(
            &self.config.repo_id,
            &mk.master,
            label,
            &self.local.host,
            self.clock.now(),
        );
        self.store
            .create(
                &slot.object_name(),
                Bytes::from(serde_json::to_vec_pretty(&slot).unwrap()),
            )
            .await?;
        Ok((slot, file))
    }

    /// The usable key slots (damaged ones are skipped with a warning).
    pub async fn slots(&self) -> Result<Vec<KeySlot>> {
        Ok(list_slots(&self.store).await?.0)
    }

    /// Remove a key slot. Refuses to remove the last one.
    pub(crate) async fn remove_slot(&self, id: &str) -> Result<()> {
        self.master("removing a key")?;
        let slots = self.slots().await?;
        if !slots.iter().any(|s| s.id == id) {
            return Err(RepoError::NotFound(format!("no key slot {id}")));
        }
        if slots.len() == 1 {
            return Err(RepoError::Invalid(
                "refusing to remove the last key slot: the repository would be unreadable".into(),
            ));
        }
        self.store
            .delete(&format!("{}{id}", keys::KEYS_PREFIX))
            .await?;
        Ok(())
    }

    // ---- writers (agents) -------------------------------------------------------------

    /// Register a new agent writer and return its credentials file.
    pub(crate) async fn add_agent(&self, label: &str) -> Result<AgentFile> {
        let mk = self.master("adding an agent")?;
        let writer_id: WriterId = crypto::random_bytes();
        let seed: [u8; 32] = crypto::random_bytes();
        let wk = WriterKey::from_seed(&seed);
        let rec = WriterRecord {
            version: 1,
            writer_id: hex::encode(writer_id),
            verify_key: hex::encode(wk.verify_key()),
            label: label.to_string(),
            created: self.clock.now(),
            revoked: None,
            mode: None,
        };
        self.store
            .create(
                &keys::writer_object(&writer_id),
                Bytes::from(keys::sign_doc(&mk.root, &rec)),
            )
            .await?;
        Ok(AgentFile {
            arsip_agent_file: 1,
            repo_id: self.config.repo_id.clone(),
            writer_id: rec.writer_id,
            label: label.to_string(),
            signing_seed: hex::encode(seed),
            chunk_id_key: hex::encode(keys::chunk_id_key(&mk.master, 0).0),
            chunker_seed: keys::chunker_seed(&mk.master),
            public_key: self.config.public_key.clone(),
            root_verify_key: self.config.root_verify_key.clone(),
        })
    }

    /// Every registered writer, with revocations applied (`revoked` is the earliest
    /// revocation's time, `mode` compromised if any revocation says so). Objects under
    /// `writers/` that are not root-signed records of the id they are named after are
    /// ignored with a warning: any create-capable credential could have planted them.
    pub async fn writers(&self) -> Result<Vec<WriterRecord>> {
        Ok(self
            .writer_list()
            .await?
            .into_iter()
            .map(|w| w.record)
            .collect())
    }

    /// Every registered writer with its [`Standing`].
    pub async fn writer_list(&self) -> Result<Vec<Writer>> {
        let metas = self.writer_objects().await?;
        let mut out = Vec::new();
        for m in metas.iter().filter(|m| !m.key.contains(".revoked")) {
            let Some(id) = writer_id_from_name(&m.key) else {
                tracing::warn!(object = %m.key, "ignoring malformed writer object name");
                continue;
            };
            if let Some(mut record) = self.signed_writer_record(&m.key, &id, false).await? {
                let standing = self.revocations(&metas, &id).await?;
                match &standing {
                    Standing::Retired { at, .. } => {
                        record.revoked = Some(*at);
                        record.mode = Some(RevocationMode::Retired);
                    }
                    Standing::Compromised { at } => {
                        record.revoked = Some(*at);
                        record.mode = Some(RevocationMode::Compromised);
                    }
                    _ => {}
                }
                out.push(Writer { record, standing });
            }
        }
        Ok(out)
    }

    async fn writer_objects(&self) -> Result<Vec<ObjectMeta>> {
        Ok(self.store.list(keys::WRITERS_PREFIX).try_collect().await?)
    }

    /// The standing of registered writer `id` from the revocations among `metas`: the
    /// earliest compromise wins; else the earliest retirement, whose cut-off is the store's
    /// time of that revocation object (FORMAT.md §8.6).
    async fn revocations(&self, metas: &[ObjectMeta], id: &WriterId) -> Result<Standing> {
        let prefix = format!("{}.revoked.", keys::writer_object(id));
        let mut compromised: Option<jiff::Timestamp> = None;
        let mut retired: Option<jiff::Timestamp> = None;
        let mut cutoff: Option<jiff::Timestamp> = None;
        let mut untimed = false;
        for m in metas.iter().filter(|m| m.key.starts_with(&prefix)) {
            let Some(rec) = self.signed_writer_record(&m.key, id, true).await? else {
                continue;
            };
            let at = rec.revoked.expect("checked by signed_writer_record");
            match rec.mode.unwrap_or(RevocationMode::Compromised) {
                RevocationMode::Compromised => {
                    compromised = Some(compromised.map_or(at, |c| c.min(at)));
                }
                RevocationMode::Retired => {
                    retired = Some(retired.map_or(at, |r| r.min(at)));
                    match store_time(m) {
                        Some(t) => cutoff = Some(cutoff.map_or(t, |c| c.min(t))),
                        None => untimed = true,
                    }
                }
            }
        }
        Ok(match (compromised, retired) {
            (Some(at), _) => Standing::Compromised { at },
            (None, Some(at)) => Standing::Retired {
                at,
                // A retirement the store gave no time for cannot be placed: fail closed.
                cutoff: if untimed { None } else { cutoff },
            },
            (None, None) => Standing::Active,
        })
    }

    /// A writer record at `name` that is root-signed and names `id`; for revocations, one
    /// that also carries a revocation time. `None` if absent or invalid.
    async fn signed_writer_record(
        &self,
        name: &str,
        id: &WriterId,
        revoked: bool,
    ) -> Result<Option<WriterRecord>> {
        let raw = match self.store.get(name).await {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let rec = keys::verify_doc::<WriterRecord>(name, &raw, &self.root_verify).and_then(|rec| {
            if rec.writer_id != hex::encode(id) {
                Err(RepoError::corrupt(name, "record names another writer id"))
            } else if revoked && rec.revoked.is_none() {
                Err(RepoError::corrupt(
                    name,
                    "revocation without a revocation time",
                ))
            } else {
                Ok(rec)
            }
        });
        match rec {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(object = %name, error = %e, "ignoring writer object that is not a valid root-signed record");
                Ok(None)
            }
        }
    }

    /// Declare an agent compromised: readers refuse everything it ever signed.
    pub(crate) async fn revoke_agent(&self, writer_hex: &str) -> Result<Writer> {
        self.revoke(writer_hex, RevocationMode::Compromised).await
    }

    /// Retire an agent: what the store accepted from it before this call stays valid,
    /// nothing after. Refused on a store that reports no object times (the cut-off could
    /// not be placed; declare the agent compromised instead).
    pub(crate) async fn retire_agent(&self, writer_hex: &str) -> Result<Writer> {
        self.revoke(writer_hex, RevocationMode::Retired).await
    }

    async fn revoke(&self, writer_hex: &str, mode: RevocationMode) -> Result<Writer> {
        let mk = self.master("revoking an agent")?;
        let writer = self
            .writer_list()
            .await?
            .into_iter()
            .find(|w| w.record.writer_id == writer_hex)
            .ok_or_else(|| RepoError::NotFound(format!("no agent {writer_hex}")))?;
        match (&writer.standing, mode) {
            (Standing::Compromised { at }, _) => {
                return Err(RepoError::Invalid(format!(
                    "agent {writer_hex} was already declared compromised at {at}"
                )))
            }
            (Standing::Retired { at, .. }, RevocationMode::Retired) => {
                return Err(RepoError::Invalid(format!(
                    "agent {writer_hex} was already retired at {at}"
                )))
            }
            _ => {}
        }
        let id: WriterId = hex::decode(writer_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| RepoError::Invalid(format!("bad agent id {writer_hex}")))?;
        if mode == RevocationMode::Retired
            && store_time(&self.store.head(&keys::writer_object(&id)).await?).is_none()
        {
            return Err(RepoError::Invalid(format!(
                "{} reports no object times, so a retirement's cut-off could not be placed; \
                 declare the agent compromised instead",
                self.store.describe()
            )));
        }
        let mut rec = writer.record;
        rec.revoked = Some(self.clock.now());
        rec.mode = Some(mode);
        let doc = keys::sign_doc(&mk.root, &rec);
        self.store
            .create(&keys::revocation_object(&id, &doc), Bytes::from(doc))
            .await?;
        self.writers.lock().unwrap().remove(&id);
        let metas = self.writer_objects().await?;
        let standing = self.revocations(&metas, &id).await?;
        Ok(Writer {
            record: rec,
            standing,
        })
    }

    /// The verify key of a writer, or `None` if it is unknown or revoked in any way (for
    /// objects whose store time is not at hand; see `writer_verdict`).
    pub async fn writer_key(&self, id: &WriterId) -> Result<Option<[u8; 32]>> {
        let (key, standing) = self.writer_verdict(id).await?;
        Ok(key.filter(|_| standing == Standing::Active))
    }

    /// A writer's verify key (if registered) and standing, cached per handle.
    pub(crate) async fn writer_verdict(&self, id: &WriterId) -> Result<Verdict> {
        if *id == ROOT_WRITER {
            return Ok((Some(self.root_verify), Standing::Active));
        }
        if *id == self.writer_id {
            return Ok((Some(self.signer.verify_key()), Standing::Active));
        }
        if let Some(k) = self.writers.lock().unwrap().get(id) {
            return Ok(k.clone());
        }
        let verdict = match self
            .signed_writer_record(&keys::writer_object(id), id, false)
            .await?
        {
            Some(rec) => {
                let metas = self.writer_objects().await?;
                (
                    Some(keys::decode32(&rec.verify_key, "writer record")?),
                    self.revocations(&metas, id).await?,
                )
            }
            None => (None, Standing::Unknown),
        };
        self.writers.lock().unwrap().insert(*id, verdict.clone());
        Ok(verdict)
    }

    /// Authenticate an index or manifest of `writer` that the store accepted at `stored`:
    /// the signature under the writer's key (failure is damage), then the writer's standing
    /// (refusal is [`RepoError::Revoked`], not damage).
    pub(crate) async fn verify_writer(
        &self,
        object: &str,
        writer: &WriterId,
        signed: &[u8],
        sig: &[u8],
        stored: Option<jiff::Timestamp>,
    ) -> Result<()> {
        let (key, standing) = self.writer_verdict(writer).await?;
        let Some(vk) = key else {
            return Err(RepoError::corrupt(
                object,
                format!("written by unknown writer {}", hex::encode(writer)),
            ));
        };
        crypto::verify(&vk, signed, sig).map_err(|e| RepoError::corrupt(object, e.to_string()))?;
        if standing.accepts(stored) {
            Ok(())
        } else {
            Err(RepoError::Revoked {
                object: object.to_string(),
                writer: hex::encode(writer),
                detail: standing.refusal(stored),
            })
        }
    }

    /// Agents only: refuse to write when this agent is no longer accepted (retired,
    /// compromised or unregistered), so a backup fails instead of reporting a snapshot that
    /// no reader accepts. Full keys always pass.
    pub(crate) async fn check_own_standing(&self) -> Result<()> {
        if !self.is_agent() {
            return Ok(());
        }
        let metas = self.writer_objects().await?;
        let standing = match self
            .signed_writer_record(
                &keys::writer_object(&self.writer_id),
                &self.writer_id,
                false,
            )
            .await?
        {
            Some(_) => self.revocations(&metas, &self.writer_id).await?,
            None => Standing::Unknown,
        };
        match standing {
            Standing::Active => Ok(()),
            s => Err(RepoError::AgentRevoked(format!(
                "this agent (writer {}) {}",
                hex::encode(self.writer_id),
                s.describe()
            ))),
        }
    }

    // ---- indexes ----------------------------------------------------------------------

    /// Load every index. Full keys get locations; agents get ids and trust only. Indexes from
    /// unknown writers, or that fail their signature, are skipped with a warning (their
    /// chunks then count as missing, which `check` reports); indexes of revoked writers are
    /// skipped quietly (`check` lists them apart from damage). A failure of the local spill
    /// file is an error naming its path, never a reason to skip an index: skipping would
    /// make every snapshot look damaged.
    pub async fn load_index(&self) -> Result<ChunkIndex> {
        let state = self.maint_state().await?;
        self.load_index_with(&state).await
    }

    /// [`Repository::load_index`] from the store itself, never this host's copies: what
    /// `check` judges is the repository.
    pub(crate) async fn load_index_from_store(&self) -> Result<ChunkIndex> {
        let state = self.maint_state().await?;
        self.load_indexes(&state, IndexUse::Normal, None, Fetch::Store)
            .await
    }

    /// [`Repository::load_index`] under a given plan: entries of packs prune deleted are left
    /// out, chunks it hid are not deduplicable (prune, which needs every entry, loads through
    /// [`Repository::load_index_cataloged`]).
    pub(crate) async fn load_index_with(
        &self,
        state: &crate::maint::MaintState,
    ) -> Result<ChunkIndex> {
        self.load_indexes(state, IndexUse::Normal, None, Fetch::Cached)
            .await
    }

    /// [`Repository::load_index_with`] for maintenance, with the catalog of the index
    /// objects it loaded: which packs each names (prune rewrites those that name deleted
    /// packs without downloading every index again).
    pub(crate) async fn load_index_cataloged(
        &self,
        state: &crate::maint::MaintState,
    ) -> Result<(ChunkIndex, IndexCatalog)> {
        let mut catalog = IndexCatalog::new();
        let index = self
            .load_indexes(
                state,
                IndexUse::Maintenance,
                Some(&mut catalog),
                Fetch::Cached,
            )
            .await?;
        Ok((index, catalog))
    }

    async fn load_indexes(
        &self,
        state: &crate::maint::MaintState,
        usage: IndexUse,
        mut catalog: Option<&mut IndexCatalog>,
        from: Fetch,
    ) -> Result<ChunkIndex> {
        let skip = match usage {
            IndexUse::Normal => Some(&state.deleted),
            IndexUse::Maintenance => None,
        };
        let metas: Vec<ObjectMeta> = self.store.list(INDEX_PREFIX).try_collect().await?;
        self.object_cache().retain(
            INDEX_PREFIX,
            &metas.iter().map(|m| m.key.as_str()).collect(),
        );
        let mut builder =
            IndexBuilder::new(self.local.index_memory, self.cache_dir().join("spill"));
        let mut fetches = futures::stream::iter(metas.into_iter().map(|m| async move {
            let b = self.fetch(&m.key, from).await;
            (m, b)
        }))
        .buffer_unordered(FETCH_CONCURRENCY);
        while let Some((meta, bytes)) = fetches.next().await {
            let bytes = bytes?;
            match self
                .add_index_object(
                    &mut builder,
                    &meta,
                    &bytes,
                    skip,
                    usage,
                    catalog.as_deref_mut(),
                )
                .await?
            {
                Ok(()) => {}
                Err(e @ RepoError::Revoked { .. }) => {
                    tracing::debug!(object = %meta.key, error = %e, "index of a revoked writer")
                }
                Err(e) => tracing::warn!(object = %meta.key, error = %e, "ignoring index object"),
            }
        }
        Ok(builder.finish()?.hide(state.hidden.clone()))
    }

    /// Verify one index object and add its entries. The outer error is fatal (local I/O of
    /// the index builder); the inner one says why this index is not used.
    async fn add_index_object(
        &self,
        builder: &mut IndexBuilder,
        meta: &ObjectMeta,
        bytes: &[u8],
        skip: Option<&std::collections::HashSet<[u8; 32]>>,
        usage: IndexUse,
        catalog: Option<&mut IndexCatalog>,
    ) -> Result<Result<()>> {
        let (name, stored) = (meta.key.as_str(), store_time(meta));
        if blake3::hash(bytes).to_hex().as_str() != name.trim_start_matches(INDEX_PREFIX) {
            return Ok(Err(RepoError::corrupt(
                name,
                "content does not match its name",
            )));
        }
        let p = match format::parse_index(name, bytes) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let mut refused = false;
        match self
            .verify_writer(name, &p.writer, p.signed, p.signature, stored)
            .await
        {
            Ok(()) => {}
            Err(e @ RepoError::Storage(_)) => return Err(e),
            // Maintenance keeps what a revoked writer's snapshots reference until they are
            // forgotten, so it needs their locations (never to deduplicate or read).
            Err(RepoError::Revoked { .. }) if usage == IndexUse::Maintenance => refused = true,
            Err(e) => return Ok(Err(e)),
        }
        let trust = if refused {
            Trust::Foreign
        } else if p.writer == ROOT_WRITER {
            Trust::Root
        } else if p.writer == self.writer_id {
            Trust::Own
        } else {
            Trust::Foreign
        };
        match &self.access {
            Access::Full(mk) => {
                let (packs, entries) =
                    match format::open_index_locations(name, bytes, &p, &mk.repo_secret) {
                        Ok(x) => x,
                        Err(e) => return Ok(Err(e)),
                    };
                if let Some(c) = catalog {
                    c.insert(
                        name.to_string(),
                        CatalogEntry {
                            root: trust == Trust::Root,
                            packs: packs.iter().map(|pk| pk.id).collect(),
                        },
                    );
                }
                let nums: Vec<Option<u32>> = packs
                    .iter()
                    .map(|pk| {
                        let gone = skip.is_some_and(|s| s.contains(&pk.id));
                        (!gone).then(|| builder.add_index_pack(pk))
                    })
                    .collect();
                for e in entries {
                    if let Some(n) = nums[e.pack as usize] {
                        builder.add(n, &e.blob, trust)?;
                    }
                }
            }
            Access::Agent => {
                if trust == Trust::Foreign {
                    return Ok(Ok(()));
                }
                let n = builder.add_pack(PackInfo {
                    id: [0; 32],
                    key: None,
                    key_id: 0,
                    size: 0,
                });
                for id in p.chunk_ids() {
                    builder.add(
                        n,
                        &format::BlobEntry {
                            id,
                            offset: 0,
                            len: 0,
                            raw_len: 0,
                            flags: 0,
                        },
                        trust,
                    )?;
                }
            }
        }
        Ok(Ok(()))
    }

    // ---- snapshots --------------------------------------------------------------------

    /// Every snapshot that authenticates, oldest first, and the object names and errors of
    /// manifests that do not, snapshots of revoked writers included (callers MUST show
    /// those: a snapshot list must not silently shrink). Needs a full key.
    pub(crate) async fn snapshots_report(
        &self,
    ) -> Result<(Vec<Snapshot>, Vec<(String, RepoError)>)> {
        let l = self.snapshot_listing().await?;
        let mut bad = l.damaged;
        bad.extend(l.revoked);
        bad.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((l.snapshots, bad))
    }

    /// Every snapshot, sorted into those readers accept (oldest first by effective time),
    /// damaged manifests, and manifests of revoked writers (authentic, but no longer
    /// accepted: not damage). Needs a full key.
    pub(crate) async fn snapshot_listing(&self) -> Result<SnapshotListing> {
        self.snapshot_listing_via(Fetch::Cached).await
    }

    /// [`Repository::snapshot_listing`] from the store itself (`check`).
    pub(crate) async fn snapshot_listing_from_store(&self) -> Result<SnapshotListing> {
        self.snapshot_listing_via(Fetch::Store).await
    }

    async fn snapshot_listing_via(&self, from: Fetch) -> Result<SnapshotListing> {
        let mk = self.master("listing snapshots")?;
        let metas: Vec<ObjectMeta> = self.store.list(SNAPSHOTS_PREFIX).try_collect().await?;
        self.object_cache().retain(
            SNAPSHOTS_PREFIX,
            &metas.iter().map(|m| m.key.as_str()).collect(),
        );
        let results: Vec<(String, Result<Snapshot>)> =
            futures::stream::iter(metas.into_iter().map(|meta| async move {
                let r = match self.fetch(&meta.key, from).await {
                    Ok(raw) => {
                        self.open_manifest(&meta.key, &raw, mk, store_time(&meta))
                            .await
                    }
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        Err(RepoError::corrupt(&meta.key, "vanished while listing"))
                    }
                    Err(e) => Err(e.into()),
                };
                (meta.key, r)
            }))
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        let fences = self.fences().await?;
        let mut out = SnapshotListing::default();
        for (name, r) in results {
            match r.and_then(|s| fence_verdict(&fences, &name, s)) {
                Ok(s) => out.snapshots.push(s),
                // Storage failures are not damage: fail the whole listing.
                Err(RepoError::Storage(e)) => return Err(RepoError::Storage(e)),
                Err(e @ RepoError::Revoked { .. }) => out.revoked.push((name, e)),
                Err(e) => out.damaged.push((name, e)),
            }
        }
        out.snapshots
            .sort_by(|a, b| (a.effective_time(), &a.id).cmp(&(b.effective_time(), &b.id)));
        out.damaged.sort_by(|a, b| a.0.cmp(&b.0));
        out.revoked.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Open one manifest the store accepted at `stored`.
    pub(crate) async fn open_manifest(
        &self,
        name: &str,
        raw: &[u8],
        mk: &MasterKeys,
        stored: Option<jiff::Timestamp>,
    ) -> Result<Snapshot> {
        let id = name.trim_start_matches(SNAPSHOTS_PREFIX);
        if blake3::hash(raw).to_hex().as_str() != id {
            return Err(RepoError::corrupt(name, "content does not match its name"));
        }
        let (writer, signed, sig) = format::sealed_doc_writer(name, raw, ObjectType::Snapshot)?;
        self.verify_writer(name, &writer, signed, sig, stored)
            .await?;
        let body = format::open_sealed_doc(name, raw, ObjectType::Snapshot, &mk.repo_secret)?;
        let manifest: Manifest =
            serde_json::from_slice(&body).map_err(|e| RepoError::corrupt(name, e.to_string()))?;
        Ok(Snapshot {
            id: id.to_string(),
            writer: hex::encode(writer),
            stored,
            manifest,
        })
    }

    /// Write a manifest: the last step of a backup, after its packs and index are durable.
    pub(crate) async fn commit_manifest(&self, manifest: &Manifest) -> Result<String> {
        let body = serde_json::to_vec(manifest).expect("serialisable");
        let obj = format::encode_sealed_doc(
            ObjectType::Snapshot,
            0,
            &self.writer_id,
            &self.signer,
            &self.public,
            &body,
        );
        let id = blake3::hash(&obj).to_hex().to_string();
        let name = format!("{SNAPSHOTS_PREFIX}{id}");
        // An agent re-checks its standing before the manifest, and after it: a revocation
        // that landed while the backup ran would otherwise leave a snapshot no reader
        // accepts, reported as a success.
        self.check_own_standing().await?;
        self.store.create(&name, Bytes::from(obj)).await?;
        if self.is_agent() {
            if let Err(e) = self.check_own_standing().await {
                let metas = self.writer_objects().await?;
                let standing = self.revocations(&metas, &self.writer_id).await?;
                let stored = store_time(&self.store.head(&name).await?);
                if !standing.accepts(stored) {
                    return Err(RepoError::AgentRevoked(format!(
                        "{e}; snapshot {id} was written while it happened and readers refuse it"
                    )));
                }
            }
        }
        Ok(id)
    }
}

/// A manifest of a session prune fenced counts only if the fence's accepted list names it
/// (FORMAT.md §17.4): anything else was committed after prune may have removed its data.
fn fence_verdict(fences: &crate::maint::Fences, name: &str, s: Snapshot) -> Result<Snapshot> {
    let Some(session) = s.manifest.session.as_deref() else {
        return Ok(s);
    };
    match fences.get(session) {
        Some(Some(accepted)) if !accepted.contains(&s.id) => Err(RepoError::Revoked {
            object: name.to_string(),
            writer: s.writer.clone(),
            detail: format!(
                "committed it in session {session} after prune had fenced that session (it \
                 stopped renewing), so data it references may be gone"
            ),
        }),
        _ => Ok(s),
    }
}

/// Where content-addressed objects are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// This host's copy when it matches its name (`objcache`), else the store.
    Cached,
    /// The store: what `check` judges.
    Store,
}

/// The index objects a maintenance load accepted, by name.
pub(crate) type IndexCatalog = std::collections::HashMap<String, CatalogEntry>;

/// One authentic index object: whether the root key signed it, and the packs it names.
pub(crate) struct CatalogEntry {
    pub(crate) root: bool,
    pub(crate) packs: Vec<[u8; 32]>,
}

/// What an index is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexUse {
    /// Backups and restores: entries of packs prune deleted are left out, revoked writers'
    /// indexes are refused.
    Normal,
    /// Prune: every authentic entry, deleted packs' and revoked writers' included.
    Maintenance,
}

/// Snapshots as [`FullRepo::snapshot_listing`] sorts them.
#[derive(Debug, Default)]
pub struct SnapshotListing {
    pub snapshots: Vec<Snapshot>,
    pub damaged: Vec<(String, RepoError)>,
    pub revoked: Vec<(String, RepoError)>,
}

fn writer_id_from_name(name: &str) -> Option<WriterId> {
    let h = name.strip_prefix(keys::WRITERS_PREFIX)?;
    hex::decode(h).ok()?.try_into().ok()
}

/// The slot a key file names. A slot that is gone or damaged is not a wrong key: no key
/// file could open it.
async fn read_slot(store: &DynStore, id: &str) -> Result<KeySlot> {
    let name = format!("{}{id}", keys::KEYS_PREFIX);
    let raw = match store.get(&name).await {
        Ok(r) => r,
        Err(e) if e.kind == ErrorKind::NotFound => {
            let (slots, damaged) = list_slots(store).await?;
            return Err(RepoError::NoUsableSlot(format!(
                "the key file's slot {name} does not exist ({})",
                describe_slots(&slots, &damaged)
            )));
        }
        Err(e) => return Err(e.into()),
    };
    match parse_slot(&name, &raw) {
        // A key file names a key-file slot, or (a derived key file, §8.4) a password slot.
        Ok(slot) if slot.id == id => Ok(slot),
        Ok(_) => Err(RepoError::NoUsableSlot(format!(
            "{name} is damaged: it is not the key-file slot the key file names"
        ))),
        Err(reason) => Err(RepoError::NoUsableSlot(format!(
            "{name} is damaged: {reason}"
        ))),
    }
}

/// A slot as read, or why it cannot be used: [`KeySlot::parse`]'s refusals (a slot that
/// does not parse, asks for absurd KDF work, or whose salt or wrapped key has the wrong
/// shape: anyone who can create objects could plant one to stop passwords from opening the
/// repository or to exhaust memory), or an id that differs from its name.
fn parse_slot(name: &str, raw: &[u8]) -> std::result::Result<KeySlot, String> {
    let slot = KeySlot::parse(name, raw).map_err(|e| match e {
        RepoError::Corrupt { reason, .. } => reason,
        other => other.to_string(),
    })?;
    if slot.object_name() != name {
        return Err("its id does not match its name".into());
    }
    Ok(slot)
}

/// Every usable key slot, and the names of the slots that cannot be used (with why).
/// Unusable slots are skipped with a warning (FORMAT.md §8.3).
async fn list_slots(store: &DynStore) -> Result<(Vec<KeySlot>, Vec<(String, String)>)> {
    let names: Vec<String> = store
        .list(keys::KEYS_PREFIX)
        .map_ok(|m| m.key)
        .try_collect()
        .await?;
    let mut out = Vec::new();
    let mut damaged = Vec::new();
    for n in names {
        let raw = match store.get(&n).await {
            Ok(r) => r,
            // Removed between listing and reading (`key remove` elsewhere).
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        match parse_slot(&n, &raw) {
            Ok(slot) => out.push(slot),
            Err(reason) => {
                tracing::warn!(object = %n, reason = %reason, "ignoring unusable key slot");
                damaged.push((n, reason));
            }
        }
    }
    Ok((out, damaged))
}

/// "1 password slot, 2 damaged slots (keys/…: does not parse)" — what an opener found.
fn describe_slots(slots: &[KeySlot], damaged: &[(String, String)]) -> String {
    let pw = slots
        .iter()
        .filter(|s| s.kind == keys::SlotKind::Password)
        .count();
    let kf = slots.len() - pw;
    let mut parts = Vec::new();
    if slots.is_empty() && damaged.is_empty() {
        parts.push("no key slots at all".to_string());
    }
    if pw > 0 {
        parts.push(format!("{pw} password slot(s)"));
    }
    if kf > 0 {
        parts.push(format!("{kf} key-file slot(s)"));
    }
    if !damaged.is_empty() {
        let names: Vec<String> = damaged
            .iter()
            .take(3)
            .map(|(n, r)| format!("{n}: {r}"))
            .collect();
        parts.push(format!(
            "{} damaged slot(s) ({})",
            damaged.len(),
            names.join("; ")
        ));
    }
    parts.join(", ")
}

/// How many objects `init` looks at to describe a location that is not empty.
const INIT_SCAN_LIMIT: usize = 1000;

/// `init` creates a repository only where no object is (FORMAT.md §2.1): a `config` means a
/// repository is there; any other object (old packs, key slots, indexes, someone else's
/// files) means initialising would mix a new repository into old data, and a lost `config`
/// would look "repaired" while nothing old became readable. Probe objects left by an
/// earlier `init` under append-only credentials carry no data and are not counted.
async fn refuse_used_location(store: &DynStore) -> Result<()> {
    match store.head(keys::CONFIG_OBJECT).await {
        Ok(_) => return Err(RepoError::AlreadyInitialized(store.describe())),
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let mut listing = store.list("");
    let mut by_prefix: std::collections::BTreeMap<String, usize> = Default::default();
    let mut seen = 0;
    while let Some(m) = listing.next().await {
        let m = m?;
        if m.key.starts_with("probe/") {
            continue;
        }
        let prefix = match m.key.split_once('/') {
            Some((p, _)) => format!("{p}/"),
            None => m.key.clone(),
        };
        *by_prefix.entry(prefix).or_default() += 1;
        seen += 1;
        if seen >= INIT_SCAN_LIMIT {
            break;
        }
    }
    if by_prefix.is_empty() {
        return Ok(());
    }
    let more = if seen >= INIT_SCAN_LIMIT {
        " (at least)"
    } else {
        ""
    };
    let parts: Vec<String> = by_prefix
        .iter()
        .map(|(p, n)| {
            if p.ends_with('/') {
                format!("{n} object(s) under {p}")
            } else {
                format!("an object named {p:?}")
            }
        })
        .collect();
    Err(RepoError::LocationInUse {
        location: store.describe(),
        found: format!("{}{more}", parts.join(", ")),
    })
}

/// Create a probe object twice: the second create must fail with `AlreadyExists`. Some
/// S3-compatible servers ignore `If-None-Match` and would let writers overwrite each other.
async fn probe_conditional_create(store: &DynStore) -> Result<()> {
    let key = format!("probe/{}", hex::encode(crypto::random_bytes::<8>()));
    match store.create(&key, Bytes::from_static(b"1")).await {
        Ok(()) => {}
        Err(e) if e.kind == ErrorKind::NotSupported => {
            return Err(RepoError::NoConditionalCreate(store.describe()))
        }
        Err(e) => return Err(e.into()),
    }
    let second = store.create(&key, Bytes::from_static(b"2")).await;
    // Best effort: init may run with append-only credentials.
    let _ = store.delete(&key).await;
    match second {
        Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind == ErrorKind::NotSupported => {
            Err(RepoError::NoConditionalCreate(store.describe()))
        }
        Err(e) => Err(e.into()),
        Ok(()) => Err(RepoError::NoConditionalCreate(store.describe())),
    }
}
