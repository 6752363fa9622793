//! The storage conformance suite: every backend — local directory, in-memory, and a real
//! S3-protocol server — must pass the same contract checks (see `arsip_storage` docs), and
//! so must the wrappers stacked on them.
//!
//! Modules: `contract` (the checks, generic over a store), then one test per backend, then
//! the wrappers, local permissions, and per-location S3 settings.

use std::sync::Arc;

use arsip_storage::backend::{self, Location};
use arsip_storage::{DynStore, ErrorKind, Revision, S3Credentials, S3Settings, StoreSettings};
use bytes::Bytes;
use futures::TryStreamExt;

mod contract {
    use super::*;

    pub async fn run(store: DynStore) {
        create_get_head(&store).await;
        create_is_create_only(&store).await;
        ranges(&store).await;
        listing(&store).await;
        delete(&store).await;
        missing(&store).await;
        metadata(&store).await;
        conditional_update(&store).await;
        concurrent_updates(&store).await;
        conditional_delete(&store).await;
    }

    /// Every way of learning an object's metadata agrees on one revision.
    async fn metadata(s: &DynStore) {
        let created = s
            .create_with_meta("meta/a", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(created.key, "meta/a");
        assert_eq!(created.size, 5);
        assert!(created.e_tag.is_some(), "{created:?}");
        // The store's clock, not ours: only sanity (after 2020, before 2200).
        let t = created.last_modified;
        assert!(t > "2020-01-01T00:00:00Z".parse().unwrap(), "{t}");
        assert!(t < "2200-01-01T00:00:00Z".parse().unwrap(), "{t}");
        let head = s.head("meta/a").await.unwrap();
        assert_eq!(head, created);
        let got = s.get_with_meta("meta/a").await.unwrap();
        assert_eq!(got.data, Bytes::from_static(b"hello"));
        assert_eq!(got.meta, head);
        let listed: Vec<_> = s.list("meta/").try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "meta/a");
        assert_eq!(listed[0].e_tag, head.e_tag);
        assert_eq!(listed[0].size, 5);
        // Seconds at least agree (S3 listings carry millisecond precision, HEAD seconds).
        assert_eq!(
            listed[0].last_modified.as_second(),
            head.last_modified.as_second()
        );
        let e = s
            .create_with_meta("meta/a", Bytes::from_static(b"again"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");
        assert_eq!(
            s.get_with_meta("nope").await.unwrap_err().kind,
            ErrorKind::NotFound
        );
    }

    /// Replace only the revision read; a stale or missing one is a precondition failure
    /// that writes nothing.
    async fn conditional_update(s: &DynStore) {
        let v1 = s
            .create_with_meta("lock", Bytes::from_static(b"writer-a 1"))
            .await
            .unwrap();
        let v2 = s
            .update("lock", &v1.revision(), Bytes::from_static(b"writer-a 2"))
            .await
            .unwrap();
        assert_ne!(v2.e_tag, v1.e_tag, "a new revision has a new e_tag");
        assert_eq!(v2.size, 10);
        let now = s.get_with_meta("lock").await.unwrap();
        assert_eq!(now.data, Bytes::from_static(b"writer-a 2"));
        assert_eq!(
            now.meta.e_tag, v2.e_tag,
            "update returns the revision it wrote"
        );
        assert!(now.meta.last_modified >= v1.last_modified);

        let e = s
            .update("lock", &v1.revision(), Bytes::from_static(b"writer-b 1"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
        assert_eq!(
            s.get("lock").await.unwrap(),
            Bytes::from_static(b"writer-a 2"),
            "a failed update writes nothing"
        );
        let e = s
            .update("no-such-lock", &v1.revision(), Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
        assert_eq!(
            s.head("no-such-lock").await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        // A chain of updates never repeats an e_tag (local: mtime kept increasing).
        let mut rev = v2;
        let mut seen = vec![v1.e_tag.clone(), rev.e_tag.clone()];
        for i in 3..8 {
            rev = s
                .update(
                    "lock",
                    &rev.revision(),
                    Bytes::from(format!("writer-a {i}")),
                )
                .await
                .unwrap();
            assert!(!seen.contains(&rev.e_tag), "{rev:?} repeats an e_tag");
            seen.push(rev.e_tag.clone());
        }
        // Same size, same writer, different bytes: still a precondition failure when stale.
        let e = s
            .update(
                "lock",
                &Revision {
                    e_tag: seen[2].clone(),
                    version: None,
                },
                Bytes::from_static(b"writer-c 1"),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
    }

    /// Writers racing from one revision: exactly one wins, the others fail cleanly and
    /// the object holds the winner's bytes.
    async fn concurrent_updates(s: &DynStore) {
        let base = s
            .create_with_meta("contended", Bytes::from_static(b"base"))
            .await
            .unwrap();
        let results = futures::future::join_all((0..6u8).map(|i| {
            let s = s.clone();
            let rev = base.revision();
            async move {
                s.update("contended", &rev, Bytes::from(format!("writer {i}")))
                    .await
                    .map(|_| i)
            }
        }))
        .await;
        let winners: Vec<u8> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind == ErrorKind::PreconditionFailed));
        assert_eq!(
            s.get("contended").await.unwrap(),
            Bytes::from(format!("writer {}", winners[0]))
        );
    }

    /// Delete only the revision read.
    async fn conditional_delete(s: &DynStore) {
        let v1 = s
            .create_with_meta("gen", Bytes::from_static(b"generation 1"))
            .await
            .unwrap();
        let v2 = s
            .update("gen", &v1.revision(), Bytes::from_static(b"generation 2"))
            .await
            .unwrap();
        let e = s.delete_if("gen", &v1.revision()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
        assert_eq!(
            s.get("gen").await.unwrap(),
            Bytes::from_static(b"generation 2"),
            "a failed conditional delete removes nothing"
        );
        s.delete_if("gen", &v2.revision()).await.unwrap();
        assert_eq!(s.get("gen").await.unwrap_err().kind, ErrorKind::NotFound);
        let e = s.delete_if("gen", &v2.revision()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        // The name can be created again afterwards.
        s.create("gen", Bytes::from_static(b"generation 3"))
            .await
            .unwrap();
    }

    async fn create_get_head(s: &DynStore) {
        let data = Bytes::from(arsip_testkit::sample_data(100_000, 1));
        s.create("data/ab/object-1", data.clone()).await.unwrap();
        assert_eq!(s.get("data/ab/object-1").await.unwrap(), data);
        assert_eq!(s.head("data/ab/object-1").await.unwrap().size, 100_000);
        s.create("empty", Bytes::new()).await.unwrap();
        assert_eq!(s.get("empty").await.unwrap().len(), 0);
    }

    async fn create_is_create_only(s: &DynStore) {
        s.create("config-x", Bytes::from_static(b"first"))
            .await
            .unwrap();
        let e = s
            .create("config-x", Bytes::from_static(b"second"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");
        assert_eq!(
            s.get("config-x").await.unwrap(),
            Bytes::from_static(b"first"),
            "existing object must be untouched"
        );
        // Concurrent creates of one name: exactly one wins.
        let results = futures::future::join_all((0..8u8).map(|i| {
            let s = s.clone();
            async move { s.create("race", Bytes::from(vec![i; 1000])).await }
        }))
        .await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind == ErrorKind::AlreadyExists));
    }

    async fn ranges(s: &DynStore) {
        let data = Bytes::from(arsip_testkit::sample_data(10_000, 2));
        s.create("ranged", data.clone()).await.unwrap();
        assert_eq!(
            s.get_range("ranged", 100..200).await.unwrap(),
            data.slice(100..200)
        );
        assert_eq!(
            s.get_range("ranged", 9_990..10_000).await.unwrap(),
            data.slice(9_990..)
        );
        assert!(
            s.get_range("ranged", 9_990..10_010).await.is_err(),
            "a range past the end is an error"
        );
    }

    async fn listing(s: &DynStore) {
        for i in 0..25 {
            s.create(&format!("list/{i:03}"), Bytes::from(vec![0; i]))
                .await
                .unwrap();
        }
        s.create("listing-not-under-prefix", Bytes::new())
            .await
            .unwrap();
        let mut got: Vec<_> = s.list("list/").try_collect().await.unwrap();
        got.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(got.len(), 25);
        assert_eq!(got[7].key, "list/007");
        assert_eq!(got[7].size, 7);
        let all: Vec<_> = s.list("").try_collect().await.unwrap();
        assert!(all.iter().any(|m| m.key == "data/ab/object-1"), "{all:?}");
        let none: Vec<_> = s.list("nothing-here/").try_collect().await.unwrap();
        assert!(none.is_empty());
    }

    async fn delete(s: &DynStore) {
        s.create("to-delete", Bytes::from_static(b"x"))
            .await
            .unwrap();
        s.delete("to-delete").await.unwrap();
        assert_eq!(
            s.get("to-delete").await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        s.delete("to-delete").await.unwrap();
        // After a delete the name can be created again (prune, then a later backup).
        s.create("to-delete", Bytes::from_static(b"y"))
            .await
            .unwrap();
    }

    async fn missing(s: &DynStore) {
        assert_eq!(s.get("nope").await.unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(s.head("nope").await.unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(
            s.get_range("nope", 0..1).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
    }
}

fn wrapped(s: DynStore) -> DynStore {
    Arc::new(arsip_storage::retry::Retry::new(s, Default::default()))
}

#[tokio::test]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend::open(&Location::Local(dir.path().join("repo")), true).unwrap();
    contract::run(wrapped(store)).await;
    // Staging files of in-flight writes are never left behind.
    assert!(!walk(dir.path()).iter().any(|(p, _)| p.contains('#')));
}

/// Issue 10 §4: objects 0600, directories 0700, for every kind of object the repository
/// writes (config, key slots, nested data, replaced ones), so no other local user can copy
/// a key slot for an offline password guess.
#[tokio::test]
async fn local_objects_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/new/repo");
    let s = wrapped(backend::open(&Location::Local(root.clone()), true).unwrap());
    for key in [
        "config",
        "keys/0123abcd",
        "data/ab/abcdef",
        "index/x/y/z/deep",
        "snapshots/s",
    ] {
        s.create(key, Bytes::from_static(b"secret")).await.unwrap();
    }
    let m = s
        .create_with_meta("lock", Bytes::from_static(b"1"))
        .await
        .unwrap();
    s.update("lock", &m.revision(), Bytes::from_static(b"2"))
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The repository directory and the parents `init` created on the way.
    for d in [&root, &dir.path().join("a/new"), &dir.path().join("a")] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    let all = walk(&root);
    assert!(all.len() >= 10, "{all:?}");
    for (p, is_dir) in all {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode(p.as_ref()), want, "{p}");
    }
}

/// Every path under `p` (files and directories), with whether it is a directory.
fn walk(p: &std::path::Path) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let is_dir = e.file_type().unwrap().is_dir();
        out.push((e.path().display().to_string(), is_dir));
        if is_dir {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[tokio::test]
async fn in_memory() {
    contract::run(wrapped(backend::open(&Location::Memory, false).unwrap())).await;
}

/// Settings for the test server, resolved the way the CLI resolves them (from variables),
/// but from the server's own list, never from this process's environment.
fn s3_settings() -> StoreSettings {
    let vars = arsip_testkit::s3()
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v));
    StoreSettings {
        s3: S3Settings::from_vars(vars).unwrap(),
    }
}

fn s3_store(bucket: &str, prefix: &str, settings: &StoreSettings) -> DynStore {
    let loc = Location::S3 {
        bucket: bucket.into(),
        prefix: prefix.into(),
    };
    backend::open_with(&loc, settings, false).unwrap()
}

#[tokio::test]
async fn s3_protocol_server() {
    let bucket = arsip_testkit::s3().bucket();
    let store = s3_store(&bucket, "some/prefix", &s3_settings());
    contract::run(wrapped(store)).await;
}

#[tokio::test]
async fn s3_listing_pages() {
    // moto pages listings at 1000 keys; the stream must follow continuation tokens.
    let store = s3_store(&arsip_testkit::s3().bucket(), "", &s3_settings());
    futures::stream::iter(0..1050)
        .map(|i| {
            let s = store.clone();
            async move {
                s.create(&format!("p/{i:05}"), Bytes::from_static(b"x"))
                    .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let n = store
        .list("p/")
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len();
    assert_eq!(n, 1050);
}

#[tokio::test]
async fn unreachable_s3_is_a_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Build directly so the endpoint does not race with other tests' environment.
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("b")
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_allow_http(true)
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .build()
        .unwrap();
    let store = backend::ObjectStoreBackend::new(Arc::new(s3), String::new(), "s3://b".into());
    let e = arsip_storage::Store::get(&store, "config")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
}

#[tokio::test]
async fn append_only_refuses_delete_and_conditional_writes() {
    let inner = backend::open(&Location::Memory, false).unwrap();
    let s: DynStore = Arc::new(arsip_storage::append_only::AppendOnly::new(inner));
    let m = s
        .create_with_meta("a", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(
        s.delete("a").await.unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        s.update("a", &m.revision(), Bytes::from_static(b"2"))
            .await
            .unwrap_err()
            .kind,
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        s.delete_if("a", &m.revision()).await.unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    let got = s.get_with_meta("a").await.unwrap();
    assert_eq!(got.data, Bytes::from_static(b"1"));
    assert_eq!(got.meta.e_tag, m.e_tag, "nothing was replaced");
}

/// A conditional write whose answer was lost (the server acted, the client saw a timeout)
/// is retried; the retry meets a precondition failure (update) or a missing object
/// (delete) and must report what actually happened: success, with the revision written.
/// On every backend, since the lost answer can come from the HTTP client's own retries too.
#[tokio::test]
async fn retried_conditional_writes_whose_answer_was_lost_succeed() {
    use arsip_storage::fault::{FaultPlan, Faulty};
    let dir = tempfile::tempdir().unwrap();
    let bucket = arsip_testkit::s3().bucket();
    let backends = [
        backend::open(&Location::Memory, false).unwrap(),
        backend::open(&Location::Local(dir.path().into()), false).unwrap(),
        s3_store(&bucket, "lost", &s3_settings()),
    ];
    for inner in backends {
        let faulty = Arc::new(Faulty::new(
            inner,
            FaultPlan {
                lose_each_conditional_answer_once: true,
                ..Default::default()
            },
        ));
        let policy = arsip_storage::retry::RetryPolicy {
            initial: std::time::Duration::from_millis(1),
            ..Default::default()
        };
        let s: DynStore = Arc::new(arsip_storage::retry::Retry::new(faulty.clone(), policy));
        let what = s.describe();
        let v1 = s
            .create_with_meta("lock", Bytes::from_static(b"writer-a 1"))
            .await
            .unwrap();
        let v2 = s
            .update("lock", &v1.revision(), Bytes::from_static(b"writer-a 2"))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(faulty.injected(), 1, "{what}");
        let now = s.head("lock").await.unwrap();
        assert_eq!(
            v2.e_tag, now.e_tag,
            "{what}: the revision written is reported"
        );
        // A real conflict after a retry is still a conflict.
        let e = s
            .update("lock", &v1.revision(), Bytes::from_static(b"writer-b 1"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{what}: {e}");
        s.delete_if("lock", &v2.revision())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(faulty.injected(), 2, "{what}");
        assert_eq!(s.head("lock").await.unwrap_err().kind, ErrorKind::NotFound);
    }
}

/// Issue 9 step 4: endpoint, region and credentials belong to a location, so one process
/// holds differently configured stores at once, and nothing comes from its environment.
#[tokio::test]
async fn s3_settings_are_per_location() {
    let server = arsip_testkit::s3();
    let bucket = server.bucket();
    let a = s3_settings();
    // The same server under another name, with other credentials and region.
    let mut b = a.clone();
    b.s3.endpoint = Some(server.endpoint.replace("127.0.0.1", "localhost"));
    b.s3.region = Some("ap-southeast-3".into());
    b.s3.credentials = S3Credentials::Static {
        access_key_id: "other".into(),
        secret_access_key: "other-secret".into(),
        session_token: Some("token".into()),
    };
    // No credentials at all.
    let mut none = a.clone();
    none.s3.credentials = S3Credentials::Missing;

    for k in ["AWS_ACCESS_KEY_ID", "ARSIP_S3_ENDPOINT", "AWS_ENDPOINT"] {
        assert!(std::env::var_os(k).is_none(), "{k} must not be needed");
    }
    let sa = s3_store(&bucket, "x", &a);
    let sb = s3_store(&bucket, "x", &b);
    let snone = s3_store(&bucket, "x", &none);
    sa.create("from-a", Bytes::from_static(b"a")).await.unwrap();
    sb.create("from-b", Bytes::from_static(b"b")).await.unwrap();
    assert_eq!(sb.get("from-a").await.unwrap(), Bytes::from_static(b"a"));
    assert_eq!(sa.get("from-b").await.unwrap(), Bytes::from_static(b"b"));
    let e = snone.get("from-a").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    assert!(e.message.contains("no S3 credentials"), "{e}");
    // The working stores are unaffected by their neighbours.
    assert_eq!(sa.get("from-a").await.unwrap(), Bytes::from_static(b"a"));
}

/// Issue 10 §5: with no credentials configured, the instance-metadata fallback is probed
/// for a second, not waited on for ~17 s; the error says what is missing.
#[tokio::test]
async fn missing_credentials_fail_fast_and_say_so() {
    let bucket = arsip_testkit::s3().bucket();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoints = [
        Some(format!("http://127.0.0.1:{closed}")),
        // The real one: on a machine that is not a cloud instance it does not answer (or,
        // behind some sandboxes' proxies, answers 403).
        None,
    ];
    for metadata in endpoints {
        let mut s = s3_settings();
        s.s3.credentials = S3Credentials::InstanceMetadata;
        if let Some(m) = &metadata {
            s.s3.options
                .push(("aws_metadata_endpoint".into(), m.clone()));
        }
        let store = wrapped(s3_store(&bucket, "", &s));
        let started = std::time::Instant::now();
        let e = store.get("config").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{metadata:?}: {e}");
        assert!(e.message.contains("no S3 credentials"), "{e}");
        assert!(e.message.contains("instance metadata endpoint"), "{e}");
        // Generous: the probe gives up after 1 s; object_store's retries took ~17 s.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}

/// Issue 10 §5: a missing bucket is reported as a missing bucket (a configuration error),
/// not as a missing object or repository, whatever the first request is.
#[tokio::test]
async fn a_missing_bucket_says_so() {
    let name = format!("arsip-missing-{:016x}", rand_u64());
    let settings = s3_settings();
    type Probe = fn(&DynStore) -> futures::future::BoxFuture<'_, arsip_storage::Result<()>>;
    let probes: [(&str, Probe); 4] = [
        ("get", |s| {
            Box::pin(async { s.get("config").await.map(|_| ()) })
        }),
        ("head", |s| {
            Box::pin(async { s.head("config").await.map(|_| ()) })
        }),
        ("create", |s| {
            Box::pin(async { s.create("keys/k", Bytes::from_static(b"k")).await })
        }),
        ("list", |s| {
            Box::pin(async {
                s.list("snapshots/")
                    .try_collect::<Vec<_>>()
                    .await
                    .map(|_| ())
            })
        }),
    ];
    for (what, probe) in probes {
        let store = wrapped(s3_store(&name, "repo", &settings));
        let e = probe(&store).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{what}: {e}");
        assert!(
            e.to_string()
                .contains(&format!("bucket {name} does not exist")),
            "{what}: {e}"
        );
    }
    // An existing bucket with a missing object is still just `NotFound`.
    let store = wrapped(s3_store(&arsip_testkit::s3().bucket(), "repo", &settings));
    assert_eq!(
        store.get("config").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

#[tokio::test]
async fn retry_recovers_from_transient_faults_without_loss() {
    use arsip_storage::fault::{FaultPlan, Faulty};
    let inner = backend::open(&Location::Memory, false).unwrap();
    let faulty = Arc::new(Faulty::new(
        inner,
        FaultPlan {
            fail_each_create_once: true,
            fail_each_get_once: true,
            ..Default::default()
        },
    ));
    let policy = arsip_storage::retry::RetryPolicy {
        initial: std::time::Duration::from_millis(1),
        ..Default::default()
    };
    let s: DynStore = Arc::new(arsip_storage::retry::Retry::new(faulty.clone(), policy));
    for i in 0..20 {
        s.create(&format!("k{i}"), Bytes::from(vec![i as u8; 10]))
            .await
            .unwrap();
        assert_eq!(
            s.get(&format!("k{i}")).await.unwrap(),
            Bytes::from(vec![i as u8; 10])
        );
    }
    assert_eq!(faulty.injected(), 40);
}

use futures::StreamExt;
