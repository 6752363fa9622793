//! The recovery configuration a restore writes into the restored data directory: old
//! recovery settings stripped from `postgresql.auto.conf`, then `restore_command` (through
//! `arsip wal fetch`), the target, `recovery_target_timeline` (always a number), the
//! archiving decision, and `recovery.signal`; `standby.signal` is removed.
//!
//! Archiving: a restored cluster archives into the source's WAL namespace only when the user
//! declares it the new primary (`--promote-as-primary`); otherwise it runs with
//! `archive_mode = off`, so a drill or scratch restore never adds a timeline that later
//! restores of the source would have to step around.
//!
//! Credential: `restore_command` runs unattended, once per segment. It names the key file the
//! repository was opened with when the postgres OS user can read it; otherwise (a password,
//! or a key file postgres cannot read) the restore writes a short-lived recovery key
//! ([`RECOVERY_KEY`], mode 0600, owned by postgres, inside the restored data directory) and
//! `recovery_end_command` removes it when recovery ends. The design and its risk are in
//! docs/FORMAT.md §14.5.

use std::path::Path;

use arsip_repo::KeyFile;

use crate::error::{PgError, Result};
use crate::restore::materialise::write_synced;
use crate::restore::plan::RestorePlan;

/// The recovery key's file name inside the restored data directory. Physical backups skip it.
pub const RECOVERY_KEY: &str = "arsip-recovery.key";

/// `s` as a single-quoted postgresql.conf value: PostgreSQL's parser reads `\` escapes
/// there (`\t`, `\n`, octal), so a backslash is doubled and line ends are escaped, and a
/// quote is doubled; the server reads back exactly `s` (a restore point named `rp\test`
/// is reached, not `rp<TAB>est`, and a newline cannot end the line early).
pub fn conf_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `p` as it can stand in `restore_command`: no spaces, quotes, backslashes or `%`.
pub fn plain_path(p: &Path, what: &str) -> Result<String> {
    let s = p.display().to_string();
    if s.chars()
        .any(|c| c.is_whitespace() || c == '\'' || c == '"' || c == '\\' || c == '%')
    {
        return Err(PgError::refused(
            format!("{what} {s:?} contains spaces, quotes or %"),
            "use a path without them (it goes into restore_command)",
        ));
    }
    Ok(s)
}

/// Last value of a setting across postgresql.conf and postgresql.auto.conf.
pub fn conf_value(pgdata: &Path, key: &str) -> Option<String> {
    let mut v = None;
    for f in ["postgresql.conf", "postgresql.auto.conf"] {
        let Ok(text) = std::fs::read_to_string(pgdata.join(f)) else {
            continue;
        };
        for l in text.lines() {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix(key) {
                let rest = rest.trim_start();
                if let Some(val) = rest.strip_prefix('=') {
                    let val = val.split('#').next().unwrap_or("").trim();
                    v = Some(val.trim_matches('\'').to_string());
                }
            }
        }
    }
    v
}

/// Whether a `postgresql.auto.conf` line is a recovery setting a restore replaces.
fn replaced(line: &str) -> bool {
    let k = line.trim_start();
    k.starts_with("recovery_")
        || k.starts_with("restore_command")
        || k.starts_with("primary_conninfo")
        || k.starts_with("primary_slot_name")
}

/// Write the recovery configuration the plan computed (and, if the plan needs one, the
/// recovery key) into the restored data directory `to`.
pub fn write(to: &Path, plan: &RestorePlan, key: Option<&KeyFile>) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| crate::os::io_at(p, e);
    if let (Some(k), Some(path)) = (key, plan.credential.recovery_key.as_ref()) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io(path, e))?;
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(k)
                .map_err(std::io::Error::other)
                .map_err(|e| io(path, e))?,
        );
        f.write_all(&body).map_err(|e| io(path, e))?;
        f.sync_all().map_err(|e| io(path, e))?;
        if let Some((u, g)) = crate::os::postgres_owner() {
            std::os::unix::fs::fchown(&f, Some(u), Some(g)).map_err(|e| io(path, e))?;
        }
    }
    let auto = to.join("postgresql.auto.conf");
    let old = match std::fs::read_to_string(&auto) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&auto, e)),
    };
    let mut conf: String = old
        .lines()
        .filter(|l| !replaced(l))
        .map(|l| format!("{l}\n"))
        .collect();
    for l in &plan.recovery_settings {
        conf += l;
        conf.push('\n');
    }
    write_synced(&auto, conf.as_bytes())?;
    let standby = to.join("standby.signal");
    match std::fs::remove_file(&standby) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&standby, e)),
    }
    write_synced(&to.join("recovery.signal"), b"")
}

#[cfg(test)]
mod tests {
    use super::conf_quote;

    /// Values PostgreSQL's configuration parser reads back unchanged: backslashes doubled
    /// (today `rp\test` reached the server as `rp<TAB>est`), line ends escaped (a newline
    /// made the file invalid), quotes doubled.
    #[test]
    fn conf_values_survive_postgresqls_escapes() {
        assert_eq!(conf_quote(r"rp\test"), r"'rp\\test'");
        assert_eq!(conf_quote("a\nb\rc"), r"'a\nb\rc'");
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conf_quote("plain"), "'plain'");
    }
}
