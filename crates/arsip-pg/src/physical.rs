//! Physical base backups, read straight from the data directory on the database host.
//!
//! Order of events (each step's failure aborts before the snapshot exists):
//! 1. checks: the connected server is not a standby, its system identifier and data directory
//!    match `--pgdata`, archiving is on, and the stanza belongs to this cluster;
//! 2. `pg_backup_start(label, fast)` in a session held open for the whole backup
//!    (non-exclusive: the session's end aborts the backup);
//! 3. the walk: every file with pg_basebackup's exclusions, tablespaces through
//!    `pg_tblspc/<oid>`, `global/pg_control` last; files that vanish are skipped, files that
//!    shrink are stored as read (WAL replay repairs both);
//! 4. `pg_backup_stop(false)`; `backup_label` and `tablespace_map` are stored from its result;
//! 5. wait (with a timeout) until every WAL segment from start to stop is in the repository;
//! 6. commit the snapshot, with start/stop LSN, timeline and times as facts, and per
//!    database and table the live-row estimate the server's statistics held during the
//!    backup (`row_estimates`: what `arsip verify` compares between backups).
//!
//! Incremental reads: a host-side cache (`<cache>/pg-physical/<repo>-<sysid>.json`, because
//! agents cannot read manifests) records each file's size, mtime and chunk ids. A file with
//! the same size and mtime, older than the previous backup's start minus one second, reuses
//! its chunk ids without being read, if the repository still holds them. A different system
//! identifier or timeline forces a full read.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arsip_repo::BackupOutcome;
use arsip_repo::BackupSession;
use arsip_repo::ChunkId;
use arsip_repo::ChunkIndex;
use arsip_repo::{Node, NodeType};
use arsip_repo::{RepoError, Repository};
use serde_json::Value;

use crate::conn;
use crate::control::{parse_lsn, ClusterId, SegName};
use crate::error::{PgError, Result};
use crate::walarchive::check_stanza;
use arsip_repo::{SnapshotMeta, SnapshotTxn};

pub const KIND: &str = "pg-physical";

/// Directories whose contents are not copied (the directory itself is kept).
const EXCLUDE_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];
/// Files never copied, at the top level.
const EXCLUDE_TOP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "current_logfiles",
    "postgresql.auto.conf.tmp",
    "recovery.signal",
    "standby.signal",
    "backup_manifest",
    // a restore's short-lived recovery key (removed when recovery ends)
    crate::restore::recovery_conf::RECOVERY_KEY,
];

/// `base/<db>/<relfilenode>[_fork][.segment]`, `global/<relfilenode>…`, and the same under
/// a tablespace: the files PostgreSQL updates page by page. They are stored in fixed blocks
/// of `config.block_size` (default two 8 KiB pages), so a changed page costs one block, not
/// one ~1 MiB content-defined chunk. Readers see ordinary chunks.
pub fn is_relation_file(rel: &str) -> bool {
    let in_db =
        rel.starts_with("base/") || rel.starts_with("global/") || rel.starts_with("pg_tblspc/");
    let name = rel.rsplit('/').next().unwrap_or("");
    let stem = name.split(['_', '.']).next().unwrap_or("");
    in_db && !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Debug, Clone)]
