//! The arsip repository: a content-addressed, deduplicated, compressed and
//! authenticated-encrypted store of chunks in packs, with indexes and snapshot manifests.
//! It knows nothing about PostgreSQL or any other source; `docs/FORMAT.md` specifies every
//! byte it writes.
//!
//! Layers inside the crate, bottom up: `crypto` (primitives) → `format` (byte layouts) →
//! `keys` (config, key slots, agents, writers) → `index` (chunk lookup) → `repo` (an opened
//! repository; its capabilities as types: [`FullRepo`], [`AgentRepo`]) → `write` / `read`
//! (sessions) → `txn` (the snapshot transaction every source commits through) → `check`,
//! `prune`, `audit`, `verification`, `jobs`; beside them named records ([`RecordKind`]) and stream
//! objects (`wal`).
//!
//! Every module is private: the public API is exactly what this file re-exports, grouped
//! below by what sources, operations and front ends do with it, plus [`clock`]. `crypto`,
//! `format` and `fuzzing` stay reachable, hidden, for the fuzz targets and for tests that
//! forge objects; they are not API.

mod audit;
mod cap;
mod check;
pub(crate) mod chunker;
pub mod clock;
#[doc(hidden)]
pub mod crypto;
mod error;
#[doc(hidden)]
pub mod format;
/// Not API: entry points for the fuzz targets in `fuzz/` (see the module docs).
#[doc(hidden)]
pub mod fuzzing;
mod index;
mod jobs;
mod keys;
mod maint;
mod mirror;
mod objcache;
mod prune;
mod read;
mod record;
mod repo;
mod snapshot;
mod txn;
mod verification;
mod wal;
mod write;

// An opened repository and its capabilities.
pub use cap::{AgentRepo, FullRepo, Opened};
pub use repo::{
    InitOptions, LocalSettings, OpenWith, Repository, SnapshotListing, Standing, Writer,
    DEFAULT_COMPRESSION_LEVEL, UNKNOWN_HOST,
};
// Settings of this host.
pub use index::parse_size;
pub use maint::SessionTiming;
pub use mirror::{mirror, MirrorOutcome, MIRROR_CONCURRENCY};
// Errors, classified by what the caller does next.
pub use error::{blocking, Classify, ErrorClass, RepoError, Result};
// Writing: the snapshot transaction every source commits through, its chunk session and
// the tree it builds.
pub use snapshot::{Node, NodeType, TreeReader, TreeWriter, Xattr};
pub use txn::{BackupOutcome, SnapshotMeta, SnapshotTxn};
pub use write::{BackupSession, Progress};
// Reading: snapshots, their manifests and contents.
pub use read::{Reader, Run};
pub use snapshot::{
    parse_chunk_id, select as select_snapshot, Manifest, Snapshot, CLOCK_SKEW, SNAPSHOTS_PREFIX,
};
// Keys, key files and agents.
pub use format::{ChunkId, WriterId, ROOT_WRITER};
pub use keys::{decode32, AgentFile, ChunkerParams, KeyFile, KeySlot, Secret, SlotKind};
// The chunk index (stats and physical backups' reuse of unchanged files).
pub use index::ChunkIndex;
// Named records and stream objects.
pub use record::{check_name, RecordCreate, RecordKind, MAX_NAME_LEN};
pub use wal::PutOutcome;
// Maintenance: check, repair, prune, the audit trail and verification records.
pub use audit::{AuditCheck, AuditEntry, AuditEvent, AuditRecord};
pub use check::{check, repair_index, CheckReport, IndexRepair, ReadData};
pub use prune::{prune, PruneOptions, PruneReport};
// Coordination of daemons: job claims, leases and the commit guard of a claimant.
pub use jobs::{
    current_commit_guard, guarded, Attempt, Chain, ChainView, Claim, ClaimDoc, ClaimSpec,
    CommitGuard, DoneDoc, Finish, JobResult, JobsExpired, Previous, RunState, MAX_ATTEMPT,
};
