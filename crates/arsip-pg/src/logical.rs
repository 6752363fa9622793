//! Logical backups and restores of one database through `pg_dump` / `pg_restore`.
//!
//! Backup: a REPEATABLE READ, READ ONLY transaction exports its snapshot; every table's rows
//! are counted inside it (the facts a restore drill compares), and `pg_dump -Fc -Z0
//! --snapshot` dumps exactly that state, streamed into the repository (uncompressed so that
//! daily dumps deduplicate; the repository compresses). The snapshot commits only after
//! pg_dump exited 0: its stdout is read through [`ChildReader`], which turns a non-zero exit
//! into a read error at end of stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use arsip_files::child::ChildReader;
use arsip_repo::keys::ChunkerParams;
use arsip_repo::read::Reader;
use arsip_repo::snapshot::{Node, Snapshot};
use arsip_repo::txn::BackupOutcome;
use arsip_repo::{RepoError, Repository};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::conn;
use crate::control::pg_bin_dir;
use crate::error::{PgError, Result};
use arsip_repo::txn::{SnapshotMeta, SnapshotTxn};

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
}

/// pg_dump writes its archive through stdio, which buffers 4 KiB at a time for a pipe: about
/// 540 000 `write` calls, and as many wake-ups of arsip's reader, for a 2.2 GB dump. Through
/// coreutils' `stdbuf -o1M` the same dump takes about 2 100 writes (2 s less CPU and ~1.5 s
/// less wall time here, docs/BENCHMARKS-PG.md). Without `stdbuf`, pg_dump runs directly.
fn pg_dump_command(pg_dump: &Path) -> Command {
    let stdbuf = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
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
    let cfg = conn::config(opts.dbname.as_deref())?;
    let bin = pg_bin_dir()?;
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
    let mut dump = pg_dump_command(&bin.join("pg_dump"));
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
    let writer = tokio::task::spawn_blocking(move || s.write_stream_with(reader, DUMP_CHUNKS));

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

    let (ids, size) = writer
        .await
        .map_err(|e| PgError::Tool(e.to_string()))?
        .map_err(|e| match e {
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
        let (gids, gsize) = tokio::task::spawn_blocking(move || s.write_stream(r))
            .await
            .map_err(|e| PgError::Tool(e.to_string()))??;
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
    format!("dbname={}", quote_lit(db))
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
    pub create: bool,
    pub tables: Vec<String>,
    pub jobs: u32,
    /// Apply the stored globals (roles, tablespaces) first; existing roles are reported by
    /// psql and skipped.
    pub globals: bool,
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
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

pub async fn restore(
    repo: Arc<Repository>,
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
    let cfg = conn::config(opts.dbname.as_deref())?;
    let target = cfg.get_dbname().unwrap_or("postgres").to_string();
    let bin = pg_bin_dir()?;
    let reader = arsip_repo::read::Reader::open(repo.clone()).await?;
    let (node, chunks) = find_file(&reader, snap, DUMP_FILE).await?.ok_or_else(|| {
        RepoError::corrupt(
            format!("snapshot {}", snap.short_id()),
            "holds no database.dump",
        )
    })?;
    if opts.globals {
        let (_, gchunks) = find_file(&reader, snap, GLOBALS_FILE)
            .await?
            .ok_or_else(|| {
                PgError::refused(
                    format!("snapshot {} holds no globals", snap.short_id()),
                    "globals are stored by `backup pg --logical --all`",
                )
            })?;
        let mut psql = tokio::process::Command::new(bin.join("psql"));
        psql.args(["-X", "-q", "-d", "dbname=postgres", "-f", "-"])
            .env_remove("PGPASSWORD");
        for (k, v) in conn::libpq_env(&cfg) {
            psql.env(k, v);
        }
        let mut child = psql
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PgError::Tool(format!("cannot run psql: {e}")))?;
        let mut stdin = child.stdin.take().unwrap();
        let mut s = std::pin::pin!(reader.stream(gchunks));
        while let Some(c) = s.next().await {
            stdin.write_all(&c?).await?;
        }
        drop(stdin);
        let out = child.wait_with_output().await?;
        // `CREATE ROLE postgres` and other existing roles fail harmlessly; psql goes on.
        check(out, "psql (globals)")?;
    }
    if opts.create {
        let mut admin = cfg.clone();
        admin.dbname("postgres");
        let c = conn::connect(&admin).await?;
        let f = &snap.manifest.facts;
        let s = |k: &str| f.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let mut sql = format!(
            "CREATE DATABASE {} TEMPLATE template0",
            quote_ident(&target)
        );
        if let Some(e) = s("encoding") {
            sql += &format!(" ENCODING {}", quote_lit(&e));
        }
        if let Some(l) = s("lc_collate") {
            sql += &format!(" LC_COLLATE {}", quote_lit(&l));
        }
        if let Some(l) = s("lc_ctype") {
            sql += &format!(" LC_CTYPE {}", quote_lit(&l));
        }
        c.batch_execute(&sql).await?;
    }
    let mut cmd = tokio::process::Command::new(bin.join("pg_restore"));
    cmd.args(["--no-password", "--exit-on-error"])
        .arg(format!("--dbname=dbname={}", quote_lit(&target)))
        .env_remove("PGPASSWORD");
    for (k, v) in conn::libpq_env(&cfg) {
        cmd.env(k, v);
    }
    let needs_file = opts.jobs > 1 || !opts.tables.is_empty();
    let mut spool: Option<tempfile::NamedTempFile> = None;
    if needs_file {
        let dir = std::env::var_os("ARSIP_SPOOL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
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
        let mut f = tempfile::NamedTempFile::new_in(&dir)?;
        let mut s = std::pin::pin!(reader.stream(chunks.clone()));
        while let Some(c) = s.next().await {
            std::io::Write::write_all(&mut f, &c?)?;
        }
        std::io::Write::flush(&mut f)?;
        if opts.jobs > 1 {
            cmd.arg(format!("--jobs={}", opts.jobs));
        }
        if !opts.tables.is_empty() {
            let want = parse_tables(&opts.tables)?;
            let pd = post_data(&bin, f.path())?;
            let mut missing = Vec::new();
            let tc = conn::connect(&cfg).await?;
            for t in &want {
                for (fs, fname) in pd.trigger_fns.get(t).into_iter().flatten() {
                    let exists: bool = tc
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                             WHERE n.nspname = $1 AND p.proname = $2)",
                            &[fs, fname],
                        )
                        .await?
                        .get(0);
                    if !exists {
                        missing.push((fs.clone(), fname.clone()));
                    }
                }
            }
            let list = table_list(&bin, f.path(), &want, &pd, &missing)?;
            let lf = tempfile::NamedTempFile::new()?;
            std::fs::write(lf.path(), list)?;
            cmd.arg("--use-list").arg(lf.path());
            cmd.arg(f.path());
            spool = Some(f);
            let out = cmd.stdin(Stdio::null()).output().await?;
            drop(lf);
            check(out, "pg_restore")?;
        } else {
            cmd.arg(f.path());
            spool = Some(f);
            check(cmd.stdin(Stdio::null()).output().await?, "pg_restore")?;
        }
    } else {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PgError::Tool(format!("cannot run pg_restore: {e}")))?;
        let mut stdin = child.stdin.take().unwrap();
        let mut s = std::pin::pin!(reader.stream(chunks.clone()));
        let mut write_err = None;
        while let Some(c) = s.next().await {
            if let Err(e) = stdin.write_all(&c?).await {
                write_err = Some(e);
                break;
            }
        }
        drop(stdin);
        let out = child.wait_with_output().await?;
        check(out, "pg_restore")?;
        if let Some(e) = write_err {
            return Err(PgError::Tool(format!("pg_restore stopped reading: {e}")));
        }
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

fn check(o: std::process::Output, what: &str) -> Result<()> {
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

/// What the post-data section says about tables: the table of each index and the trigger
/// functions each table's triggers call (index and function TOC entries do not name them).
#[derive(Debug, Default)]
pub struct PostData {
    index_of: BTreeMap<(String, String), (String, String)>,
    /// (schema, table) -> [(function schema, function name)]
    trigger_fns: BTreeMap<(String, String), Vec<(String, String)>>,
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').to_string()
}

fn split_qualified(s: &str) -> Option<(String, String)> {
    let (a, b) = s.split_once('.')?;
    Some((unquote(a), unquote(b)))
}

fn post_data(bin: &Path, dump: &Path) -> Result<PostData> {
    let post = Command::new(bin.join("pg_restore"))
        .args(["--section=post-data", "-f", "-"])
        .arg(dump)
        .output()?;
    let sql = String::from_utf8_lossy(&post.stdout);
    let mut pd = PostData::default();
    for line in sql.lines() {
        let l = line.trim_start();
        if let Some(rest) = l
            .strip_prefix("CREATE UNIQUE INDEX ")
            .or_else(|| l.strip_prefix("CREATE INDEX "))
        {
            let mut it = rest.split_whitespace();
            let idx = unquote(it.next().unwrap_or(""));
            let mut on = it.skip_while(|w| *w != "ON").skip(1);
            let mut tgt = on.next().unwrap_or("");
            if tgt == "ONLY" {
                tgt = on.next().unwrap_or("");
            }
            if let Some((s, t)) = split_qualified(tgt) {
                pd.index_of.insert((s.clone(), idx), (s, t));
            }
        } else if l.starts_with("CREATE TRIGGER ") || l.starts_with("CREATE CONSTRAINT TRIGGER ") {
            let words: Vec<&str> = l.split_whitespace().collect();
            let table = words
                .iter()
                .position(|w| *w == "ON")
                .and_then(|i| words.get(i + 1))
                .and_then(|t| split_qualified(t));
            let func = words
                .iter()
                .position(|w| *w == "FUNCTION" || *w == "PROCEDURE")
                .and_then(|i| words.get(i + 1))
                .and_then(|f| split_qualified(f.split('(').next().unwrap_or("")));
            if let (Some(t), Some(f)) = (table, func) {
                pd.trigger_fns.entry(t).or_default().push(f);
            }
        }
    }
    Ok(pd)
}

fn parse_tables(tables: &[String]) -> Result<Vec<(String, String)>> {
    tables
        .iter()
        .map(|t| match t.split_once('.') {
            Some((s, n)) => Ok((s.to_string(), n.to_string())),
            None => Err(PgError::refused(
                format!("--table {t:?} is not SCHEMA.TABLE"),
                "write the schema too, e.g. --table public.vehicles",
            )),
        })
        .collect()
}

/// The pg_restore list selecting `tables` (SCHEMA.TABLE) and everything that hangs off them:
/// table definitions, data, sequences of their serial columns, defaults, constraints,
/// triggers, rules, policies, indexes, and the trigger functions in `missing_fns` (those the
/// target database does not have yet).
fn table_list(
    bin: &Path,
    dump: &Path,
    want: &[(String, String)],
    pd: &PostData,
    missing_fns: &[(String, String)],
) -> Result<String> {
    let list = Command::new(bin.join("pg_restore"))
        .arg("-l")
        .arg(dump)
        .output()?;
    if !list.status.success() {
        return Err(PgError::Tool(format!(
            "pg_restore -l failed: {}",
            String::from_utf8_lossy(&list.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&list.stdout);
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        // "<id>; <oid> <oid> <TYPE words…> <schema> <tag…> <owner>"
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().skip(2).collect();
        let is_fn = words.len() >= 4
            && words[0] == "FUNCTION"
            && missing_fns
                .iter()
                .any(|(s, f)| words[1] == s && words[2].starts_with(&format!("{f}(")));
        let keep = is_fn
            || want
                .iter()
                .any(|(s, t)| entry_matches(&words, s, t, &pd.index_of));
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

fn entry_matches(
    words: &[&str],
    schema: &str,
    table: &str,
    index_of: &BTreeMap<(String, String), (String, String)>,
) -> bool {
    const KINDS: [&[&str]; 12] = [
        &["TABLE", "DATA"],
        &["SEQUENCE", "OWNED", "BY"],
        &["SEQUENCE", "SET"],
        &["SEQUENCE"],
        &["FK", "CONSTRAINT"],
        &["TABLE"],
        &["CONSTRAINT"],
        &["TRIGGER"],
        &["RULE"],
        &["POLICY"],
        &["INDEX"],
        &["DEFAULT"],
    ];
    for k in KINDS {
        if words.len() > k.len() + 1 && words[..k.len()] == *k {
            let s = words[k.len()];
            let tag = &words[k.len() + 1..words.len() - 1];
            if s != schema || tag.is_empty() {
                return false;
            }
            return match k {
                ["TABLE"] | ["TABLE", "DATA"] => tag == [table],
                // sequences of serial columns are named <table>_<column>_seq
                ["SEQUENCE"] | ["SEQUENCE", "SET"] | ["SEQUENCE", "OWNED", "BY"] => {
                    tag[0].starts_with(&format!("{table}_")) && tag[0].ends_with("_seq")
                }
                ["INDEX"] => index_of
                    .get(&(schema.to_string(), tag[0].to_string()))
                    .is_some_and(|(_, t)| t == table),
                // constraints, triggers, rules, policies, defaults: tag is "<table> <name>"
                _ => tag[0] == table,
            };
        }
    }
    false
}
