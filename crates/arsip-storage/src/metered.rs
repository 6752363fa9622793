//! Metering wrapper: counts the requests a store is sent, by the class a provider bills them
//! in, and the bytes moved, for the daemon's metrics and cost estimates. It sits below the
//! retry wrapper, so a retried request counts every time it is sent.
//!
//! A listing is counted as one request per started page of [`LIST_PAGE`] keys (S3's page
//! size; the stream hides the pages themselves), and at least one.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::{DynStore, Object, ObjectMeta, Result, Revision, Store};

/// Keys per listing page.
pub const LIST_PAGE: u64 = 1000;

/// Counters shared by every handle on one store.
#[derive(Debug, Default)]
pub struct Meter {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    failed: AtomicU64,
    uploaded: AtomicU64,
    downloaded: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Creates and conditional updates (billed as PUT, class A).
    pub put: u64,
    /// Whole and ranged reads (GET, class B).
    pub get: u64,
    pub head: u64,
    /// Listing pages (LIST, class A).
    pub list: u64,
    pub delete: u64,
    /// Requests that ended in an error (any class; also counted in their class).
    pub failed: u64,
    pub uploaded_bytes: u64,
    pub downloaded_bytes: u64,
}

impl Meter {
    pub fn usage(&self) -> Usage {
        Usage {
            put: self.put.load(Relaxed),
            get: self.get.load(Relaxed),
            head: self.head.load(Relaxed),
            list: self.list.load(Relaxed),
            delete: self.delete.load(Relaxed),
            failed: self.failed.load(Relaxed),
            uploaded_bytes: self.uploaded.load(Relaxed),
            downloaded_bytes: self.downloaded.load(Relaxed),
        }
    }

    fn count<T>(&self, class: &AtomicU64, r: Result<T>) -> Result<T> {
        class.fetch_add(1, Relaxed);
        if r.is_err() {
            self.failed.fetch_add(1, Relaxed);
        }
        r
    }
}

#[derive(Debug)]
pub struct Metered {
    inner: DynStore,
    meter: Arc<Meter>,
}

impl Metered {
    pub fn new(inner: DynStore, meter: Arc<Meter>) -> Self {
        Metered { inner, meter }
    }
}

#[async_trait]
impl Store for Metered {
    async fn create(&self, key: &str, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        let r = self
            .meter
            .count(&self.meter.put, self.inner.create(key, data).await);
        self.meter.uploaded.fetch_add(n, Relaxed);
        r
    }
    async fn create_with_meta(&self, key: &str, data: Bytes) -> Result<ObjectMeta> {
        let n = data.len() as u64;
        let r = self.meter.count(
            &self.meter.put,
            self.inner.create_with_meta(key, data).await,
        );
        self.meter.uploaded.fetch_add(n, Relaxed);
        r
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        let r = self.meter.count(&self.meter.get, self.inner.get(key).await);
        if let Ok(b) = &r {
            self.meter.downloaded.fetch_add(b.len() as u64, Relaxed);
        }
        r
    }
    async fn get_with_meta(&self, key: &str) -> Result<Object> {
        let r = self
            .meter
            .count(&self.meter.get, self.inner.get_with_meta(key).await);
        if let Ok(o) = &r {
            self.meter
                .downloaded
                .fetch_add(o.data.len() as u64, Relaxed);
        }
        r
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let r = self
            .meter
            .count(&self.meter.get, self.inner.get_range(key, range).await);
        if let Ok(b) = &r {
            self.meter.downloaded.fetch_add(b.len() as u64, Relaxed);
        }
        r
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.meter
            .count(&self.meter.head, self.inner.head(key).await)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        // The first page is sent when the listing starts; key LIST_PAGE + 1 comes from the next.
        self.meter.list.fetch_add(1, Relaxed);
        let mut seen = 0u64;
        self.inner
            .list(prefix)
            .map(move |r| {
                match &r {
                    Ok(_) => {
                        seen += 1;
                        if seen > LIST_PAGE && (seen - 1).is_multiple_of(LIST_PAGE) {
                            self.meter.list.fetch_add(1, Relaxed);
                        }
                    }
                    Err(_) => {
                        self.meter.failed.fetch_add(1, Relaxed);
                    }
                }
                r
            })
            .boxed()
    }
    async fn update(&self, key: &str, expected: &Revision, data: Bytes) -> Result<ObjectMeta> {
        let n = data.len() as u64;
        let r = self.meter.count(
            &self.meter.put,
            self.inner.update(key, expected, data).await,
        );
        self.meter.uploaded.fetch_add(n, Relaxed);
        r
    }
    async fn delete_if(&self, key: &str, expected: &Revision) -> Result<()> {
        self.meter.count(
            &self.meter.delete,
            self.inner.delete_if(key, expected).await,
        )
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.meter
            .count(&self.meter.delete, self.inner.delete(key).await)
    }
    async fn sweep_staging(&self, older_than: jiff::Timestamp) -> Result<u64> {
        self.inner.sweep_staging(older_than).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::backend::{self, Location};
    use crate::ErrorKind;

    #[tokio::test]
    async fn every_request_counts_in_its_class() {
        let meter = Arc::new(Meter::default());
        let store = Metered::new(
            backend::open(&Location::Memory, false).unwrap(),
            meter.clone(),
        );
        for i in 0..LIST_PAGE + 1 {
            store
                .create(&format!("d/{i:05}"), Bytes::from_static(b"abc"))
                .await
                .unwrap();
        }
        let e = store.create("d/00000", Bytes::from_static(b"x")).await;
        assert_eq!(e.unwrap_err().kind, ErrorKind::AlreadyExists);
        assert_eq!(store.get("d/00001").await.unwrap().len(), 3);
        store.get_range("d/00002", 1..3).await.unwrap();
        assert!(store.get("nothing").await.is_err());
        store.head("d/00003").await.unwrap();
        let all: Vec<ObjectMeta> = store.list("d/").try_collect().await.unwrap();
        assert_eq!(all.len() as u64, LIST_PAGE + 1);
        let _: Vec<ObjectMeta> = store.list("e/").try_collect().await.unwrap();
        store.delete("d/00004").await.unwrap();
        let u = meter.usage();
        assert_eq!(
            u,
            Usage {
                put: LIST_PAGE + 2,
                get: 3,
                head: 1,
                list: 3,
                delete: 1,
                failed: 2,
                uploaded_bytes: 3 * (LIST_PAGE + 1) + 1,
                downloaded_bytes: 5,
            }
        );
    }
}
