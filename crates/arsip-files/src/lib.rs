//! The files source and the directory target: file, directory, stream and command backups
//! ([`backup`]) and restores of a snapshot's tree into a directory or a writer
//! ([`restore`]). Every restore to disk goes through [`restore`]'s writer, PostgreSQL's
//! physical restores included, so that one hardened path decides what a snapshot may create.
//! [`child`] runs producer programs whose stdout is backed up.

pub mod backup;
pub mod child;
pub mod restore;

pub use restore::is_restore_staging;
