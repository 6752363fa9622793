//! Handle-relative filesystem operations, the only way a restore touches the disk:
//! [`DirCache`] descends from the restore's own directory handles with
//! `O_DIRECTORY|O_NOFOLLOW`, entries are created exclusively (`O_TMPFILE` + `linkat`,
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `mknodat`), replaced only by
//! `renameat` from an exclusive staging name, removed with `unlinkat`, and metadata is set
//! through a handle (`fchown`, `fchmod`, `fsetxattr`, `futimens`) or with
//! `AT_SYMLINK_NOFOLLOW`. No call here resolves a symlink that a snapshot or a target holds.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arsip_repo::Node;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags, CWD};
use rustix::io::Errno;

use super::path::{self, Dest, TreePath};

/// An I/O error with the path it concerns in its message (its kind is kept).
pub fn ctx(e: impl Into<io::Error>, path: &Path) -> io::Error {
    let e: io::Error = e.into();
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// One directory a restore writes below: the target, or a graft's directory. Its path comes
/// from the operator (trusted, opened following links); everything below is not.
pub struct Base {
    pub fd: Arc<OwnedFd>,
    pub path: PathBuf,
    /// It was empty (or missing) when the restore started.
    pub was_empty: bool,
}

impl Base {
    pub fn open(path: &Path) -> io::Result<Base> {
        std::fs::create_dir_all(path).map_err(|e| ctx(e, path))?;
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ctx(e, path))?;
        let was_empty = entries(&fd).map_err(|e| ctx(e, path))?.is_empty();
        Ok(Base {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
            was_empty,
        })
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Open an existing directory entry of `parent` without following a link.
pub fn open_dir(parent: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())
}

/// The error an `O_DIRECTORY|O_NOFOLLOW` open gives for an entry that is not a directory.
pub fn not_dir(e: Errno) -> bool {
    e == Errno::NOTDIR || e == Errno::LOOP
}

/// A directory's entries (not `.` and `..`) with their types as the directory reports them.
pub fn entries(dir: &OwnedFd) -> io::Result<Vec<(Vec<u8>, FileType)>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push((n.to_vec(), e.file_type()));
        }
    }
    Ok(out)
}

/// How [`DirCache::open`] treats missing or non-directory components.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Missing: `Ok(None)`; not a directory: the error.
    Existing,
    /// Missing: created (mode 0777 less the umask, like `mkdir -p`); not a directory: an
    /// error, or with `replace` removed and created.
    Create { replace: bool },
}

/// The directory handles along the current path, per base, reused while the tree stays
/// below them (the tree is in walk order, so most lookups descend one level or none).
pub struct DirCache<'a> {
    bases: &'a [Base],
    base: usize,
    stack: Vec<(Vec<u8>, Arc<OwnedFd>)>,
    /// Directories [`Walk::Create`] made (their entries need an fsync at the end).
    pub created: Vec<(usize, TreePath)>,
}

/// A directory on the way was not a directory (a file, a link): its path.
pub struct NotADir(pub PathBuf);

impl<'a> DirCache<'a> {
    pub fn new(bases: &'a [Base]) -> DirCache<'a> {
        DirCache {
            bases,
            base: 0,
            stack: Vec::new(),
            created: Vec::new(),
        }
    }

    /// The handle of directory `rel` below base `base`.
    pub fn open(
        &mut self,
        base: usize,
        rel: &[Vec<u8>],
        walk: Walk,
    ) -> io::Result<Result<Option<Arc<OwnedFd>>, NotADir>> {
        if base != self.base {
            self.stack.clear();
            self.base = base;
        }
        let keep = self
            .stack
            .iter()
            .zip(rel)
            .take_while(|((n, _), c)| n == *c)
            .count();
        self.stack.truncate(keep);
        for i in keep..rel.len() {
            let name = &rel[i];
            let parent: BorrowedFd<'_> = match self.stack.last() {
                Some((_, fd)) => fd.as_fd(),
                None => self.bases[base].fd.as_fd(),
            };
            let here = || path::display(&self.bases[base].path, &rel[..=i]);
            let fd = match open_dir(parent, name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if walk == Walk::Existing => return Ok(Ok(None)),
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(parent, &name[..], Mode::from_raw_mode(0o777)) {
                        Ok(()) => self.created.push((base, rel[..=i].to_vec())),
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(ctx(e, &here())),
                    }
                    open_dir(parent, name).map_err(|e| ctx(e, &here()))?
                }
                Err(e) if not_dir(e) => match walk {
                    Walk::Create { replace: true } => {
                        remove_tree(parent, name).map_err(|e| ctx(e, &here()))?;
                        rustix::fs::mkdirat(parent, &name[..], Mode::from_raw_mode(0o777))
                            .map_err(|e| ctx(e, &here()))?;
                        self.created.push((base, rel[..=i].to_vec()));
                        open_dir(parent, name).map_err(|e| ctx(e, &here()))?
                    }
                    _ => return Ok(Err(NotADir(here()))),
                },
                Err(e) => return Err(ctx(e, &here())),
            };
            self.stack.push((name.clone(), Arc::new(fd)));
        }
        Ok(Ok(Some(match self.stack.last() {
            Some((_, fd)) => fd.clone(),
            None => self.bases[base].fd.clone(),
        })))
    }

    /// The parent handle of `dest` (created as needed), or an error naming the component
    /// that is not a directory.
    pub fn parent(&mut self, dest: &Dest, replace: bool) -> io::Result<Arc<OwnedFd>> {
        let (dir, _) = dest.split().unwrap_or((&[], b""));
        match self.open(dest.base, dir, Walk::Create { replace })? {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => unreachable!("Walk::Create creates"),
            Err(NotADir(p)) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a directory (restore with overwrite to replace it)",
                    p.display()
                ),
            )),
        }
    }

    pub fn path_of(&self, dest: &Dest) -> PathBuf {
        path::display(&self.bases[dest.base].path, &dest.rel)
    }
}

