//! `arsip stats`.

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::stats::{self, Stats};

use crate::ctx::{human, Ctx, Render};
use crate::exit;

impl Render for Stats {
    fn human(&self) -> String {
        [
            format!("snapshots:      {}", self.snapshots),
            format!(
                "logical bytes:  {} (sum over snapshots)",
                human(self.logical_bytes)
            ),
            format!(
                "unique bytes:   {} (before compression)",
                human(self.unique_bytes)
            ),
            format!(
                "stored bytes:   {} in {} objects, {} packs",
                human(self.stored_bytes),
                self.objects,
                self.packs
            ),
            format!("chunks:         {}", self.chunks),
            format!("ratio:          {:.2}× logical / stored", self.dedup_ratio),
        ]
        .join("\n")
    }
}

pub async fn run(ctx: &Ctx<'_>) -> Result<u8> {
    let repo = ctx.open_reading(Access::Full, "listing snapshots").await?;
    ctx.emit(&stats::run(&repo).await?)?;
    Ok(exit::OK)
}
