//! `arsip restore SNAPSHOT --to DIR | --stdout` (and `restore pg …`).

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::restore::{self, Destination};

use crate::cli::RestoreArgs;
use crate::ctx::{human, Ctx};
use crate::{exit, progress};

pub async fn run(ctx: &Ctx<'_>, r: &RestoreArgs) -> Result<u8> {
    if let Some(sub) = &r.pg {
        return super::pg::restore(ctx, sub).await;
    }
    let repo = ctx.open_reading(Access::Full, "listing snapshots").await?;
    let filter = (&r.filter).into();
    let listing = super::snapshots::list(&repo, &filter).await?;
    let (snap, note) = listing.select_explained(&r.snapshot)?;
    if let Some(note) = note {
        eprintln!("arsip: warning: {note} (--writer)");
    }
    let snap = snap.clone();
    let pb = progress::bytes_bar(
        ctx.progress(),
        Some(snap.manifest.logical_bytes),
        "restoring",
    );
    let on_bytes = |n: u64| pb.inc(n);
    let outcome = if r.stdout {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        restore::run(repo, &snap, Destination::Writer(&mut w), &on_bytes).await
    } else {
        let to =
            r.to.as_deref()
                .expect("clap requires --to without --stdout");
        let opts = restore::RestoreOptions {
            overwrite: r.overwrite,
            delete: r.delete,
            ..Default::default()
        };
        restore::run(repo, &snap, Destination::Dir(to, &opts), &on_bytes).await
    };
    pb.finish_and_clear();
    let o = outcome?;
    if ctx.cli.json && !r.stdout {
        crate::print_json(&o)?;
    } else {
        ctx.info(format!(
            "restored snapshot {}: {} file(s), {} in {:.1}s ({}/s)",
            &o.snapshot[..8],
            o.files,
            human(o.bytes),
            o.seconds,
            human((o.bytes as f64 / o.seconds.max(1e-6)) as u64)
        ));
    }
    Ok(exit::OK)
}
