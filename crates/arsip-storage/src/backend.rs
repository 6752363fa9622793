//! Backends: where bytes live, built from `object_store`.
//!
//! [`Location`] is the parsed location (a path or URL, no credentials in it) and
//! [`StoreSettings`] what else reaching it takes (endpoint, region, credentials), resolved
//! by the caller; [`open_with`] turns both into a [`Store`]. This crate never reads the
//! process environment for them (see [`s3`]); GCS and Azure still use `object_store`'s
//! `from_env` builders.
//!
//! The local backend ([`local`]) writes objects itself, because `object_store`'s local
//! filesystem leaves out what the contract needs: fsync before acknowledging, private
//! permissions, and conditional replacement.

pub mod local;
pub mod s3;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path as OsPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

pub use local::LocalStore;
pub use s3::{S3Credentials, S3Settings, StoreSettings};

use crate::{ErrorKind, Object, ObjectMeta, Result, Revision, StorageError, Store};

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
            // BUCKET/PREFIX of an object store's URL.
            let bucket_prefix = || {
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
                Ok((bucket, prefix))
            };
            return match scheme {
                "file" if rest.starts_with('/') => Ok(Location::Local(PathBuf::from(rest))),
                "file" => Err(bad(&format!(
                    "file://{rest} is not an absolute path; write file:///PATH or just PATH"
                ))),
                "s3" => bucket_prefix().map(|(bucket, prefix)| Location::S3 { bucket, prefix }),
                "gs" => bucket_prefix().map(|(bucket, prefix)| Location::Gcs { bucket, prefix }),
                "az" | "azure" => {
                    bucket_prefix().map(|(container, prefix)| Location::Azure { container, prefix })
                }
                _ => Err(bad(&format!(
                    "unsupported repository scheme {scheme}://; use a path, s3://, gs:// or az://"
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

/// Open the store at `loc` with default settings (no S3 credentials: for local and memory
/// locations, and tests). With `create_dir`, a missing local directory is created (init).
pub fn open(loc: &Location, create_dir: bool) -> Result<Arc<dyn Store>> {
    open_with(loc, &StoreSettings::default(), create_dir)
}

/// Open the store at `loc` with `settings`. With `create_dir`, a missing local directory
/// is created (init), mode 0700.
pub fn open_with(
    loc: &Location,
    settings: &StoreSettings,
    create_dir: bool,
) -> Result<Arc<dyn Store>> {
    let os_err = |e: object_store::Error| StorageError::from_object_store("", e);
    match loc {
        Location::Local(path) => Ok(Arc::new(LocalStore::open(path, create_dir)?)),
        Location::Memory => Ok(Arc::new(ObjectStoreBackend::new(
            Arc::new(object_store::memory::InMemory::new()),
            String::new(),
            "memory:".into(),
        ))),
        Location::S3 { bucket, prefix } => {
            let s3 = Arc::new(settings.s3.build(bucket)?);
            let mut b = ObjectStoreBackend::new(s3.clone(), prefix.clone(), loc.to_string());
            b.remote = Some(Remote {
                bucket: bucket.clone(),
                bucket_exists: AtomicBool::new(false),
            });
            b.s3 = Some((s3, reqwest::Client::new()));
            Ok(Arc::new(b))
        }
        Location::Gcs { bucket, prefix } => {
            let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(os_err)?;
            let mut b = ObjectStoreBackend::new(Arc::new(gcs), prefix.clone(), loc.to_string());
            b.remote = Some(Remote {
                bucket: bucket.clone(),
                bucket_exists: AtomicBool::new(false),
            });
            Ok(Arc::new(b))
        }
        Location::Azure { container, prefix } => {
            let az = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .build()
                .map_err(os_err)?;
            let mut b = ObjectStoreBackend::new(Arc::new(az), prefix.clone(), loc.to_string());
            b.remote = Some(Remote {
                bucket: container.clone(),
                bucket_exists: AtomicBool::new(false),
            });
            Ok(Arc::new(b))
        }
    }
}

/// Convert `object_store`'s metadata (chrono time) into the contract's.
pub(crate) fn convert_meta(key: &str, m: &object_store::ObjectMeta) -> ObjectMeta {
    let t = &m.last_modified;
    ObjectMeta {
        key: key.to_string(),
        size: m.size,
        last_modified: jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        e_tag: m.e_tag.clone(),
        version: m.version.clone(),
    }
}

/// A bucket (or container) of a cloud store. On S3 it is checked (HeadBucket) the first time
/// something is not found, so that a missing bucket is reported as such, not as a missing
/// object; GCS and Azure are not checked yet.
#[derive(Debug)]
struct Remote {
    bucket: String,
    bucket_exists: AtomicBool,
}

/// Any `object_store` backend under an optional key prefix.
#[derive(Debug)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
    remote: Option<Remote>,
    /// The S3 client again, for what the `ObjectStore` trait lacks (conditional delete).
    s3: Option<(Arc<object_store::aws::AmazonS3>, reqwest::Client)>,
}

impl ObjectStoreBackend {
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: String, describe: String) -> Self {
        ObjectStoreBackend {
            inner,
            prefix,
            describe,
            remote: None,
            s3: None,
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

    fn seen(&self) {
        if let Some(r) = &self.remote {
            r.bucket_exists.store(true, Ordering::Relaxed);
        }
    }

    /// Map an error of an operation on `key`; a `NotFound` is checked once against the
    /// bucket: if the bucket itself is missing, that is what the error says (a permanent
    /// configuration error, not a missing object).
    async fn err(&self, key: &str, e: object_store::Error) -> StorageError {
        self.checked(StorageError::from_object_store(key, e), false)
            .await
    }

    /// [`Self::err`] for an error already mapped; `any`: check the bucket whatever the
    /// kind (a listing's 404 reaches us as a generic error).
    async fn checked(&self, e: StorageError, any: bool) -> StorageError {
        if !any && e.kind != ErrorKind::NotFound {
            return e;
        }
        if matches!(
            e.kind,
            ErrorKind::PermissionDenied | ErrorKind::PreconditionFailed
        ) {
            return e;
        }
        let (Some(r), Some((s3, http))) = (&self.remote, &self.s3) else {
            return e;
        };
        if r.bucket_exists.load(Ordering::Relaxed) {
            return e;
        }
        match s3::bucket_exists(s3, http).await {
            Some(false) => StorageError::new(
                ErrorKind::Permanent,
                None,
                format!(
                    "bucket {} does not exist ({}); create it, or check the location",
                    r.bucket, self.describe
                ),
            ),
            Some(true) => {
                r.bucket_exists.store(true, Ordering::Relaxed);
                e
            }
            // Cannot tell (network): report what we know.
            None => e,
        }
    }

    /// Metadata of the revision a PUT just wrote. The time is the store's, so it is asked
    /// for; if a maintenance update came between the two requests, `head` shows the newer
    /// revision: the write's own e_tag, version and size are returned then (its time is the
    /// newer one's, an upper bound), so that a later conditional write naming it fails.
    /// PUT `key` only if no object of that name exists.
    async fn put_create(&self, key: &str, data: Bytes) -> Result<object_store::PutResult> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&self.path(key), PutPayload::from_bytes(data), opts)
            .await
        {
            Ok(r) => {
                self.seen();
                Ok(r)
            }
            Err(e) => Err(self.err(key, e).await),
        }
    }

    async fn meta_after_put(
        &self,
        key: &str,
        size: u64,
        put: object_store::PutResult,
    ) -> Result<ObjectMeta> {
        let mut meta = self.head(key).await?;
        if put.e_tag.is_some() && meta.e_tag != put.e_tag {
            meta.size = size;
            meta.e_tag = put.e_tag;
            meta.version = put.version;
        }
        Ok(meta)
    }

    /// After a failed conditional update: does the object hold exactly `data` (our own
    /// earlier attempt, whose answer was lost)?
    async fn already_ours(&self, key: &str, data: &Bytes) -> Option<ObjectMeta> {
        match self.get_with_meta(key).await {
            Ok(o) if o.data == data => Some(o.meta),
            _ => None,
        }
    }
}

#[async_trait]
impl Store for ObjectStoreBackend {
    /// One conditional PUT: no metadata is read back (that costs a HEAD per object, which
    /// only callers of `create_with_meta` need).
    async fn create(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_create(key, data).await.map(|_| ())
    }

    async fn create_with_meta(&self, key: &str, data: Bytes) -> Result<ObjectMeta> {
        let size = data.len() as u64;
        let put = self.put_create(key, data).await?;
        self.meta_after_put(key, size, put).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.get_with_meta(key).await?.data)
    }

    async fn get_with_meta(&self, key: &str) -> Result<Object> {
        let r = match self.inner.get(&self.path(key)).await {
            Ok(r) => r,
            Err(e) => return Err(self.err(key, e).await),
        };
        self.seen();
        let meta = convert_meta(key, &r.meta);
        let data = r
            .bytes()
            .await
            .map_err(|e| StorageError::from_object_store(key, e))?;
        Ok(Object { meta, data })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let b = match self.inner.get_range(&self.path(key), range.clone()).await {
            Ok(b) => b,
            Err(e) => {
                let e = self.err(key, e).await;
                if e.kind == ErrorKind::NotFound {
                    return Err(e);
                }
                // A range past the object's end (a truncated object) is refused by the store
                // in its own words (local: "Requested range was invalid", S3: 416); it is not a
                // failure that passes, so say what it is.
                return Err(match self.inner.head(&self.path(key)).await {
                    Ok(m) if m.size < range.end => StorageError::new(
                        ErrorKind::Truncated,
                        Some(key),
                        format!(
                            "the object is {} bytes, bytes {}..{} were asked for",
                            m.size, range.start, range.end
                        ),
                    ),
                    _ => e,
                });
            }
        };
        if b.len() as u64 != range.end - range.start {
            return Err(StorageError::new(
                ErrorKind::Truncated,
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
        match self.inner.head(&self.path(key)).await {
            Ok(m) => {
                self.seen();
                Ok(convert_meta(key, &m))
            }
            Err(e) => Err(self.err(key, e).await),
        }
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
            .then(move |r| async move {
                match r {
                    Ok(m) => Ok(convert_meta(self.strip(m.location.as_ref()), &m)),
                    Err(e) => {
                        let e = StorageError::from_object_store(prefix, e);
                        Err(self.checked(e, true).await)
                    }
                }
            })
            .boxed()
    }

    async fn update(&self, key: &str, expected: &Revision, data: Bytes) -> Result<ObjectMeta> {
        if expected.e_tag.is_none() && expected.version.is_none() {
            return Err(StorageError::new(
                ErrorKind::Permanent,
                Some(key),
                "a conditional update needs the e_tag or version of the revision it replaces",
            ));
        }
        let opts = PutOptions {
            mode: PutMode::Update(UpdateVersion {
                e_tag: expected.e_tag.clone(),
                version: expected.version.clone(),
            }),
            ..Default::default()
        };
        let r = self
            .inner
            .put_opts(&self.path(key), PutPayload::from_bytes(data.clone()), opts)
            .await;
        match r {
            Ok(put) => self.meta_after_put(key, data.len() as u64, put).await,
            Err(e) => {
                let e = self.err(key, e).await;
                if e.kind == ErrorKind::PreconditionFailed {
                    // The client retries 5xx answers itself: an attempt that stored the
                    // bytes may have been answered 5xx and its retry 412.
                    if let Some(meta) = self.already_ours(key, &data).await {
                        return Ok(meta);
                    }
                }
                Err(e)
            }
        }
    }

    async fn delete_if(&self, key: &str, expected: &Revision) -> Result<()> {
        let Some(e_tag) = expected.e_tag.as_deref() else {
            return Err(StorageError::new(
                ErrorKind::NotSupported,
                Some(key),
                "a conditional delete needs the e_tag of the revision it removes",
            ));
        };
        if let Some((s3, http)) = &self.s3 {
            let r = s3::delete_if_match(s3, http, &self.path(key), key, e_tag).await;
            return match r {
                Err(e) if e.kind == ErrorKind::NotFound => {
                    // Same bucket check as every other request.
                    let nf = object_store::Error::NotFound {
                        path: key.to_string(),
                        source: e.message.clone().into(),
                    };
                    Err(self.err(key, nf).await)
                }
                r => r,
            };
        }
        if self.remote.is_some() {
            return Err(StorageError::new(
                ErrorKind::NotSupported,
                Some(key),
                format!(
                    "conditional deletes are not available on {} yet",
                    self.describe
                ),
            ));
        }
        // In-memory: nothing outside this process can reach it; check, then delete.
        let current = self.head(key).await?;
        if current.e_tag.as_deref() != Some(e_tag) {
            return Err(StorageError::new(
                ErrorKind::PreconditionFailed,
                Some(key),
                "the object is not the revision the delete expected",
            ));
        }
        self.delete(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e).await),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
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
