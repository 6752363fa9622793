//! `arsip check [--read-data | --read-data-subset PCT]`.

use anyhow::Result;
use arsip_ops::check::{self, CheckReport, ReadData};
use arsip_ops::open::Access;

use crate::cli::CheckArgs;
use crate::ctx::{human, Ctx, Render};
use crate::exit;

impl Render for CheckReport {
    fn human(&self) -> String {
        let mut out = format!(
            "{} snapshot(s), {} index(es), {} pack(s), {} chunk(s); read {} pack(s), {}\n",
            self.snapshots,
            self.indexes,
            self.packs,
            self.chunks,
            self.packs_read,
            human(self.bytes_read)
        );
        if self.unreferenced_packs > 0 {
            out += &format!(
                "{} unreferenced pack(s) from interrupted backups (harmless; prune removes them)\n",
                self.unreferenced_packs
            );
        }
        for p in &self.problems {
            out += &format!("DAMAGED {}: {}\n", p.object, p.message);
        }
        for s in &self.affected_snapshots {
            out += &format!("AFFECTED snapshot {s}\n");
        }
        out + if self.ok() {
            "no problems found"
        } else {
            "problems found"
        }
    }
}

pub async fn run(ctx: &Ctx<'_>, c: &CheckArgs) -> Result<u8> {
    let read = if c.read_data {
        ReadData::Subset(100.0)
    } else if let Some(p) = &c.read_data_subset {
        check::parse_subset(p)?
    } else {
        ReadData::None
    };
    let repo = ctx.open(Access::Full).await?;
    let report = check::run(repo, read).await?;
    ctx.emit(&report)?;
    if !report.ok() {
        eprintln!("HINT: restore affected data from another snapshot or a copy of the repository; unaffected snapshots restore normally");
    }
    Ok(if report.ok() { exit::OK } else { exit::DAMAGED })
}
