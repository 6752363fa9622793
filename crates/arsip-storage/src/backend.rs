//! Backends: where bytes live, built from `object_store`.
//!
//! [`Location`] is the parsed configuration (a path or URL, no credentials in it);
//! [`open`] turns it into a [`Store`]. Credentials come from the environment the way each
//! ecosystem expects (the AWS SDK's variables for S3, plus `ARSIP_S3_ENDPOINT` and
//! `ARSIP_S3_REGION`; Google's and Azure's for theirs) and never pass through argv.
//!
//! The local backend adds what `object_store`'s local filesystem leaves out: an object is
//! acknowledged only after its file and the directories leading to it are fsynced.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path as OsPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::{ErrorKind, ObjectMeta, Result, StorageError, Store};

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
    Memory,
}

impl Location {
    /// Parse `--repo`: a filesystem path, `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` or `memory:`.
    pub fn parse(s: &str) -> Result<Location> {
        let bad = |m: &str| StorageError::new(ErrorKind::Permanent, None, m.to_string());
        if s.is_empty() {
            return Err(bad(
                "empty repository location; pass --repo PATH or set ARSIP_REPO",
            ));
        }
        if s == "memory:" {
            return Ok(Location::Memory);
        }
        if let Some((scheme, rest)) = s.split_once("://") {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
                None => (rest.to_string(), String::new()),
            };
            if bucket.is_empty() || bucket.contains('@') || bucket.contains(':') {
                return Err(bad(&format!(
                    "invalid bucket in repository URL {scheme}://…; expected {scheme}://BUCKET/PREFIX \
                     (credentials belong in environment variables, not in the URL)"
                )));
            }
            return match scheme {
                "s3" => Ok(Location::S3 { bucket, prefix }),
                "gs" => Ok(Location::Gcs { bucket, prefix }),
                "az" | "azure" => Ok(Location::Azure {
                    container: bucket,
                    prefix,
                }),
                "file" => Ok(Location::Local(PathBuf::from(format!("/{rest}")))),
                other => Err(bad(&format!(
                    "unsupported repository scheme {other}://; use a path, s3://, gs:// or az://"
                ))),
            };
        }
        Ok(Location::Local(PathBuf::from(s)))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
            Location::Azure { container, prefix } => write!(f, "az://{container}/{prefix}"),
            Location::Memory => write!(f, "memory:"),
        }
    }
}

/// Open the store at `loc`. With `create_dir`, a missing local directory is created (init).
pub fn open(loc: &Location, create_dir: bool) -> Result<Arc<dyn Store>> {
    let os_err = |e: object_store::Error| StorageError::from_object_store("", e);
    match loc {
        Location::Local(path) => Ok(Arc::new(LocalStore::open(path, create_dir)?)),
        Location::Memory => Ok(Arc::new(ObjectStoreBackend::new(
            Arc::new(object_store::memory::InMemory::new()),
            String::new(),
            "memory:".into(),
        ))),
        Location::S3 { bucket, prefix } => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
            if let Ok(endpoint) = std::env::var("ARSIP_S3_ENDPOINT") {
                b = b
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint);
            }
            if let Ok(region) = std::env::var("ARSIP_S3_REGION") {
                b = b.with_region(region);
            }
            let s3 = b.build().map_err(os_err)?;
            Ok(Arc::new(ObjectStoreBackend::new(
                Arc::new(s3),
                prefix.clone(),
                loc.to_string(),
            )))
        }
        Location::Gcs { bucket, prefix } => {
            let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(os_err)?;
            Ok(Arc::new(ObjectStoreBackend::new(
                Arc::new(gcs),
                prefix.clone(),
                loc.to_string(),
            )))
        }
        Location::Azure { container, prefix } => {
            let az = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .build()
                .map_err(os_err)?;
            Ok(Arc::new(ObjectStoreBackend::new(
                Arc::new(az),
                prefix.clone(),
                loc.to_string(),
            )))
        }
    }
}

/// Any `object_store` backend under an optional key prefix.
#[derive(Debug)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
}

impl ObjectStoreBackend {
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: String, describe: String) -> Self {
        ObjectStoreBackend {
            inner,
            prefix,
            describe,
        }
    }

    fn path(&self, key: &str) -> OsPath {
        if self.prefix.is_empty() {
            OsPath::from(key)
        } else {
            OsPath::from(format!("{}/{}", self.prefix, key))
        }
    }

    fn strip<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix)
                .map(|s| s.trim_start_matches('/'))
                .unwrap_or(full)
        }
    }
}

