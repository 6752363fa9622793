//! Materialise: the snapshot's files into the data directory and the tablespace
//! directories the plan chose (owner kept, directories 0700, every file fsynced, `pg_control`
//! last: the snapshot stores it last), the `pg_tblspc` links, an empty prefetch spool, and
//! the whole tree given to the data directory's owner.

use std::path::{Path, PathBuf};

use arsip_repo::FullRepo;

use crate::error::Result;
use crate::restore::plan::RestorePlan;
use crate::restore::tablespace::link_tablespaces;

pub struct Materialised {
    pub files: u64,
    pub bytes: u64,
    /// The data directory, canonical.
    pub to: PathBuf,
    /// Owner of the restored `PG_VERSION`: the data directory's owner.
    pub owner: (u32, u32),
}

/// Write `data` to `p` and fsync it.
pub fn write_synced(p: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |e: std::io::Error| crate::os::io_at(p, e);
    let mut f = std::fs::File::create(p).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

pub async fn materialise(repo: FullRepo, plan: &RestorePlan) -> Result<Materialised> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let io = |p: &Path, e: std::io::Error| crate::os::io_at(p, e);
    std::fs::create_dir_all(&plan.to).map_err(|e| io(&plan.to, e))?;
    let reader = arsip_repo::Reader::open(&repo).await?;
    let grafts: Vec<arsip_files::restore::Graft> = plan
        .tablespaces
        .iter()
        .map(|t| arsip_files::restore::Graft {
            prefix: format!("pg_tblspc/{}", t.oid),
            dir: t.dir.clone(),
        })
        .collect();
    let r = arsip_files::restore::to_dir_grafted(&reader, &plan.snap, &plan.to, &grafts, &|_| {})
        .await?;
    let to = plan.to.canonicalize().map_err(|e| io(&plan.to, e))?;
    let pv_path = to.join("PG_VERSION");
    let pv = std::fs::metadata(&pv_path).map_err(|e| io(&pv_path, e))?;
    let owner = (pv.uid(), pv.gid());
    for d in std::iter::once(&to).chain(plan.tablespaces.iter().map(|t| &t.dir)) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(d, e))?;
        if crate::os::is_root() {
            crate::os::chown_tree(d, owner.0, owner.1)?;
        }
    }
    let links: Vec<(String, PathBuf)> = plan
        .tablespaces
        .iter()
        .map(|t| (t.oid.clone(), t.dir.clone()))
        .collect();
    link_tablespaces(&to, &links)?;
    crate::walarchive::clear_spool(&to);
    Ok(Materialised {
        files: r.files,
        bytes: r.bytes,
        to,
        owner,
    })
}

/// After the recovery configuration is written: everything belongs to the data directory's
/// owner, and the directory itself is synced.
pub fn finish(m: &Materialised) -> Result<()> {
    if crate::os::is_root() {
        crate::os::chown_tree(&m.to, m.owner.0, m.owner.1)?;
    }
    std::fs::File::open(&m.to)
        .and_then(|f| f.sync_all())
        .map_err(|e| crate::os::io_at(&m.to, e))
}
