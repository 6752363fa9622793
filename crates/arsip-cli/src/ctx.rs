//! What every command shares: the parsed global flags, opening the repository they name,
//! informational output and the one render path (human text, or JSON with `--json`).

use std::sync::Arc;

use anyhow::Result;
use arsip_ops::open::{Access, StoreSettings};
use arsip_ops::repo::{FullRepo, LocalSettings, Opened, Repository};

use crate::cli::Cli;
use crate::{secrets, usage};

/// An outcome a command prints: JSON with `--json`, else its human form.
pub trait Render: serde::Serialize {
    fn human(&self) -> String;
}

pub struct Ctx<'a> {
    pub cli: &'a Cli,
    /// The repository was unreachable and [`Ctx::open_reading`] opened the copy.
    pub on_copy: std::cell::Cell<bool>,
}

impl Ctx<'_> {
    /// Progress bars: only on a terminal, never with `--json` or `--quiet`.
    pub fn progress(&self) -> bool {
        crate::progress::enabled(self.cli.json, self.cli.quiet)
    }

    /// An informational line on stderr (silenced by `--quiet` and `--json`).
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.cli.quiet && !self.cli.json {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Print a command's summary line (a backup's): JSON with `--json`, nothing with
    /// `--quiet`, else its human form.
    pub fn summary(&self, outcome: &impl Render) -> Result<()> {
        if self.cli.quiet && !self.cli.json {
            return Ok(());
        }
        self.emit(outcome)
    }

    /// Print an outcome on stdout.
    pub fn emit(&self, outcome: &impl Render) -> Result<()> {
        if self.cli.json {
            crate::print_json(outcome)
        } else {
            crate::print_line(&outcome.human())
        }
    }

    /// The store settings from `--repo` / `ARSIP_REPO`, the S3 variables (`AWS_*`,
    /// `ARSIP_S3_ENDPOINT`, `ARSIP_S3_REGION`) for an `s3://` location, and, only in builds
    /// with the `test-hooks` feature, the `ARSIP_TEST_FAULTS` hook.
    pub fn store_settings(&self) -> Result<StoreSettings> {
        let location =
            self.cli.repo.clone().ok_or_else(|| {
                usage!("no repository given: pass --repo LOCATION or set ARSIP_REPO")
            })?;
        Self::settings_of(location, std::env::vars())
    }

    /// The settings of a second location (`copy --to`, `--repo-fallback`): its S3
    /// endpoint, region and credentials from the variables with `prefix` (`ARSIP_TO_`:
    /// `ARSIP_TO_S3_ENDPOINT`, `ARSIP_TO_AWS_ACCESS_KEY_ID`, …) when any is set, else the
    /// repository's own.
    pub fn store_settings_of(&self, location: &str, prefix: &str) -> Result<StoreSettings> {
        let to: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(prefix)?;
                let name = match rest.strip_prefix("S3_") {
                    Some(s3) => format!("ARSIP_S3_{s3}"),
                    None => rest.to_string(),
                };
                Some((name, v))
            })
            .collect();
        match to.is_empty() {
            true => Self::settings_of(location.to_string(), std::env::vars()),
            false => Self::settings_of(location.to_string(), to),
        }
    }

    fn settings_of(
        location: String,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<StoreSettings> {
        let mut backend = arsip_ops::storage::StoreSettings::default();
        if location.starts_with("s3://") {
            backend.s3 = arsip_ops::storage::S3Settings::from_vars(vars)
                .map_err(|e| usage!("{}", e.message))?;
        }
        let faults = arsip_ops::storage::fault::from_test_env()
            .map_err(|e| usage!("ARSIP_TEST_FAULTS: {e}"))?;
        Ok(StoreSettings {
            location,
            backend,
            faults,
            meter: None,
        })
    }

    /// Caches and memory of this host (flags, then environment, then the XDG default) and
    /// its name.
    pub fn local_settings(&self) -> Result<LocalSettings> {
        let cache_dir = match &self.cli.cache_dir {
            Some(d) if d.as_os_str().is_empty() => {
                return Err(usage!("the cache directory is empty"))
            }
            Some(d) => d.clone(),
            None => default_cache_dir(),
        };
        let index_memory =
            arsip_ops::repo::parse_size(&self.cli.index_memory).ok_or_else(|| {
                usage!(
                    "--index-memory {:?} is not a size (bytes, or with K/M/G)",
                    self.cli.index_memory
                )
            })?;
        Ok(LocalSettings {
            cache_dir,
            index_memory,
            sessions: arsip_ops::repo::SessionTiming::from_env(),
            host: host_name(),
            user: os_user(),
        })
    }

    /// Open the repository for writing (backups, WAL pushes, listings of plain objects):
    /// any credentials.
    pub async fn open_shared(&self, access: Access) -> Result<Arc<Repository>> {
        Ok(self.open(access).await?.into())
    }

    /// Open the repository for `what`, which reads: full credentials only (agent
    /// credentials are refused naming `what`).
    pub async fn open_full(&self, access: Access, what: &'static str) -> Result<FullRepo> {
        Ok(self.open(access).await?.full(what)?)
    }

    /// PostgreSQL's settings on this host, from the environment: `ARSIP_PG_BIN`,
    /// `ARSIP_PG_TMP`, `ARSIP_SPOOL_DIR`, `ARSIP_KEEP_CLUSTERS`, `PGDATA`, `PATH` and libpq's
    /// `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `PGPASSFILE` (else
    /// `$HOME/.pgpass`). `--dbname` and `--pgdata` override them per command.
    pub fn pg_settings(&self) -> arsip_ops::pg::PgSettings {
        arsip_ops::pg::PgSettings::from_vars(std::env::vars_os())
    }

    /// Open the repository to read from it (restores, listings, `check`, `verify`, `wal
    /// fetch`): when it is unreachable (the store did not answer, after retries) and
    /// `--repo-fallback` names a copy, the copy, saying so on stderr.
    pub async fn open_reading(&self, access: Access, what: &'static str) -> Result<FullRepo> {
        match self.open_full(access, what).await {
            Err(e) if self.cli.repo_fallback.is_some() && unreachable(&e) => {
                eprintln!("arsip: WARNING: the repository is unreachable ({e:#}); reading its copy at {} (--repo-fallback)", self.cli.repo_fallback.as_deref().unwrap_or_default());
                self.on_copy.set(true);
                self.open_fallback(access, what).await
            }
            r => r,
        }
    }

    /// The copy `--repo-fallback` names, opened with the repository's own credentials.
    pub async fn open_fallback(&self, access: Access, what: &'static str) -> Result<FullRepo> {
        let location = self
            .cli
            .repo_fallback
            .as_deref()
            .ok_or_else(|| usage!("no --repo-fallback given"))?;
        let settings = self.store_settings_of(location, "ARSIP_FALLBACK_")?;
        Ok(self.open_at(&settings, access).await?.full(what)?)
    }

    /// Open the repository with the password or key file the environment names.
    pub async fn open(&self, access: Access) -> Result<Opened> {
        self.open_at(&self.store_settings()?, access).await
    }

    async fn open_at(&self, settings: &StoreSettings, access: Access) -> Result<Opened> {
        let with = secrets::open_with(self.cli.key_file.as_deref())?;
        Ok(arsip_ops::open::repository(
            settings,
            with,
            access,
            self.local_settings()?,
            arsip_ops::repo::clock::from_env(),
        )
        .await?)
    }
}

/// `$XDG_CACHE_HOME/arsip`, else `~/.cache/arsip`, else `arsip-cache` under the temp dir.
fn default_cache_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(d).join("arsip");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return std::path::PathBuf::from(h).join(".cache/arsip");
    }
    std::env::temp_dir().join("arsip-cache")
}

/// The name manifests and key slots record: the kernel's, else `$HOSTNAME`, else `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| arsip_ops::repo::UNKNOWN_HOST.into())
}

/// Bytes for humans: `512 B`, `1.5 MiB`.
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// The OS user running arsip, for audit records: the name of the real uid, else the number.
fn os_user() -> String {
    let uid = rustix::process::getuid();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.as_raw().to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.as_raw().to_string())
}

/// Whether `e` says the store did not answer (a connection, timeout or server failure that
/// persisted through the retries), as opposed to an answer (missing, refused, damaged).
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<arsip_ops::Error>()
            .is_some_and(arsip_ops::Error::is_transient)
    })
}
