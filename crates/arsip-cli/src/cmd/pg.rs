//! `arsip backup pg` and `arsip restore pg`: logical dumps and physical base backups.

use std::path::PathBuf;

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::pg as arsip_pg;
use arsip_ops::repo::snapshot::Snapshot;
use arsip_ops::repo::FullRepo;
use arsip_ops::snapshots::Filter;

use crate::cli::{PgBackupArgs, RestoreSub};
use crate::ctx::Ctx;
use crate::exit;

pub async fn backup(ctx: &Ctx<'_>, a: &PgBackupArgs) -> Result<u8> {
    if let Some(d) = &a.dbname {
        arsip_pg::conn::refuse_password(d)?;
    }
    let repo = ctx.open_shared(Access::AppendOnly).await?;
    let tags = arsip_ops::backup::parse_tags(&a.tags)?;
    let o = if a.logical {
        let opts = arsip_pg::logical::LogicalBackup {
            dbname: a.dbname.clone(),
            all: a.all,
            tags,
            settings: ctx.pg_settings(),
        };
        arsip_pg::logical::backup(repo, &opts).await?
    } else {
        let pgdata = a
            .pgdata
            .clone()
            .ok_or_else(|| crate::usage!("--physical needs --pgdata DIR (or PGDATA)"))?;
        let opts = arsip_pg::physical::PhysicalBackup {
            dbname: a.dbname.clone(),
            pgdata,
            fast: a.fast,
            wal_timeout: std::time::Duration::from_secs(a.wal_timeout),
            stanza: a.stanza.clone(),
            tags,
            settings: ctx.pg_settings(),
        };
        arsip_pg::physical::backup(repo, &opts).await?
    };
    ctx.summary(&o)?;
    Ok(exit::OK)
}

async fn list_kind(repo: &FullRepo, kind: &str) -> Result<Vec<Snapshot>> {
    Ok(super::snapshots::list(repo, &Filter::kind(kind))
        .await?
        .snapshots)
}

pub async fn restore(ctx: &Ctx<'_>, sub: &RestoreSub) -> Result<u8> {
    let cli = ctx.cli;
    let RestoreSub::Pg(a) = sub;
    if let Some(d) = &a.dbname {
        arsip_pg::conn::refuse_password(d)?;
    }
    if a.logical {
        let repo = ctx.open_full(Access::Full, "listing snapshots").await?;
        let snaps = list_kind(&repo, arsip_pg::logical::KIND).await?;
        let snap =
            arsip_ops::repo::snapshot::select(&snaps, a.snapshot.as_deref().unwrap_or("latest"))?
                .clone();
        let opts = arsip_pg::logical::LogicalRestore {
            dbname: a.dbname.clone(),
            create: a.create,
            tables: a.tables.clone(),
            jobs: a.jobs.max(1),
            globals: a.globals,
            settings: ctx.pg_settings(),
        };
        let o = arsip_pg::logical::restore(repo, &snap, &opts).await?;
        if cli.json {
            crate::print_json(&o)?;
        } else {
            ctx.info(format!(
                "restored snapshot {} into database {} ({} bytes of dump) in {:.1}s",
                &o.snapshot[..8],
                o.database,
                o.bytes,
                o.seconds
            ));
        }
        return Ok(exit::OK);
    }
    let to =
        a.to.clone()
            .ok_or_else(|| crate::usage!("--physical needs --to DIR"))?;
    let target = arsip_pg::restore::Target::parse(&arsip_pg::restore::TargetArgs {
        time: a.target_time.as_deref(),
        lsn: a.target_lsn.as_deref(),
        xid: a.target_xid.as_deref(),
        name: a.target_name.as_deref(),
        target: a.target.as_deref(),
        timezone: a.timezone.as_deref(),
    })?;
    let target_action = arsip_pg::restore::TargetAction::parse(&a.target_action)?;
    // restore_command needs what opened the repository: the key file, or the password (read
    // once here; the restore derives its slot's key once)
    let (repo, credential) = match &cli.key_file {
        Some(k) => (
            ctx.open_full(Access::Full, "listing snapshots").await?,
            arsip_pg::restore::Credential::KeyFile(k.clone()),
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
                    .ok_or_else(|| crate::usage!("--tablespace-map {m:?}: expected OID=DIR"))
            })
            .collect::<anyhow::Result<_>>()?,
        stanza: a.stanza.clone(),
        arsip_exe: std::env::current_exe()?,
        repo_location: ctx.store_settings()?.location,
        credential: Some(credential),
        settings: ctx.pg_settings(),
    };
    let snaps = list_kind(&repo, arsip_pg::physical::KIND).await?;
    let t0 = std::time::Instant::now();
    let plan = arsip_pg::restore::plan(&repo, &snaps, &opts).await?;
    // warnings are loud: on stderr whatever the output mode, and in the JSON
    for w in &plan.warnings {
        eprintln!("arsip: WARNING: {w}");
    }
    if a.dry_run {
        if cli.json {
            crate::print_json(&plan)?;
        } else {
            crate::print_line(plan.text().trim_end())?;
        }
        return Ok(exit::OK);
    }
    let o = arsip_pg::restore::execute(repo, &plan, t0).await?;
    for w in o.warnings.iter().skip(plan.warnings.len()) {
        eprintln!("arsip: WARNING: {w}");
    }
    if cli.json {
        crate::print_json(&o)?;
    } else {
        crate::print_line(&o.summary())?;
    }
    Ok(exit::OK)
}
