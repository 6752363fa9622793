//! `arsip quickstart`: the main job on a throwaway cluster, end to end.

use anyhow::Result;
use arsip_ops::quickstart;

use crate::cli::QuickstartArgs;
use crate::ctx::Ctx;
use crate::exit;

pub async fn run(ctx: &Ctx<'_>, a: &QuickstartArgs) -> Result<u8> {
    let opts = quickstart::Options {
        dir: a.dir.clone(),
        keep: a.keep,
        tenants: a.tenants.max(8),
        arsip_exe: std::env::current_exe()?,
        settings: ctx.pg_settings(),
        host: crate::ctx::host_name(),
    };
    let r = quickstart::run(&opts).await?;
    if ctx.cli.json {
        crate::print_json(&r)?;
    } else {
        crate::print_line(&r.text())?;
    }
    Ok(if r.ok { exit::OK } else { exit::FAILURE })
}