/// Remove `name` from `parent`, a directory with everything below it, never following a
/// link (a link is removed, not what it names).
pub fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let dir = match open_dir(parent, name) {
        Ok(d) => d,
        Err(e) if not_dir(e) => return Ok(rustix::fs::unlinkat(parent, name, AtFlags::empty())?),
        Err(e) => return Err(e.into()),
    };
    // Like `rm --one-file-system`, bind mounts included: a mount point (a bind mount of
    // /dev or of a host directory into a chroot being restored) is never emptied.
    if !same_mount(parent, dir.as_fd())? {
        return Err(io::Error::other(format!(
            "{} is a mount point: not removing it or anything below it",
            String::from_utf8_lossy(name)
        )));
    }
    for (n, _) in entries(&dir)? {
        remove_tree(dir.as_fd(), &n)?;
    }
    drop(dir);
    Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

/// Whether two open directories are in one mount: the same mount id (`statx`'s
/// `STATX_MNT_ID`, which also tells a bind mount of a directory of the same filesystem
/// apart), or, on kernels without it, the same device.
pub fn same_mount(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<bool> {
    use rustix::fs::{statx, StatxFlags};
    let id = |fd: BorrowedFd<'_>| -> io::Result<(Option<u64>, u64)> {
        let want = StatxFlags::MNT_ID | StatxFlags::BASIC_STATS;
        match statx(fd, c"", AtFlags::EMPTY_PATH, want) {
            Ok(x) => {
                let dev = rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor);
                let mnt = (x.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(x.stx_mnt_id);
                Ok((mnt, dev))
            }
            Err(Errno::NOSYS) => Ok((None, rustix::fs::fstat(fd)?.st_dev)),
            Err(e) => Err(e.into()),
        }
    };
    Ok(match (id(a)?, id(b)?) {
        ((Some(x), _), (Some(y), _)) => x == y,
        ((_, x), (_, y)) => x == y,
    })
}

