//! The writer stage of a directory restore: [`write_tree`] creates the entries of the tree
//! in order, relative to handles, and hands each finished file to a finisher thread that
//! fsyncs it and only then gives it its name; the end phases link hard links, delete what
//! the snapshot does not hold (`delete`), then set directory metadata and fsync.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arsip_repo::{Node, NodeType};
use arsip_repo::{RepoError, Result};
use rustix::fs::{AtFlags, FileType, Mode};
use rustix::io::Errno;

use super::fs::{self, ctx, Base, DirCache, SparseWriter, Walk, Warn};
use super::path::{self, Grafts, TreePath};
use super::{RestoreOptions, RestoreOutcome, Step};

/// Threads that fsync and name finished files while the next ones are written.
const FINISHERS: usize = 2;

/// What the writer stage works with.
pub struct Ctx<'a> {
    pub bases: &'a [Base],
    pub grafts: &'a Grafts,
    pub opts: &'a RestoreOptions,
    pub keep: Option<HashSet<u128>>,
    pub is_root: bool,
    pub warnings: &'a AtomicU64,
    pub snap: &'a str,
}

/// A file written in full, waiting for fsync and its name.
struct Finished {
    file: std::fs::File,
    dir: Arc<OwnedFd>,
    name: Vec<u8>,
    /// Its staging name, when the filesystem has no `O_TMPFILE`.
    staging: Option<Vec<u8>>,
    shown: PathBuf,
}

impl Finished {
    /// Give up on it: a nameless file vanishes with its handle; a staging name is removed.
    fn discard(self) {
        if let Some(s) = &self.staging {
            let _ = rustix::fs::unlinkat(self.dir.as_fd(), &s[..], AtFlags::empty());
        }
    }
}

/// The entry being written (one at a time, so its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Open {
    File {
        f: Finished,
        data: SparseWriter,
        node: Node,
        route: u64,
    },
    /// A later name of a hard-link group: linked at the end, carries no data.
    Link,
}

/// A directory restored from a node: its metadata is set at the end, on the same inode.
struct DirRec {
    base: usize,
    rel: TreePath,
    node: Node,
    id: (u64, u64),
}

fn io(e: std::io::Error) -> RepoError {
    RepoError::Io(e)
}

