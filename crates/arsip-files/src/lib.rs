//! The files source and the directory target: file, directory and stream backups
//! ([`backup`]) and restores of a snapshot's tree into a directory or a writer
//! ([`restore`]). Every restore to disk goes through [`restore`]'s writer, PostgreSQL's
//! physical restores included, so that one hardened path decides what a snapshot may create.

pub mod backup;
pub mod restore;

pub use restore::is_restore_staging;
