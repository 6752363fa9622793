//! [`Walker`]: one depth-first traversal from `/` that writes the tree of a files backup —
//! the backup roots' ancestors, then each root's contents — so that every path appears once,
//! parents before children, in byte order of names, however the arguments overlap.
//!
//! Every entry is reached relative to a directory descriptor the walk opened itself, never
//! following a symlink (`openat`/`statat` with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`), so an
//! entry swapped for a link during the backup is never followed out of the tree. Problems with
//! one entry (unreadable, vanished, changed while read) are [`Warning`]s: the entry is skipped
//! or flagged and the walk goes on. Only repository-side errors end it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use arsip_repo::BackupSession;
use arsip_repo::Result;
use arsip_repo::{NodeType, TreeWriter};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::exclude::{Never, Patterns, TMPFS_MAGIC};
use super::node::{xattrs, Meta, XattrSource};
use super::{Action, Report};

/// What the walk leaves out and where it stops.
pub struct Rules {
    pub patterns: Patterns,
    pub never: Never,
    pub one_file_system: bool,
    pub include_virtual: bool,
    /// Device numbers of devtmpfs mounts (statfs cannot tell them from tmpfs).
    pub devtmpfs: Vec<u64>,
}

/// One directory on the walk's stack: its descriptor and the names still to visit.
struct Frame {
    fd: OwnedFd,
    /// Absolute path, `/` for the root.
    abs: Vec<u8>,
    /// Tree path: `abs` without its leading `/` (empty for the root).
    rel: Vec<u8>,
    dev: u64,
    /// `st_dev` of the backup root this directory belongs to (`--one-file-system`).
    root_dev: u64,
    /// Whether this directory is backed up (all its entries) or only passed through on the
    /// way to backup roots below it (then `names` are the next components of those roots).
    full: bool,
    names: Vec<Vec<u8>>,
    next: usize,
}

