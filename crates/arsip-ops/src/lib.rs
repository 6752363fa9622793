//! Operations: what a user asks arsip to do, above every source and target. Each
//! operation takes settings resolved by a front end (the CLI today, the daemon next), opens
//! what it needs, calls the sources/targets (`arsip-files`, `arsip-pg`) and the repository,
//! and returns a `Serialize` outcome that the front end renders as text, JSON or an HTTP
//! answer. Errors are [`Error`]s with an [`ErrorClass`] that front ends map to exit codes or
//! statuses.
//!
//! Imports run one way: front ends → `arsip-ops` → sources/targets → `arsip-repo` →
//! `arsip-storage` (docs/ARCHITECTURE.md).

pub mod audit;
pub mod backup;
pub mod check;
pub mod copy;
pub mod error;
pub mod forget;
pub mod keys;
pub mod open;
pub mod pg;
pub mod prune;
pub mod quickstart;
pub mod repair;
pub mod restore;
pub mod snapshots;
pub mod stats;
pub mod verify;

pub use arsip_repo::{Classify, ErrorClass};
pub use error::{Error, Result};

/// The files source's types that outcomes carry (a files backup's warnings).
pub use arsip_files as files;
/// Repository types that outcomes and options carry.
pub use arsip_repo as repo;
/// Storage types (locations, fault plans) that store settings carry.
pub use arsip_storage as storage;