pub fn write_tree(
    cx: Ctx<'_>,
    mut rx: tokio::sync::mpsc::Receiver<Step>,
) -> Result<RestoreOutcome> {
    let warn = Warn(cx.warnings);
    let overwrite = cx.opts.overwrite;
    let mut out = RestoreOutcome::default();
    let mut cache = DirCache::new(cx.bases);
    let mut dirs: Vec<DirRec> = Vec::new();
    // Hard-link groups: the first name of each, and the later names to link to it.
    let mut groups: HashMap<u64, TreePath> = HashMap::new();
    let mut links: Vec<(u64, TreePath)> = Vec::new();
    let mut tmpfile_ok = !cx.opts.staging_names;
    let failed = Mutex::new(None::<RepoError>);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..FINISHERS)
        .map(|_| std::sync::mpsc::sync_channel::<Finished>(32))
        .unzip();
    std::thread::scope(|s| -> Result<()> {
        for rx in rxs {
            let failed = &failed;
            s.spawn(move || finisher(rx, failed, overwrite));
        }
        let mut open: Option<Open> = None;
        let result = (|| -> Result<()> {
            while let Some(step) = rx.blocking_recv() {
                match step {
                    Step::Node(node) => {
                        let p = path::parse(&node.path_bytes()?).map_err(|why| {
                            RepoError::Invalid(format!("refusing {:?}: {why}", node.path))
                        })?;
                        let dest = cx.grafts.resolve(&p);
                        let shown = cache.path_of(&dest);
                        let Some((_, name)) = dest.split() else {
                            // A graft's root (checked to be a directory): the base itself.
                            let st = rustix::fs::fstat(&*cx.bases[dest.base].fd)
                                .map_err(|e| ctx(e, &shown))?;
                            out.dirs += 1;
                            dirs.push(DirRec {
                                base: dest.base,
                                rel: vec![],
                                node,
                                id: (st.st_dev, st.st_ino),
                            });
                            continue;
                        };
                        let name = name.to_vec();
                        // A later name of a hard-linked symlink, FIFO or device: linked to
                        // the first at the end, like files.
                        if let (Some(g), false) = (
                            node.hardlink,
                            matches!(node.node_type, NodeType::Dir | NodeType::File),
                        ) {
                            if groups.contains_key(&g) {
                                links.push((g, p));
                                continue;
                            }
                            groups.insert(g, p.clone());
                        }
                        match node.node_type {
                            NodeType::Dir => {
                                let parent = cache.parent(&dest, overwrite)?;
                                let id = make_dir(&parent, &name, overwrite, &shown)?;
                                out.dirs += 1;
                                dirs.push(DirRec {
                                    base: dest.base,
                                    rel: dest.rel,
                                    node,
                                    id,
                                });
                            }
                            NodeType::File => {
                                if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                                    break; // a finisher failed; its error is returned
                                }
                                if let Some(g) = node.hardlink {
                                    if groups.contains_key(&g) {
                                        links.push((g, p));
                                        open = Some(Open::Link);
                                        continue;
                                    }
                                    groups.insert(g, p);
                                }
                                let parent = cache.parent(&dest, overwrite)?;
                                let mut made = None;
                                if tmpfile_ok {
                                    match fs::tmpfile(parent.as_fd()).map_err(|e| ctx(e, &shown))? {
                                        Some(fd) => made = Some((fd, None)),
                                        None => tmpfile_ok = false,
                                    }
                                }
                                let (fd, staging) = match made {
                                    Some(m) => m,
                                    None => {
                                        let (fd, n) = fs::staging_file(parent.as_fd())
                                            .map_err(|e| ctx(e, &shown))?;
                                        (fd, Some(n))
                                    }
                                };
                                open = Some(Open::File {
                                    f: Finished {
                                        file: std::fs::File::from(fd),
                                        dir: parent,
                                        name,
                                        staging,
                                        shown,
                                    },
                                    data: SparseWriter::new(),
                                    route: path::route(dest.base, &dest.rel),
                                    node,
                                });
                            }
                            NodeType::Symlink => {
                                let target = node.target_bytes()?.unwrap_or_default();
                                let parent = cache.parent(&dest, overwrite)?;
                                let dir = parent.as_fd();
                                fs::place(
                                    dir,
                                    &name,
                                    overwrite,
                                    &shown,
                                    &mut |n| rustix::fs::symlinkat(&target[..], dir, n),
                                    &mut |n| {
                                        fs::meta_at(dir, n, &node, true, cx.is_root, &shown, &warn)
                                    },
                                )?;
                                out.symlinks += 1;
                            }
                            NodeType::Fifo | NodeType::CharDevice | NodeType::BlockDevice => {
                                let ft = match node.node_type {
                                    NodeType::Fifo => FileType::Fifo,
                                    NodeType::CharDevice => FileType::CharacterDevice,
                                    _ => FileType::BlockDevice,
                                };
                                if ft != FileType::Fifo && !cx.is_root {
                                    warn.warn(
                                        &shown,
                                        format_args!(
                                            "device not restored: only root creates devices"
                                        ),
                                    );
                                    continue;
                                }
                                let rdev = node.rdev.unwrap_or(0);
                                let parent = cache.parent(&dest, overwrite)?;
                                let dir = parent.as_fd();
                                fs::place(
                                    dir,
                                    &name,
                                    overwrite,
                                    &shown,
                                    &mut |n| {
                                        rustix::fs::mknodat(
                                            dir,
                                            n,
                                            ft,
                                            Mode::from_raw_mode(0o600),
                                            rdev,
                                        )
                                    },
                                    &mut |n| {
                                        fs::meta_at(dir, n, &node, false, cx.is_root, &shown, &warn)
                                    },
                                )?;
                                out.specials += 1;
                            }
                        }
                    }
                    Step::Data(d) => match open.as_mut() {
                        Some(Open::File { f, data, .. }) => {
                            data.write(&f.file, &d).map_err(|e| ctx(e, &f.shown))?
                        }
                        Some(Open::Link) => {
                            return Err(RepoError::corrupt(
                                cx.snap.to_string(),
                                "a later name of a hard-link group carries data",
                            ))
                        }
                        None => return Err(RepoError::Invalid("chunk outside a file".into())),
                    },
                    Step::EndFile => match open.take() {
                        Some(Open::File {
                            f,
                            mut data,
                            node,
                            route,
                        }) => {
                            let r = (|| -> Result<()> {
                                data.finish(&f.file).map_err(|e| ctx(e, &f.shown))?;
                                if data.len != node.size {
                                    return Err(RepoError::corrupt(
                                        cx.snap.to_string(),
                                        format!(
                                            "{} restored {} bytes, the tree records {}",
                                            node.path, data.len, node.size
                                        ),
                                    ));
                                }
                                fs::meta_fd(f.file.as_fd(), &node, cx.is_root, &f.shown, &warn)?;
                                Ok(())
                            })();
                            if let Err(e) = r {
                                f.discard();
                                return Err(e);
                            }
                            out.files += 1;
                            out.bytes += data.len;
                            if let Err(e) = txs[(route % FINISHERS as u64) as usize].send(f) {
                                e.0.discard();
                                break; // that finisher stopped; its error is reported
                            }
                        }
                        Some(Open::Link) => {}
                        None => return Err(RepoError::Invalid("end outside a file".into())),
                    },
                }
            }
            Ok(())
        })();
        if let Some(Open::File { f, .. }) = open.take() {
            f.discard();
        }
        drop(txs);
        result
    })?;
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }

    // Hard links, now that every first name is in place.
    for (g, p) in &links {
        let first = groups.get(g).ok_or_else(|| {
            RepoError::corrupt(
                cx.snap.to_string(),
                format!("hard-link group {g} has no data"),
            )
        })?;
        let (d1, d2) = (cx.grafts.resolve(first), cx.grafts.resolve(p));
        let shown = cache.path_of(&d2);
        let (dir1, n1) = d1
            .split()
            .ok_or_else(|| RepoError::Invalid("hard link to a graft root".into()))?;
        let n1 = n1.to_vec();
        let from = match cache.open(d1.base, dir1, Walk::Existing)? {
            Ok(Some(fd)) => fd,
            _ => return Err(io(ctx(Errno::NOENT, &cache.path_of(&d1)))),
        };
        let to = cache.parent(&d2, overwrite)?;
        let (_, n2) = d2.split().unwrap_or((&[], b""));
        fs::place(
            to.as_fd(),
            n2,
            overwrite,
            &shown,
            &mut |n| rustix::fs::linkat(from.as_fd(), &n1[..], to.as_fd(), n, AtFlags::empty()),
            &mut |_| Ok(()),
        )?;
        out.hardlinks += 1;
    }

    // `delete`: entries of restored directories that the snapshot does not hold.
    if let Some(keep) = &cx.keep {
        let scan: Vec<(usize, TreePath)> = (0..cx.bases.len())
            .map(|b| (b, vec![]))
            .chain(dirs.iter().map(|d| (d.base, d.rel.clone())))
            .collect();
        for (base, rel) in scan {
            let Ok(Some(fd)) = cache.open(base, &rel, Walk::Existing)? else {
                continue;
            };
            let shown = path::display(&cx.bases[base].path, &rel);
            // Nothing in another mount is deleted: a directory of the target that is a mount
            // point, or below one (a bind mount of /dev into a chroot), keeps what it holds.
            if !fs::same_mount(cx.bases[base].fd.as_fd(), fd.as_fd()).map_err(|e| ctx(e, &shown))? {
                warn.warn(
                    &shown,
                    format_args!(
                        "in another mount (a mount point or below one): --delete leaves its entries alone"
                    ),
                );
                continue;
            }
            let mut tree_path = cx.grafts.base_path(base);
            tree_path.extend(rel.iter().cloned());
            for (n, _) in fs::entries(&fd).map_err(|e| ctx(e, &shown))? {
                tree_path.push(n);
                if !keep.contains(&path::digest(&tree_path)) {
                    let p = path::display(&shown, &tree_path[tree_path.len() - 1..]);
                    fs::remove_tree(fd.as_fd(), &tree_path[tree_path.len() - 1])
                        .map_err(|e| ctx(e, &p))?;
                    out.deleted += 1;
                }
                tree_path.pop();
            }
        }
    }

    // Directories made on the way (no node of their own): their entries are durable too.
    let created = std::mem::take(&mut cache.created);
    for (base, rel) in &created {
        if let Ok(Some(fd)) = cache.open(*base, rel, Walk::Existing)? {
            rustix::fs::fsync(&*fd)
                .map_err(|e| ctx(e, &path::display(&cx.bases[*base].path, rel)))?;
        }
    }
    // Directory metadata last (creating entries changes a directory's mtime), deepest
    // first, on the very inode the restore made or merged into.
    for d in dirs.iter().rev() {
        let shown = path::display(&cx.bases[d.base].path, &d.rel);
        let fd = if d.rel.is_empty() {
            cx.bases[d.base].fd.clone()
        } else {
            match cache.open(d.base, &d.rel, Walk::Existing)? {
                Ok(Some(fd)) => fd,
                _ => return Err(io(ctx(Errno::NOENT, &shown))),
            }
        };
        let st = rustix::fs::fstat(&*fd).map_err(|e| ctx(e, &shown))?;
        if (st.st_dev, st.st_ino) != d.id {
            return Err(RepoError::Invalid(format!(
                "{} was replaced during the restore; its metadata is not applied",
                shown.display()
            )));
        }
        // A mount point the target held (a bind mount of a host directory) is the host's
        // directory: its owner, mode and times stay the host's.
        let parent = match d.rel.split_last() {
            Some((_, [])) => Some(cx.bases[d.base].fd.clone()),
            Some((_, up)) => cache.open(d.base, up, Walk::Existing)?.ok().flatten(),
            None => None,
        };
        if let Some(parent) = parent {
            if !fs::same_mount(parent.as_fd(), fd.as_fd()).map_err(|e| ctx(e, &shown))? {
                warn.warn(
                    &shown,
                    format_args!("a mount point: its owner, mode and times are left alone"),
                );
                continue;
            }
        }
        fs::meta_fd(fd.as_fd(), &d.node, cx.is_root, &shown, &warn)?;
        rustix::fs::fsync(&*fd).map_err(|e| ctx(e, &shown))?;
    }
    // The bases, and the entries naming them.
    for b in cx.bases {
        rustix::fs::fsync(&*b.fd).map_err(|e| ctx(e, &b.path))?;
        if let Some(parent) = b.path.parent() {
            if let Ok(f) = std::fs::File::open(parent) {
                f.sync_all().map_err(|e| ctx(e, parent))?;
            }
        }
    }
    Ok(out)
}

