//! `arsip backup pg` and `arsip restore pg`: logical dumps and physical base backups.

use std::path::PathBuf;

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::pg::{self, Credential, LogicalRestoreOutcome, Method};
use arsip_ops::repo::FullRepo;
use arsip_ops::repo::Snapshot;
use arsip_ops::snapshots::Filter;

use crate::cli::{PgBackupArgs, PgRestoreArgs, RestoreSub};
use crate::ctx::Ctx;
use crate::exit;

pub async fn backup(ctx: &Ctx<'_>, a: &PgBackupArgs) -> Result<u8> {
    pg::check_dbname(a.kind.dbname.as_deref())?;
    let repo = ctx.open_shared(Access::AppendOnly).await?;
    let tags = arsip_ops::backup::parse_tags(&a.tags.tags)?;
    let method = if a.kind.logical {
        Method::Logical { all: a.all }
    } else {
        Method::Physical {
            pgdata: a
                .pgdata
                .pgdata
                .clone()
                .ok_or_else(|| crate::usage!("--physical needs --pgdata DIR (or PGDATA)"))?,
            fast: a.fast,
            wal_timeout: std::time::Duration::from_secs(a.wal_timeout),
            stanza: a.stanza.stanza.clone(),
        }
    };
    let b = pg::Backup {
        dbname: a.kind.dbname.clone(),
        method,
        tags,
        settings: ctx.pg_settings(),
    };
    ctx.summary(&pg::backup(repo, &b).await?)?;
    Ok(exit::OK)
}

/// The repository's snapshots of `kind` (damaged manifests reported on stderr).
async fn list_kind(repo: &FullRepo, kind: &str) -> Result<Vec<Snapshot>> {
    Ok(super::snapshots::list(repo, &Filter::kind(kind))
        .await?
        .snapshots)
}

pub async fn restore(ctx: &Ctx<'_>, sub: &RestoreSub) -> Result<u8> {
    let RestoreSub::Pg(a) = sub;
    pg::check_dbname(a.kind.dbname.as_deref())?;
    if a.kind.logical {
        restore_logical(ctx, a).await
    } else {
        restore_physical(ctx, a).await
    }
}

async fn restore_logical(ctx: &Ctx<'_>, a: &PgRestoreArgs) -> Result<u8> {
    let repo = ctx.open_reading(Access::Full, "listing snapshots").await?;
    let snaps = list_kind(&repo, pg::LOGICAL_KIND).await?;
    let opts = pg::LogicalRestore {
        dbname: a.kind.dbname.clone(),
        create: a.create,
        tables: a.tables.clone(),
        jobs: a.jobs,
        globals: a.globals,
        settings: ctx.pg_settings(),
    };
    let o = pg::restore_logical(repo, &snaps, a.snapshot.as_deref(), &opts).await?;
    if ctx.cli.json {
        crate::print_json(&o)?;
    } else {
        ctx.info(logical_summary(&o));
    }
    Ok(exit::OK)
}

fn logical_summary(o: &LogicalRestoreOutcome) -> String {
    format!(
        "restored snapshot {} into database {} ({} bytes of dump) in {:.1}s",
        &o.snapshot[..8],
        o.database,
        o.bytes,
        o.seconds
    )
}

async fn restore_physical(ctx: &Ctx<'_>, a: &PgRestoreArgs) -> Result<u8> {
    let to =
        a.to.clone()
            .ok_or_else(|| crate::usage!("--physical needs --to DIR"))?;
    let target = pg::Target::parse(&pg::TargetArgs {
        time: a.target_time.as_deref(),
        lsn: a.target_lsn.as_deref(),
        xid: a.target_xid.as_deref(),
        name: a.target_name.as_deref(),
        target: a.target.as_deref(),
        timezone: a.timezone.as_deref(),
    })?;
    let target_action = pg::TargetAction::parse(&a.target_action)?;
    let tablespace_map = a
        .tablespace_map
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(oid, dir)| (oid.to_string(), PathBuf::from(dir)))
                .ok_or_else(|| crate::usage!("--tablespace-map {m:?}: expected OID=DIR"))
        })
        .collect::<Result<_>>()?;
    let (repo, credential) = open_for_recovery(ctx).await?;
    let opts = pg::PhysicalRestore {
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
        tablespace_map,
        stanza: a.stanza.stanza.clone(),
        arsip_exe: std::env::current_exe()?,
        // Recovery reads first where this restore could read: the copy, when the
        // repository was unreachable (each segment would wait for it otherwise).
        repo_location: match (ctx.on_copy.get(), &ctx.cli.repo_fallback) {
            (true, Some(copy)) => copy.clone(),
            _ => ctx.store_settings()?.location,
        },
        repo_fallback: match ctx.on_copy.get() {
            true => Some(ctx.store_settings()?.location),
            false => ctx.cli.repo_fallback.clone(),
        },
        credential: Some(credential),
        settings: ctx.pg_settings(),
    };
    let snaps = list_kind(&repo, pg::PHYSICAL_KIND).await?;
    let planned = pg::plan_physical(&repo, &snaps, &opts).await?;
    // warnings are loud: on stderr whatever the output mode, and in the JSON
    for w in &planned.plan.warnings {
        eprintln!("arsip: WARNING: {w}");
    }
    if a.dry_run {
        if ctx.cli.json {
            crate::print_json(&planned.plan)?;
        } else {
            crate::print_line(planned.plan.text().trim_end())?;
        }
        return Ok(exit::OK);
    }
    let o = pg::restore_physical(repo, &planned).await?;
    for w in o.warnings.iter().skip(planned.plan.warnings.len()) {
        eprintln!("arsip: WARNING: {w}");
    }
    if ctx.cli.json {
        crate::print_json(&o)?;
    } else {
        crate::print_line(&o.summary())?;
    }
    Ok(exit::OK)
}

/// Open the repository, keeping what opened it: `restore_command` needs the key file, or
/// the password (read once here; the restore derives its slot's key once).
pub(super) async fn open_for_recovery(ctx: &Ctx<'_>) -> Result<(FullRepo, Credential)> {
    Ok(match &ctx.cli.key_file {
        Some(k) => (
            ctx.open_reading(Access::Full, "listing snapshots").await?,
            Credential::KeyFile(k.clone()),
        ),
        None => {
            let pw = crate::secrets::password("repository password: ", false)?;
            let repo = arsip_ops::open::repository(
                &ctx.store_settings()?,
                arsip_ops::repo::OpenWith::Password(pw.clone()),
                Access::Full,
                ctx.local_settings()?,
                arsip_ops::repo::clock::from_env(),
            )
            .await?
            .full("listing snapshots")?;
            (repo, Credential::Password(pw))
        }
    })
}