pub struct PhysicalBackup {
    pub dbname: Option<String>,
    pub pgdata: PathBuf,
    pub fast: bool,
    pub wal_timeout: Duration,
    pub stanza: String,
    pub tags: BTreeMap<String, String>,
    /// Connection defaults.
    pub settings: crate::PgSettings,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Cache {
    system_identifier: u64,
    timeline: u32,
    /// Unix seconds of the previous backup's start.
    started: i64,
    files: HashMap<String, CachedFile>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CachedFile {
    size: u64,
    mtime_ns: i128,
    chunks: Vec<String>,
}

/// Write the reuse cache atomically (temporary file, fsync, rename); every error names its path.
fn save_cache(path: &Path, cache: &Cache) -> std::io::Result<()> {
    use std::io::Write;
    let named = |p: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| named(dir, e))?;
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(cache).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| named(&tmp, e))?;
    f.write_all(&body).map_err(|e| named(&tmp, e))?;
    f.sync_all().map_err(|e| named(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| named(path, e))
}

/// The facts a physical backup records in its manifest, read back by restores. Serialized
/// with exactly these keys (today's, unchanged since the first physical backups), so a
/// missing or renamed fact is an error that names it instead of a silent default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhysicalFacts {
    /// Decimal, as a string: JSON readers that use doubles would round it.
    pub system_identifier: String,
    pub major: u32,
    pub server_version: String,
    /// The WAL namespace, `<system identifier>-<major>`.
    pub namespace: String,
    pub stanza: String,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_wal: String,
    pub stop_wal: String,
    /// As the server printed them (`now()::text`, with its offset).
    pub start_time: String,
    pub stop_time: String,
    pub wal_segment_size: u64,
    pub data_checksums: bool,
    pub pgdata: String,
    pub bytes_read: u64,
    pub reused_files: u64,
    pub reused_bytes: u64,
    /// PostgreSQL's `tablespace_map` text; absent without tablespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace_map: Option<String>,
    /// Per database, per `schema.table`, `pg_stat_user_tables.n_live_tup` read while the
    /// backup ran: estimates, not counts (`arsip verify` flags drops between backups).
    /// Absent in snapshots older than it and when no database could be read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub row_estimates: BTreeMap<String, BTreeMap<String, i64>>,
}

impl PhysicalFacts {
    pub fn to_facts(&self) -> BTreeMap<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.into_iter().collect(),
            _ => unreachable!("a struct serializes to an object"),
        }
    }

    /// Read a snapshot's facts; a missing, renamed or mistyped fact names itself.
    pub fn of(snap: &arsip_repo::Snapshot) -> Result<PhysicalFacts> {
        let obj: serde_json::Map<String, Value> = snap
            .manifest
            .facts
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(Value::Object(obj)).map_err(|e| {
            PgError::refused(
                format!(
                    "snapshot {} ({}) does not have the facts of a physical backup: {e}",
                    snap.short_id(),
                    snap.manifest.kind
                ),
                "restore a snapshot listed by `arsip snapshots --kind pg-physical`",
            )
        })
    }

    fn lsn(&self, key: &str, v: &str) -> Result<u64> {
        parse_lsn(v).ok_or_else(|| {
            PgError::refused(
                format!("fact {key} = {v:?} is not an LSN"),
                "the snapshot's manifest is not one arsip wrote",
            )
        })
    }

    pub fn start_lsn(&self) -> Result<u64> {
        self.lsn("start_lsn", &self.start_lsn)
    }

    pub fn stop_lsn(&self) -> Result<u64> {
        self.lsn("stop_lsn", &self.stop_lsn)
    }

    fn seg(&self, key: &str, v: &str) -> Result<SegName> {
        SegName::parse(v, self.wal_segment_size).ok_or_else(|| {
            PgError::refused(
                format!("fact {key} = {v:?} is not a WAL segment name"),
                "the snapshot's manifest is not one arsip wrote",
            )
        })
    }

    pub fn start_wal(&self) -> Result<SegName> {
        self.seg("start_wal", &self.start_wal)
    }

    pub fn stop_wal(&self) -> Result<SegName> {
        self.seg("stop_wal", &self.stop_wal)
    }

    pub fn stop_time(&self) -> Result<jiff::Timestamp> {
        crate::restore::target::parse_time(&self.stop_time).ok_or_else(|| {
            PgError::refused(
                format!("fact stop_time = {:?} is not a time", self.stop_time),
                "the snapshot's manifest is not one arsip wrote",
            )
        })
    }
}

/// Per database that accepts connections, `schema.table` → `n_live_tup`. Best effort: a
/// database that cannot be read is left out (the estimates are a signal, not the backup).
async fn row_estimates(cfg: &tokio_postgres::Config) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    let Ok(client) = conn::connect(cfg).await else {
        return out;
    };
    let dbs: Vec<String> = match client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
            &[],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(_) => Vec::new(),
    };
    client.close().await;
    for db in dbs {
        let mut c = cfg.clone();
        c.dbname(&db);
        let Ok(client) = conn::connect(&c).await else {
            continue;
        };
        if let Ok(rows) = client
            .query(
                "SELECT schemaname || '.' || relname, n_live_tup FROM pg_stat_user_tables",
                &[],
            )
            .await
        {
            let t: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            out.insert(db, t);
        }
        client.close().await;
    }
    out
}

