//! In-process tests of backups and restores over the repository: the write path only
//! creates, retries lose nothing, and agents write without being able to read.
//!
//! Modules: `support` (stores and helpers), then one test per property.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arsip_files::{backup, restore};
use arsip_repo::clock::SystemClock;
use arsip_repo::ReadData;
use arsip_repo::{FullRepo, InitOptions, OpenWith, Opened, RepoError, Repository};
use arsip_repo::{SnapshotMeta, SnapshotTxn};
use arsip_storage::{backend, DynStore, ErrorKind, ObjectMeta, StorageError, Store};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::TryStreamExt;

mod support {
    use super::*;

    /// Records every create and refuses (and remembers) any overwrite or delete.
    #[derive(Debug)]
    pub struct Guard {
        pub inner: DynStore,
        pub created: Mutex<HashSet<String>>,
        pub violations: Mutex<Vec<String>>,
    }

    impl Guard {
        pub fn new(inner: DynStore) -> Arc<Guard> {
            Arc::new(Guard {
                inner,
                created: Mutex::default(),
                violations: Mutex::default(),
            })
        }
    }

    #[async_trait]
    impl Store for Guard {
        async fn create(&self, key: &str, data: Bytes) -> arsip_storage::Result<()> {
            if self.inner.head(key).await.is_ok() {
                self.violations
                    .lock()
                    .unwrap()
                    .push(format!("overwrite of {key}"));
                return Err(StorageError::new(
                    ErrorKind::PermissionDenied,
                    Some(key),
                    "guard: overwrite refused",
                ));
            }
            self.created.lock().unwrap().insert(key.to_string());
            self.inner.create(key, data).await
        }
        async fn get(&self, key: &str) -> arsip_storage::Result<Bytes> {
            self.inner.get(key).await
        }
        async fn get_with_meta(&self, key: &str) -> arsip_storage::Result<arsip_storage::Object> {
            self.inner.get_with_meta(key).await
        }
        async fn update(
            &self,
            key: &str,
            _: &arsip_storage::Revision,
            _: Bytes,
        ) -> arsip_storage::Result<ObjectMeta> {
            self.violations
                .lock()
                .unwrap()
                .push(format!("update of {key}"));
            Err(StorageError::new(
                ErrorKind::PermissionDenied,
                Some(key),
                "guard: update refused",
            ))
        }
        async fn delete_if(
            &self,
            key: &str,
            _: &arsip_storage::Revision,
        ) -> arsip_storage::Result<()> {
            self.delete(key).await
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> arsip_storage::Result<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &str) -> arsip_storage::Result<ObjectMeta> {
            self.inner.head(key).await
        }
        fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, arsip_storage::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn delete(&self, key: &str) -> arsip_storage::Result<()> {
            self.violations
                .lock()
                .unwrap()
                .push(format!("delete of {key}"));
            Err(StorageError::new(
                ErrorKind::PermissionDenied,
                Some(key),
                "guard: delete refused",
            ))
        }
        fn describe(&self) -> String {
            "guard".into()
        }
    }

    pub fn small_pack_options() -> InitOptions {
        InitOptions {
            chunker: arsip_repo::ChunkerParams {
                min: 16 * 1024,
                avg: 64 * 1024,
                max: 256 * 1024,
            },
            compression_level: 3,
            pack_size: 256 * 1024,
            ..InitOptions::default()
        }
    }

