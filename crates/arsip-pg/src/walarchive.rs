//! Continuous WAL archiving: what `archive_command = 'arsip wal push %p'` and
//! `restore_command = 'arsip wal fetch %f %p'` do.
//!
//! Contracts PostgreSQL relies on:
//! - push returns `Ok` only when the file is durable in the repository; it is idempotent
//!   (PostgreSQL retries a file whose `.done` marker it did not write before a crash), and a
//!   different file under an existing name is an error, never an overwrite.
//! - fetch reports [`Fetched::Missing`] only when the object truly does not exist; every
//!   other failure is an error that the binary turns into an exit code ≥ 126, which makes
//!   the startup process stop instead of ending recovery early.
//! - segments after the one asked for are prefetched, in parallel, into
//!   `pg_wal/arsip-prefetch/` (pg_basebackup and arsip never copy `pg_wal` contents, and a
//!   restore starts with it empty). `.history` files are never prefetched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arsip_repo::PutOutcome;
use arsip_repo::{FullRepo, RecordCreate, RecordKind, RepoError, Repository};
use arsip_storage::ErrorKind;
use bytes::Bytes;
use futures::StreamExt;

use crate::control::{check_namespace, check_wal_file_name, ClusterId, SegName};
use crate::error::{PgError, Result};

pub const PREFETCH_DIR: &str = "pg_wal/arsip-prefetch";
/// Attempts per fetch on top of the storage layer's own retries.
pub const FETCH_ATTEMPTS: u32 = 3;
const SEG_SIZE_DEFAULT: u64 = 16 << 20;

/// The record that ties a stanza name to one cluster identity.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Stanza {
    pub stanza: String,
    pub system_identifier: u64,
    pub major: u32,
}