fn cache_path(repo: &Repository, sysid: u64) -> PathBuf {
    repo.cache_dir()
        .join("pg-physical")
        .join(format!("{}-{sysid}.json", &repo.repo_id()[..16]))
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// Walk state for one backup.
struct Walk<'a> {
    session: &'a BackupSession,
    index: &'a ChunkIndex,
    prev: Option<&'a Cache>,
    /// Files older than this (unix seconds) may be reused from the cache.
    reuse_before: i64,
    next: Cache,
    nodes: Vec<(Node, Vec<ChunkId>)>,
    pg_control: Option<(Node, Vec<ChunkId>)>,
    bytes_read: u64,
    reused_files: u64,
    reused_bytes: u64,
}

fn node(rel: &str, m: &std::fs::Metadata, t: NodeType, target: Option<String>) -> Node {
    Node {
        path: rel.to_string(),
        node_type: t,
        mode: m.mode() & 0o7777,
        mtime: jiff::Timestamp::new(m.mtime(), m.mtime_nsec() as i32).ok(),
        size: if t == NodeType::File { m.len() } else { 0 },
        target,
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        ..Default::default()
    }
}

/// Unlogged relations in one database directory: relfilenodes with an `_init` fork.
fn unlogged_in(dir: &Path) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(base) = n.strip_suffix("_init") {
                if base.bytes().all(|b| b.is_ascii_digit()) {
                    out.insert(base.to_string());
                }
            }
        }
    }
    out
}

fn is_unlogged_fork(name: &str, unlogged: &std::collections::HashSet<String>) -> bool {
    if name.ends_with("_init") {
        return false;
    }
    let base = name.split(['_', '.']).next().unwrap_or("");
    unlogged.contains(base)
}

impl Walk<'_> {
    fn dir(&mut self, abs: &Path, rel: &str, depth: usize) -> Result<()> {
        let mut entries: Vec<_> = match std::fs::read_dir(abs) {
            Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        entries.sort_by_key(|e| e.file_name());
        // Database directories (base/<oid>, tablespace .../<oid>) may hold unlogged relations.
        let unlogged = unlogged_in(abs);
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = e.path();
            let m = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err.into()),
            };
            if depth == 0 && EXCLUDE_TOP_FILES.contains(&name.as_str()) {
                continue;
            }
            if name == "pg_internal.init" || name.starts_with("pgsql_tmp") {
                continue;
            }
            if !unlogged.is_empty() && m.is_file() && is_unlogged_fork(&name, &unlogged) {
                continue;
            }
            let ft = m.file_type();
            if ft.is_symlink() {
                if rel == "pg_tblspc" {
                    // A tablespace: store its contents under pg_tblspc/<oid>/ (its location
                    // is in the tablespace map).
                    let tm = std::fs::metadata(&path)?;
                    self.nodes
                        .push((node(&child_rel, &tm, NodeType::Dir, None), vec![]));
                    self.dir(&path, &child_rel, depth + 1)?;
                } else {
                    let target = std::fs::read_link(&path)?.to_string_lossy().into_owned();
                    self.nodes.push((
                        node(&child_rel, &m, NodeType::Symlink, Some(target)),
                        vec![],
                    ));
                }
            } else if ft.is_dir() {
                self.nodes
                    .push((node(&child_rel, &m, NodeType::Dir, None), vec![]));
                if depth == 0 && EXCLUDE_CONTENTS.contains(&name.as_str()) {
                    if name == "pg_wal" {
                        // keep pg_wal/archive_status: PostgreSQL expects it
                        let st = path.join("archive_status");
                        if let Ok(sm) = std::fs::symlink_metadata(&st) {
                            self.nodes.push((
                                node("pg_wal/archive_status", &sm, NodeType::Dir, None),
                                vec![],
                            ));
                        }
                    }
                    continue;
                }
                self.dir(&path, &child_rel, depth + 1)?;
            } else if ft.is_file() {
                self.file(&path, &child_rel, &m)?;
            }
        }
        Ok(())
    }

    fn file(&mut self, abs: &Path, rel: &str, m: &std::fs::Metadata) -> Result<()> {
        let mut n = node(rel, m, NodeType::File, None);
        let mt = mtime_ns(m);
        if let Some(prev) = self.prev.and_then(|p| p.files.get(rel)) {
            if prev.size == m.len()
                && prev.mtime_ns == mt
                && (mt / 1_000_000_000) < self.reuse_before as i128
            {
                let ids: Option<Vec<ChunkId>> = prev
                    .chunks
                    .iter()
                    .map(|h| {
                        arsip_repo::parse_chunk_id(h)
                            .ok()
                            .filter(|id| self.index.dedupable(id))
                    })
                    .collect();
                if let Some(ids) = ids {
                    self.reused_files += 1;
                    self.reused_bytes += m.len();
                    self.next.files.insert(rel.to_string(), prev.clone());
                    self.push_file(rel, n, ids);
                    return Ok(());
                }
            }
        }
        let f = match std::fs::File::open(abs) {
            Ok(f) => f,
            // Dropped or truncated away mid-backup: WAL replay recreates what matters.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let (ids, size) = if is_relation_file(rel) {
            let block = self.session.repo().block_size() as usize;
            self.session.write_blocks(f, block)?
        } else {
            self.session.write_stream(f)?
        };
        n.size = size;
        self.bytes_read += size;
        self.next.files.insert(
            rel.to_string(),
            CachedFile {
                size,
                mtime_ns: mt,
                chunks: ids.iter().map(hex::encode).collect(),
            },
        );
        self.push_file(rel, n, ids);
        Ok(())
    }

    fn push_file(&mut self, rel: &str, n: Node, ids: Vec<ChunkId>) {
        if rel == "global/pg_control" {
            self.pg_control = Some((n, ids));
        } else {
            self.nodes.push((n, ids));
        }
    }
}