    pub async fn init(store: DynStore) -> FullRepo {
        std::env::set_var("ARSIP_TEST_WEAK_KDF", "1");
        let (repo, _) = Repository::init(
            store,
            Some(b"pw"),
            &small_pack_options(),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        repo
    }

    pub async fn open(store: DynStore) -> FullRepo {
        let with = OpenWith::Password(zeroize::Zeroizing::new(b"pw".to_vec()));
        Repository::open(store, with, Arc::new(SystemClock))
            .await
            .unwrap()
            .full("test")
            .unwrap()
    }

    pub fn meta(kind: &str) -> SnapshotMeta {
        SnapshotMeta {
            kind: kind.into(),
            source: "test".into(),
            ..Default::default()
        }
    }

    pub async fn backup_bytes(
        repo: impl Into<Arc<Repository>>,
        data: Vec<u8>,
    ) -> arsip_repo::BackupOutcome {
        let b = SnapshotTxn::start(repo).await.unwrap();
        backup::stream(
            b,
            std::io::Cursor::new(data),
            "stream".into(),
            meta("stdin"),
        )
        .await
        .unwrap()
    }

    pub async fn restore_bytes(repo: FullRepo, id: &str) -> Result<Vec<u8>, RepoError> {
        let snaps = repo.snapshots_report().await?.0;
        let snap = arsip_repo::select_snapshot(&snaps, id)?.clone();
        let reader = arsip_repo::Reader::open(&repo).await?;
        let mut out = Vec::new();
        restore::to_writer(&reader, &snap, &mut out, &|_| {}).await?;
        Ok(out)
    }

    pub fn memory() -> DynStore {
        backend::open(&backend::Location::Memory, false).unwrap()
    }
}

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_path_never_overwrites_or_deletes() {
    let base = memory();
    init(base.clone()).await;
    let guard = Guard::new(base.clone());
    let repo = open(guard.clone()).await;
    let data = arsip_testkit::sample_data(3 << 20, 7);
    let first = backup_bytes(repo.clone(), data.clone()).await;
    // Second backup of the same data and of changed data: dedup paths, still create-only.
    let second = backup_bytes(repo.clone(), data.clone()).await;
    let mut changed = data.clone();
    changed[1_000_000..1_000_100].fill(b'#');
    backup_bytes(repo.clone(), changed.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), &data[..100_000]).unwrap();
    let txn = SnapshotTxn::start(repo.clone()).await.unwrap();
    let opts = backup::FilesOptions {
        paths: vec![dir.path().into()],
        ..Default::default()
    };
    backup::files(txn, opts, meta("files")).await.unwrap();

    assert!(
        guard.violations.lock().unwrap().is_empty(),
        "{:?}",
        guard.violations.lock().unwrap()
    );
    assert!(
        second.added_bytes < data.len() as u64 / 100,
        "unchanged input added {} bytes",
        second.added_bytes
    );
    assert_eq!(restore_bytes(repo.clone(), &first.id).await.unwrap(), data);
    let report = arsip_repo::check(repo, ReadData::Subset(100.0))
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

/// Fixed blocks (relation files): batches of blocks span several pack-worker jobs, the last
/// block is short, the data round-trips, and after one byte changes only its block is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_blocks_round_trip_and_store_only_changed_blocks() {
    const BLOCK: usize = 16 * 1024;
    let repo = init(memory()).await;
    // 2.5 MiB + 1234 bytes: three 1 MiB batches, the last block 1234 bytes long.
    let mut data: Vec<u8> = (0..(5 << 19) + 1234u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let backup_blocks = |data: Vec<u8>| {
        let repo = repo.clone();
        async move {
            let now = repo.now();
            let mut b = SnapshotTxn::start(repo).await.unwrap();
            let s = b.session().clone();
            let (ids, size) = tokio::task::spawn_blocking(move || {
                s.write_blocks(std::io::Cursor::new(data), BLOCK)
            })
            .await
            .unwrap()
            .unwrap();
            let node = arsip_repo::Node::stream_file("rel", size, now);
            b.node(&node, &ids).unwrap();
            (ids, b.commit(meta("blocks")).await.unwrap())
        }
    };
    let (ids, first) = backup_blocks(data.clone()).await;
    assert_eq!(ids.len(), data.len().div_ceil(BLOCK));
    assert_eq!(first.logical_bytes, data.len() as u64);
    assert_eq!(restore_bytes(repo.clone(), &first.id).await.unwrap(), data);

    data[BLOCK * 70 + 5] ^= 0xff;
    let (ids2, second) = backup_blocks(data.clone()).await;
    let changed: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] != ids2[i]).collect();
    assert_eq!(changed, vec![70]);
    // the changed block, and the tree stream that names it
    assert_eq!(second.new_chunks, 2);
    assert_eq!(restore_bytes(repo.clone(), &second.id).await.unwrap(), data);
}

