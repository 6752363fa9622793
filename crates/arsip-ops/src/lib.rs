//! Sources, targets and operations over an arsip repository: file and stream backups
//! ([`backup`]) and restores ([`restore`]). Later sources (PostgreSQL, buckets) live beside
//! them and reuse the same [`backup::Backup`] session and [`restore`] readers.

pub mod backup;
pub mod restore;