/// Make directory `name` in `parent` (mode 0700 until its metadata is set at the end), or
/// merge into the directory already there; returns its identity.
fn make_dir(
    parent: &OwnedFd,
    name: &[u8],
    overwrite: bool,
    shown: &std::path::Path,
) -> Result<(u64, u64)> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io(ctx(e, shown))),
    }
    let fd = match fs::open_dir(parent.as_fd(), name) {
        Ok(fd) => fd,
        Err(e) if fs::not_dir(e) && overwrite => {
            fs::remove_tree(parent.as_fd(), name).map_err(|e| ctx(e, shown))?;
            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                .map_err(|e| ctx(e, shown))?;
            fs::open_dir(parent.as_fd(), name).map_err(|e| ctx(e, shown))?
        }
        Err(e) if fs::not_dir(e) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a directory (restore with overwrite to replace it)",
                    shown.display()
                ),
            )))
        }
        Err(e) => return Err(io(ctx(e, shown))),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| ctx(e, shown))?;
    Ok((st.st_dev, st.st_ino))
}

/// fsync, then name. After the first failure the remaining files are discarded (they
/// never get a name).
fn finisher(
    rx: std::sync::mpsc::Receiver<Finished>,
    failed: &Mutex<Option<RepoError>>,
    overwrite: bool,
) {
    for f in rx {
        if failed.lock().map(|g| g.is_some()).unwrap_or(true) {
            f.discard();
            continue;
        }
        if let Err(e) = name_file(&f, overwrite) {
            f.discard();
            if let Ok(mut g) = failed.lock() {
                g.get_or_insert(RepoError::Io(e));
            }
        }
    }
}

