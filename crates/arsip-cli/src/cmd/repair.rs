//! `arsip repair index`.

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::repair::{self, IndexRepair};

use crate::cli::RepairCmd;
use crate::ctx::{human, Ctx, Render};
use crate::exit;

impl Render for IndexRepair {
    fn human(&self) -> String {
        let mut out = format!(
            "{} pack(s) no index named; {} verified and indexed: {} chunk(s), {} recovered \
             ({}); wrote {} index object(s)",
            self.packs_unindexed,
            self.packs_indexed,
            self.chunks_indexed,
            self.chunks_recovered,
            human(self.raw_bytes_recovered),
            self.indexes_written.len()
        );
        if self.packs_of_revoked_writers > 0 {
            out += &format!(
                "\n{} pack(s) of retired or compromised agents left alone",
                self.packs_of_revoked_writers
            );
        }
        for p in &self.problems {
            out += &format!("\nDAMAGED {}: {}", p.object, p.message);
        }
        out
    }
}

pub async fn run(ctx: &Ctx<'_>, r: &RepairCmd) -> Result<u8> {
    match r {
        RepairCmd::Index => {
            let repo = ctx.open_full(Access::Full, "repairing the index").await?;
            let outcome = repair::index(repo).await?;
            ctx.emit(&outcome)?;
            if outcome.problems.is_empty() {
                ctx.info("run `arsip check --read-data` to confirm every snapshot is whole");
                Ok(exit::OK)
            } else {
                Ok(exit::DAMAGED)
            }
        }
    }
}
