//! The arsip repository: a content-addressed, deduplicated, compressed and
//! authenticated-encrypted store of chunks in packs, with indexes and snapshot manifests.
//! It knows nothing about PostgreSQL or any other source; `docs/FORMAT.md` specifies every
//! byte it writes.
//!
//! Layers inside the crate, bottom up: `crypto` (primitives) → `format` (byte layouts) →
//! [`keys`] (config, key slots, agents, writers) → [`index`] (chunk lookup) → [`repo`]
//! (an opened repository; its capabilities as types: [`FullRepo`], [`AgentRepo`]) →
//! [`write`](mod@write) / [`read`] (sessions) → [`txn`] (the snapshot transaction every source commits
//! through) → [`check`]; beside them named records ([`RecordKind`]) and stream objects
//! ([`wal`]).
//!
//! The public surface is what sources, operations and front ends use: the handles and their
//! capabilities, the snapshot transaction, readers, snapshots and trees, keys and writers,
//! named records, stream objects, the checker, errors and the clock, re-exported here where
//! they are used most. `crypto` and `format` (primitives and byte layouts) are not API: they
//! stay reachable, hidden, for the fuzz targets and for tests that forge objects.

pub mod audit;
mod cap;
pub mod check;
pub(crate) mod chunker;
pub mod clock;
#[doc(hidden)]
pub mod crypto;
pub mod error;
#[doc(hidden)]
pub mod format;
/// Not API: entry points for the fuzz targets in `fuzz/` (see the module docs).
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
pub mod keys;
pub mod maint;
pub mod prune;
pub mod read;
mod record;
pub mod repo;
pub mod snapshot;
pub mod txn;
pub mod verification;
pub mod wal;
pub mod write;

pub use cap::{AgentRepo, FullRepo, Opened};
pub use error::{blocking, Classify, ErrorClass, RepoError, Result};
pub use format::{ChunkId, WriterId, ROOT_WRITER};
pub use index::ChunkIndex;
pub use read::Reader;
pub use record::{check_name, RecordCreate, RecordKind, MAX_NAME_LEN};
pub use repo::{
    InitOptions, LocalSettings, OpenWith, Repository, SnapshotListing, Standing, Writer,
};
pub use snapshot::{Manifest, Node, NodeType, Snapshot};
pub use txn::{BackupOutcome, SnapshotMeta, SnapshotTxn};
pub use wal::PutOutcome;