/// `renameat(from, to)` in one directory, replacing a non-directory at `to`; a directory
/// there is removed first (only callers asked to overwrite use this).
pub fn rename_over(dir: BorrowedFd<'_>, from: &[u8], to: &[u8]) -> io::Result<()> {
    match rustix::fs::renameat(dir, from, dir, to) {
        Ok(()) => Ok(()),
        Err(Errno::ISDIR) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST) | Err(Errno::NOTDIR) => {
            remove_tree(dir, to)?;
            Ok(rustix::fs::renameat(dir, from, dir, to)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Make an entry with `make(name)` (which must create exclusively, failing with `EEXIST`),
/// then `finish(name)` on it. If `name` exists: an `AlreadyExists` error, or with
/// `overwrite` the entry is made and finished under a fresh staging name and renamed over
/// `name` (which replaces it whatever it is, a link included, without following it).
pub fn place(
    dir: BorrowedFd<'_>,
    name: &[u8],
    overwrite: bool,
    shown: &Path,
    make: &mut dyn FnMut(&[u8]) -> Result<(), Errno>,
    finish: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    match make(name) {
        Ok(()) => return finish(name).map_err(|e| ctx(e, shown)),
        Err(Errno::EXIST) if overwrite => {}
        Err(Errno::EXIST) => return Err(exists(shown)),
        Err(e) => return Err(ctx(e, shown)),
    }
    let tmp = make_staging(&mut *make).map_err(|e| ctx(e, shown))?;
    let r = finish(&tmp).and_then(|()| rename_over(dir, &tmp, name));
    if r.is_err() {
        let _ = rustix::fs::unlinkat(dir, &tmp[..], AtFlags::empty());
    }
    r.map_err(|e| ctx(e, shown))
}

/// `make` under a fresh staging name; retried if someone planted that name.
pub fn make_staging(make: &mut dyn FnMut(&[u8]) -> Result<(), Errno>) -> io::Result<Vec<u8>> {
    let mut last = Errno::EXIST;
    for _ in 0..16 {
        let tmp = path::staging_name();
        match make(&tmp) {
            Ok(()) => return Ok(tmp),
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.into())
}

pub fn exists(shown: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} already exists (created during this restore; restore with overwrite to replace it)",
            shown.display()
        ),
    )
}

/// A new, nameless regular file in `dir` (`O_TMPFILE`), or `None` if the filesystem cannot
/// make one.
pub fn tmpfile(dir: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match rustix::fs::openat(
        dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::OPNOTSUPP) | Err(Errno::ISDIR) | Err(Errno::INVAL) | Err(Errno::NOSYS) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A new regular file under a fresh staging name in `dir`, created exclusively.
pub fn staging_file(dir: BorrowedFd<'_>) -> io::Result<(OwnedFd, Vec<u8>)> {
    let mut fd = None;
    let name = make_staging(&mut |n| {
        fd = Some(rustix::fs::openat(
            dir,
            n,
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?);
        Ok(())
    })?;
    Ok((fd.ok_or_else(|| io::Error::other("staging file"))?, name))
}

/// Give the nameless file `fd` the name `name` in `dir`; `EEXIST` if it is taken.
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd works for everyone else.
    match rustix::fs::linkat(fd, "", dir, name, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT) | Err(Errno::PERM) => {}
        r => return r,
    }
    rustix::fs::linkat(CWD, proc_path(fd), dir, name, AtFlags::SYMLINK_FOLLOW)
}

fn proc_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Warnings of a restore (an attribute the filesystem or the user's privileges do not
/// allow): logged with the path, and counted.
pub struct Warn<'a>(pub &'a std::sync::atomic::AtomicU64);

impl Warn<'_> {
    pub fn warn(&self, path: &Path, what: std::fmt::Arguments<'_>) {
        tracing::warn!(path = %path.display(), "{what}");
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The mode to give an entry: the recorded one, mode 000 included, for entries backed up from
/// a file system (they carry a time or an owner); `None` for a stream's node, which has no
/// mode of its own (it keeps the 0600 it was created with).
fn recorded_mode(node: &Node) -> Option<Mode> {
    (node.mode != 0 || node.mtime.is_some() || node.uid.is_some())
        .then(|| Mode::from_raw_mode(node.mode & 0o7777))
}

fn owner(node: &Node) -> Option<(rustix::fs::Uid, rustix::fs::Gid)> {
    Some((
        rustix::fs::Uid::from_raw(node.uid?),
        rustix::fs::Gid::from_raw(node.gid?),
    ))
}

fn times(node: &Node) -> Option<Timestamps> {
    let t = node.mtime?;
    Some(Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: t.as_second(),
            tv_nsec: t.subsec_nanosecond().max(0) as _,
        },
    })
}

fn xattrs(node: &Node) -> impl Iterator<Item = (&str, Vec<u8>)> {
    use base64::Engine;
    // Values were checked when the tree was validated; one that fails here is skipped.
    node.xattrs.iter().filter_map(|x| {
        base64::engine::general_purpose::STANDARD
            .decode(&x.value)
            .ok()
            .map(|v| (x.name.as_str(), v))
    })
}

/// Metadata of a regular file or directory through its handle, in the order that keeps it:
/// owner (which clears setuid/setgid and capabilities), then mode, then extended attributes
/// (ACLs, `security.capability`), then times.
pub fn meta_fd(
    fd: BorrowedFd<'_>,
    node: &Node,
    is_root: bool,
    shown: &Path,
    w: &Warn,
) -> io::Result<()> {
    if is_root {
        if let Some((u, g)) = owner(node) {
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|e| ctx(e, shown))?;
        }
    }
    if let Some(mode) = recorded_mode(node) {
        rustix::fs::fchmod(fd, mode).map_err(|e| ctx(e, shown))?;
    }
    for (name, value) in xattrs(node) {
        if let Err(e) = rustix::fs::fsetxattr(fd, name, &value, XattrFlags::empty()) {
            w.warn(
                shown,
                format_args!("extended attribute {name} not restored: {e}"),
            );
        }
    }
    if let Some(t) = times(node) {
        rustix::fs::futimens(fd, &t).map_err(|e| ctx(e, shown))?;
    }
    Ok(())
}

