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
        let u = &self.unindexed;
        if u.packs > 0 {
            out += &format!(
                "UNINDEXED {} pack(s) ({}) that no index names hold {} chunk(s), {} of them ({}) \
                 in no index at all",
                u.packs,
                human(u.stored_bytes),
                u.chunks,
                u.chunks_not_indexed,
                human(u.raw_bytes)
            );
            out += &if u.chunks_snapshots_need > 0 {
                format!(
                    "; snapshots need at least {} of those (see AFFECTED): `arsip repair index` rebuilds \
                     their index entries from the packs\n",
                    u.chunks_snapshots_need
                )
            } else if u.chunks_not_indexed > 0 {
                "; no snapshot needs them (left by interrupted backups, or their snapshots are \
                 gone): `arsip repair index` makes them usable again, a later prune removes \
                 them\n"
                    .to_string()
            } else {
                "; every chunk is also indexed elsewhere (duplicates)\n".to_string()
            };
        }
        if !self.revoked.is_empty() || self.revoked_packs > 0 {
            let mut writers: Vec<&str> = self.revoked.iter().map(|r| r.writer.as_str()).collect();
            writers.sort();
            writers.dedup();
            out += &format!(
                "REVOKED {} object(s) and {} pack(s) of {} retired or compromised agent(s): \
                 authentic, not damage, and accepted by no reader; a later prune removes them\n",
                self.revoked.len(),
                self.revoked_packs,
                writers.len()
            );
            for r in &self.revoked {
                out += &format!("  {}: {}\n", r.object, r.reason);
            }
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
    let repo = ctx.open_reading(Access::Full, "check").await?;
    let report = check::run(repo, read).await?;
    ctx.emit(&report)?;
    if !report.ok() {
        if report.unindexed.chunks_snapshots_need > 0 {
            eprintln!("HINT: `arsip repair index` rebuilds the lost index entries from the packs that hold them; then run `arsip check --read-data` again");
        } else {
            eprintln!("HINT: restore affected data from another snapshot or a copy of the repository; unaffected snapshots restore normally");
        }
    }
    Ok(if report.ok() { exit::OK } else { exit::DAMAGED })
}
