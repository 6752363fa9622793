//! The restore's first pass over the tree, before anything is written: [`check`] validates
//! every node as untrusted input, finds the entries that already exist in the target
//! (refusing them unless `overwrite`), removes staging leftovers of earlier restores, and
//! for `delete` collects what the snapshot holds.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::PathBuf;

use arsip_repo::{Node, NodeType, TreeReader};
use arsip_repo::{RepoError, Result};
use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use super::fs::{ctx, entries, remove_tree, Base, DirCache, NotADir, Walk, Warn};
use super::path::{self, Grafts};
use super::RestoreOptions;

/// Conflicts named in a refusal (the rest are counted).
const SHOWN_CONFLICTS: usize = 10;

/// What the first pass found.
pub struct Plan {
    /// With `delete`: digests of every tree path the snapshot holds (ancestors included).
    pub keep: Option<HashSet<u128>>,
}

fn refuse(snap: &str, bytes: &[u8], why: &str) -> RepoError {
    RepoError::Invalid(format!(
        "refusing unsafe path {:?} in {snap}: {why}",
        String::from_utf8_lossy(bytes)
    ))
}

/// Check one node's fields a restore relies on.
fn validate(node: &Node, snap: &str, bytes: &[u8]) -> Result<()> {
    use base64::Engine;
    match node.node_type {
        NodeType::Symlink => match node.target_bytes()? {
            Some(t) if !t.is_empty() && !t.contains(&0) => {}
            _ => return Err(refuse(snap, bytes, "symlink without a valid target")),
        },
        NodeType::CharDevice | NodeType::BlockDevice if node.rdev.is_none() => {
            return Err(refuse(snap, bytes, "device without a device number"))
        }
        _ => {}
    }
    for x in &node.xattrs {
        if x.name.is_empty() || x.name.contains('\0') {
            return Err(refuse(
                snap,
                bytes,
                "extended attribute with an invalid name",
            ));
        }
        base64::engine::general_purpose::STANDARD
            .decode(&x.value)
            .map_err(|e| {
                RepoError::corrupt(
                    snap.to_string(),
                    format!(
                        "extended attribute {} of {:?} is not base64: {e}",
                        x.name,
                        String::from_utf8_lossy(bytes)
                    ),
                )
            })?;
    }
    Ok(())
}

pub fn check<R: BufRead>(
    tree: &mut TreeReader<R>,
    bases: &[Base],
    grafts: &Grafts,
    opts: &RestoreOptions,
    snap: &str,
    warn: &Warn,
) -> Result<Plan> {
    let fresh = bases.iter().all(|b| b.was_empty);
    let mut keep = (opts.delete && !fresh).then(HashSet::new);
    let mut cache = DirCache::new(bases);
    let mut conflicts: Vec<PathBuf> = Vec::new();
    let mut n_conflicts = 0u64;
    // Existing directories the snapshot restores into: where staging leftovers are looked for.
    let mut existing: Vec<(usize, path::TreePath)> =
        (0..bases.len()).map(|b| (b, vec![])).collect();
    let mut conflict = |p: PathBuf| {
        if conflicts.last() == Some(&p) {
            return; // below a conflicting entry already counted
        }
        n_conflicts += 1;
        if conflicts.len() < SHOWN_CONFLICTS {
            conflicts.push(p);
        }
    };
    while let Some((node, _)) = tree.next_node()? {
        let bytes = node.path_bytes()?;
        let p = path::parse(&bytes).map_err(|why| refuse(snap, &bytes, why))?;
        validate(&node, snap, &bytes)?;
        let dest = grafts.resolve(&p);
        if let Some(keep) = keep.as_mut() {
            for k in 1..=p.len() {
                keep.insert(path::digest(&p[..k]));
            }
        }
        let Some((dir, name)) = dest.split() else {
            if node.node_type != NodeType::Dir {
                return Err(refuse(snap, &bytes, "a graft's root must be a directory"));
            }
            continue;
        };
        if fresh {
            continue;
        }
        let shown = cache.path_of(&dest);
        let parent = match cache.open(dest.base, dir, Walk::Existing)? {
            Err(NotADir(at)) => {
                conflict(at);
                continue;
            }
            Ok(None) => continue,
            Ok(Some(fd)) => fd,
        };
        match rustix::fs::statat(&*parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {}
            Err(e) => return Err(ctx(e, &shown).into()),
            Ok(st) => {
                let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if node.node_type == NodeType::Dir && is_dir {
                    existing.push((dest.base, dest.rel.clone()));
                } else {
                    conflict(shown);
                }
            }
        }
    }
    if n_conflicts > 0 && !opts.overwrite {
        let list: Vec<String> = conflicts.iter().map(|p| p.display().to_string()).collect();
        let more = n_conflicts - conflicts.len() as u64;
        return Err(RepoError::Refused(format!(
            "refusing to restore {snap} into {}: {n_conflicts} path(s) it would write already \
             exist: {}{}; nothing was written. Restore into a new or empty directory, or \
             restore with overwrite to replace them",
            bases[0].path.display(),
            list.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )));
    }
    // Leftovers of an earlier restore that was killed: staging names, never data.
    for (base, rel) in existing {
        let Ok(Some(fd)) = cache.open(base, &rel, Walk::Existing)? else {
            continue;
        };
        let shown = path::display(&bases[base].path, &rel);
        for (name, ft) in entries(&fd).map_err(|e| ctx(e, &shown))? {
            if !path::is_restore_staging(&name) {
                continue;
            }
            let p = path::display(&shown, std::slice::from_ref(&name));
            if ft == FileType::Directory {
                warn.warn(
                    &p,
                    format_args!("not a restore's leftover (a directory); left alone"),
                );
                continue;
            }
            remove_tree(std::os::fd::AsFd::as_fd(&*fd), &name).map_err(|e| ctx(e, &p))?;
            tracing::info!(path = %p.display(), "removed an earlier restore's staging file");
        }
    }
    Ok(Plan { keep })
}
