//! PostgreSQL commands: `wal push|fetch`, `backup pg`, `restore pg`, `quickstart`. Thin:
//! parse, open, call `arsip-pg`, print.
//!
//! Exit codes of `wal fetch` (a `restore_command`) are special, because PostgreSQL reads any
//! code from 1 to 125 as "this file does not exist" and then ends recovery and promotes:
//!   0   the file was written to the destination
//!   1   the file does not exist in the repository (and only then)
//!   200 storage failure after bounded retries (network, permissions, throttling)
//!   201 the stored object failed authentication or is damaged
//!   202 anything else (bad configuration, wrong key, agent credentials, local I/O)
//!   203 internal error (panic)
//! Codes above 125 make the startup process stop with FATAL instead of promoting early.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arsip_pg::PgError;
use arsip_repo::{RepoError, Repository};
use arsip_storage::ErrorKind;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::Cli;
use crate::commands::{self, Mode};
use crate::{exit, secrets};

pub mod fetch_exit {
    pub const MISSING: u8 = 1;
    pub const STORAGE: u8 = 200;
    pub const DAMAGED: u8 = 201;
    pub const OTHER: u8 = 202;
    pub const PANIC: u8 = 203;
}

#[derive(Subcommand, Debug)]
pub enum WalCmd {
    /// Archive one WAL file (archive_command = 'arsip wal push %p')
    Push {
        /// The file, as PostgreSQL passes %p (relative to the data directory)
        path: PathBuf,
        /// Data directory (default: the working directory, where PostgreSQL runs archive_command)
        #[arg(long, env = "PGDATA")]
        pgdata: Option<PathBuf>,
        /// Stanza: the name this cluster archives under; a different cluster is refused
        #[arg(long, env = "ARSIP_STANZA", default_value = "main")]
        stanza: String,
    },
    /// Fetch one WAL file (restore_command = 'arsip wal fetch %f %p'); exit 1 only if missing
    Fetch {
        /// File name (%f)
        file: String,
        /// Destination path (%p)
        dest: PathBuf,
        /// WAL namespace <system-identifier>-<major> (default: read from the data directory)
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long, env = "PGDATA")]
        pgdata: Option<PathBuf>,
        /// Segments to prefetch after this one (0 = off)
        #[arg(long, default_value_t = 4)]
        prefetch: usize,
    },
    /// List archived WAL files of a namespace (default: every namespace)
    List {
        #[arg(long)]
        namespace: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct PgBackupArgs {
    /// pg_dump of one database (custom format, uncompressed, streamed)
    #[arg(
        long,
        conflicts_with = "physical",
        required_unless_present = "physical"
    )]
    pub logical: bool,
    /// Base backup read from the data directory (run on the database host)
    #[arg(long)]
    pub physical: bool,
    /// Database / connection string (libpq conninfo or URL, without a password)
    #[arg(long, short = 'd')]
    pub dbname: Option<String>,
    /// With --logical: also store globals (roles, tablespaces) from pg_dumpall --globals-only
    #[arg(long)]
    pub all: bool,
    /// With --physical: the data directory
    #[arg(long, env = "PGDATA")]
    pub pgdata: Option<PathBuf>,
    /// With --physical: request an immediate checkpoint
    #[arg(long)]
    pub fast: bool,
    /// With --physical: seconds to wait for the backup's WAL to reach the repository
    #[arg(long, default_value_t = 300)]
    pub wal_timeout: u64,
    #[arg(long, env = "ARSIP_STANZA", default_value = "main")]
    pub stanza: String,
    /// KEY=VALUE, repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum RestoreSub {
    /// Restore a PostgreSQL backup (logical into a database, physical into a data directory)
    Pg(Box<PgRestoreArgs>),
}

