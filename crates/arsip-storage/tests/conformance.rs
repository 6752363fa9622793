//! The storage conformance suite: every backend — local directory, in-memory, and a real
//! S3-protocol server — must pass the same contract checks (see `arsip_storage` docs), and
//! so must the wrappers stacked on them.
//!
//! Modules: `contract` (the checks, generic over a store), then one test per backend.

use std::sync::Arc;

use arsip_storage::backend::{self, Location};
use arsip_storage::{DynStore, ErrorKind};
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
    // Staging files of object_store's local backend are never listed as objects.
    assert!(!walk(dir.path()).iter().any(|p| p.contains('#')));
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn in_memory() {
    contract::run(wrapped(backend::open(&Location::Memory, false).unwrap())).await;
}

#[tokio::test]
async fn s3_protocol_server() {
    let s3 = arsip_testkit::s3();
    s3.set_env();
    let bucket = s3.bucket();
    let store = backend::open(
        &Location::S3 {
            bucket,
            prefix: "some/prefix".into(),
        },
        false,
    )
    .unwrap();
    contract::run(wrapped(store)).await;
}

#[tokio::test]
async fn s3_listing_pages() {
    // moto pages listings at 1000 keys; the stream must follow continuation tokens.
    let s3 = arsip_testkit::s3();
    s3.set_env();
    let store = backend::open(
        &Location::S3 {
            bucket: s3.bucket(),
            prefix: String::new(),
        },
        false,
    )
    .unwrap();
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
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
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
async fn append_only_refuses_delete() {
    let inner = backend::open(&Location::Memory, false).unwrap();
    let s: DynStore = Arc::new(arsip_storage::append_only::AppendOnly::new(inner));
    s.create("a", Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(
        s.delete("a").await.unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    assert_eq!(s.get("a").await.unwrap(), Bytes::from_static(b"1"));
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