/// Metadata of a symlink or special file `name` in `dir`, never following a link: owner and
/// times with `AT_SYMLINK_NOFOLLOW`; mode and extended attributes through an `O_PATH`
/// handle of the entry itself (via `/proc/self/fd`, as there is no `*at` form for them).
pub fn meta_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    node: &Node,
    is_link: bool,
    is_root: bool,
    shown: &Path,
    w: &Warn,
) -> io::Result<()> {
    if is_root {
        if let Some((u, g)) = owner(node) {
            rustix::fs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)?;
        }
    }
    let wants_mode = !is_link && recorded_mode(node).is_some();
    if wants_mode || !node.xattrs.is_empty() {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let p = proc_path(fd.as_fd());
        if wants_mode {
            rustix::fs::chmodat(
                CWD,
                &p,
                Mode::from_raw_mode(node.mode & 0o7777),
                AtFlags::empty(),
            )?;
        }
        for (xname, value) in xattrs(node) {
            if let Err(e) = rustix::fs::setxattr(&p, xname, &value, XattrFlags::empty()) {
                w.warn(
                    shown,
                    format_args!("extended attribute {xname} not restored: {e}"),
                );
            }
        }
    }
    if let Some(t) = times(node) {
        rustix::fs::utimensat(dir, name, &t, AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(())
}

/// Block size for holes: a run of zeros this long, at a multiple of it in the file, is
/// skipped (left a hole) instead of written.
pub const HOLE: usize = 4096;

/// Writes a file's data at increasing offsets, leaving aligned zero blocks as holes; the
/// length is set at the end ([`SparseWriter::finish`]).
pub struct SparseWriter {
    /// Bytes given so far (the file's length once finished).
    pub len: u64,
    /// The start of the last, incomplete block (aligned) and its bytes.
    carry_at: u64,
    carry: Vec<u8>,
}

fn is_zero(b: &[u8]) -> bool {
    let (chunks, rest) = b.split_at(b.len() - b.len() % 16);
    chunks
        .chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && rest.iter().all(|&x| x == 0)
}

impl SparseWriter {
    pub fn new() -> SparseWriter {
        SparseWriter {
            len: 0,
            carry_at: 0,
            carry: Vec::new(),
        }
    }

    pub fn write(&mut self, f: &std::fs::File, mut d: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.len += d.len() as u64;
        if !self.carry.is_empty() {
            let take = (HOLE - self.carry.len()).min(d.len());
            self.carry.extend_from_slice(&d[..take]);
            d = &d[take..];
            if self.carry.len() < HOLE {
                return Ok(());
            }
            if !is_zero(&self.carry) {
                f.write_all_at(&self.carry, self.carry_at)?;
            }
            self.carry_at += HOLE as u64;
            self.carry.clear();
        }
        // Whole blocks from `at`; runs of non-zero blocks in one write each.
        let at = self.carry_at;
        let whole = d.len() - d.len() % HOLE;
        let mut run: Option<usize> = None;
        for i in (0..whole).step_by(HOLE) {
            if is_zero(&d[i..i + HOLE]) {
                if let Some(s) = run.take() {
                    f.write_all_at(&d[s..i], at + s as u64)?;
                }
            } else {
                run.get_or_insert(i);
            }
        }
        if let Some(s) = run {
            f.write_all_at(&d[s..whole], at + s as u64)?;
        }
        self.carry_at = at + whole as u64;
        self.carry.extend_from_slice(&d[whole..]);
        Ok(())
    }

    /// Write the last partial block (unless zero) and set the length.
    pub fn finish(&mut self, f: &std::fs::File) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if !self.carry.is_empty() && !is_zero(&self.carry) {
            f.write_all_at(&self.carry, self.carry_at)?;
        }
        self.carry.clear();
        rustix::fs::ftruncate(f, self.len)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_writer_writes_exactly_and_leaves_holes() {
        let d = tempfile::tempdir().unwrap();
        let mut data = vec![7u8; 100];
        data.extend(vec![0u8; 3 * HOLE + 50]);
        data.extend(vec![9u8; 5000]);
        data.extend(vec![0u8; 2 * HOLE + 1]);
        // Cut at every awkward place, including mid-block and at block ends.
        for cuts in [
            vec![],
            vec![1],
            vec![100, 4096, 4097, 12000],
            vec![4095, 8192, 8193],
        ] {
            let p = d.path().join("f");
            let f = std::fs::File::create(&p).unwrap();
            let mut w = SparseWriter::new();
            let mut last = 0;
            for c in cuts.iter().chain(std::iter::once(&data.len())) {
                w.write(&f, &data[last..*c]).unwrap();
                last = *c;
            }
            w.finish(&f).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), data, "{cuts:?}");
        }
    }
}