#[derive(Args, Debug)]
pub struct PgRestoreArgs {
    /// Snapshot id, prefix or `latest` (physical: default is chosen from the target)
    pub snapshot: Option<String>,
    #[arg(
        long,
        conflicts_with = "physical",
        required_unless_present = "physical"
    )]
    pub logical: bool,
    #[arg(long)]
    pub physical: bool,
    /// Logical: target database / connection string (no password)
    #[arg(long, short = 'd')]
    pub dbname: Option<String>,
    /// Logical: create the target database (template0, the dump's encoding and locale)
    #[arg(long)]
    pub create: bool,
    /// Logical: restore only SCHEMA.TABLE (repeatable), with its indexes, constraints, triggers
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// Logical: parallel pg_restore jobs (spools the dump to a local file first)
    #[arg(long, default_value_t = 1)]
    pub jobs: u32,
    /// Logical: first apply the roles and tablespaces stored by `backup pg --logical --all`
    #[arg(long)]
    pub globals: bool,
    /// Physical: the (empty or missing) directory to restore into
    #[arg(long)]
    pub to: Option<PathBuf>,
    #[arg(long)]
    pub target_time: Option<String>,
    #[arg(long)]
    pub target_lsn: Option<String>,
    #[arg(long)]
    pub target_xid: Option<String>,
    #[arg(long)]
    pub target_name: Option<String>,
    /// `immediate`: stop as soon as the backup is consistent
    #[arg(long)]
    pub target: Option<String>,
    /// Timeline to follow: a number, `latest` or `current` (default: the newest timeline
    /// holding the newest backup; with SNAPSHOT, the snapshot's own)
    #[arg(long)]
    pub target_timeline: Option<String>,
    /// Zone of a --target-time written without one (e.g. Asia/Jakarta)
    #[arg(long, env = "TZ")]
    pub timezone: Option<String>,
    /// Physical: recover up to a gap in the archived WAL instead of refusing
    #[arg(long)]
    pub allow_gap: bool,
    /// Physical: the restored cluster is the new primary and archives its new timeline into
    /// the source's WAL namespace (default: archiving off)
    #[arg(long, conflicts_with = "no_archive")]
    pub promote_as_primary: bool,
    /// Physical: print the restore plan (snapshot, timeline, WAL, settings) and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// promote | pause | shutdown
    #[arg(long, default_value = "promote")]
    pub target_action: String,
    /// Stop just before the target instead of just after it
    #[arg(long)]
    pub exclusive: bool,
    /// Start the restored cluster, wait for recovery to end and report what it reached
    #[arg(long)]
    pub start: bool,
    /// Port for the restored cluster
    #[arg(long)]
    pub port: Option<u16>,
    /// Archiving off (the default unless --promote-as-primary; kept for older scripts)
    #[arg(long)]
    pub no_archive: bool,
    /// Restore tablespace OID into DIR instead of its original location (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    #[arg(long, env = "ARSIP_STANZA", default_value = "main")]
    pub stanza: String,
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Where to put the repository and clusters (default: a new temp directory)
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the repository and clusters afterwards
    #[arg(long)]
    pub keep: bool,
    /// Tenants to generate
    #[arg(long, default_value_t = 20)]
    pub tenants: u32,
}

pub async fn open_repo(cli: &Cli, mode: Mode) -> Result<Arc<Repository>> {
    let store = commands::open_store(cli.repo.as_deref(), false, mode)?;
    let with = secrets::open_with(cli.key_file.as_deref())?;
    Ok(Arc::new(
        Repository::open(store, with, arsip_repo::clock::from_env()).await?,
    ))
}

/// Turn a PgError into what main.rs classifies (repository errors keep their exit codes);
/// refusals print their hint here.
pub fn lift(e: PgError) -> anyhow::Error {
    match e {
        PgError::Repo(r) => r.into(),
        // usage errors exit 2, as the repository's invalid input does
        PgError::Usage { msg, hint } => RepoError::Invalid(format!("{msg}\nHINT: {hint}")).into(),
        other => {
            if let Some(h) = other.hint() {
                anyhow::anyhow!("{other}\nHINT: {h}")
            } else {
                anyhow::anyhow!(other)
            }
        }
    }
}

fn info(cli: &Cli, msg: impl AsRef<str>) {
    if !cli.quiet && !cli.json {
        eprintln!("{}", msg.as_ref());
    }
}

pub async fn wal(cli: &Cli, cmd: &WalCmd) -> Result<u8> {
    match cmd {
        WalCmd::Push {
            path,
            pgdata,
            stanza,
        } => {
            let started = std::time::Instant::now();
            let pgdata = arsip_pg::walarchive::pgdata_or_cwd(pgdata.as_deref()).map_err(lift)?;
            let repo = open_repo(cli, Mode::AppendOnly).await?;
            let r = arsip_pg::walarchive::push(&repo, &pgdata, path, stanza)
                .await
                .map_err(lift)?;
            if cli.json {
                println!(
                    "{}",
                    json!({"file": r.file, "namespace": r.namespace, "bytes": r.bytes,
                        "stored_bytes": r.stored_bytes, "already_stored": r.already_stored,
                        "ms": started.elapsed().as_secs_f64() * 1e3})
                );
            } else if r.already_stored {
                info(
                    cli,
                    format!("{} was already archived with the same content", r.file),
                );
            }
            Ok(exit::OK)
        }
        WalCmd::Fetch {
            file,
            dest,
            namespace,
            pgdata,
            prefetch,
        } => {
            std::panic::set_hook(Box::new(|p| {
                eprintln!("arsip: internal error during wal fetch: {p}");
                std::process::exit(fetch_exit::PANIC as i32);
            }));
            let code = match wal_fetch(
                cli,
                file,
                dest,
                namespace.as_deref(),
                pgdata.as_deref(),
                *prefetch,
            )
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    let code = fetch_code(&e);
                    eprintln!("arsip: wal fetch {file}: {e:#}");
                    eprintln!("HINT: recovery stops here rather than ending early without this file; fix the cause and start the server again");
                    code
                }
            };
            Ok(code)
        }
        WalCmd::List { namespace } => {
            let repo = open_repo(cli, Mode::Full).await?;
            let nss = match namespace {
                Some(n) => vec![n.clone()],
                None => repo.wal_namespaces().await?,
            };
            let mut out = BTreeMap::new();
            for ns in nss {
                let files = repo.wal_list(&ns).await?;
                if !cli.json {
                    println!("{ns}: {} file(s)", files.len());
                    for f in &files {
                        println!("  {f}");
                    }
                }
                out.insert(ns, files);
            }
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(exit::OK)
        }
    }
}