/// A stream that fails part-way still hands the chunks it admitted to the pack workers: the
/// session remembers their ids, so a later stream with the same content relies on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_a_failed_stream_still_reach_the_packs() {
    struct FailsAfter(std::io::Cursor<Vec<u8>>);
    impl std::io::Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(std::io::Error::other("disk went away")),
                n => Ok(n),
            }
        }
    }
    let params = arsip_repo::ChunkerParams {
        min: 16 << 10,
        avg: 64 << 10,
        max: 256 << 10,
    };
    let repo = init(memory()).await;
    let data: Vec<u8> = (0..(3 << 20) + 100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let now = repo.now();
    let mut b = SnapshotTxn::start(repo.clone()).await.unwrap();
    let s = b.session().clone();
    let d = data.clone();
    let (failed, (ids, size)) = tokio::task::spawn_blocking(move || {
        let failed = s.write_stream_with(FailsAfter(std::io::Cursor::new(d.clone())), params);
        (failed, s.write_stream_with(&d[..], params).unwrap())
    })
    .await
    .unwrap();
    assert!(failed.is_err());
    b.node(&arsip_repo::Node::stream_file("dump", size, now), &ids)
        .unwrap();
    let snap = b.commit(meta("stream")).await.unwrap();
    assert_eq!(restore_bytes(repo, &snap.id).await.unwrap(), data);
}