/// Create the stanza record on first use; refuse a cluster whose identity differs.
pub async fn check_stanza(repo: &Repository, name: &str, id: &ClusterId) -> Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(PgError::refused(
            format!("stanza name {name:?} is invalid"),
            "use letters, digits, - and _",
        ));
    }
    let key = format!("{}{name}", RecordKind::Stanza.prefix());
    let want = Stanza {
        stanza: name.into(),
        system_identifier: id.system_identifier,
        major: id.major,
    };
    let parse = |b: &[u8]| -> Result<Stanza> {
        Ok(serde_json::from_slice(b).map_err(|e| RepoError::corrupt(&key, e.to_string()))?)
    };
    let have = match repo.record_get(RecordKind::Stanza, name).await? {
        Some(b) => parse(&b)?,
        None => {
            let body = serde_json::to_vec_pretty(&want).unwrap();
            match repo
                .record_create(RecordKind::Stanza, name, Bytes::from(body))
                .await?
            {
                RecordCreate::Created => return Ok(()),
                RecordCreate::AlreadyExists(b) => parse(&b)?,
            }
        }
    };
    if have != want {
        return Err(PgError::refused(
            format!(
                "stanza {name:?} in this repository belongs to cluster {} (PostgreSQL {}), not to \
                 this cluster {} (PostgreSQL {})",
                have.system_identifier, have.major, id.system_identifier, id.major
            ),
            "give each cluster its own stanza (--stanza / ARSIP_STANZA); after pg_upgrade or a \
             new initdb, use a new stanza name",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    pub file: String,
    pub namespace: String,
    pub bytes: u64,
    pub stored_bytes: u64,
    pub already_stored: bool,
}

/// Archive one file. `path` is as PostgreSQL passes `%p` (relative to the data directory,
/// which is the archiver's working directory).
pub async fn push(
    repo: &Repository,
    pgdata: &Path,
    path: &Path,
    stanza: &str,
) -> Result<PushReport> {
    let id = ClusterId::read(pgdata)?;
    check_stanza(repo, stanza, &id).await?;
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        pgdata.join(path)
    };
    let file = full
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| PgError::refused(format!("{} has no file name", full.display()), "pass %p"))?
        .to_string();
    let cant = |e: std::io::Error| PgError::Tool(format!("cannot read {}: {e}", full.display()));
    let f = std::fs::File::open(&full).map_err(cant)?;
    // Mapped, not read: a 16 MiB segment would otherwise cost a copy and 4096 fresh zeroed
    // pages per push. PostgreSQL never modifies a file while it is being archived.
    let map = if f.metadata().map_err(cant)?.len() == 0 {
        None
    } else {
        // SAFETY: the mapping is read-only and lives only while this push hashes and stores
        // it; PostgreSQL does not write a segment it hands to archive_command.
        Some(unsafe { memmap2::Mmap::map(&f) }.map_err(cant)?)
    };
    let data: &[u8] = map.as_deref().unwrap_or(&[]);
    let ns = id.namespace();
    check_wal_file_name(&file)?;
    let out = repo.wal_put(&ns, &file, data).await?;
    Ok(PushReport {
        file,
        namespace: ns,
        bytes: data.len() as u64,
        stored_bytes: match out {
            PutOutcome::Stored { stored_bytes } => stored_bytes,
            PutOutcome::AlreadyStored => 0,
        },
        already_stored: out == PutOutcome::AlreadyStored,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Written to the destination; `true` if it came from the prefetch spool.
    Written {
        bytes: u64,
        from_spool: bool,
    },
    Missing,
}

/// Write `data` to `dest` durably: temp file in the same directory, fsync, rename.
fn write_file(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

/// Fetch with bounded retries of transient storage errors. Authentication failures and
/// damage are not retried.
async fn get_retrying(repo: &FullRepo, ns: &str, file: &str) -> Result<Option<Vec<u8>>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match repo.wal_get(ns, file).await {
            Ok(v) => return Ok(v),
            Err(RepoError::Storage(e))
                if attempt < FETCH_ATTEMPTS && e.kind != ErrorKind::PermissionDenied =>
            {
                tracing::warn!(file, attempt, error = %e, "WAL fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Fetch `file` of namespace `ns` into `dest`, prefetching up to `prefetch` later segments of
/// the same timeline into the spool under `pgdata`.
pub async fn fetch(
    repo: &FullRepo,
    ns: &str,
    file: &str,
    dest: &Path,
    pgdata: &Path,
    prefetch: usize,
    follow: Option<u32>,
) -> Result<Fetched> {
    // PostgreSQL's rules, before the spool or the repository is touched.
    check_namespace(ns)?;
    check_wal_file_name(file)?;
    let spool = pgdata.join(PREFETCH_DIR);
    let seg = SegName::parse(file, SEG_SIZE_DEFAULT);
    // An ancestor's copy of a segment at or after its switch point on the followed history
    // holds the ancestor's records after that point: recovery falls back to it when the
    // child's copy is missing and would replay it as this history. Reported missing, so
    // recovery ends before the switch point instead (checked before the spool, which may
    // hold a prefetched copy).
    if let (Some(t), Some(s)) = (follow, seg) {
        if s.timeline != t && past_switch(repo, ns, t, s).await? {
            return Ok(Fetched::Missing);
        }
    }
    if seg.is_some() {
        let spooled = spool.join(file);
        if let Ok(data) = std::fs::read(&spooled) {
            write_file(dest, &data)?;
            let _ = std::fs::remove_file(&spooled);
            clean_spool(&spool, file);
            return Ok(Fetched::Written {
                bytes: data.len() as u64,
                from_spool: true,
            });
        }
    }
    let ahead: Vec<String> = match seg {
        Some(s) if prefetch > 0 => (1..=prefetch as u64)
            .map(|i| {
                SegName {
                    timeline: s.timeline,
                    segno: s.segno + i,
                }
                .name(SEG_SIZE_DEFAULT)
            })
            .filter(|n| !spool.join(n).exists())
            .collect(),
        _ => Vec::new(),
    };
    let main = get_retrying(repo, ns, file);
    let side = async {
        if ahead.is_empty() {
            return;
        }
        if std::fs::create_dir_all(&spool).is_err() {
            return;
        }
        let mut s = futures::stream::iter(
            ahead
                .iter()
                .map(|n| async move { (n, repo.wal_get(ns, n).await) }),
        )
        .buffer_unordered(prefetch.min(4));
        while let Some((n, r)) = s.next().await {
            // Prefetch failures are not errors: the file is fetched again when asked for.
            if let Ok(Some(data)) = r {
                let _ = write_file(&spool.join(n), &data);
            }
        }
    };
    let (r, ()) = tokio::join!(main, side);
    match r? {
        None => Ok(Fetched::Missing),
        Some(data) => {
            write_file(dest, &data)?;
            if seg.is_some() {
                clean_spool(&spool, file);
            }
            Ok(Fetched::Written {
                bytes: data.len() as u64,
                from_spool: false,
            })
        }
    }
}

/// Remove spooled segments at or before `file` (never needed again in this recovery).
fn clean_spool(spool: &Path, file: &str) {
    if let Ok(rd) = std::fs::read_dir(spool) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.len() == 24 && *n <= *file {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Clear the prefetch spool (every restore starts with an empty one).
pub fn clear_spool(pgdata: &Path) {
    let _ = std::fs::remove_dir_all(pgdata.join(PREFETCH_DIR));
}

/// Whether segment `s` (of an ancestor timeline) lies at or after that ancestor's switch
/// point on the history of timeline `follow`.
async fn past_switch(repo: &FullRepo, ns: &str, follow: u32, s: SegName) -> Result<bool> {
    let Some(h) = repo.wal_get(ns, &format!("{follow:08X}.history")).await? else {
        return Ok(false);
    };
    let history = crate::control::parse_history(&String::from_utf8_lossy(&h));
    Ok(history
        .iter()
        .find(|e| e.parent == s.timeline)
        .is_some_and(|e| s.segno >= e.switch_lsn / SEG_SIZE_DEFAULT))
}

/// The data directory an archive or restore command runs in: `--pgdata`, else `PGDATA` (the
/// settings' `pgdata`), else the working directory (PostgreSQL runs both commands in the
/// data directory).
pub fn pgdata_or_cwd(pgdata: Option<&Path>, settings: &crate::PgSettings) -> Result<PathBuf> {
    if let Some(p) = pgdata {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir()?;
    if cwd.join("global/pg_control").exists() {
        return Ok(cwd);
    }
    if let Some(p) = &settings.pgdata {
        return Ok(p.clone());
    }
    Ok(cwd)
}