fn label_value<'a>(label: &'a str, key: &str) -> Option<&'a str> {
    label
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim_start_matches(':').trim())
}

pub async fn backup(repo: Arc<Repository>, opts: &PhysicalBackup) -> Result<BackupOutcome> {
    let cfg = conn::config(opts.dbname.as_deref(), &opts.settings.libpq)?;
    let client = conn::connect(&cfg).await?;
    let pgdata = opts.pgdata.canonicalize().map_err(|e| {
        PgError::refused(
            format!("--pgdata {}: {e}", opts.pgdata.display()),
            "pass the cluster's data directory",
        )
    })?;
    let id = ClusterId::read(&pgdata)?;
    let server = check_server(&client, &pgdata, &id).await?;
    let seg_size = server.seg_size;
    check_stanza(&repo, &opts.stanza, &id).await?;

    let mut session = SnapshotTxn::start(repo.clone()).await?;
    let started_unix = session.started().as_second();
    let label = format!("arsip {}", session.started());
    let row = client
        .query_one(
            "SELECT l::text, now()::text FROM pg_backup_start($1, $2) l",
            &[&label, &opts.fast],
        )
        .await?;
    let start_lsn_s: String = row.get(0);
    let start_time: String = row.get(1);
    let row_estimates = row_estimates(&cfg).await;

    // Host cache of the previous backup of this cluster into this repository.
    let cpath = cache_path(&repo, id.system_identifier);
    let prev: Option<Cache> = std::fs::read(&cpath)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &Cache| c.system_identifier == id.system_identifier);
    let cur_tli: i32 = client
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await?
        .get(0);
    let prev = prev.filter(|c| c.timeline == cur_tli as u32);

    let walked = match read_data_dir(&session, &pgdata, prev, started_unix).await {
        Ok(w) => w,
        Err(e) => {
            let _ = client.batch_execute("SELECT pg_backup_stop(false)").await;
            return Err(e);
        }
    };
    let Walked {
        nodes,
        pg_control,
        mut next_cache,
        bytes_read,
        reused_files,
        reused_bytes,
    } = walked;

    // pg_backup_stop switches to a new segment; rather than its one-second polling for the
    // archiver (wait_for_archive), arsip polls the repository itself, below, with a timeout.
    let stop = client
        .query_one(
            "SELECT lsn::text, labelfile, spcmapfile, clock_timestamp()::text FROM pg_backup_stop(false)",
            &[],
        )
        .await?;
    let stop_lsn_s: String = stop.get(0);
    let labelfile: String = stop.get(1);
    let spcmap: Option<String> = stop.get(2);
    let stop_time: String = stop.get(3);
    // The backup is stopped; the session has nothing left to do.
    client.close().await;
    let timeline: u32 = label_value(&labelfile, "START TIMELINE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(cur_tli as u32);
    // What the server returned is the backup's range: never guess it.
    let server_lsn = |what: &str, s: &str| {
        parse_lsn(s).ok_or_else(|| PgError::Tool(format!("{what} returned {s:?}, not an LSN")))
    };
    let start_lsn = server_lsn("pg_backup_start", &start_lsn_s)?;
    let stop_lsn = server_lsn("pg_backup_stop", &stop_lsn_s)?;
    let start_seg = SegName::from_lsn(timeline, start_lsn, seg_size);
    let stop_seg = SegName::from_lsn(
        timeline,
        stop_lsn.saturating_sub(1).max(start_lsn),
        seg_size,
    );

    // Tree: files in walk order, then backup_label and tablespace_map, pg_control last.
    for (n, ids) in &nodes {
        session.node(n, ids)?;
    }
    write_tree_tail(&mut session, &labelfile, spcmap.as_deref(), pg_control).await?;

    // Every segment from start to stop must be durable in the repository.
    let ns = id.namespace();
    wait_for_wal(
        &repo,
        &ns,
        timeline,
        start_seg.segno..=stop_seg.segno,
        seg_size,
        opts.wal_timeout,
    )
    .await?;

    let facts = PhysicalFacts {
        system_identifier: id.system_identifier.to_string(),
        major: id.major,
        server_version: server.version,
        namespace: ns,
        stanza: opts.stanza.clone(),
        timeline,
        start_lsn: start_lsn_s,
        stop_lsn: stop_lsn_s,
        start_wal: start_seg.name(seg_size),
        stop_wal: stop_seg.name(seg_size),
        start_time,
        stop_time,
        wal_segment_size: seg_size,
        data_checksums: server.checksums,
        pgdata: pgdata.display().to_string(),
        bytes_read,
        reused_files,
        reused_bytes,
        tablespace_map: spcmap.filter(|m| !m.is_empty()),
        row_estimates,
    }
    .to_facts();
    let source = format!("{}:{}", repo.host(), pgdata.display());
    let out = session
        .commit(SnapshotMeta {
            kind: KIND.into(),
            source,
            tags: opts.tags.clone(),
            facts,
        })
        .await?;

    // Only a committed backup may seed the next one's reuse. The snapshot is committed: a
    // cache that cannot be written costs the next backup a full read, which is worth a
    // warning, not a failure.
    next_cache.system_identifier = id.system_identifier;
    next_cache.timeline = timeline;
    if let Err(e) = save_cache(&cpath, &next_cache) {
        let w = format!(
            "the reuse cache {} cannot be written ({e}): the next physical backup of this \
             cluster reads every file again",
            cpath.display()
        );
        tracing::warn!("{w}");
    }
    Ok(out)
}

