//! Logical backups and restores of one database through `pg_dump` / `pg_restore`.
//!
//! Backup: a REPEATABLE READ, READ ONLY transaction exports its snapshot; every table's rows
//! are counted inside it (the facts a restore drill compares), and `pg_dump -Fc -Z0
//! --snapshot` dumps exactly that state, streamed into the repository (uncompressed so that
//! daily dumps deduplicate; the repository compresses). The snapshot commits only after
//! pg_dump exited 0: its stdout is read through [`ChildReader`], which turns a non-zero exit
//! into a read error at end of stream.
//!
//! Restore ([`restore`]): checks first, writes after. `--create` recreates the database as
//! the dump records it under the target's name ([`database`]); `--table` selects entries
//! from the dump's table of contents ([`tables`]) and restores them in one transaction.

mod database;
mod sql;
mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use arsip_files::child::ChildReader;
use arsip_repo::BackupOutcome;
use arsip_repo::ChunkerParams;
use arsip_repo::Reader;
use arsip_repo::{FullRepo, RepoError, Repository};
use arsip_repo::{Node, Snapshot};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::conn;
use crate::control::pg_bin_dir;
use crate::error::{PgError, Result};
use crate::settings::PgSettings;
use arsip_repo::{SnapshotMeta, SnapshotTxn};
use database::DbPlan;

pub const KIND: &str = "pg-logical";
pub const DUMP_FILE: &str = "database.dump";
pub const GLOBALS_FILE: &str = "globals.sql";

/// Content-defined chunk sizes for dumps (min 16 KiB, average 64 KiB, max 256 KiB) instead of
/// the repository's ~1 MiB. A day's changed rows move to pages all over a table, so in the
/// dump's heap order nearly every 1 MiB stretch changes while most 64 KiB ones do not: a week
/// of daily dumps of the benchmark database took 0.54× of restic's bytes with these sizes
/// and 0.98× with 1 MiB chunks, at the same backup speed (docs/BENCHMARKS-PG.md).
pub const DUMP_CHUNKS: ChunkerParams = ChunkerParams {
    min: 16 * 1024,
    avg: 64 * 1024,
    max: 256 * 1024,
};

#[derive(Debug, Clone, Default)]
pub struct LogicalBackup {
    pub dbname: Option<String>,
    pub all: bool,
    pub tags: BTreeMap<String, String>,
    /// Programs, connection defaults and the search path for `stdbuf`.
    pub settings: PgSettings,
}