fn fetch_code(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if let Some(r) = c.downcast_ref::<RepoError>() {
            return match r {
                RepoError::Storage(s) if s.kind != ErrorKind::NotFound => fetch_exit::STORAGE,
                RepoError::Corrupt { .. } | RepoError::Auth(_) => fetch_exit::DAMAGED,
                _ => fetch_exit::OTHER,
            };
        }
        if c.downcast_ref::<arsip_storage::StorageError>().is_some() {
            return fetch_exit::STORAGE;
        }
    }
    fetch_exit::OTHER
}

async fn wal_fetch(
    cli: &Cli,
    file: &str,
    dest: &Path,
    namespace: Option<&str>,
    pgdata: Option<&Path>,
    prefetch: usize,
) -> Result<u8> {
    let pgdata = arsip_pg::walarchive::pgdata_or_cwd(pgdata).map_err(lift)?;
    let ns = match namespace {
        Some(n) => n.to_string(),
        None => arsip_pg::control::ClusterId::read(&pgdata)
            .map_err(lift)?
            .namespace(),
    };
    let repo = open_repo(cli, Mode::AppendOnly).await?;
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        pgdata.join(dest)
    };
    match arsip_pg::walarchive::fetch(&repo, &ns, file, &dest, &pgdata, prefetch)
        .await
        .map_err(lift)?
    {
        arsip_pg::walarchive::Fetched::Missing => Ok(fetch_exit::MISSING),
        arsip_pg::walarchive::Fetched::Written { .. } => Ok(exit::OK),
    }
}

fn parse_tags(t: &[String]) -> Result<BTreeMap<String, String>> {
    t.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("tag {s:?} is not KEY=VALUE"),
        })
        .collect()
}

fn print_outcome(cli: &Cli, o: &arsip_repo::txn::BackupOutcome) -> Result<()> {
    if cli.json {
        println!("{}", serde_json::to_string_pretty(o)?);
    } else {
        println!(
            "snapshot {} saved ({}): {} bytes read, {} new, {} stored, {:.1}s",
            &o.id[..8],
            o.kind,
            o.logical_bytes,
            o.added_bytes,
            o.stored_bytes,
            o.seconds
        );
    }
    Ok(())
}

pub async fn backup(cli: &Cli, a: &PgBackupArgs) -> Result<u8> {
    if let Some(d) = &a.dbname {
        arsip_pg::conn::refuse_password(d).map_err(lift)?;
    }
    let repo = open_repo(cli, Mode::AppendOnly).await?;
    let tags = parse_tags(&a.tags)?;
    let o = if a.logical {
        let opts = arsip_pg::logical::LogicalBackup {
            dbname: a.dbname.clone(),
            all: a.all,
            tags,
        };
        arsip_pg::logical::backup(repo, &opts).await.map_err(lift)?
    } else {
        let pgdata = a
            .pgdata
            .clone()
            .context("--physical needs --pgdata DIR (or PGDATA)")?;
        let opts = arsip_pg::physical::PhysicalBackup {
            dbname: a.dbname.clone(),
            pgdata,
            fast: a.fast,
            wal_timeout: std::time::Duration::from_secs(a.wal_timeout),
            stanza: a.stanza.clone(),
            tags,
        };
        arsip_pg::physical::backup(repo, &opts)
            .await
            .map_err(lift)?
    };
    print_outcome(cli, &o)?;
    Ok(exit::OK)
}

async fn list_kind(repo: &Repository, kind: &str) -> Result<Vec<arsip_repo::snapshot::Snapshot>> {
    let (snaps, bad) = repo.snapshots_report().await?;
    for (name, e) in &bad {
        eprintln!("arsip: warning: {name} is damaged and cannot be listed: {e}");
    }
    Ok(snaps
        .into_iter()
        .filter(|s| s.manifest.kind == kind)
        .collect())
}

