//! `arsip backup files|stdin|pg`.

use anyhow::Result;
use arsip_ops::backup::{self, Common};
use arsip_ops::open::Access;
use arsip_ops::repo::txn::BackupOutcome;

use crate::cli::BackupCmd;
use crate::ctx::{human, Ctx, Render};
use crate::{exit, progress};

impl Render for BackupOutcome {
    fn human(&self) -> String {
        format!(
            "snapshot {} saved: {} in {} file(s), {} new, {} stored, {:.1}s ({}/s)",
            &self.id[..8],
            human(self.logical_bytes),
            self.files,
            human(self.added_bytes),
            human(self.stored_bytes),
            self.seconds,
            human((self.logical_bytes as f64 / self.seconds.max(1e-6)) as u64)
        )
    }
}

pub async fn run(ctx: &Ctx<'_>, b: &BackupCmd) -> Result<u8> {
    if let BackupCmd::Pg(a) = b {
        return super::pg::backup(ctx, a).await;
    }
    let repo = ctx.open(Access::AppendOnly).await?;
    let mut bar = None;
    let follow = |p| bar = progress::follow_backup(ctx.progress(), p);
    let outcome = match b {
        BackupCmd::Files { paths, tags } => {
            let common = Common {
                tags: backup::parse_tags(&tags.tags)?,
            };
            backup::files(repo, paths.clone(), common, follow).await
        }
        BackupCmd::Stdin { name, tags } => {
            let common = Common {
                tags: backup::parse_tags(&tags.tags)?,
            };
            backup::stream(repo, std::io::stdin(), name.clone(), common, follow).await
        }
        BackupCmd::Pg(_) => unreachable!("dispatched above"),
    };
    if let Some((pb, h)) = bar {
        h.abort();
        pb.finish_and_clear();
    }
    ctx.summary(&outcome?)?;
    Ok(exit::OK)
}