#[async_trait]
impl Store for ObjectStoreBackend {
    async fn create(&self, key: &str, data: Bytes) -> Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.inner
            .put_opts(&self.path(key), PutPayload::from_bytes(data), opts)
            .await
            .map(|_| ())
            .map_err(|e| StorageError::from_object_store(key, e))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let r = self.inner.get(&self.path(key)).await;
        let r = r.map_err(|e| StorageError::from_object_store(key, e))?;
        r.bytes()
            .await
            .map_err(|e| StorageError::from_object_store(key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let r = self.inner.get_range(&self.path(key), range.clone()).await;
        let b = r.map_err(|e| StorageError::from_object_store(key, e))?;
        if b.len() as u64 != range.end - range.start {
            return Err(StorageError::new(
                ErrorKind::Permanent,
                Some(key),
                format!(
                    "short read: wanted {} bytes, got {}",
                    range.end - range.start,
                    b.len()
                ),
            ));
        }
        Ok(b)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let m = self.inner.head(&self.path(key)).await;
        let m = m.map_err(|e| StorageError::from_object_store(key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: m.size,
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        let p = self.path(prefix.trim_end_matches('/'));
        let p = if prefix.is_empty() && self.prefix.is_empty() {
            None
        } else {
            Some(p)
        };
        self.inner
            .list(p.as_ref())
            .map(move |r| match r {
                Ok(m) => Ok(ObjectMeta {
                    key: self.strip(m.location.as_ref()).to_string(),
                    size: m.size,
                }),
                Err(e) => Err(StorageError::from_object_store(prefix, e)),
            })
            .boxed()
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::from_object_store(key, e)),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// A directory on a local filesystem. Objects are created through `object_store`'s local
/// backend (staged file, then `link(2)`, which fails if the name exists), then the file and
/// every directory from it up to the root are fsynced before `create` returns.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    inner: ObjectStoreBackend,
}

impl LocalStore {
    pub fn open(root: &Path, create_dir: bool) -> Result<LocalStore> {
        let perm = |m: String| StorageError::new(ErrorKind::Permanent, None, m);
        if create_dir {
            std::fs::create_dir_all(root).map_err(|e| {
                perm(format!(
                    "cannot create repository directory {}: {e}",
                    root.display()
                ))
            })?;
        }
        let root = root.canonicalize().map_err(|e| {
            StorageError::new(
                if e.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Permanent
                },
                None,
                format!("repository directory {}: {e}", root.display()),
            )
        })?;
        if !root.is_dir() {
            return Err(perm(format!("{} is not a directory", root.display())));
        }
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| StorageError::from_object_store("", e))?;
        let describe = format!("local:{}", root.display());
        Ok(LocalStore {
            inner: ObjectStoreBackend::new(Arc::new(fs), String::new(), describe),
            root,
        })
    }

    fn sync_path(root: &Path, key: &str) -> std::io::Result<()> {
        let file = root.join(key);
        std::fs::File::open(&file)?.sync_all()?;
        let mut dir = file.parent();
        while let Some(d) = dir {
            std::fs::File::open(d)?.sync_all()?;
            if d == root {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn create(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.create(key, data).await?;
        let root = self.root.clone();
        let k = key.to_string();
        tokio::task::spawn_blocking(move || Self::sync_path(&root, &k))
            .await
            .map_err(|e| StorageError::new(ErrorKind::Transient, Some(key), e.to_string()))?
            .map_err(|e| StorageError::new(ErrorKind::Transient, Some(key), format!("fsync: {e}")))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        // object_store's local listing yields staging files of in-flight writes
        // (`name#N`); they are not objects.
        self.inner
            .list(prefix)
            .filter(|r| futures::future::ready(!matches!(r, Ok(m) if m.key.contains('#'))))
            .boxed()
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            Location::parse("s3://b/x/y/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "x/y".into()
            }
        );
        assert_eq!(
            Location::parse("/tmp/r").unwrap(),
            Location::Local("/tmp/r".into())
        );
        assert!(Location::parse("s3://key:secret@b/x").is_err());
        assert!(Location::parse("ftp://b").is_err());
    }
}