pub async fn restore(cli: &Cli, sub: &RestoreSub) -> Result<u8> {
    let RestoreSub::Pg(a) = sub;
    if let Some(d) = &a.dbname {
        arsip_pg::conn::refuse_password(d).map_err(lift)?;
    }
    if a.logical {
        let repo = open_repo(cli, Mode::Full).await?;
        let snaps = list_kind(&repo, arsip_pg::logical::KIND).await?;
        let snap = arsip_repo::snapshot::select(&snaps, a.snapshot.as_deref().unwrap_or("latest"))?
            .clone();
        let opts = arsip_pg::logical::LogicalRestore {
            dbname: a.dbname.clone(),
            create: a.create,
            tables: a.tables.clone(),
            jobs: a.jobs.max(1),
            globals: a.globals,
        };
        let o = arsip_pg::logical::restore(repo, &snap, &opts)
            .await
            .map_err(lift)?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&o)?);
        } else {
            info(
                cli,
                format!(
                    "restored snapshot {} into database {} ({} bytes of dump) in {:.1}s",
                    &o.snapshot[..8],
                    o.database,
                    o.bytes,
                    o.seconds
                ),
            );
        }
        return Ok(exit::OK);
    }
    let to = a.to.clone().context("--physical needs --to DIR")?;
    let target = arsip_pg::restore::Target::parse(&arsip_pg::restore::TargetArgs {
        time: a.target_time.as_deref(),
        lsn: a.target_lsn.as_deref(),
        xid: a.target_xid.as_deref(),
        name: a.target_name.as_deref(),
        target: a.target.as_deref(),
        timezone: a.timezone.as_deref(),
    })
    .map_err(lift)?;
    let target_action = arsip_pg::restore::TargetAction::parse(&a.target_action).map_err(lift)?;
    // restore_command needs what opened the repository: the key file, or the password (read
    // once here; the restore derives its slot's key once)
    let (repo, credential) = match &cli.key_file {
        Some(k) => (
            open_repo(cli, Mode::Full).await?,
            arsip_pg::restore::Credential::KeyFile(k.clone()),
        ),
        None => {
            let pw = secrets::password("repository password: ", false)?;
            let store = commands::open_store(cli.repo.as_deref(), false, Mode::Full)?;
            let repo = Arc::new(
                Repository::open(
                    store,
                    arsip_repo::OpenWith::Password(pw.clone()),
                    arsip_repo::clock::from_env(),
                )
                .await?,
            );
            (repo, arsip_pg::restore::Credential::Password(pw))
        }
    };
    let opts = arsip_pg::restore::PhysicalRestore {
        snapshot: a.snapshot.clone(),
        to,
        target,
        target_timeline: a.target_timeline.clone(),
        target_action,
        exclusive: a.exclusive,
        start: a.start,
        port: a.port,
        no_archive: a.no_archive,
        promote_as_primary: a.promote_as_primary,
        allow_gap: a.allow_gap,
        tablespace_map: a
            .tablespace_map
            .iter()
            .map(|m| {
                m.split_once('=')
                    .map(|(oid, dir)| (oid.to_string(), PathBuf::from(dir)))
                    .with_context(|| format!("--tablespace-map {m:?}: expected OID=DIR"))
            })
            .collect::<anyhow::Result<_>>()?,
        stanza: a.stanza.clone(),
        arsip_exe: std::env::current_exe()?,
        repo_location: cli.repo.clone().context("no repository given")?,
        credential: Some(credential),
    };
    let snaps = list_kind(&repo, arsip_pg::physical::KIND).await?;
    let t0 = std::time::Instant::now();
    let plan = arsip_pg::restore::plan(&repo, &snaps, &opts)
        .await
        .map_err(lift)?;
    // warnings are loud: on stderr whatever the output mode, and in the JSON
    for w in &plan.warnings {
        eprintln!("arsip: WARNING: {w}");
    }
    if a.dry_run {
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", plan.text());
        }
        return Ok(exit::OK);
    }
    let o = arsip_pg::restore::execute(repo, &plan, t0)
        .await
        .map_err(lift)?;
    for w in o.warnings.iter().skip(plan.warnings.len()) {
        eprintln!("arsip: WARNING: {w}");
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        println!("{}", o.summary());
    }
    Ok(exit::OK)
}

pub async fn quickstart(cli: &Cli, a: &QuickstartArgs) -> Result<u8> {
    let opts = arsip_pg::quickstart::Options {
        dir: a.dir.clone(),
        keep: a.keep,
        tenants: a.tenants.max(8),
        arsip_exe: std::env::current_exe()?,
    };
    let r = arsip_pg::quickstart::run(&opts).await.map_err(lift)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", r.text());
    }
    Ok(if r.ok { exit::OK } else { exit::FAILURE })
}
