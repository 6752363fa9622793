//! Progress display: a bar on stderr when stderr is a terminal, nothing otherwise (or with
//! `--json` / `--quiet`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arsip_ops::repo::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn enabled(json: bool, quiet: bool) -> bool {
    !json && !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

pub fn bytes_bar(enabled: bool, total: Option<u64>, msg: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap(),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}")
                .unwrap(),
        ),
    };
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Mirror a backup session's counters into a bar until the returned guard is dropped.
pub fn follow_backup(
    enabled: bool,
    p: Arc<Progress>,
) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if !enabled {
        return None;
    }
    let pb = bytes_bar(true, None, "backing up");
    let pb2 = pb.clone();
    let h = tokio::spawn(async move {
        loop {
            pb2.set_position(p.read_bytes.load(Ordering::Relaxed));
            pb2.set_message(format!(
                "backing up (new {} MiB, stored {} MiB)",
                p.new_bytes.load(Ordering::Relaxed) >> 20,
                p.stored_bytes.load(Ordering::Relaxed) >> 20
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some((pb, h))
}
