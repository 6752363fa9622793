//! The storage contract of arsip: a flat namespace of immutable objects.
//!
//! Everything the repository layer needs from a place that holds bytes is the small
//! [`Store`] trait. Backends come from the `object_store` crate ([`backend`]); behaviour
//! that is not about where bytes live — retrying transient failures, refusing deletes and
//! overwrites, injecting faults in tests — is a wrapper over the trait, one module each.
//!
//! Contract, per method (every backend and wrapper MUST honour it; the conformance suite in
//! `tests/` checks it against local, memory and a real S3 server):
//! - [`Store::create`] stores an object only if no object of that name exists. `Ok` means the
//!   object is durable (local: file and directory fsynced; S3: a 2xx answer to a PUT carrying
//!   `If-None-Match: *`) and readable. An existing object yields [`ErrorKind::AlreadyExists`]
//!   and is left untouched. There is no overwrite on the write path.
//! - [`Store::get`] / [`Store::get_range`] return the bytes or [`ErrorKind::NotFound`].
//! - [`Store::list`] streams metadata page by page; it never collects the whole listing.
//! - [`Store::delete`] is for maintenance only; deleting a missing object is `Ok`.

pub mod append_only;
pub mod backend;
pub mod error;
pub mod fault;
pub mod retry;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use error::{ErrorKind, StorageError};

/// Metadata of one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Name relative to the repository root, `/`-separated.
    pub key: String,
    pub size: u64,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The storage contract (see the module documentation for per-method guarantees).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Create `key` with `data` if it does not exist; durable when `Ok`.
    async fn create(&self, key: &str, data: Bytes) -> Result<()>;
    /// Read a whole object.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Read `range` of an object; a range past the end is an error.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// Size of an object, or `NotFound`.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;
    /// Stream every object whose key starts with `prefix` (a directory-like prefix ending
    /// in `/`, or empty for everything).
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>>;
    /// Remove an object (maintenance only). Missing objects are not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// A short human description (`local:/path`, `s3://bucket/prefix`) without secrets.
    fn describe(&self) -> String;
}

pub type DynStore = std::sync::Arc<dyn Store>;
