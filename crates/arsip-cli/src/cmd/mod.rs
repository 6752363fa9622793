//! One module per command: each parses nothing (clap did), calls one operation of
//! `arsip-ops` and renders its outcome through [`crate::ctx::Ctx::emit`].

mod audit;
mod backup;
mod check;
mod config;
mod copy;
mod forget;
mod import;
mod init;
mod key;
mod pg;
mod prune;
mod quickstart;
mod repair;
mod restore;
mod serve;
mod snapshots;
mod stats;
mod status;
mod verify;
mod wal;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::ctx::Ctx;

pub async fn run(cli: Cli) -> Result<u8> {
    let ctx = Ctx {
        cli: &cli,
        on_copy: Default::default(),
    };
    match &cli.command {
        Command::Init(a) => init::run(&ctx, a).await,
        Command::Backup(b) => backup::run(&ctx, b).await,
        Command::Snapshots(f) => snapshots::run(&ctx, f).await,
        Command::Restore(r) => restore::run(&ctx, r).await,
        Command::Check(c) => check::run(&ctx, c).await,
        Command::Copy(c) => copy::run(&ctx, c).await,
        Command::Forget(f) => forget::run(&ctx, f).await,
        Command::Prune(p) => prune::run(&ctx, p).await,
        Command::Verify(v) => verify::run(&ctx, v).await,
        Command::Audit(a) => audit::run(&ctx, a).await,
        Command::Stats => stats::run(&ctx).await,
        Command::Repair(r) => repair::run(&ctx, r).await,
        Command::Key(k) => key::run(&ctx, k).await,
        Command::Wal(w) => wal::run(&ctx, w).await,
        Command::Quickstart(q) => quickstart::run(&ctx, q).await,
        Command::Import(i) => import::run(&ctx, i).await,
        Command::Config(c) => config::run(&ctx, c).await,
        Command::Serve(a) => serve::run(&ctx, a).await,
        Command::Status(a) => status::run(&ctx, a).await,
        Command::Token(crate::cli::TokenCmd::Generate { file, force }) => {
            arsip_control::api::write_new_token(file, *force).map_err(anyhow::Error::msg)?;
            eprintln!(
                "arsip: wrote a new API token to {} (mode 0600); add it to api.tokens with a role",
                file.display()
            );
            Ok(crate::exit::OK)
        }
    }
}