/// What reading the data directory gave: the files' nodes and chunks in walk order,
/// `pg_control` apart (written last), the reuse cache for the next backup, and counts.
struct Walked {
    nodes: Vec<(Node, Vec<ChunkId>)>,
    pg_control: Option<(Node, Vec<ChunkId>)>,
    next_cache: Cache,
    bytes_read: u64,
    reused_files: u64,
    reused_bytes: u64,
}

/// Read the data directory into the session, in a blocking thread, reusing the chunks of
/// files unchanged since `prev` (files older than its start minus one second).
async fn read_data_dir(
    session: &SnapshotTxn,
    pgdata: &Path,
    prev: Option<Cache>,
    started_unix: i64,
) -> Result<Walked> {
    let sess = session.session().clone();
    let index = session.index().clone();
    let pg = pgdata.to_path_buf();
    arsip_repo::blocking(move || {
        let reuse_before = prev.as_ref().map_or(i64::MIN, |p| p.started - 1);
        let mut w = Walk {
            session: &sess,
            index: &index,
            prev: prev.as_ref(),
            reuse_before,
            next: Cache {
                system_identifier: 0,
                timeline: 0,
                started: started_unix,
                files: HashMap::new(),
            },
            nodes: Vec::new(),
            pg_control: None,
            bytes_read: 0,
            reused_files: 0,
            reused_bytes: 0,
        };
        w.dir(&pg, "", 0)?;
        Ok::<_, PgError>(Walked {
            nodes: w.nodes,
            pg_control: w.pg_control,
            next_cache: w.next,
            bytes_read: w.bytes_read,
            reused_files: w.reused_files,
            reused_bytes: w.reused_bytes,
        })
    })
    .await
}