/// A flipped byte inside a pack of adjacent fixed blocks (read as one run) fails the restore
/// with damage named, never returns the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_block_inside_a_run_fails_the_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend::open(&backend::Location::Local(dir.path().into()), true).unwrap();
    let repo = init(store).await;
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let now = repo.now();
    let mut b = SnapshotTxn::start(repo.clone()).await.unwrap();
    let s = b.session().clone();
    let (ids, size) =
        tokio::task::spawn_blocking(move || s.write_blocks(std::io::Cursor::new(data), 16 << 10))
            .await
            .unwrap()
            .unwrap();
    b.node(&arsip_repo::Node::stream_file("rel", size, now), &ids)
        .unwrap();
    let snap = b.commit(meta("blocks")).await.unwrap();
    // the largest pack holds many adjacent blocks; flip a byte in its middle
    let pack = walkdir(&dir.path().join("data"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();
    match restore_bytes(repo, &snap.id).await {
        Err(RepoError::Corrupt { object, .. }) => assert!(object.starts_with("data/"), "{object}"),
        other => panic!("expected damage to be reported, got {other:?}"),
    }
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_every_put_and_get_lose_nothing() {
    use arsip_storage::fault::{FaultPlan, Faulty};
    let base = memory();
    init(base.clone()).await;
    let plan = FaultPlan {
        fail_each_create_once: true,
        fail_each_get_once: true,
        ..Default::default()
    };
    let faulty = Arc::new(Faulty::new(base.clone(), plan));
    let policy = arsip_storage::retry::RetryPolicy {
        initial: std::time::Duration::from_millis(1),
        ..Default::default()
    };
    let store: DynStore = Arc::new(arsip_storage::retry::Retry::new(faulty.clone(), policy));
    let repo = open(store).await;
    let data = arsip_testkit::sample_data(2 << 20, 9);
    let out = backup_bytes(repo.clone(), data.clone()).await;
    assert_eq!(restore_bytes(repo.clone(), &out.id).await.unwrap(), data);
    assert!(
        faulty.injected() > 10,
        "faults were injected: {}",
        faulty.injected()
    );
    let report = arsip_repo::check(open(base).await, ReadData::Subset(100.0))
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_storage_failure_fails_the_backup_and_commits_nothing() {
    use arsip_storage::fault::{FaultPlan, Faulty};
    let base = memory();
    init(base.clone()).await;
    let plan = FaultPlan {
        fail_create_prefix: Some("index/".into()),
        ..Default::default()
    };
    let repo = open(Arc::new(Faulty::new(base.clone(), plan))).await;
    let b = SnapshotTxn::start(repo).await.unwrap();
    let r = backup::stream(
        b,
        std::io::Cursor::new(arsip_testkit::sample_data(1 << 20, 3)),
        "s".into(),
        meta("stdin"),
    )
    .await;
    assert!(r.is_err());
    let repo = open(base).await;
    assert!(
        repo.snapshots_report().await.unwrap().0.is_empty(),
        "no snapshot may appear"
    );
    assert!(arsip_repo::check(repo, ReadData::None).await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_write_but_cannot_read() {
    let base = memory();
    let full = init(base.clone()).await;
    let shared = arsip_testkit::sample_data(2 << 20, 11);
    let full_snap = backup_bytes(full.clone(), shared.clone()).await;
    let agent_file = full.add_agent("db-host-1").await.unwrap();

    // The agent works through an append-only store, as on a database host.
    let agent_store: DynStore = Arc::new(arsip_storage::append_only::AppendOnly::new(base.clone()));
    let agent = Repository::open(
        agent_store,
        OpenWith::Agent(agent_file.clone()),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let mut agent_data = shared.clone();
    agent_data.extend(arsip_testkit::sample_data(1 << 20, 12));
    let agent_snap = backup_bytes(agent.clone(), agent_data.clone()).await;
    assert!(
        agent_snap.added_bytes < (1 << 20) + (512 << 10),
        "agent dedups against root chunks: added {}",
        agent_snap.added_bytes
    );

    // The agent can read nothing sealed: its handle is an agent handle, which has no
    // snapshot listing, reader or check (that does not compile: see arsip_repo::cap), and
    // asking it for the full-key capability is refused.
    assert!(matches!(agent, Opened::Agent(_)));
    assert!(agent.is_agent());
    assert!(matches!(
        agent.clone().full("listing snapshots"),
        Err(RepoError::NeedsFullKey("listing snapshots"))
    ));

    // A full key restores what the agent wrote, and the full writer never deduplicates
    // against the agent's (unverified) chunks.
    assert_eq!(
        restore_bytes(full.clone(), &agent_snap.id).await.unwrap(),
        agent_data
    );
    assert_eq!(
        restore_bytes(full.clone(), &full_snap.id).await.unwrap(),
        shared
    );
    let full_again = backup_bytes(full.clone(), agent_data.clone()).await;
    assert!(
        full_again.added_bytes >= 1 << 20,
        "full writer must store the agent-only chunks itself: {}",
        full_again.added_bytes
    );

    // No object of any type opens with any key material of the agent file.
    let agent_keys: Vec<[u8; 32]> = [
        &agent_file.signing_seed,
        &agent_file.chunk_id_key,
        &agent_file.public_key,
        &agent_file.root_verify_key,
    ]
    .iter()
    .map(|h| arsip_repo::decode32(h, "agent").unwrap())
    .collect();
    let objects: Vec<ObjectMeta> = base.list("").try_collect().await.unwrap();
    let mut kinds = HashSet::new();
    for o in &objects {
        let bytes = base.get(&o.key).await.unwrap();
        let kind = o.key.split('/').next().unwrap().to_string();
        assert!(
            !agent_can_decrypt(&o.key, &bytes, &agent_keys, &agent_file.repo_id),
            "agent key material opens {}",
            o.key
        );
        kinds.insert(kind);
    }
    for k in ["config", "keys", "writers", "data", "index", "snapshots"] {
        assert!(kinds.contains(k), "test covers {k} objects: {kinds:?}");
    }

    // A compromised agent cannot register itself under a new id (copying its root-signed
    // record) nor revoke another writer: both need a root signature over the right id.
    let second = full.add_agent("db-host-2").await.unwrap();
    let own_record = base
        .get(&format!("writers/{}", agent_file.writer_id))
        .await
        .unwrap();
    let forged_id = "ff".repeat(16);
    base.create(&format!("writers/{forged_id}"), own_record.clone())
        .await
        .unwrap();
    for name in [
        format!("writers/{}.revoked", second.writer_id),
        format!("writers/{}.revoked.{}", second.writer_id, "0".repeat(64)),
        // The agent tries to block its own coming revocation.
        format!("writers/{}.revoked", agent_file.writer_id),
    ] {
        base.create(&name, own_record.clone()).await.unwrap();
    }
    // A planted unparsable key slot must not stop passwords from opening the repository.
    base.create("keys/planted", Bytes::from_static(b"not json"))
        .await
        .unwrap();
    let fresh = open(base.clone()).await;
    let id: [u8; 16] = hex::decode(&forged_id).unwrap().try_into().unwrap();
    assert_eq!(
        fresh.writer_key(&id).await.unwrap(),
        None,
        "forged registration accepted"
    );
    let second_id: [u8; 16] = hex::decode(&second.writer_id).unwrap().try_into().unwrap();
    assert!(
        fresh.writer_key(&second_id).await.unwrap().is_some(),
        "forged revocation accepted"
    );
    let writers = fresh.writers().await.unwrap();
    assert!(
        writers
            .iter()
            .all(|w| w.revoked.is_none() && w.writer_id != forged_id),
        "{writers:?}"
    );

    // Revoking the agent makes readers refuse what it signed.
    let writer = agent_file.writer_id.clone();
    full.revoke_agent(&writer).await.unwrap();
    let reopened = open(base.clone()).await;
    let (good, bad) = reopened.snapshots_report().await.unwrap();
    assert!(good.iter().all(|s| s.writer != writer));
    assert_eq!(
        bad.len(),
        1,
        "the agent's snapshot is reported, not silently dropped"
    );
}

/// Try every way an agent could use its key material to decrypt `bytes`.
fn agent_can_decrypt(name: &str, bytes: &[u8], keys: &[[u8; 32]], repo_id: &str) -> bool {
    use arsip_repo::crypto::{self, Key, RepoSecret};
    use arsip_repo::format::{self, ObjectType};
    for k in keys {
        let as_master = RepoSecret::from_master(&Key(*k));
        let sym = Key(*k);
        if name.starts_with("data/") && format::read_pack_table(name, bytes, &as_master).is_ok() {
            return true;
        }
        if name.starts_with("index/") {
            let p = format::parse_index(name, bytes).unwrap();
            if format::open_index_locations(name, bytes, &p, &as_master).is_ok() {
                return true;
            }
        }
        if name.starts_with("snapshots/")
            && format::open_sealed_doc(name, bytes, ObjectType::Snapshot, &as_master).is_ok()
        {
            return true;
        }
        if name.starts_with("keys/") {
            let slot: arsip_repo::KeySlot = serde_json::from_slice(bytes).unwrap();
            let wrapped = hex::decode(&slot.wrapped).unwrap();
            let aad = format!("arsip key slot\0{repo_id}\0{}", slot.id);
            if crypto::open(&sym, &wrapped, aad.as_bytes()).is_ok()
                || matches!(
                    slot.open(repo_id, &arsip_repo::Secret::Password(k)),
                    Ok(Some(_))
                )
            {
                return true;
            }
        }
        // `config` and `writers/` are signed plaintext JSON: nothing in them to decrypt.
    }
    false
}

/// Regression: a pack upload that fails permanently in the middle of a long stream used to
/// surface as "the upload pipeline stopped; see the error that follows" (a usage-class
/// error, exit 2) with no error following. The stream's hand-off now returns the stage's
/// own error: storage class, with the object named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pack_upload_is_reported_as_the_storage_error_it_is() {
    use arsip_repo::{Classify, ErrorClass};
    use arsip_storage::fault::{FaultPlan, Faulty};
    let base = memory();
    init(base.clone()).await;
    let plan = FaultPlan {
        fail_create_prefix: Some("data/".into()),
        ..Default::default()
    };
    let repo = open(Arc::new(Faulty::new(base.clone(), plan))).await;
    for size in [200 << 10, 24 << 20] {
        let b = SnapshotTxn::start(repo.clone()).await.unwrap();
        let err = backup::stream(
            b,
            std::io::Cursor::new(arsip_testkit::sample_data(size, 5)),
            "s".into(),
            meta("stdin"),
        )
        .await
        .expect_err("the backup must fail");
        assert_eq!(err.class(), ErrorClass::Storage, "{size} bytes: {err}");
        assert!(err.to_string().contains("data/"), "names the object: {err}");
    }
    assert!(open(base)
        .await
        .snapshots_report()
        .await
        .unwrap()
        .0
        .is_empty());
}
