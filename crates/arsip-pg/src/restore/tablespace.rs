//! Tablespaces of a physical restore: where each one goes (its original location, or
//! `--tablespace-map OID=DIR`), checked before anything is written, and the `pg_tblspc`
//! links and `tablespace_map` that point PostgreSQL at them.

use std::path::{Path, PathBuf};

use arsip_repo::Snapshot;

use crate::error::{PgError, Result};
use crate::physical::PhysicalFacts;
use crate::restore::plan::dir_is_empty;

/// Where one tablespace is restored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TablespacePlan {
    pub oid: String,
    pub original: String,
    pub dir: PathBuf,
}

/// The tablespaces of a backup, from its `tablespace_map` fact in PostgreSQL's format: one
/// `<oid> <location>` line each, with `\`, CR and LF in the location escaped by a `\`.
pub fn parse_tablespace_map(text: &str) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => line.extend(chars.next()),
            '\n' => lines.push(std::mem::take(&mut line)),
            c => line.push(c),
        }
    }
    lines.push(line);
    // An OID names a link under pg_tblspc: only digits, whatever the snapshot claims.
    lines
        .iter()
        .filter_map(|l| l.split_once(' '))
        .filter(|(oid, _)| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
        .map(|(oid, loc)| (oid.to_string(), loc.to_string()))
        .collect()
}

/// [`parse_tablespace_map`]'s inverse.
pub fn format_tablespace_map(entries: &[(String, PathBuf)]) -> String {
    let mut out = String::new();
    for (oid, dir) in entries {
        out += oid;
        out.push(' ');
        for c in dir.to_string_lossy().chars() {
            if matches!(c, '\\' | '\r' | '\n') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// Where each of the backup's tablespaces is restored: its original location, or the
/// directory `--tablespace-map` gives. Checked before anything is written: every directory
/// must be absolute, outside the data directory, distinct, and absent or empty, so that a
/// restore next to the original cluster can never write into its tablespaces.
pub fn tablespace_dirs(
    snap: &Snapshot,
    facts: &PhysicalFacts,
    to: &Path,
    remap: &[(String, PathBuf)],
) -> Result<Vec<(String, PathBuf)>> {
    let backup = facts
        .tablespace_map
        .as_deref()
        .map(parse_tablespace_map)
        .unwrap_or_default();
    for (oid, _) in remap {
        if !backup.iter().any(|(o, _)| o == oid) {
            let have: Vec<&str> = backup.iter().map(|(o, _)| o.as_str()).collect();
            return Err(PgError::refused(
                format!(
                    "--tablespace-map {oid}: snapshot {} has no tablespace {oid}",
                    snap.short_id()
                ),
                if have.is_empty() {
                    "this backup has no tablespaces".to_string()
                } else {
                    format!("its tablespaces are {}", have.join(", "))
                },
            ));
        }
    }
    let to_abs = std::path::absolute(to)?;
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for (oid, original) in backup {
        let dir = remap
            .iter()
            .find(|(o, _)| *o == oid)
            .map_or_else(|| PathBuf::from(&original), |(_, d)| d.clone());
        let hint = format!("--tablespace-map {oid}=DIR restores it into another, empty directory");
        if !dir.is_absolute() {
            return Err(PgError::refused(
                format!(
                    "tablespace {oid}: {} is not an absolute path",
                    dir.display()
                ),
                hint,
            ));
        }
        if dir.starts_with(&to_abs) || to_abs.starts_with(&dir) {
            return Err(PgError::refused(
                format!(
                    "tablespace {oid}: {} overlaps the data directory {}",
                    dir.display(),
                    to_abs.display()
                ),
                hint,
            ));
        }
        if out
            .iter()
            .any(|(_, d)| d.starts_with(&dir) || dir.starts_with(d))
        {
            return Err(PgError::refused(
                format!(
                    "tablespace {oid}: {} overlaps another tablespace's directory",
                    dir.display()
                ),
                hint,
            ));
        }
        if !dir_is_empty(&dir)? {
            return Err(PgError::refused(
                format!(
                    "tablespace {oid} would be restored into {}, which is not empty{}",
                    dir.display(),
                    if remap.iter().any(|(o, _)| *o == oid) {
                        ""
                    } else {
                        " (its original location: the original cluster may still use it)"
                    }
                ),
                hint,
            ));
        }
        out.push((oid, dir));
    }
    Ok(out)
}

/// Point `pg_tblspc/<oid>` at each restored tablespace and write `tablespace_map` with the
/// same locations (PostgreSQL recreates the links from it when recovery starts).
pub fn link_tablespaces(to: &Path, tablespaces: &[(String, PathBuf)]) -> Result<()> {
    if tablespaces.is_empty() {
        return Ok(());
    }
    let links = to.join("pg_tblspc");
    let io = |p: &Path, e: std::io::Error| crate::os::io_at(p, e);
    std::fs::create_dir_all(&links).map_err(|e| io(&links, e))?;
    for (oid, dir) in tablespaces {
        let l = links.join(oid);
        std::os::unix::fs::symlink(dir, &l).map_err(|e| io(&l, e))?;
    }
    std::fs::File::open(&links)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&links, e))?;
    crate::restore::materialise::write_synced(
        &to.join("tablespace_map"),
        format_tablespace_map(tablespaces).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_map_round_trips_escaped_locations() {
        let entries = vec![
            ("16384".to_string(), PathBuf::from("/srv/ts one")),
            (
                "16385".to_string(),
                PathBuf::from("/srv/odd\\name\nwith newline"),
            ),
        ];
        let text = format_tablespace_map(&entries);
        assert_eq!(
            text,
            "16384 /srv/ts one\n16385 /srv/odd\\\\name\\\nwith newline\n"
        );
        let parsed = parse_tablespace_map(&text);
        let want: Vec<(String, String)> = entries
            .iter()
            .map(|(o, d)| (o.clone(), d.display().to_string()))
            .collect();
        assert_eq!(parsed, want);
        // a snapshot cannot name a link outside pg_tblspc
        assert!(parse_tablespace_map("../../etc /x\nabc /y\n").is_empty());
    }
}
