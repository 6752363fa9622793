//! `arsip wal push|fetch|list`: PostgreSQL's archive_command and restore_command.
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
use std::path::Path;

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::pg as arsip_pg;
use arsip_ops::ErrorClass;
use serde_json::json;

use crate::cli::WalCmd;
use crate::ctx::Ctx;
use crate::exit;

pub mod fetch_exit {
    pub const MISSING: u8 = 1;
    pub const STORAGE: u8 = 200;
    pub const DAMAGED: u8 = 201;
    pub const OTHER: u8 = 202;
    pub const PANIC: u8 = 203;
}

pub async fn run(ctx: &Ctx<'_>, cmd: &WalCmd) -> Result<u8> {
    let cli = ctx.cli;
    match cmd {
        WalCmd::Push {
            path,
            pgdata,
            stanza,
        } => {
            let started = std::time::Instant::now();
            let pgdata =
                arsip_pg::walarchive::pgdata_or_cwd(pgdata.as_deref(), &ctx.pg_settings())?;
            let repo = ctx.open_shared(Access::AppendOnly).await?;
            let r = arsip_pg::walarchive::push(&repo, &pgdata, path, stanza).await?;
            if cli.json {
                println!(
                    "{}",
                    json!({"file": r.file, "namespace": r.namespace, "bytes": r.bytes,
                        "stored_bytes": r.stored_bytes, "already_stored": r.already_stored,
                        "ms": started.elapsed().as_secs_f64() * 1e3})
                );
            } else if r.already_stored {
                ctx.info(format!(
                    "{} was already archived with the same content",
                    r.file
                ));
            }
            Ok(exit::OK)
        }
        WalCmd::Fetch {
            file,
            dest,
            namespace,
            pgdata,
            prefetch,
            timeline,
        } => {
            std::panic::set_hook(Box::new(|p| {
                eprintln!("arsip: internal error during wal fetch: {p}");
                std::process::exit(fetch_exit::PANIC as i32);
            }));
            let code = match wal_fetch(
                ctx,
                file,
                dest,
                namespace.as_deref(),
                pgdata.as_deref(),
                *prefetch,
                *timeline,
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
            let repo = ctx.open_shared(Access::Full).await?;
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
                crate::print_json(&out)?;
            }
            Ok(exit::OK)
        }
    }
}

fn fetch_code(e: &anyhow::Error) -> u8 {
    match crate::class_of(e) {
        Some((ErrorClass::Storage, _)) => fetch_exit::STORAGE,
        Some((ErrorClass::Damaged, _)) => fetch_exit::DAMAGED,
        _ => fetch_exit::OTHER,
    }
}

async fn wal_fetch(
    ctx: &Ctx<'_>,
    file: &str,
    dest: &Path,
    namespace: Option<&str>,
    pgdata: Option<&Path>,
    prefetch: usize,
    follow: Option<u32>,
) -> Result<u8> {
    let pgdata = arsip_pg::walarchive::pgdata_or_cwd(pgdata, &ctx.pg_settings())?;
    let ns = match namespace {
        Some(n) => n.to_string(),
        None => arsip_pg::control::ClusterId::read(&pgdata)?.namespace(),
    };
    let repo = ctx.open_full(Access::AppendOnly, "reading WAL").await?;
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        pgdata.join(dest)
    };
    match arsip_pg::walarchive::fetch(&repo, &ns, file, &dest, &pgdata, prefetch, follow).await? {
        arsip_pg::walarchive::Fetched::Missing => Ok(fetch_exit::MISSING),
        arsip_pg::walarchive::Fetched::Written { .. } => Ok(exit::OK),
    }
}