fn name_file(f: &Finished, overwrite: bool) -> std::io::Result<()> {
    f.file.sync_all().map_err(|e| ctx(e, &f.shown))?;
    let dir = f.dir.as_fd();
    let name = &f.name[..];
    match &f.staging {
        None => match fs::link_fd(f.file.as_fd(), dir, name) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) if overwrite => {
                let tmp = fs::make_staging(&mut |n| fs::link_fd(f.file.as_fd(), dir, n))
                    .map_err(|e| ctx(e, &f.shown))?;
                let r = fs::rename_over(dir, &tmp, name);
                if r.is_err() {
                    let _ = rustix::fs::unlinkat(dir, &tmp[..], AtFlags::empty());
                }
                r.map_err(|e| ctx(e, &f.shown))
            }
            Err(Errno::EXIST) => Err(fs::exists(&f.shown)),
            Err(e) => Err(ctx(e, &f.shown)),
        },
        Some(tmp) if overwrite => fs::rename_over(dir, tmp, name).map_err(|e| ctx(e, &f.shown)),
        Some(tmp) => {
            match rustix::fs::linkat(dir, &tmp[..], dir, name, AtFlags::empty()) {
                Ok(()) => {}
                Err(Errno::EXIST) => return Err(fs::exists(&f.shown)),
                Err(e) => return Err(ctx(e, &f.shown)),
            }
            rustix::fs::unlinkat(dir, &tmp[..], AtFlags::empty()).map_err(|e| ctx(e, &f.shown))
        }
    }
}
