//! Facts read from a data directory without a server: the system identifier (the first 8
//! bytes of `global/pg_control`, native byte order), the major version (`PG_VERSION`), and
//! the arithmetic of LSNs and WAL file names.

use std::path::{Path, PathBuf};

use crate::error::{PgError, Result};

/// Identity of a cluster: the WAL namespace it archives into is `<sysid>-<major>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterId {
    pub system_identifier: u64,
    pub major: u32,
}

/// PostgreSQL's rule for a WAL namespace (docs/POSTGRESQL.md): `<system identifier>-<major>`,
/// both decimal. Checked before the repository is asked (whose rule is only the generic one).
pub fn check_namespace(namespace: &str) -> Result<()> {
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if namespace
        .split_once('-')
        .is_some_and(|(a, b)| is_digits(a) && is_digits(b))
    {
        Ok(())
    } else {
        Err(arsip_repo::RepoError::Invalid(format!(
            "WAL namespace {namespace:?} is not <system-identifier>-<major>"
        ))
        .into())
    }
}

/// PostgreSQL's rule for a file it archives (`%f`: a segment, `.partial`, `.backup` or
/// `.history` file): 1–64 characters of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn check_wal_file_name(file: &str) -> Result<()> {
    let ok = !file.is_empty()
        && file.len() <= 64
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(arsip_repo::RepoError::Invalid(format!("{file:?} is not a WAL file name")).into())
    }
}

impl ClusterId {
    /// The WAL namespace this cluster archives into: `<system identifier>-<major>`.
    pub fn namespace(&self) -> String {
        format!("{}-{}", self.system_identifier, self.major)
    }

    /// Read from a data directory.
    pub fn read(pgdata: &Path) -> Result<ClusterId> {
        let ctl = pgdata.join("global/pg_control");
        let raw = std::fs::read(&ctl).map_err(|e| {
            PgError::refused(
                format!("cannot read {}: {e}", ctl.display()),
                "pass the cluster's data directory (--pgdata, or run from inside it as \
                 archive_command does)",
            )
        })?;
        if raw.len() < 16 {
            return Err(PgError::refused(
                format!("{} is too short to be pg_control", ctl.display()),
                "check --pgdata",
            ));
        }
        let system_identifier = u64::from_ne_bytes(raw[..8].try_into().unwrap());
        let major = read_major(pgdata)?;
        Ok(ClusterId {
            system_identifier,
            major,
        })
    }
}

pub fn read_major(pgdata: &Path) -> Result<u32> {
    let p = pgdata.join("PG_VERSION");
    let s = std::fs::read_to_string(&p).map_err(|e| {
        PgError::refused(
            format!("cannot read {}: {e}", p.display()),
            "is this a PostgreSQL data directory?",
        )
    })?;
    s.trim()
        .parse()
        .map_err(|_| PgError::refused(format!("{} holds {s:?}", p.display()), "check --pgdata"))
}

/// Parse `X/Y` (hex) into a 64-bit LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// A WAL segment file name: timeline and segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegName {
    pub timeline: u32,
    pub segno: u64,
}

impl SegName {
    pub fn from_lsn(timeline: u32, lsn: u64, seg_size: u64) -> SegName {
        SegName {
            timeline,
            segno: lsn / seg_size,
        }
    }

    pub fn name(&self, seg_size: u64) -> String {
        let per = 0x1_0000_0000u64 / seg_size;
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.segno / per,
            self.segno % per
        )
    }

    /// Parse a 24-hex-digit segment name (no suffix).
    pub fn parse(name: &str, seg_size: u64) -> Option<SegName> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let tli = u32::from_str_radix(&name[..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..], 16).ok()?;
        let per = 0x1_0000_0000u64 / seg_size;
        Some(SegName {
            timeline: tli,
            segno: log * per + seg,
        })
    }
}

/// One line of a timeline history file: `tli  switchpoint  reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub parent: u32,
    pub switch_lsn: u64,
}

pub fn parse_history(text: &str) -> Vec<HistoryEntry> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut it = l.split_whitespace();
            let parent = it.next()?.parse().ok()?;
            let switch_lsn = parse_lsn(it.next()?)?;
            Some(HistoryEntry { parent, switch_lsn })
        })
        .collect()
}

/// Where the PostgreSQL programs are: the settings' `bin_dir` (`ARSIP_PG_BIN`), else the
/// Debian location of the newest installed major, else `pg_config --bindir`. Errors (never
/// silently skips) if absent. It may run `pg_config`: from async code, call it through
/// [`arsip_repo::blocking`].
pub fn pg_bin_dir(settings: &crate::PgSettings) -> Result<PathBuf> {
    if let Some(d) = &settings.bin_dir {
        return Ok(d.clone());
    }
    for major in [17, 16, 15, 14, 13] {
        let d = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
        if d.join("postgres").exists() {
            return Ok(d);
        }
    }
    if let Ok(o) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        if o.status.success() {
            let d = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if d.join("pg_ctl").exists() {
                return Ok(d);
            }
        }
    }
    Err(PgError::refused(
        "PostgreSQL server programs not found",
        "install PostgreSQL (Debian: apt-get install postgresql-15) or set ARSIP_PG_BIN to the \
         directory holding initdb, pg_ctl, pg_dump",
    ))
}

/// The major version of the programs in `bin` (`pg_ctl --version`).
pub fn bin_major(bin: &Path) -> Result<u32> {
    let o = std::process::Command::new(bin.join("pg_ctl"))
        .arg("--version")
        .output()
        .map_err(|e| PgError::Tool(format!("cannot run {}/pg_ctl: {e}", bin.display())))?;
    let s = String::from_utf8_lossy(&o.stdout);
    s.split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PgError::Tool(format!("cannot parse pg_ctl --version: {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names() {
        assert!(check_namespace("7301234567890123456-15").is_ok());
        for bad in ["x-15", "1-", "-15", "115", "1-15/x", ""] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
        for good in [
            "000000010000000000000003",
            "00000002.history",
            "000000010000000000000003.partial",
        ] {
            assert!(check_wal_file_name(good).is_ok(), "{good:?}");
        }
        for bad in ["", ".x", "../x", "a/b", &"0".repeat(65)] {
            assert!(check_wal_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lsn_and_names() {
        assert_eq!(parse_lsn("1/2A"), Some((1 << 32) | 0x2a));
        assert_eq!(format_lsn((1 << 32) | 0x2a), "1/2A");
        let seg = 16 << 20;
        let s = SegName::from_lsn(2, parse_lsn("1/05000028").unwrap(), seg);
        assert_eq!(s.name(seg), "000000020000000100000005");
        assert_eq!(SegName::parse(&s.name(seg), seg), Some(s));
        let h = parse_history("1\t0/3000000\tno recovery target specified\n\n2\t0/5000A0\tx\n");
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].parent, 2);
    }
}
