//! The files source and the directory target: file, directory, stream and command backups
//! ([`backup`]) and restores of a snapshot's tree into a directory or a writer
//! ([`restore`]). Every restore to disk goes through [`restore`]'s writer, PostgreSQL's
//! physical restores included, so that one hardened path decides what a snapshot may create.
//! [`child`] runs producer programs whose stdout is backed up.

pub mod backup;
pub mod child;
pub mod restore;

/// Whether `name` (one path component) is a restore's staging name, which a backup skips so
/// that a restore interrupted in a directory never becomes data of a later backup of it.
///
/// TODO(merge): stub matching today's `.NAME.arsip-tmp` temporaries; the restore side
/// (branch files-restore) defines the real one, which replaces this on merge.
pub fn is_restore_staging(name: &[u8]) -> bool {
    name.starts_with(b".") && name.ends_with(b".arsip-tmp")
}