/// What a physical backup needs to know of the server it talks to.
struct Server {
    version: String,
    seg_size: u64,
    checksums: bool,
}

/// Refuse, before anything is written, a server that is a standby, is not the one running on
/// `pgdata`, or does not archive WAL; else what the backup records of it.
async fn check_server(client: &conn::Conn, pgdata: &Path, id: &ClusterId) -> Result<Server> {
    let r = client
        .query_one(
            "SELECT pg_is_in_recovery(), (SELECT system_identifier::text FROM pg_control_system()), \
             current_setting('data_directory'), current_setting('archive_mode'), \
             current_setting('archive_command'), current_setting('server_version'), \
             (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
             current_setting('data_checksums')",
            &[],
        )
        .await?;
    if r.get::<_, bool>(0) {
        return Err(PgError::refused(
            "the server is a standby; physical backups from standbys are not supported yet",
            "run the backup against the primary",
        ));
    }
    let server_sysid: String = r.get(1);
    if server_sysid != id.system_identifier.to_string() {
        return Err(PgError::refused(
            format!(
                "the connected server's system identifier {server_sysid} is not that of {} ({})",
                pgdata.display(),
                id.system_identifier
            ),
            "connect to the server that runs on --pgdata (PGHOST/PGPORT or --dbname)",
        ));
    }
    let server_dir = PathBuf::from(r.get::<_, String>(2));
    if server_dir.canonicalize().ok().as_deref() != Some(pgdata) {
        return Err(PgError::refused(
            format!(
                "the server's data_directory is {}, not {}",
                server_dir.display(),
                pgdata.display()
            ),
            "pass the server's data directory as --pgdata",
        ));
    }
    let archive_mode: String = r.get(3);
    let archive_command: String = r.get(4);
    if archive_mode == "off" || archive_command.trim().is_empty() {
        return Err(PgError::refused(
            "WAL archiving is off: a base backup without archived WAL cannot be restored",
            "set archive_mode = on and archive_command = 'arsip wal push %p' (restart needed)",
        ));
    }
    Ok(Server {
        version: r.get(5),
        seg_size: r.get::<_, i64>(6) as u64,
        checksums: r.get::<_, String>(7) == "on",
    })
}

/// The end of a physical backup's tree: `backup_label`, `tablespace_map` (if any), and
/// `pg_control` last.
async fn write_tree_tail(
    session: &mut SnapshotTxn,
    labelfile: &str,
    spcmap: Option<&str>,
    pg_control: Option<(Node, Vec<[u8; 32]>)>,
) -> Result<()> {
    let now = session.started();
    let sess = session.session().clone();
    let lf = labelfile.to_string();
    let (ids, size) = arsip_repo::blocking(move || sess.write_bytes(lf.as_bytes())).await?;
    session.node(&Node::stream_file("backup_label", size, now), &ids)?;
    if let Some(map) = spcmap.filter(|m| !m.is_empty()) {
        let sess = session.session().clone();
        let m = map.to_string();
        let (ids, size) = arsip_repo::blocking(move || sess.write_bytes(m.as_bytes())).await?;
        session.node(&Node::stream_file("tablespace_map", size, now), &ids)?;
    }
    let (pc, pc_ids) = pg_control.ok_or_else(|| {
        PgError::refused(
            "global/pg_control was not found in the data directory",
            "check --pgdata",
        )
    })?;
    session.node(&pc, &pc_ids)?;
    Ok(())
}