pub struct Walker<'a> {
    session: &'a BackupSession,
    tree: &'a mut TreeWriter<tempfile::SpooledTempFile>,
    rules: &'a Rules,
    roots: BTreeSet<Vec<u8>>,
    /// For each strict ancestor of a root: the names of its children on the way to roots.
    towards: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    /// (st_dev, st_ino) of multiply-linked files already written → their hard link group.
    links: HashMap<(u64, u64), u64>,
    pub report: Report,
    pub files: u64,
    /// Whether `/proc/self/fd` can name entries relative to the walk's descriptors.
    proc_fd: bool,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() && p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn as_path(b: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(b))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl<'a> Walker<'a> {
    /// `roots`: absolute, physical paths (no symlink among their ancestors), sorted, unique.
    pub fn new(
        session: &'a BackupSession,
        tree: &'a mut TreeWriter<tempfile::SpooledTempFile>,
        rules: &'a Rules,
        roots: &[Vec<u8>],
    ) -> Walker<'a> {
        let mut towards: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for r in roots {
            let comps: Vec<&[u8]> = r.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
            let mut dir = b"/".to_vec();
            for c in comps {
                towards.entry(dir.clone()).or_default().insert(c.to_vec());
                dir = join(&dir, c);
            }
        }
        Walker {
            session,
            tree,
            rules,
            roots: roots.iter().cloned().collect(),
            towards,
            links: HashMap::new(),
            report: Report::default(),
            files: 0,
            proc_fd: Path::new("/proc/self/fd").is_dir(),
        }
    }

    fn warn(&mut self, abs: &[u8], action: Action, reason: impl Into<String>) {
        self.report.add(lossy(abs), action, reason.into());
    }

    pub fn run(&mut self) -> Result<()> {
        let fd = rustix::fs::open(
            "/",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("cannot open /: {e}"),
            )
        })?;
        let m = Meta::from_stat(&rustix::fs::fstat(&fd).map_err(|e| {
            std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("cannot stat /: {e}"),
            )
        })?);
        let full = self.roots.contains(b"/".as_slice());
        let names = if full {
            // The root directory itself has no node (a tree path is never empty).
            self.list(&fd, b"/")
        } else {
            self.towards_names(b"/")
        };
        let mut stack = vec![Frame {
            fd,
            abs: b"/".to_vec(),
            rel: Vec::new(),
            dev: m.dev,
            root_dev: m.dev,
            full,
            names,
            next: 0,
        }];
        while let Some(top) = stack.last_mut() {
            if top.next == top.names.len() {
                stack.pop();
                continue;
            }
            let name = std::mem::take(&mut top.names[top.next]);
            top.next += 1;
            let top = stack.last().expect("non-empty stack");
            if let Some(child) = self.visit(top, &name)? {
                stack.push(child);
            }
        }
        Ok(())
    }

    fn towards_names(&self, abs: &[u8]) -> Vec<Vec<u8>> {
        self.towards
            .get(abs)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A directory's entry names in byte order; on error, a warning and only the names that
    /// lead to backup roots below it.
    fn list(&mut self, fd: &OwnedFd, abs: &[u8]) -> Vec<Vec<u8>> {
        let read = || -> std::result::Result<Vec<Vec<u8>>, Errno> {
            let mut names = Vec::new();
            for e in rustix::fs::Dir::read_from(fd)? {
                let e = e?;
                let n = e.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            Ok(names)
        };
        match read() {
            Ok(mut names) => {
                #[cfg(test)]
                super::hooks::fire(super::hooks::Event::Listed(abs));
                names.sort();
                names
            }
            Err(e) => {
                self.warn(
                    abs,
                    Action::Incomplete,
                    format!("cannot list directory: {e}; its contents are not in the snapshot"),
                );
                self.towards_names(abs)
            }
        }
    }

    fn visit(&mut self, parent: &Frame, name: &[u8]) -> Result<Option<Frame>> {
        let abs = join(&parent.abs, name);
        if crate::is_restore_staging(name) {
            tracing::debug!(path = %lossy(&abs), "skipping a restore's staging entry");
            return Ok(None);
        }
        if self.rules.never.is(&abs) {
            tracing::info!(path = %lossy(&abs), "not backing up arsip's own repository, cache or spool");
            return Ok(None);
        }
        let is_root = self.roots.contains(&abs);
        let leads_to_root = self.towards.contains_key(&abs);
        let included = is_root || (parent.full && !self.rules.patterns.matches(&abs));
        if !included && !leads_to_root {
            return Ok(None);
        }
        let rel = join(&parent.rel, name);
        let st = match rustix::fs::statat(&parent.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Meta::from_stat(&st),
            Err(Errno::NOENT) => {
                self.warn(&abs, Action::Skipped, "vanished before it could be read");
                return Ok(None);
            }
            Err(e) => {
                self.warn(&abs, Action::Skipped, format!("cannot stat: {e}"));
                return Ok(None);
            }
        };
        let ft = st.file_type();
        if ft == FileType::Directory {
            return self.dir(parent, name, abs, rel, st, included, is_root);
        }
        if !included {
            // Only passed through on the way to a root, and no longer a directory.
            self.warn(
                &abs,
                Action::Skipped,
                "is no longer a directory; the paths below it given to back up were not backed up",
            );
            return Ok(None);
        }
        match ft {
            FileType::RegularFile => self.file(parent, name, &abs, &rel)?,
            FileType::Symlink => match rustix::fs::readlinkat(&parent.fd, name, Vec::new()) {
                Ok(target) => {
                    let mut node = st.node(&rel, NodeType::Symlink);
                    node.set_target_bytes(target.as_bytes());
                    let at = self.at(parent, name, &abs);
                    node.xattrs = self.xattrs(&abs, XattrSource::Path(&at));
                    node.hardlink = self.link_group(&st);
                    self.tree.node(&node, &[])?;
                }
                Err(Errno::NOENT) => {
                    self.warn(&abs, Action::Skipped, "vanished before it could be read")
                }
                Err(e) => self.warn(&abs, Action::Skipped, format!("cannot read link: {e}")),
            },
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                let t = match ft {
                    FileType::Fifo => NodeType::Fifo,
                    FileType::CharacterDevice => NodeType::CharDevice,
                    _ => NodeType::BlockDevice,
                };
                let mut node = st.node(&rel, t);
                let at = self.at(parent, name, &abs);
                node.xattrs = self.xattrs(&abs, XattrSource::Path(&at));
                node.hardlink = self.link_group(&st);
                self.tree.node(&node, &[])?;
            }
            FileType::Socket => {
                tracing::warn!(path = %lossy(&abs), "skipping a socket: sockets cannot be backed up");
            }
            _ => self.warn(&abs, Action::Skipped, "unknown file type"),
        }
        Ok(None)
    }

    /// The hard-link group of a symlink, FIFO or device with several names (every name is
    /// recorded in full; the restore makes the later ones links to the first), or `None`.
    fn link_group(&mut self, st: &Meta) -> Option<u64> {
        if st.nlink <= 1 {
            return None;
        }
        let next = self.links.len() as u64 + 1;
        Some(*self.links.entry((st.dev, st.ino)).or_insert(next))
    }

    /// A path naming entry `name` of `parent` for the path-based xattr calls (entries the
    /// walk does not open: symlinks, FIFOs, devices, unreadable directories), through the
    /// walk's own directory descriptor (`/proc/self/fd/N/name`), so that no ancestor swapped
    /// for a symlink since it was opened can redirect it; `abs` where /proc is not mounted.
    fn at(&self, parent: &Frame, name: &[u8], abs: &[u8]) -> PathBuf {
        if self.proc_fd {
            use std::os::fd::AsRawFd;
            Path::new(&format!("/proc/self/fd/{}", parent.fd.as_raw_fd())).join(as_path(name))
        } else {
            as_path(abs).to_path_buf()
        }
    }

    fn xattrs(&mut self, abs: &[u8], src: XattrSource<'_>) -> Vec<arsip_repo::Xattr> {
        let (x, problems) = xattrs(src);
        if !problems.is_empty() {
            self.warn(abs, Action::Incomplete, problems.join("; "));
        }
        x
    }

    #[allow(clippy::too_many_arguments)]
    fn dir(
        &mut self,
        parent: &Frame,
        name: &[u8],
        abs: Vec<u8>,
        rel: Vec<u8>,
        st: Meta,
        included: bool,
        is_root: bool,
    ) -> Result<Option<Frame>> {
        let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // O_PATH when the directory cannot be read: its children can still be reached (a
        // backup root below it), its listing and xattrs cannot.
        let (fd, readable) =
            match rustix::fs::openat(&parent.fd, name, flags | OFlags::RDONLY, Mode::empty()) {
                Ok(fd) => (fd, true),
                Err(Errno::NOENT) => {
                    self.warn(&abs, Action::Skipped, "vanished before it could be read");
                    return Ok(None);
                }
                Err(Errno::NOTDIR | Errno::LOOP) => {
                    self.warn(
                        &abs,
                        Action::Skipped,
                        "replaced while being read (no longer a directory)",
                    );
                    return Ok(None);
                }
                Err(e) => {
                    match rustix::fs::openat(&parent.fd, name, flags | OFlags::PATH, Mode::empty())
                    {
                        Ok(fd) => {
                            self.warn(
                        &abs,
                        Action::Incomplete,
                        format!("cannot open directory: {e}; its contents are not in the snapshot"),
                    );
                            (fd, false)
                        }
                        Err(_) => {
                            self.warn(&abs, Action::Skipped, format!("cannot open directory: {e}"));
                            return Ok(None);
                        }
                    }
                }
            };
        // What was opened is what is recorded (the name may have been replaced since statat).
        let m = match rustix::fs::fstat(&fd) {
            Ok(s) => Meta::from_stat(&s),
            Err(_) => st,
        };
        let root_dev = if is_root { m.dev } else { parent.root_dev };
        let mut stop = None;
        if included && !is_root && m.dev != parent.dev {
            if self.rules.one_file_system && m.dev != root_dev {
                stop = Some("another filesystem (--one-file-system)".to_string());
            } else if !self.rules.include_virtual {
                stop = self
                    .virtual_fs(&fd, m.dev)
                    .map(|t| format!("a virtual filesystem ({t})"));
            }
        }
        let mut node = m.node(&rel, NodeType::Dir);
        node.xattrs = if readable {
            self.xattrs(&abs, XattrSource::Fd(fd.as_fd()))
        } else {
            let at = self.at(parent, name, &abs);
            self.xattrs(&abs, XattrSource::Path(&at))
        };
        self.tree.node(&node, &[])?;
        let (full, names) = if let Some(why) = stop {
            tracing::info!(path = %lossy(&abs), "not descending into {why}; the mount point is recorded as an empty directory");
            (false, self.towards_names(&abs))
        } else if !included || !readable {
            (false, self.towards_names(&abs))
        } else {
            (true, self.list(&fd, &abs))
        };
        if names.is_empty() {
            return Ok(None);
        }
        Ok(Some(Frame {
            fd,
            abs,
            rel,
            dev: m.dev,
            root_dev,
            full,
            names,
            next: 0,
        }))
    }

    fn virtual_fs(&self, fd: &OwnedFd, dev: u64) -> Option<&'static str> {
        let sfs = rustix::fs::fstatfs(fd).ok()?;
        #[allow(clippy::unnecessary_cast)]
        let t = sfs.f_type as u64;
        if t == TMPFS_MAGIC && self.rules.devtmpfs.contains(&dev) {
            return Some("devtmpfs");
        }
        super::exclude::virtual_fs(t)
    }

    fn file(&mut self, parent: &Frame, name: &[u8], abs: &[u8], rel: &[u8]) -> Result<()> {
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&parent.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                self.warn(abs, Action::Skipped, "vanished before it could be read");
                return Ok(());
            }
            Err(Errno::LOOP) => {
                self.warn(
                    abs,
                    Action::Skipped,
                    "replaced by a symlink while being read",
                );
                return Ok(());
            }
            Err(e) => {
                self.warn(abs, Action::Skipped, format!("cannot open: {e}"));
                return Ok(());
            }
        };
        let before = match rustix::fs::fstat(&fd) {
            Ok(s) => Meta::from_stat(&s),
            Err(e) => {
                self.warn(abs, Action::Skipped, format!("cannot stat: {e}"));
                return Ok(());
            }
        };
        if before.file_type() != FileType::RegularFile {
            self.warn(
                abs,
                Action::Skipped,
                "replaced while being read (no longer a regular file)",
            );
            return Ok(());
        }
        let key = (before.dev, before.ino);
        let mut node = before.node(rel, NodeType::File);
        if before.nlink > 1 {
            if let Some(group) = self.links.get(&key) {
                // A later link of an inode already written: no chunks, restored as a link.
                node.hardlink = Some(*group);
                node.xattrs = self.xattrs(abs, XattrSource::Fd(fd.as_fd()));
                self.tree.node(&node, &[])?;
                self.files += 1;
                return Ok(());
            }
        }
        let file = std::fs::File::from(fd);
        let mut src = SourceReader {
            file: &file,
            abs,
            left: before.size,
            error: None,
        };
        let (ids, size) = match self.session.write_stream(&mut src) {
            Ok(r) => r,
            // The source failed, not the repository: skip the file, keep the backup going.
            // Chunks already sent stay unreferenced (prune removes them).
            Err(_) if src.error.is_some() => {
                let e = src.error.take().unwrap_or_default();
                self.warn(abs, Action::Skipped, format!("read error: {e}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let after = rustix::fs::fstat(&file).ok().map(|s| Meta::from_stat(&s));
        let changed = match after {
            Some(a) => a.size != before.size || a.mtime != before.mtime || a.ctime != before.ctime,
            None => true,
        } || size != before.size;
        if changed {
            let a = after.map(|a| a.size).unwrap_or(size);
            self.warn(
                abs,
                Action::Changed,
                format!(
                    "changed while it was read (size {} before, {} after, {size} bytes read); what was read is kept",
                    before.size, a
                ),
            );
        }
        node.size = size;
        node.xattrs = self.xattrs(abs, XattrSource::Fd(file.as_fd()));
        if before.nlink > 1 {
            let group = self.links.len() as u64 + 1;
            self.links.insert(key, group);
            node.hardlink = Some(group);
        }
        self.tree.node(&node, &ids)?;
        self.files += 1;
        Ok(())
    }
}

/// A source file read that remembers its own errors, so a failed `write_stream` can be told
/// apart: the file's fault (a warning) or the repository's (the backup fails).
/// A file's bytes up to the size it had when it was opened (`left`): a file that keeps
/// growing (a log being written) cannot keep the backup reading for ever; what was
/// appended meanwhile is left for the next backup and the file is flagged as changed.
struct SourceReader<'f> {
    file: &'f std::fs::File,
    abs: &'f [u8],
    left: u64,
    error: Option<String>,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(test)]
        if let Some(e) = super::hooks::fire(super::hooks::Event::Read(self.abs)) {
            self.error = Some(e.to_string());
            return Err(e);
        }
        #[cfg(not(test))]
        let _ = self.abs;
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        match (&*self.file).read(&mut buf[..want]) {
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.error = Some(e.to_string());
                Err(e)
            }
        }
    }
}
