//! `arsip wal push|fetch|list|show`: PostgreSQL's archive_command and restore_command.
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

use std::path::Path;

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::pg::{self, Fetched, WalFetch};
use arsip_ops::ErrorClass;

use crate::cli::WalCmd;
use crate::ctx::{Ctx, Render};
use crate::exit;

pub mod fetch_exit {
    pub const MISSING: u8 = 1;
    pub const STORAGE: u8 = 200;
    pub const DAMAGED: u8 = 201;
    pub const OTHER: u8 = 202;
    pub const PANIC: u8 = 203;
}

pub async fn run(ctx: &Ctx<'_>, cmd: &WalCmd) -> Result<u8> {
    match cmd {
        WalCmd::Push {
            path,
            pgdata,
            stanza,
        } => push(ctx, path, pgdata.pgdata.as_deref(), &stanza.stanza).await,
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
            let request = WalFetch::resolve(
                file,
                dest,
                namespace.as_deref(),
                pgdata.pgdata.as_deref(),
                *prefetch,
                *timeline,
                &ctx.pg_settings(),
            );
            let fetched = match request {
                Ok(f) => fetch(ctx, &f).await,
                Err(e) => Err(e.into()),
            };
            Ok(fetched.unwrap_or_else(|e| {
                eprintln!("arsip: wal fetch {file}: {e:#}");
                eprintln!("HINT: recovery stops here rather than ending early without this file; fix the cause and start the server again");
                fetch_code(&e)
            }))
        }
        WalCmd::Show => {
            let repo = ctx.open_reading(Access::Full, "reading WAL").await?;
            ctx.emit(&Shown(pg::wal_show(&repo).await?))?;
            Ok(exit::OK)
        }
        WalCmd::List { namespace } => {
            let repo = ctx.open_shared(Access::Full).await?;
            let listing = pg::wal_list(&repo, namespace.as_deref()).await?;
            if ctx.cli.json {
                crate::print_json(&listing)?;
            } else {
                for (ns, files) in &listing.0 {
                    println!("{ns}: {} file(s)", files.len());
                    for f in files {
                        println!("  {f}");
                    }
                }
            }
            Ok(exit::OK)
        }
    }
}

struct Shown(Vec<pg::WalShow>);

impl serde::Serialize for Shown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Render for Shown {
    fn human(&self) -> String {
        let mut out = String::new();
        for ns in &self.0 {
            out += &format!(
                "{} (stanza {}): {} physical backup(s), timelines {:?}\n",
                ns.namespace,
                if ns.stanzas.is_empty() {
                    "-".to_string()
                } else {
                    ns.stanzas.join(", ")
                },
                ns.physical_backups,
                ns.timelines
            );
            for r in &ns.runs {
                out += &format!(
                    "  timeline {}: {} .. {} ({} segment(s){})\n",
                    r.timeline,
                    r.first,
                    r.last,
                    r.segments,
                    r.last_stored
                        .map(|t| format!(", last archived {t}"))
                        .unwrap_or_default()
                );
            }
            for (a, b) in &ns.gaps {
                out += &format!("  GAP after {a}, before {b}\n");
            }
            match (&ns.recoverable_from, &ns.recoverable_to) {
                (Some(from), Some(to)) => {
                    out += &format!(
                        "  recoverable: from {from} (end of the oldest backup) to {to} on timeline {}\n",
                        ns.recoverable_timeline.unwrap_or(0)
                    )
                }
                _ => out += "  recoverable: nothing (no physical backup with its WAL)\n",
            }
        }
        if self.0.is_empty() {
            out += "no WAL archived";
        }
        out.trim_end().to_string()
    }
}

async fn push(ctx: &Ctx<'_>, path: &Path, pgdata: Option<&Path>, stanza: &str) -> Result<u8> {
    let started = std::time::Instant::now();
    let pgdata = pg::data_dir(pgdata, &ctx.pg_settings())?;
    let repo = ctx.open_shared(Access::AppendOnly).await?;
    let r = pg::wal_push(&repo, &pgdata, path, stanza, started).await?;
    if ctx.cli.json {
        println!("{}", serde_json::to_string(&r)?);
    } else if r.already_stored {
        ctx.info(format!(
            "{} was already archived with the same content",
            r.file
        ));
    }
    Ok(exit::OK)
}

async fn fetch(ctx: &Ctx<'_>, f: &WalFetch) -> Result<u8> {
    let repo = ctx.open_reading(Access::AppendOnly, "reading WAL").await?;
    let fetched = match pg::wal_fetch(&repo, f).await? {
        // Missing here, and a copy is named: the copy may hold it (a segment the
        // repository lost, or pushed to the copy's side while the repository was down).
        Fetched::Missing if ctx.cli.repo_fallback.is_some() => {
            let copy = ctx.open_fallback(Access::AppendOnly, "reading WAL").await?;
            pg::wal_fetch(&copy, f).await?
        }
        fetched => fetched,
    };
    Ok(match fetched {
        Fetched::Missing => fetch_exit::MISSING,
        Fetched::Written { .. } => exit::OK,
    })
}

fn fetch_code(e: &anyhow::Error) -> u8 {
    match crate::class_of(e) {
        Some((ErrorClass::Storage, _)) => fetch_exit::STORAGE,
        Some((ErrorClass::Damaged, _)) => fetch_exit::DAMAGED,
        _ => fetch_exit::OTHER,
    }
}
