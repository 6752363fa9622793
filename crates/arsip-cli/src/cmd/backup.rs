//! `arsip backup files|stdin|pg`.

use anyhow::Result;
use arsip_ops::backup::{self, Common};
use arsip_ops::files::backup::{Action, FilesOutcome};
use arsip_ops::open::Access;
use arsip_ops::repo::BackupOutcome;

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
    // Refuse a bad stream name before the repository is opened.
    if let BackupCmd::Stdin { name, .. } | BackupCmd::Command { name, .. } = b {
        backup::check_stream_name(name)?;
    }
    let repo = ctx.open_shared(Access::AppendOnly).await?;
    let mut bar = None;
    let follow = |p| bar = progress::follow_backup(ctx.progress(), p);
    let outcome = match b {
        BackupCmd::Files {
            paths,
            exclude,
            exclude_file,
            one_file_system,
            include_virtual,
            tags,
        } => {
            let common = Common {
                tags: backup::parse_tags(&tags.tags)?,
            };
            // Never back up arsip's own repository (when local), cache or spool.
            let mut never = vec![repo.cache_dir().to_path_buf()];
            never.extend(ctx.pg_settings().spool_dir);
            let location = ctx.store_settings()?.location;
            if let Ok(arsip_ops::storage::backend::Location::Local(p)) =
                arsip_ops::storage::backend::Location::parse(&location)
            {
                never.push(p);
            }
            let f = backup::Files {
                paths: paths.clone(),
                exclude: exclude.clone(),
                exclude_files: exclude_file.clone(),
                one_file_system: *one_file_system,
                include_virtual: *include_virtual,
                never,
            };
            let o = backup::files(repo, f, common, follow).await;
            if let Some((pb, h)) = bar.take() {
                h.abort();
                pb.finish_and_clear();
            }
            return files_done(ctx, o?);
        }
        BackupCmd::Stdin { name, tags } => {
            let common = Common {
                tags: backup::parse_tags(&tags.tags)?,
            };
            backup::stream(repo, std::io::stdin(), name.clone(), common, follow).await
        }
        BackupCmd::Command { name, tags, argv } => {
            let common = Common {
                tags: backup::parse_tags(&tags.tags)?,
            };
            backup::command(repo, argv.clone(), name.clone(), common, follow).await
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

impl Render for FilesOutcome {
    fn human(&self) -> String {
        let mut s = self.backup.human();
        if self.partial {
            s.push_str(&format!(
                "\nsnapshot {} is PARTIAL: {} skipped, {} changed while read, {} incomplete (see the warnings above)",
                &self.backup.id[..8],
                self.report.skipped,
                self.report.changed,
                self.report.incomplete
            ));
        }
        s
    }
}

/// Warnings on stderr (each names its path), the summary, and exit 9 for a committed but
/// partial snapshot.
fn files_done(ctx: &Ctx<'_>, o: FilesOutcome) -> Result<u8> {
    for w in &o.report.warnings {
        let what = match w.action {
            Action::Skipped => "skipped",
            Action::Changed => "changed while read, kept as read",
            Action::Incomplete => "incomplete",
        };
        eprintln!("arsip: warning: {}: {} ({what})", w.path, w.reason);
    }
    let omitted = o.report.total() - o.report.warnings.len() as u64;
    if omitted > 0 {
        eprintln!("arsip: warning: … and {omitted} more");
    }
    ctx.summary(&o)?;
    Ok(if o.partial { exit::PARTIAL } else { exit::OK })
}
