//! An opened repository: its store, config and credentials, and the operations on the
//! objects that describe it (key slots, writers, indexes, snapshot manifests).
//!
//! Credentials decide what a handle can do. A [`Access::Full`] handle holds the master
//! secret and can read everything; an [`Access::Agent`] handle can chunk, deduplicate
//! against trusted index entries, write packs, indexes and manifests, and read nothing
//! sealed. Methods that need to decrypt return [`RepoError::NeedsFullKey`] for agents.

use std::sync::{Arc, Mutex};

use arsip_storage::{DynStore, ErrorKind};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::clock::Clock;
use crate::crypto::{self, Key, WriterKey};
use crate::error::{RepoError, Result};
use crate::format::{self, ObjectType, WriterId, ROOT_WRITER};
use crate::index::{ChunkIndex, IndexBuilder, PackInfo, Trust};
use crate::keys::{
    self, AgentFile, ChunkerParams, Config, KeyFile, KeySlot, MasterKeys, Secret, WriterRecord,
};
use crate::snapshot::{Manifest, Snapshot, SNAPSHOTS_PREFIX};

pub const INDEX_PREFIX: &str = "index/";
pub const DATA_PREFIX: &str = "data/";
/// How many objects are fetched at once when loading indexes or manifests.
const FETCH_CONCURRENCY: usize = 16;

/// What opens a repository.
pub enum OpenWith {
    Password(zeroize::Zeroizing<Vec<u8>>),
    KeyFile(KeyFile),
    Agent(AgentFile),
}

