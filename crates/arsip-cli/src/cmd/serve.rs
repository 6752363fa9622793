//! `arsip serve [--config FILE]`: run the configuration's schedules until SIGTERM or SIGINT;
//! SIGHUP loads the configuration again (docs/CONFIG.md, docs/design/CONTROL.md). Logs go to stderr (`ARSIP_LOG=info` for every
//! job's start and end); the journal in `daemon.state_dir` records what ran.

use std::sync::Arc;

use anyhow::Result;
use arsip_control::daemon::{self, ServeOptions};
use arsip_control::executor::Executors;

use crate::cli::ServeArgs;
use crate::ctx::Ctx;
use crate::exit;

pub async fn run(ctx: &Ctx<'_>, a: &ServeArgs) -> Result<u8> {
    let config = match arsip_control::load(&a.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "arsip: error: {} error(s) in {}; `arsip config check` shows them too",
                errors.errors.len(),
                errors.path.display()
            );
            return Ok(exit::USAGE);
        }
    };
    let local = ctx.local_settings()?;
    let clock = arsip_ops::repo::clock::from_env();
    let executors = Arc::new(Executors::new(
        config.clone(),
        clock.clone(),
        std::env::current_exe()?,
        ctx.pg_settings(),
        local.host.clone(),
        local.user,
    ));
    // A test's clock may jump at any moment: look at it often.
    let tick = if arsip_ops::repo::clock::is_test_clock() {
        std::time::Duration::from_millis(100)
    } else {
        std::time::Duration::from_secs(30)
    };
    // Installed before the daemon starts: SIGHUP's default would end the process.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // One pending reload is enough: it reads the file as it is by then.
            let _ = reload.try_send(());
        }
    });
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    daemon::serve(
        config,
        executors,
        ServeOptions {
            clock,
            tick,
            host: local.host,
            reloads: Some(reloads),
        },
        shutdown,
    )
    .await?;
    Ok(exit::OK)
}