/// pg_dump writes its archive through stdio, which buffers 4 KiB at a time for a pipe: about
/// 540 000 `write` calls, and as many wake-ups of arsip's reader, for a 2.2 GB dump. Through
/// coreutils' `stdbuf -o1M` the same dump takes about 2 100 writes (2 s less CPU and ~1.5 s
/// less wall time here, docs/BENCHMARKS-PG.md). Without `stdbuf` on the search path
/// (`PATH`, from the settings), pg_dump runs directly.
fn pg_dump_command(pg_dump: &Path, search_path: Option<&std::ffi::OsStr>) -> Command {
    let stdbuf = search_path
        .into_iter()
        .flat_map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .map(|d| d.join("stdbuf"))
        .find(|p| p.is_file());
    match stdbuf {
        Some(stdbuf) if pg_dump.is_file() => {
            let mut c = Command::new(stdbuf);
            c.arg("-o1M").arg(pg_dump);
            c
        }
        _ => Command::new(pg_dump),
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub async fn backup(repo: Arc<Repository>, opts: &LogicalBackup) -> Result<BackupOutcome> {
    let cfg = conn::config(opts.dbname.as_deref(), &opts.settings.libpq)?;
    let settings = opts.settings.clone();
    let bin = arsip_repo::blocking(move || pg_bin_dir(&settings)).await?;
    let mut client = conn::connect(&cfg).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let snap: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .await?
        .get(0);
    let row = tx
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
             current_database(), pg_database_size(current_database()), \
             pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, pg_current_wal_lsn()::text \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await?;
    let db: String = row.get(2);
    let mut facts: BTreeMap<String, Value> = BTreeMap::new();
    facts.insert("server_version".into(), json!(row.get::<_, String>(0)));
    facts.insert("server_version_num".into(), json!(row.get::<_, i32>(1)));
    facts.insert("database".into(), json!(db));
    facts.insert("database_size".into(), json!(row.get::<_, i64>(3)));
    facts.insert("encoding".into(), json!(row.get::<_, String>(4)));
    facts.insert("lc_collate".into(), json!(row.get::<_, String>(5)));
    facts.insert("lc_ctype".into(), json!(row.get::<_, String>(6)));
    facts.insert("wal_lsn".into(), json!(row.get::<_, String>(7)));
    // pg_control_system() needs pg_read_all_stats or superuser; a fact, not a requirement.
    if let Ok(r) = tx
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
    {
        facts.insert("system_identifier".into(), json!(r.get::<_, String>(0)));
    }

    // Start the dump first, then count in the same snapshot while it runs.
    let mut dump = pg_dump_command(&bin.join("pg_dump"), opts.settings.search_path.as_deref());
    dump.args(["-Fc", "-Z0", "--no-sync"])
        .arg(format!("--snapshot={snap}"))
        .arg(format!("--dbname={}", quote_ident_free_conninfo(&cfg, &db)))
        .env_remove("PGPASSWORD");
    for (k, v) in conn::libpq_env(&cfg) {
        dump.env(k, v);
    }
    let reader = ChildReader::spawn(dump, "pg_dump").map_err(|e| PgError::Tool(e.to_string()))?;
    let mut session = SnapshotTxn::start(repo.clone()).await?;
    let s = session.session().clone();
    let writer = arsip_repo::blocking(move || s.write_stream_with(reader, DUMP_CHUNKS));

    let tables = tx
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut counts = serde_json::Map::new();
    for t in tables {
        let (s, n): (String, String) = (t.get(0), t.get(1));
        let c: i64 = tx
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.{}",
                    quote_ident(&s),
                    quote_ident(&n)
                ),
                &[],
            )
            .await?
            .get(0);
        counts.insert(format!("{s}.{n}"), json!(c));
    }
    facts.insert("row_counts".into(), Value::Object(counts));

    let (ids, size) = writer.await.map_err(|e| match e {
        RepoError::Io(io) => PgError::Tool(io.to_string()),
        other => other.into(),
    })?;
    tx.commit().await?;
    client.close().await;
    let now = session.started();
    session.node(&Node::stream_file(DUMP_FILE, size, now), &ids)?;

    if opts.all {
        let mut g = Command::new(bin.join("pg_dumpall"));
        g.args(["--globals-only", "--no-sync"]);
        for (k, v) in conn::libpq_env(&cfg) {
            g.env(k, v);
        }
        let r = ChildReader::spawn(g, "pg_dumpall --globals-only")
            .map_err(|e| PgError::Tool(e.to_string()))?;
        let s = session.session().clone();
        let (gids, gsize) = arsip_repo::blocking(move || s.write_stream(r)).await?;
        session.node(&Node::stream_file(GLOBALS_FILE, gsize, now), &gids)?;
        facts.insert("globals".into(), json!(true));
    }
    let source = format!("postgresql://{}/{db}", host_desc(&cfg));
    session
        .commit(SnapshotMeta {
            kind: KIND.into(),
            source,
            tags: opts.tags.clone(),
            facts,
        })
        .await
        .map_err(Into::into)
}

/// `dbname=<db>` only: host, port, user and password travel in the environment.
fn quote_ident_free_conninfo(_cfg: &tokio_postgres::Config, db: &str) -> String {
    format!("dbname={}", conninfo_value(db))
}

pub fn host_desc(cfg: &tokio_postgres::Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    format!(
        "{}:{}",
        host,
        cfg.get_ports().first().copied().unwrap_or(5432)
    )
}

