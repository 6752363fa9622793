//! PostgreSQL settings of this host, declared once. The edge (the CLI, a test harness)
//! resolves them from its flags and environment and passes them down in the option structs;
//! nothing in this crate reads the process environment.
//!
//! [`PgSettings::from_vars`] resolves them from `(name, value)` pairs the caller hands over
//! (the CLI passes `std::env::vars_os()`), with the variable names users already know:
//!
//! | variable | field |
//! |---|---|
//! | `ARSIP_PG_BIN` | [`PgSettings::bin_dir`] |
//! | `ARSIP_PG_TMP` | [`PgSettings::scratch_dir`] |
//! | `ARSIP_SPOOL_DIR` | [`PgSettings::spool_dir`] |
//! | `ARSIP_KEEP_CLUSTERS` | [`PgSettings::keep_clusters`] |
//! | `PGDATA` | [`PgSettings::pgdata`] |
//! | `PATH` | [`PgSettings::search_path`] |
//! | `TMPDIR` (else `/tmp`) | [`PgSettings::temp_dir`] |
//! | `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `PGPASSFILE`, `HOME` | [`LibpqDefaults`] |

use std::ffi::OsString;
use std::path::PathBuf;

use zeroize::Zeroizing;

/// Where PostgreSQL's programs and scratch files are, and how to reach a server by default.
/// `Default` is "nothing configured" (as [`PgSettings::from_vars`] of no variables):
/// programs are searched for in the usual places, scratch and spool files go to `/tmp`,
/// libpq's built-in defaults apply.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// The directory holding initdb, pg_ctl, pg_dump… (`ARSIP_PG_BIN`); `None`: the Debian
    /// location of the newest installed major, else `pg_config --bindir`.
    pub bin_dir: Option<PathBuf>,
    /// Parent of scratch clusters' directories (`ARSIP_PG_TMP`); `None`: `temp_dir`.
    pub scratch_dir: Option<PathBuf>,
    /// Where a logical restore spools the dump for `--jobs`/`--table` (`ARSIP_SPOOL_DIR`);
    /// `None`: `temp_dir`.
    pub spool_dir: Option<PathBuf>,
    /// The host's temporary directory (`TMPDIR`, else `/tmp`).
    pub temp_dir: PathBuf,
    /// Keep throwaway clusters (and leave their servers running) when they are dropped
    /// (`ARSIP_KEEP_CLUSTERS` set, to anything).
    pub keep_clusters: bool,
    /// The data directory an archive or restore command falls back to when it runs outside
    /// one (`PGDATA`).
    pub pgdata: Option<PathBuf>,
    /// The program search path (`PATH`), used to find coreutils' `stdbuf`.
    pub search_path: Option<OsString>,
    /// libpq's connection defaults.
    pub libpq: LibpqDefaults,
}

/// libpq's connection defaults, used for whatever `--dbname` leaves out. `Debug` never shows
/// the password.
#[derive(Clone, Default)]
pub struct LibpqDefaults {
    /// `PGHOST`: host names or socket directories, comma-separated; `None`:
    /// `/var/run/postgresql`.
    pub host: Option<String>,
    /// `PGPORT`; `None` (or not a port number): 5432.
    pub port: Option<u16>,
    /// `PGUSER`; `None`: the OS user of the effective uid.
    pub user: Option<String>,
    /// `PGDATABASE`; `None`: the user name.
    pub database: Option<String>,
    /// `PGPASSWORD`.
    pub password: Option<Zeroizing<String>>,
    /// The password file: `PGPASSFILE`, else `$HOME/.pgpass`.
    pub passfile: Option<PathBuf>,
}

impl std::fmt::Debug for LibpqDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibpqDefaults")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("password", &self.password.as_ref().map(|_| "(redacted)"))
            .field("passfile", &self.passfile)
            .finish()
    }
}

impl PgSettings {
    /// Resolve from environment-style `(name, value)` pairs. A text variable that is not
    /// UTF-8 counts as unset (as before); paths are taken as they are.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> PgSettings
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let vars: std::collections::HashMap<OsString, OsString> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let os = |k: &str| vars.get(std::ffi::OsStr::new(k)).cloned();
        let path = |k: &str| os(k).map(PathBuf::from);
        let text = |k: &str| os(k).and_then(|v| v.into_string().ok());
        let passfile = path("PGPASSFILE").or_else(|| path("HOME").map(|h| h.join(".pgpass")));
        PgSettings {
            bin_dir: path("ARSIP_PG_BIN"),
            scratch_dir: path("ARSIP_PG_TMP"),
            spool_dir: path("ARSIP_SPOOL_DIR"),
            temp_dir: path("TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp")),
            keep_clusters: os("ARSIP_KEEP_CLUSTERS").is_some(),
            pgdata: path("PGDATA"),
            search_path: os("PATH"),
            libpq: LibpqDefaults {
                host: text("PGHOST"),
                port: text("PGPORT").and_then(|p| p.parse().ok()),
                user: text("PGUSER"),
                database: text("PGDATABASE"),
                password: text("PGPASSWORD").map(Zeroizing::new),
                passfile,
            },
        }
    }

    /// The parent directory of scratch clusters.
    pub fn scratch_parent(&self) -> PathBuf {
        self.scratch_dir
            .clone()
            .unwrap_or_else(|| self.temp_dir.clone())
    }

    /// The directory dumps are spooled into.
    pub fn spool_parent(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.temp_dir.clone())
    }
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings::from_vars(Vec::<(OsString, OsString)>::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_known_names() {
        let s = PgSettings::from_vars([
            ("ARSIP_PG_BIN", "/pg/bin"),
            ("ARSIP_KEEP_CLUSTERS", ""),
            ("PGPORT", "6543"),
            ("PGPASSWORD", "hunter2"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(s.bin_dir.as_deref(), Some(std::path::Path::new("/pg/bin")));
        assert!(s.keep_clusters);
        assert_eq!(s.libpq.port, Some(6543));
        assert_eq!(
            s.libpq.passfile.as_deref(),
            Some(std::path::Path::new("/home/u/.pgpass"))
        );
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("redacted"));

        let none = PgSettings::from_vars(Vec::<(String, String)>::new());
        assert!(!none.keep_clusters);
        assert!(none.libpq.passfile.is_none());
        assert_eq!(none.scratch_parent(), std::path::Path::new("/tmp"));
        let tmp = PgSettings::from_vars([("TMPDIR", "/var/tmp"), ("ARSIP_SPOOL_DIR", "/spool")]);
        assert_eq!(tmp.scratch_parent(), std::path::Path::new("/var/tmp"));
        assert_eq!(tmp.spool_parent(), std::path::Path::new("/spool"));
        let bad_port = PgSettings::from_vars([("PGPORT", "x")]);
        assert_eq!(bad_port.libpq.port, None);
    }
}
