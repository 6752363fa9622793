//! PostgreSQL for arsip: the sources and targets of layer 3. Logical dumps through
//! `pg_dump`/`pg_restore` ([`logical`]), physical base backups read straight from the data
//! directory ([`physical`]), continuous WAL archiving and fetching ([`walarchive`]), physical
//! restores with point-in-time recovery ([`restore`]), and a harness of throwaway clusters
//! used by the tests and by the quickstart operation in `arsip-ops` ([`cluster`]).
//!
//! Nothing here knows the repository's byte layout: it talks to `arsip-repo` through
//! [`arsip_repo::Repository`], backup sessions and the WAL object API.

pub mod cluster;
pub mod conn;
pub mod control;
pub mod error;
pub mod legacy;
pub mod logical;
pub mod os;
pub mod physical;
pub mod restore;
pub mod settings;
pub mod walarchive;
pub mod walretention;

pub use error::{PgError, Result};
pub use settings::{LibpqDefaults, PgSettings};
