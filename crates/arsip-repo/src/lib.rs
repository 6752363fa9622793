//! The arsip repository: a content-addressed, deduplicated, compressed and
//! authenticated-encrypted store of chunks in packs, with indexes and snapshot manifests.
//! It knows nothing about PostgreSQL or any other source; `docs/FORMAT.md` specifies every
//! byte it writes.
//!
//! Layers inside the crate, bottom up: [`crypto`] (primitives) → [`format`] (byte layouts) →
//! [`keys`] (config, key slots, agents, writers) → [`index`] (chunk lookup) → [`repo`]
//! (an opened repository) → [`write`] / [`read`] (sessions) → [`txn`] (the snapshot
//! transaction every source commits through) → [`check`].

pub mod cap;
pub mod check;
pub mod chunker;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod format;
pub mod index;
pub mod keys;
pub mod read;
pub mod record;
pub mod repo;
pub mod snapshot;
pub mod txn;
pub mod wal;
pub mod write;

pub use cap::{AgentRepo, FullRepo, Opened};
pub use error::{blocking, Classify, ErrorClass, RepoError, Result};
pub use record::{RecordCreate, RecordKind};
pub use repo::{InitOptions, LocalSettings, OpenWith, Repository};
