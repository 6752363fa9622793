//! The storage contract of arsip: a flat namespace of objects, created once, replaced or
//! removed only by conditional maintenance writes.
//!
//! Everything the repository layer needs from a place that holds bytes is the small
//! [`Store`] trait. Backends come from the `object_store` crate ([`backend`]); behaviour
//! that is not about where bytes live — retrying transient failures, refusing deletes and
//! overwrites, counting requests, injecting faults in tests — is a wrapper over the trait, one module each.
//!
//! Contract, per method (every backend and wrapper MUST honour it; the conformance suite in
//! `tests/` checks it against local, memory and a real S3 server):
//! - [`Store::create`] stores an object only if no object of that name exists. `Ok` means the
//!   object is durable (local: file and directory fsynced; S3: a 2xx answer to a PUT carrying
//!   `If-None-Match: *`) and readable. An existing object yields [`ErrorKind::AlreadyExists`]
//!   and is left untouched. There is no overwrite on the write path. A local fsync failure is
//!   [`ErrorKind::Permanent`] (never retried: after a failed fsync the page cache may hold
//!   bytes the disk does not), and the object it was writing is removed again.
//! - [`Store::create_with_meta`] is `create` that also returns the new object's metadata
//!   (its `e_tag` is the one a later [`Store::update`] must name).
//! - [`Store::get`] / [`Store::get_range`] return the bytes or [`ErrorKind::NotFound`].
//! - [`Store::get_with_meta`] returns the bytes together with the metadata of exactly that
//!   revision (one request; never a read and a separate `head` that could see another one).
//! - [`Store::head`] returns metadata or [`ErrorKind::NotFound`].
//! - [`Store::list`] streams metadata page by page; it never collects the whole listing.
//! - [`Store::update`] (maintenance only) replaces an object only if it still is the
//!   [`Revision`] the caller read (S3: `If-Match`; local: an exclusive lock on the object while
//!   its identity is compared and the new file renamed over it). A different or missing object
//!   yields [`ErrorKind::PreconditionFailed`] and nothing is written. `Ok` is durable like
//!   `create`, and returns the new revision. If the precondition fails but the object holds
//!   exactly the bytes asked for, the update is reported as done: an earlier attempt of the
//!   same call (a retry by the HTTP client or by [`retry::Retry`]) stored them and its answer
//!   was lost. Callers therefore write data unique to the writer (a nonce, a writer id).
//! - [`Store::delete_if`] (maintenance only) removes an object only if it still is the
//!   [`Revision`] given: [`ErrorKind::PreconditionFailed`] if another revision is there,
//!   [`ErrorKind::NotFound`] if nothing is. Atomic on local and S3 (`If-Match` on DELETE);
//!   the in-memory store checks then deletes (no other process can reach it); GCS and Azure
//!   answer [`ErrorKind::NotSupported`] until `object_store` exposes their conditional deletes.
//! - [`Store::delete`] is for maintenance only; deleting a missing object is `Ok`.
//! - [`Store::sweep_staging`] (maintenance only) removes leftovers of interrupted writes that
//!   are not objects and are older than a cut-off: the local backend's staging files.
//!
//! Metadata: `last_modified` is the store's clock (S3: the server's `Last-Modified`; local:
//! the file's mtime), never the writer's claim. `e_tag` identifies a revision (S3: the
//! server's ETag; local: inode, mtime and size, with the mtime of a replacement kept strictly
//! after the one it replaces). `version` is the store's version id where it has one (S3 with
//! versioning, GCS generation); `None` elsewhere.

pub mod append_only;
pub mod backend;
pub mod error;
pub mod fault;
pub mod metered;
pub mod retry;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use backend::{S3Credentials, S3Settings, StoreSettings};
pub use error::{ErrorKind, StorageError};

/// Metadata of one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Name relative to the repository root, `/`-separated.
    pub key: String,
    pub size: u64,
    /// When the store last wrote this object, by the store's clock.
    pub last_modified: jiff::Timestamp,
    /// The store's identifier of this revision (RFC 9110 entity tag), if it has one.
    pub e_tag: Option<String>,
    /// The store's version id of this revision, if it keeps versions.
    pub version: Option<String>,
}

impl ObjectMeta {
    /// The revision a conditional [`Store::update`] or [`Store::delete_if`] expects.
    pub fn revision(&self) -> Revision {
        Revision {
            e_tag: self.e_tag.clone(),
            version: self.version.clone(),
        }
    }
}

/// Which revision of an object a conditional write expects to find (from a previous
/// [`Store::head`], [`Store::get_with_meta`], [`Store::create_with_meta`] or update).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Revision {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// An object's bytes with the metadata of that same revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub meta: ObjectMeta,
    pub data: Bytes,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The storage contract (see the module documentation for per-method guarantees).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Create `key` with `data` if it does not exist; durable when `Ok`.
    async fn create(&self, key: &str, data: Bytes) -> Result<()>;
    /// `create`, returning the new object's metadata. The default asks `head` afterwards;
    /// backends override it to return the revision their write produced.
    async fn create_with_meta(&self, key: &str, data: Bytes) -> Result<ObjectMeta> {
        self.create(key, data).await?;
        self.head(key).await
    }
    /// Read a whole object.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Read a whole object with the metadata of the revision read.
    async fn get_with_meta(&self, key: &str) -> Result<Object>;
    /// Read `range` of an object; a range past the end is an error.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// Metadata of an object, or `NotFound`.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;
    /// Stream every object whose key starts with `prefix` (a directory-like prefix ending
    /// in `/`, or empty for everything).
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>>;
    /// Replace `key` with `data` only if it is still `expected` (maintenance only); durable
    /// when `Ok`, which returns the new revision.
    async fn update(&self, key: &str, expected: &Revision, data: Bytes) -> Result<ObjectMeta>;
    /// Remove `key` only if it is still `expected` (maintenance only).
    async fn delete_if(&self, key: &str, expected: &Revision) -> Result<()>;
    /// Remove an object (maintenance only). Missing objects are not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Remove what interrupted writes left behind and that is not an object (the local
    /// backend's staging files), if the store last wrote it before `older_than`
    /// (maintenance only). Returns how many. Stores that leave nothing behind have nothing
    /// to do.
    async fn sweep_staging(&self, older_than: jiff::Timestamp) -> Result<u64> {
        let _ = older_than;
        Ok(0)
    }
    /// A short human description (`local:/path`, `s3://bucket/prefix`) without secrets.
    fn describe(&self) -> String;
}

pub type DynStore = std::sync::Arc<dyn Store>;