pub enum Access {
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
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            pack_size: 32 << 20,
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

pub struct Repository {
    pub store: DynStore,
    pub config: Config,
    pub access: Access,
    pub clock: Arc<dyn Clock>,
    pub writer_id: WriterId,
    signer: WriterKey,
    id_key: Key,
    chunker_seed: u64,
    public: [u8; 32],
    root_verify: [u8; 32],
    writers: Mutex<std::collections::HashMap<WriterId, Option<[u8; 32]>>>,
    local: LocalSettings,
    opened_slot: Option<String>,
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
}

/// Default index memory budget: 256 MiB ≈ 5 million chunks.
pub const DEFAULT_INDEX_MEMORY: usize = 256 << 20;

impl Default for LocalSettings {
    /// A private directory under the system's temporary directory, and the default budget.
    fn default() -> Self {
        LocalSettings {
            cache_dir: std::env::temp_dir().join("arsip-cache"),
            index_memory: DEFAULT_INDEX_MEMORY,
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
    ) -> Result<(Repository, Option<KeyFile>)> {
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
        match store.head(keys::CONFIG_OBJECT).await {
            Ok(_) => return Err(RepoError::AlreadyInitialized(store.describe())),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
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
                let slot = KeySlot::new_password(&repo_id, &mk.master, p, "initial", now)?;
                store
                    .create(
                        &slot.object_name(),
                        Bytes::from(serde_json::to_vec_pretty(&slot).unwrap()),
                    )
                    .await?;
                None
            }
            None => {
                let (slot, file) = KeySlot::new_keyfile(&repo_id, &mk.master, "initial", now);
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
        Ok((repo, keyfile))
    }

    pub async fn open(
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
                Self::assemble(store, config, Access::Agent, Some(agent), clock)
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
                let slots = list_slots(&store).await?;
                for slot in slots.iter().filter(|s| s.kind == keys::SlotKind::Password) {
                    if let Some(master) = slot.open(&claimed.repo_id, &Secret::Password(&p))? {
                        let mut repo = Self::open_full(store, &raw, master, clock)?;
                        repo.opened_slot = Some(slot.id.clone());
                        return Ok(repo);
                    }
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

    pub fn master(&self, what: &'static str) -> Result<&MasterKeys> {
        match &self.access {
            Access::Full(mk) => Ok(mk),
            Access::Agent => Err(RepoError::NeedsFullKey(what)),
        }
    }

    pub fn id_key(&self) -> &Key {
        &self.id_key
    }
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }
    pub fn signer(&self) -> &WriterKey {
        &self.signer
    }
    pub fn cache_dir(&self) -> &std::path::Path {
        &self.local.cache_dir
    }

    /// Use these local resources from now on (they come from the front end; the default is
    /// [`LocalSettings::default`]).
    pub fn with_local(mut self, local: LocalSettings) -> Self {
        self.local = local;
        self
    }

    // ---- key slots -------------------------------------------------------------------

    pub async fn add_password(&self, password: &[u8], label: &str) -> Result<KeySlot> {
        let mk = self.master("adding a key")?;
        let slot = KeySlot::new_password(
            &self.config.repo_id,
            &mk.master,
            password,
            label,
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

    pub async fn add_keyfile(&self, label: &str) -> Result<(KeySlot, KeyFile)> {
        let mk = self.master("adding a key")?;
        let (slot, file) =
            KeySlot::new_keyfile(&self.config.repo_id, &mk.master, label, self.clock.now());
        self.store
            .create(
                &slot.object_name(),
                Bytes::from(serde_json::to_vec_pretty(&slot).unwrap()),
            )
            .await?;
        Ok((slot, file))
    }

    pub async fn slots(&self) -> Result<Vec<KeySlot>> {
        list_slots(&self.store).await
    }

    /// Remove a key slot. Refuses to remove the last one.
    pub async fn remove_slot(&self, id: &str) -> Result<()> {
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
    pub async fn add_agent(&self, label: &str) -> Result<AgentFile> {
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

    /// Every registered writer, with revocations applied. Objects under `writers/` that are
    /// not root-signed records of the id they are named after are ignored with a warning:
    /// any create-capable credential could have planted them.
    pub async fn writers(&self) -> Result<Vec<WriterRecord>> {
        let names = self.writer_object_names().await?;
        let mut out = Vec::new();
        for name in names.iter().filter(|n| !n.contains(".revoked")) {
            let Some(id) = writer_id_from_name(name) else {
                tracing::warn!(object = %name, "ignoring malformed writer object name");
                continue;
            };
            if let Some(mut rec) = self.signed_writer_record(name, &id, false).await? {
                rec.revoked = self.revocation(&names, &id).await?;
                out.push(rec);
            }
        }
        Ok(out)
    }

    async fn writer_object_names(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list(keys::WRITERS_PREFIX)
            .map_ok(|m| m.key)
            .try_collect()
            .await?)
    }

    /// The time of the first valid revocation of `id` among `names`, if any.
    async fn revocation(&self, names: &[String], id: &WriterId) -> Result<Option<jiff::Timestamp>> {
        let prefix = format!("{}.revoked.", keys::writer_object(id));
        let mut first: Option<jiff::Timestamp> = None;
        for name in names.iter().filter(|n| n.starts_with(&prefix)) {
            if let Some(t) = self
                .signed_writer_record(name, id, true)
                .await?
                .and_then(|r| r.revoked)
            {
                first = Some(first.map_or(t, |f| f.min(t)));
            }
        }
        Ok(first)
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

    /// Revoke an agent: readers refuse its snapshots and indexes from now on.
    pub async fn revoke_agent(&self, writer_hex: &str) -> Result<()> {
        let mk = self.master("revoking an agent")?;
        let mut rec = self
            .writers()
            .await?
            .into_iter()
            .find(|w| w.writer_id == writer_hex)
            .ok_or_else(|| RepoError::NotFound(format!("no agent {writer_hex}")))?;
        rec.revoked = Some(self.clock.now());
        let id: WriterId = hex::decode(writer_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| RepoError::Invalid(format!("bad agent id {writer_hex}")))?;
        let doc = keys::sign_doc(&mk.root, &rec);
        self.store
            .create(&keys::revocation_object(&id, &doc), Bytes::from(doc))
            .await?;
        self.writers.lock().unwrap().remove(&id);
        Ok(())
    }

    /// The verify key of a writer, or `None` if it is unknown or revoked.
    pub async fn writer_key(&self, id: &WriterId) -> Result<Option<[u8; 32]>> {
        if *id == ROOT_WRITER {
            return Ok(Some(self.root_verify));
        }
        if *id == self.writer_id {
            return Ok(Some(self.signer.verify_key()));
        }
        if let Some(k) = self.writers.lock().unwrap().get(id) {
            return Ok(*k);
        }
        let key = match self
            .signed_writer_record(&keys::writer_object(id), id, false)
            .await?
        {
            Some(rec) => {
                let names = self.writer_object_names().await?;
                match self.revocation(&names, id).await? {
                    Some(_) => None,
                    None => Some(keys::decode32(&rec.verify_key, "writer record")?),
                }
            }
            None => None,
        };
        self.writers.lock().unwrap().insert(*id, key);
        Ok(key)
    }

    async fn verify_writer(
        &self,
        object: &str,
        writer: &WriterId,
        signed: &[u8],
        sig: &[u8],
    ) -> Result<()> {
        match self.writer_key(writer).await? {
            Some(vk) => crypto::verify(&vk, signed, sig)
                .map_err(|e| RepoError::corrupt(object, e.to_string())),
            None => Err(RepoError::corrupt(
                object,
                format!(
                    "written by unknown or revoked writer {}",
                    hex::encode(writer)
                ),
            )),
        }
    }

    // ---- indexes ----------------------------------------------------------------------

    /// Load every index. Full keys get locations; agents get ids and trust only. Indexes from
    /// unknown or revoked writers, or that fail their signature, are skipped with a warning
    /// (their chunks then count as missing, which `check` reports).
    pub async fn load_index(&self) -> Result<ChunkIndex> {
        let names: Vec<String> = self
            .store
            .list(INDEX_PREFIX)
            .map_ok(|m| m.key)
            .try_collect()
            .await?;
        let mut builder =
            IndexBuilder::new(self.local.index_memory, self.cache_dir().join("spill"));
        let mut fetches = futures::stream::iter(names.into_iter().map(|k| async move {
            let b = self.store.get(&k).await;
            (k, b)
        }))
        .buffer_unordered(FETCH_CONCURRENCY);
        while let Some((name, bytes)) = fetches.next().await {
            let bytes = bytes?;
            if let Err(e) = self.add_index_object(&mut builder, &name, &bytes).await {
                tracing::warn!(object = %name, error = %e, "ignoring index object");
            }
        }
        builder.finish()
    }

    async fn add_index_object(
        &self,
        builder: &mut IndexBuilder,
        name: &str,
        bytes: &[u8],
    ) -> Result<()> {
        if blake3::hash(bytes).to_hex().as_str() != name.trim_start_matches(INDEX_PREFIX) {
            return Err(RepoError::corrupt(name, "content does not match its name"));
        }
        let p = format::parse_index(name, bytes)?;
        self.verify_writer(name, &p.writer, p.signed, p.signature)
            .await?;
        let trust = if p.writer == ROOT_WRITER {
            Trust::Root
        } else if p.writer == self.writer_id {
            Trust::Own
        } else {
            Trust::Foreign
        };
        match &self.access {
            Access::Full(mk) => {
                let (packs, entries) =
                    format::open_index_locations(name, bytes, &p, &mk.repo_secret)?;
                let nums: Vec<u32> = packs.iter().map(|pk| builder.add_index_pack(pk)).collect();
                for e in entries {
                    builder.add(nums[e.pack as usize], &e.blob, trust)?;
                }
            }
            Access::Agent => {
                if trust == Trust::Foreign {
                    return Ok(());
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
        Ok(())
    }

    // ---- snapshots --------------------------------------------------------------------

    /// Every snapshot that authenticates, oldest first, and the object names and errors of
    /// manifests that do not (callers MUST show those: a snapshot list must not silently
    /// shrink). Needs a full key.
    pub async fn snapshots_report(&self) -> Result<(Vec<Snapshot>, Vec<(String, RepoError)>)> {
        let mk = self.master("listing snapshots")?;
        let names: Vec<String> = self
            .store
            .list(SNAPSHOTS_PREFIX)
            .map_ok(|m| m.key)
            .try_collect()
            .await?;
        let results: Vec<(String, Result<Snapshot>)> =
            futures::stream::iter(names.into_iter().map(|name| async move {
                let r = match self.store.get(&name).await {
                    Ok(raw) => self.open_manifest(&name, &raw, mk).await,
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        Err(RepoError::corrupt(&name, "vanished while listing"))
                    }
                    Err(e) => Err(e.into()),
                };
                (name, r)
            }))
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (name, r) in results {
            match r {
                Ok(s) => good.push(s),
                // Storage failures are not damage: fail the whole listing.
                Err(RepoError::Storage(e)) => return Err(RepoError::Storage(e)),
                Err(e) => bad.push((name, e)),
            }
        }
        good.sort_by(|a, b| a.manifest.time.cmp(&b.manifest.time).then(a.id.cmp(&b.id)));
        bad.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((good, bad))
    }

    async fn open_manifest(&self, name: &str, raw: &[u8], mk: &MasterKeys) -> Result<Snapshot> {
        let id = name.trim_start_matches(SNAPSHOTS_PREFIX);
        if blake3::hash(raw).to_hex().as_str() != id {
            return Err(RepoError::corrupt(name, "content does not match its name"));
        }
        let (writer, signed, sig) = format::sealed_doc_writer(name, raw, ObjectType::Snapshot)?;
        self.verify_writer(name, &writer, signed, sig).await?;
        let body = format::open_sealed_doc(name, raw, ObjectType::Snapshot, &mk.repo_secret)?;
        let manifest: Manifest =
            serde_json::from_slice(&body).map_err(|e| RepoError::corrupt(name, e.to_string()))?;
        Ok(Snapshot {
            id: id.to_string(),
            writer: hex::encode(writer),
            manifest,
        })
    }

    /// Write a manifest: the last step of a backup, after its packs and index are durable.
    pub async fn commit_manifest(&self, manifest: &Manifest) -> Result<String> {
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
        self.store
            .create(&format!("{SNAPSHOTS_PREFIX}{id}"), Bytes::from(obj))
            .await?;
        Ok(id)
    }
}

fn writer_id_from_name(name: &str) -> Option<WriterId> {
    let h = name.strip_prefix(keys::WRITERS_PREFIX)?;
    hex::decode(h).ok()?.try_into().ok()
}

async fn read_slot(store: &DynStore, id: &str) -> Result<KeySlot> {
    let name = format!("{}{id}", keys::KEYS_PREFIX);
    let raw = match store.get(&name).await {
        Ok(r) => r,
        Err(e) if e.kind == ErrorKind::NotFound => return Err(RepoError::WrongKey),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&raw).map_err(|e| RepoError::corrupt(name, e.to_string()))
}

async fn list_slots(store: &DynStore) -> Result<Vec<KeySlot>> {
    let names: Vec<String> = store
        .list(keys::KEYS_PREFIX)
        .map_ok(|m| m.key)
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for n in names {
        let raw = store.get(&n).await?;
        // A slot that does not parse, or asks for absurd KDF work, is skipped: anyone who can
        // create objects could plant one to stop passwords from opening the repository.
        match KeySlot::parse(&n, &raw) {
            Ok(slot) => out.push(slot),
            Err(e) => tracing::warn!(object = %n, error = %e, "ignoring unusable key slot"),
        }
    }
    Ok(out)
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
