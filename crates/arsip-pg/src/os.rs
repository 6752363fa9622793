//! Running PostgreSQL's programs on this host: as the `postgres` OS user when arsip runs as
//! root (initdb, pg_ctl and postgres refuse root), handing files to that user, and turning a
//! program's failure into an error that carries its output.
//!
//! These are production helpers, used by restores and `arsip quickstart`; the throwaway
//! cluster harness of the tests ([`crate::cluster`]) builds on them, not the other way round.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::error::{PgError, Result};
use crate::settings::PgSettings;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// uid and gid of the `postgres` OS user, when we run as root.
pub fn postgres_owner() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let pw = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((pw.uid.as_raw(), pw.gid.as_raw()))
}

/// A command that runs as the `postgres` OS user when we are root.
pub fn as_postgres(program: &Path) -> Command {
    if postgres_owner().is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Give `path` and everything under it (links themselves, never their targets) to `uid:gid`.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    fn walk(p: &Path, u: u32, g: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(u), Some(g))?;
        let m = std::fs::symlink_metadata(p)?;
        if m.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), u, g)?;
            }
        }
        Ok(())
    }
    walk(path, uid, gid).map_err(|e| PgError::Tool(format!("chown {}: {e}", path.display())))
}

/// Recursively give `path` to the postgres user (no-op unless root).
pub fn chown_postgres(path: &Path) -> Result<()> {
    match postgres_owner() {
        Some((u, g)) => chown_tree(path, u, g),
        None => Ok(()),
    }
}

/// The output of a program that must succeed; its stderr and stdout are in the error.
pub fn check_output(what: &str, o: std::io::Result<Output>) -> Result<String> {
    let o = o.map_err(|e| PgError::Tool(format!("{what}: cannot run: {e}")))?;
    if !o.status.success() {
        return Err(PgError::Tool(format!(
            "{what} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim(),
            String::from_utf8_lossy(&o.stdout).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A new private directory for a scratch cluster (under the settings' scratch directory,
/// `ARSIP_PG_TMP`, else the temp dir), owned by postgres when root. It is kept: the caller
/// removes it.
pub fn make_base(settings: &PgSettings, prefix: &str) -> Result<PathBuf> {
    let parent = settings.scratch_parent();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .map_err(|e| {
            PgError::Tool(format!(
                "cannot create a directory in {}: {e}",
                parent.display()
            ))
        })?
        .keep();
    chown_postgres(&dir)?;
    Ok(dir)
}

/// A local I/O error that names its path (classified as storage/I/O, exit 5).
pub fn io_at(p: &Path, e: std::io::Error) -> PgError {
    PgError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", p.display()),
    ))
}
