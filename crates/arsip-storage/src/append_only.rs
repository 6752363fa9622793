//! Append-only guard: a wrapper that refuses every delete and every conditional update.
//! Creates are create-only by the contract already, so under this guard nothing stored can
//! be removed or replaced. The
//! backup and WAL paths run through it (and tests prove they never trip it); it models the
//! credentials an agent host holds.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::{DynStore, ErrorKind, Object, ObjectMeta, Result, Revision, StorageError, Store};

#[derive(Debug)]
pub struct AppendOnly {
    inner: DynStore,
}

impl AppendOnly {
    pub fn new(inner: DynStore) -> Self {
        AppendOnly { inner }
    }
}

#[async_trait]
impl Store for AppendOnly {
    async fn create(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.create(key, data).await
    }
    async fn create_with_meta(&self, key: &str, data: Bytes) -> Result<ObjectMeta> {
        self.inner.create_with_meta(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_with_meta(&self, key: &str) -> Result<Object> {
        self.inner.get_with_meta(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn update(&self, key: &str, _: &Revision, _: Bytes) -> Result<ObjectMeta> {
        Err(StorageError::new(
            ErrorKind::PermissionDenied,
            Some(key),
            "append-only storage refuses updates; run maintenance with full credentials",
        ))
    }
    async fn delete_if(&self, key: &str, _: &Revision) -> Result<()> {
        self.delete(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        Err(StorageError::new(
            ErrorKind::PermissionDenied,
            Some(key),
            "append-only storage refuses deletes; run maintenance with full credentials",
        ))
    }

    async fn sweep_staging(&self, _older_than: jiff::Timestamp) -> Result<u64> {
        Err(StorageError::new(
            ErrorKind::PermissionDenied,
            None,
            "append-only storage refuses deletes; run maintenance with full credentials",
        ))
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