#[derive(Debug, Clone, Default)]
pub struct LogicalRestore {
    pub dbname: Option<String>,
    /// Create the target database as the dump records it (see [`database`]); if anything
    /// fails after it was created, it is dropped again.
    pub create: bool,
    /// SCHEMA.TABLE names: restore only these (see [`tables`]), in one transaction.
    pub tables: Vec<String>,
    pub jobs: u32,
    /// Apply the stored globals (roles, tablespaces) first; existing roles are reported by
    /// psql and skipped.
    pub globals: bool,
    /// Programs, connection defaults and the spool directory.
    pub settings: PgSettings,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LogicalRestoreOutcome {
    pub snapshot: String,
    pub database: String,
    pub bytes: u64,
    pub seconds: f64,
    pub tables: Vec<String>,
}

/// The dump file's node and chunks in a pg-logical snapshot.
async fn find_file(
    reader: &Reader,
    snap: &Snapshot,
    name: &str,
) -> Result<Option<(Node, Vec<[u8; 32]>)>> {
    let mut tree = reader.tree(&snap.manifest).await?;
    while let Some((node, chunks)) = tree.next_node()? {
        if node.path == name {
            return Ok(Some((node, chunks)));
        }
    }
    Ok(None)
}

fn free_space(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// A libpq conninfo value: single-quoted, `\` and `'` escaped with a backslash (libpq's
/// rule; SQL's `''` is not understood there).
fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Where pg_restore reads the dump from: the spooled copy, or the repository streamed into
/// its stdin.
enum Dump<'a> {
    File(&'a Path),
    Stream(&'a Reader, &'a [[u8; 32]]),
}

/// Run `pg_restore ARGS` on the dump for output it prints without a server (`--list`, SQL
/// of chosen entries), and return that output. Those read only the archive's header and
/// table of contents: from a stream, pg_restore exits once it has them and the rest of the
/// dump is never fetched (the closed pipe ends the feed; the exit status decides).
async fn pg_restore_print(
    bin: &Path,
    args: &[&std::ffi::OsStr],
    dump: &Dump<'_>,
) -> Result<String> {
    let mut cmd = tokio::process::Command::new(bin.join("pg_restore"));
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (out, fed) = match dump {
        Dump::File(p) => (cmd.arg(p).stdin(Stdio::null()).output().await, Ok(())),
        Dump::Stream(reader, chunks) => {
            let mut child = cmd
                .stdin(Stdio::piped())
                .spawn()
                .map_err(|e| PgError::Tool(format!("cannot run pg_restore: {e}")))?;
            let mut stdin = child.stdin.take().expect("piped stdin");
            let feed = async move {
                let mut s = std::pin::pin!(reader.stream(chunks.to_vec()));
                while let Some(c) = s.next().await {
                    if stdin.write_all(&c?).await.is_err() {
                        break; // pg_restore has what it needs (or failed: its status says)
                    }
                }
                Ok::<_, PgError>(())
            };
            let (fed, out) = tokio::join!(feed, child.wait_with_output());
            (out, fed)
        }
    };
    let out = out.map_err(|e| PgError::Tool(format!("cannot run pg_restore: {e}")))?;
    if !out.status.success() {
        fed?; // a damaged dump explains the failure better than pg_restore does
    }
    check(&out, "pg_restore")?;
    String::from_utf8(out.stdout)
        .map_err(|_| PgError::Tool("pg_restore printed output that is not UTF-8".into()))
}

/// Copy the dump to a local file (parallel and per-table restores need a seekable archive),
/// after checking that the spool directory (`ARSIP_SPOOL_DIR`, default the temp dir) has
/// room.
async fn spool_dump(
    reader: &Reader,
    node: &Node,
    chunks: &[[u8; 32]],
    dir: PathBuf,
) -> Result<tempfile::NamedTempFile> {
    let need = node.size + node.size / 10 + (64 << 20);
    if let Some(free) = free_space(&dir) {
        if free < need {
            return Err(PgError::refused(
                format!(
                    "--jobs/--table need a local copy of the dump ({} bytes) and {} has {free} bytes free",
                    node.size,
                    dir.display()
                ),
                "free space, set ARSIP_SPOOL_DIR to a larger filesystem, or restore with --jobs 1",
            ));
        }
    }
    let f = tempfile::NamedTempFile::new_in(&dir).map_err(|e| {
        PgError::Tool(format!(
            "cannot create a spool file in {}: {e}",
            dir.display()
        ))
    })?;
    let io_err = |e: std::io::Error| PgError::Tool(format!("writing {}: {e}", f.path().display()));
    let mut out = tokio::fs::File::from_std(f.reopen().map_err(io_err)?);
    let mut s = std::pin::pin!(reader.stream(chunks.to_vec()));
    while let Some(c) = s.next().await {
        out.write_all(&c?).await.map_err(io_err)?;
    }
    out.flush().await.map_err(io_err)?;
    Ok(f)
}

/// A small temp file holding `text` (a `--use-list`).
async fn list_file(text: String) -> Result<tempfile::NamedTempFile> {
    let f = tempfile::NamedTempFile::new()?;
    tokio::fs::write(f.path(), text)
        .await
        .map_err(|e| PgError::Tool(format!("writing {}: {e}", f.path().display())))?;
    Ok(f)
}

/// Feed the stored globals (roles, tablespaces) to psql.
async fn apply_globals(
    bin: &Path,
    cfg: &tokio_postgres::Config,
    reader: &Reader,
    gchunks: Vec<[u8; 32]>,
) -> Result<()> {
    let mut psql = tokio::process::Command::new(bin.join("psql"));
    psql.args(["-X", "-q", "-d", "dbname=postgres", "-f", "-"])
        .env_remove("PGPASSWORD");
    for (k, v) in conn::libpq_env(cfg) {
        psql.env(k, v);
    }
    let mut child = psql
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PgError::Tool(format!("cannot run psql: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feed = async move {
        let mut s = std::pin::pin!(reader.stream(gchunks));
        while let Some(c) = s.next().await {
            stdin
                .write_all(&c?)
                .await
                .map_err(|e| PgError::Tool(format!("psql (globals) stopped reading: {e}")))?;
        }
        Ok::<_, PgError>(())
    };
    let (fed, out) = tokio::join!(feed, child.wait_with_output());
    // `CREATE ROLE postgres` and other existing roles fail harmlessly; psql goes on.
    check(&out?, "psql (globals)")?;
    fed
}

/// Refuse, before the database is created, when the target cluster lacks a role the
/// database-level statements name (its owner above all).
async fn check_roles(
    admin: &conn::Conn,
    plan: &DbPlan,
    snapshot_has_globals: bool,
    globals_applied: bool,
) -> Result<()> {
    let roles: Vec<String> = plan.roles.iter().cloned().collect();
    let rows = admin
        .query(
            "SELECT r FROM unnest($1::text[]) r \
             WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) ORDER BY 1",
            &[&roles],
        )
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = rows
        .iter()
        .map(|r| {
            let n: String = r.get(0);
            if plan.owner.as_deref() == Some(n.as_str()) {
                format!("{} (the owner)", quote_ident(&n))
            } else {
                quote_ident(&n)
            }
        })
        .collect();
    let hint = if snapshot_has_globals && !globals_applied {
        "add --globals to create the snapshot's roles first (from the globals.sql that \
         `backup pg --logical --all` stored)"
    } else if globals_applied {
        "the snapshot's globals do not create them: create them in the target cluster first"
    } else {
        "create them in the target cluster first (for example from the source's \
         `pg_dumpall --globals-only`); backups made with `--all` carry them for --globals"
    };
    Err(PgError::refused(
        format!(
            "the target cluster has no role {} that the database needs; nothing was created",
            names.join(", ")
        ),
        hint,
    ))
}

/// Restore a pg-logical snapshot.
///
/// Every check runs before anything is written: the snapshot's kind, `--table` names
/// against the dump's table of contents, the database-level SQL's shape, the trigger
/// functions the target lacks, and (after `--globals`, which is applied first) the roles
/// the database needs. Then `--create` creates the database as the dump records it,
/// pg_restore restores the content (a `--table` restore in one transaction: all or
/// nothing), and the database's properties, ACL and comment follow. If anything fails after
/// `--create` created the database, the database is dropped again.
pub async fn restore(
    repo: FullRepo,
    snap: &Snapshot,
    opts: &LogicalRestore,
) -> Result<LogicalRestoreOutcome> {
    if snap.manifest.kind != KIND {
        return Err(PgError::refused(
            format!(
                "snapshot {} is a {} backup, not {KIND}",
                snap.short_id(),
                snap.manifest.kind
            ),
            "`arsip snapshots --kind pg-logical` lists logical backups",
        ));
    }
    let started = std::time::Instant::now();
    let cfg = conn::config(opts.dbname.as_deref(), &opts.settings.libpq)?;
    let target = cfg.get_dbname().unwrap_or("postgres").to_string();
    let settings = opts.settings.clone();
    let bin = arsip_repo::blocking(move || pg_bin_dir(&settings)).await?;
    let want = tables::parse_tables(&opts.tables)?;
    let reader = arsip_repo::Reader::open(&repo).await?;
    let (node, chunks) = find_file(&reader, snap, DUMP_FILE).await?.ok_or_else(|| {
        RepoError::corrupt(
            format!("snapshot {}", snap.short_id()),
            "holds no database.dump",
        )
    })?;
    let globals = find_file(&reader, snap, GLOBALS_FILE).await?;
    if opts.globals && globals.is_none() {
        return Err(PgError::refused(
            format!("snapshot {} holds no globals", snap.short_id()),
            "globals are stored by `backup pg --logical --all`",
        ));
    }

    let spool = if opts.jobs > 1 || !want.is_empty() {
        Some(spool_dump(&reader, &node, &chunks, opts.settings.spool_parent()).await?)
    } else {
        None
    };
    let dump = match &spool {
        Some(f) => Dump::File(f.path()),
        None => Dump::Stream(&reader, &chunks),
    };

    // Read-only preparation.
    let listing = if opts.create || !want.is_empty() {
        pg_restore_print(&bin, &["--create".as_ref(), "--list".as_ref()], &dump).await?
    } else {
        String::new()
    };
    tables::check_present(&listing, &want)?;
    let plan = if opts.create {
        let ids: Vec<String> = listing
            .lines()
            .filter_map(database::is_database_entry)
            .map(|id| format!("{id}\n"))
            .collect();
        if ids.is_empty() {
            None
        } else {
            let lf = list_file(ids.concat()).await?;
            let sql = pg_restore_print(
                &bin,
                &[
                    "--create".as_ref(),
                    "--file=-".as_ref(),
                    "--use-list".as_ref(),
                    lf.path().as_os_str(),
                ],
                &dump,
            )
            .await?;
            Some(database::plan(&sql, &target)?)
        }
    } else {
        None
    };
    let table_list = if want.is_empty() {
        None
    } else {
        let mut sections = Vec::new();
        for section in ["--section=pre-data", "--section=post-data"] {
            let args = [section.as_ref(), "--file=-".as_ref()];
            sections.push(pg_restore_print(&bin, &args, &dump).await?);
        }
        let pd = tables::schema_facts(&sections[0], &sections[1]);
        let wanted_fns = want
            .iter()
            .flat_map(|t| pd.trigger_fns.get(t).into_iter().flatten())
            .cloned();
        let mut missing = Vec::new();
        if opts.create {
            missing.extend(wanted_fns); // a new database has none of them
        } else {
            let tc = conn::connect(&cfg).await?;
            for (fs, fname) in wanted_fns {
                let exists: bool = tc
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                         WHERE n.nspname = $1 AND p.proname = $2)",
                        &[&fs, &fname],
                    )
                    .await?
                    .get(0);
                if !exists {
                    missing.push((fs, fname));
                }
            }
            tc.close().await;
        }
        Some(list_file(tables::table_list(&listing, &want, &pd, &missing)).await?)
    };

    // Writes.
    if opts.globals {
        if let Some((_, gchunks)) = &globals {
            apply_globals(&bin, &cfg, &reader, gchunks.clone()).await?;
        }
    }
    let admin = if opts.create {
        let mut a = cfg.clone();
        a.dbname("postgres");
        let admin = conn::connect(&a).await?;
        if let Some(p) = &plan {
            check_roles(&admin, p, globals.is_some(), opts.globals).await?;
        }
        let create = match plan.as_ref().and_then(|p| p.create.clone()) {
            Some(c) => c,
            None => create_from_facts(snap, &target),
        };
        admin.batch_execute(&create).await?;
        Some(admin)
    } else {
        None
    };
    let restored = async {
        if let (Some(a), Some(o)) = (&admin, plan.as_ref().and_then(|p| p.set_owner.as_ref())) {
            a.batch_execute(o).await?;
        }
        let mut cmd = tokio::process::Command::new(bin.join("pg_restore"));
        cmd.args(["--no-password", "--exit-on-error"])
            .arg(format!("--dbname=dbname={}", conninfo_value(&target)))
            .env_remove("PGPASSWORD")
            .kill_on_drop(true);
        for (k, v) in conn::libpq_env(&cfg) {
            cmd.env(k, v);
        }
        match (&dump, &table_list) {
            (Dump::File(path), Some(lf)) => {
                // One transaction: a conflict or error anywhere rolls back everything this
                // restore did in the database (pg_restore cannot combine it with --jobs).
                cmd.arg("--single-transaction")
                    .arg("--use-list")
                    .arg(lf.path())
                    .arg(path);
                check(&cmd.stdin(Stdio::null()).output().await?, "pg_restore")?;
            }
            (Dump::File(path), None) => {
                cmd.arg(format!("--jobs={}", opts.jobs)).arg(path);
                check(&cmd.stdin(Stdio::null()).output().await?, "pg_restore")?;
            }
            (Dump::Stream(reader, chunks), _) => {
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| PgError::Tool(format!("cannot run pg_restore: {e}")))?;
                let mut stdin = child.stdin.take().expect("piped stdin");
                let feed = async move {
                    let mut s = std::pin::pin!(reader.stream(chunks.to_vec()));
                    while let Some(c) = s.next().await {
                        if let Err(e) = stdin.write_all(&c?).await {
                            return Ok(Some(e));
                        }
                    }
                    Ok::<_, PgError>(None)
                };
                let (fed, out) = tokio::join!(feed, child.wait_with_output());
                let out = out?;
                // a damaged dump explains a failure better than pg_restore does
                let stopped = fed?;
                check(&out, "pg_restore")?;
                if let Some(e) = stopped {
                    return Err(PgError::Tool(format!("pg_restore stopped reading: {e}")));
                }
            }
        }
        if let (Some(a), Some(p)) = (&admin, &plan) {
            for st in &p.after {
                a.batch_execute(st)
                    .await
                    .map_err(|e| PgError::Tool(format!("{st}: {e}")))?;
            }
        }
        Ok::<_, PgError>(())
    }
    .await;
    if let Err(e) = restored {
        let Some(a) = admin else { return Err(e) };
        let dropped = a
            .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&target)))
            .await;
        a.close().await;
        let note = match dropped {
            Ok(()) => format!("the database {target} that this restore created was dropped again"),
            Err(d) => format!("dropping the half-restored database {target} failed too: {d}"),
        };
        return Err(match e {
            PgError::Tool(m) => PgError::Tool(format!("{m}\n({note})")),
            PgError::Pg(p) => PgError::Tool(format!("PostgreSQL: {p}\n({note})")),
            other => {
                tracing::warn!("{note}");
                other
            }
        });
    }
    if let Some(a) = admin {
        a.close().await;
    }
    drop(spool);
    Ok(LogicalRestoreOutcome {
        snapshot: snap.id.clone(),
        database: target,
        bytes: node.size,
        seconds: started.elapsed().as_secs_f64(),
        tables: opts.tables.clone(),
    })
}

/// `CREATE DATABASE` from the snapshot's facts, for a dump without a DATABASE entry.
fn create_from_facts(snap: &Snapshot, target: &str) -> String {
    let f = &snap.manifest.facts;
    let s = |k: &str| f.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(target));
    if let Some(e) = s("encoding") {
        sql += &format!(" ENCODING {}", quote_lit(&e));
    }
    if let Some(l) = s("lc_collate") {
        sql += &format!(" LC_COLLATE {}", quote_lit(&l));
    }
    if let Some(l) = s("lc_ctype") {
        sql += &format!(" LC_CTYPE {}", quote_lit(&l));
    }
    sql
}

fn check(o: &std::process::Output, what: &str) -> Result<()> {
    if o.status.success() {
        Ok(())
    } else {
        Err(PgError::Tool(format!(
            "{what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )))
    }
}