/// Wait until every segment of `segnos` on `timeline` is in the repository, or refuse after
/// `timeout` (nothing is committed then).
async fn wait_for_wal(
    repo: &Repository,
    ns: &str,
    timeline: u32,
    segnos: std::ops::RangeInclusive<u64>,
    seg_size: u64,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for segno in segnos {
        let name = SegName { timeline, segno }.name(seg_size);
        loop {
            if repo.wal_exists(ns, &name).await? {
                break;
            }
            if Instant::now() > deadline {
                return Err(PgError::refused(
                    format!("WAL segment {name} needed by this backup is not in the repository"),
                    "check archive_command (pg_stat_archiver, the server log); no snapshot was committed",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

impl From<PgError> for RepoError {
    fn from(e: PgError) -> RepoError {
        match e {
            PgError::Repo(r) => r,
            PgError::Io(io) => RepoError::Io(io),
            other => RepoError::Invalid(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys restores read are exactly today's, and a missing one names itself.
    #[test]
    fn facts_keep_todays_keys_and_name_what_is_missing() {
        let f = PhysicalFacts {
            system_identifier: "7714453355040664542".into(),
            major: 15,
            server_version: "15.14".into(),
            namespace: "7714453355040664542-15".into(),
            stanza: "main".into(),
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_wal: "000000010000000000000002".into(),
            stop_wal: "000000010000000000000002".into(),
            start_time: "2026-12-01 21:33:00.123+00".into(),
            stop_time: "2026-12-01 21:33:01.456789+00".into(),
            wal_segment_size: 16 << 20,
            data_checksums: true,
            pgdata: "/var/lib/postgresql/15/main".into(),
            bytes_read: 1,
            reused_files: 2,
            reused_bytes: 3,
            tablespace_map: None,
            row_estimates: BTreeMap::new(),
        };
        let facts = f.to_facts();
        let keys: Vec<&str> = facts.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "bytes_read",
                "data_checksums",
                "major",
                "namespace",
                "pgdata",
                "reused_bytes",
                "reused_files",
                "server_version",
                "stanza",
                "start_lsn",
                "start_time",
                "start_wal",
                "stop_lsn",
                "stop_time",
                "stop_wal",
                "system_identifier",
                "timeline",
                "wal_segment_size",
            ]
        );
        let back: PhysicalFacts =
            serde_json::from_value(Value::Object(facts.clone().into_iter().collect())).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.stop_lsn().unwrap(), 0x2000100);
        assert!(back.stop_time().is_ok());
        let mut missing = facts;
        missing.remove("wal_segment_size");
        let e =
            serde_json::from_value::<PhysicalFacts>(Value::Object(missing.into_iter().collect()))
                .unwrap_err();
        assert!(e.to_string().contains("wal_segment_size"), "{e}");
    }

    /// Row estimates are stored under `row_estimates` when gathered, and snapshots from
    /// before them (no such fact) still read, with none.
    #[test]
    fn row_estimates_are_optional() {
        let old = serde_json::json!({
            "system_identifier": "1", "major": 15, "server_version": "15.14",
            "namespace": "1-15", "stanza": "main", "timeline": 1,
            "start_lsn": "0/2000028", "stop_lsn": "0/2000100",
            "start_wal": "000000010000000000000002", "stop_wal": "000000010000000000000002",
            "start_time": "x", "stop_time": "y", "wal_segment_size": 16777216,
            "data_checksums": true, "pgdata": "/d", "bytes_read": 1, "reused_files": 0,
            "reused_bytes": 0
        });
        let mut f: PhysicalFacts = serde_json::from_value(old).unwrap();
        assert!(f.row_estimates.is_empty());
        f.row_estimates
            .insert("app".into(), BTreeMap::from([("public.t".to_string(), 5)]));
        let facts = f.to_facts();
        assert_eq!(
            facts["row_estimates"],
            serde_json::json!({"app": {"public.t": 5}})
        );
    }
}
