//! One filesystem entry's metadata as a tree [`Node`]: [`Meta`] (the fields of `struct stat`
//! a backup keeps) and the entry's extended attributes, POSIX ACLs included.

use std::os::fd::BorrowedFd;
use std::path::Path;

use arsip_repo::{Node, NodeType, Xattr};
use base64::Engine;
use rustix::fs::FileType;
use rustix::io::Errno;

/// What a backup keeps of `struct stat`, with the fields it compares to notice changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

impl Meta {
    // The field types of `Stat` differ between architectures; `as` keeps one conversion.
    #[allow(clippy::unnecessary_cast)]
    pub fn from_stat(st: &rustix::fs::Stat) -> Meta {
        Meta {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            rdev: st.st_rdev as u64,
            size: st.st_size.max(0) as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as u32),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as u32),
        }
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode as rustix::fs::RawMode)
    }

    /// The node for this entry at tree path `rel` (bytes), without target, chunks or xattrs.
    /// `mode` keeps the permission bits with setuid, setgid and sticky (`& 0o7777`).
    pub fn node(&self, rel: &[u8], node_type: NodeType) -> Node {
        let mut n = Node {
            node_type,
            mode: self.mode & 0o7777,
            mtime: jiff::Timestamp::new(self.mtime.0, self.mtime.1 as i32).ok(),
            size: if node_type == NodeType::File {
                self.size
            } else {
                0
            },
            uid: Some(self.uid),
            gid: Some(self.gid),
            rdev: matches!(node_type, NodeType::CharDevice | NodeType::BlockDevice)
                .then_some(self.rdev),
            ..Default::default()
        };
        n.set_path_bytes(rel);
        n
    }
}

/// Where to read an entry's extended attributes from: an open descriptor (files and
/// directories, which the backup opened anyway) or a path, not followed (symlinks, FIFOs and
/// devices, which it never opens).
#[derive(Clone, Copy)]
pub enum XattrSource<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a Path),
}

/// The entry's extended attributes in name order, and what could not be kept: names that
/// are not UTF-8 (the tree records names as strings) and read errors. A filesystem without
/// xattr support has none. An attribute removed between listing and reading is left out.
pub fn xattrs(src: XattrSource<'_>) -> (Vec<Xattr>, Vec<String>) {
    let mut problems = Vec::new();
    let list = match list(src) {
        Ok(l) => l,
        Err(e) if unsupported(e) => return (Vec::new(), problems),
        Err(e) => {
            problems.push(format!("cannot list extended attributes: {e}"));
            return (Vec::new(), problems);
        }
    };
    let mut out = Vec::new();
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(text) = std::str::from_utf8(name) else {
            problems.push(format!(
                "extended attribute {:?} skipped: its name is not UTF-8",
                String::from_utf8_lossy(name)
            ));
            continue;
        };
        match get(src, name) {
            Ok(value) => out.push(Xattr {
                name: text.to_string(),
                value: base64::engine::general_purpose::STANDARD.encode(value),
            }),
            Err(Errno::NODATA) => {}
            Err(e) => problems.push(format!("cannot read extended attribute {text}: {e}")),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, problems)
}

fn unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// Size query, then read; retried when the list grew in between (ERANGE).
fn list(src: XattrSource<'_>) -> Result<Vec<u8>, Errno> {
    for _ in 0..8 {
        let n = match src {
            XattrSource::Fd(fd) => rustix::fs::flistxattr_query(fd)?,
            XattrSource::Path(p) => rustix::fs::llistxattr_query(p)?,
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        let r = match src {
            XattrSource::Fd(fd) => rustix::fs::flistxattr(fd, &mut buf[..]),
            XattrSource::Path(p) => rustix::fs::llistxattr(p, &mut buf[..]),
        };
        match r {
            Ok(m) => {
                buf.truncate(m);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

fn get(src: XattrSource<'_>, name: &[u8]) -> Result<Vec<u8>, Errno> {
    for _ in 0..8 {
        let n = match src {
            XattrSource::Fd(fd) => rustix::fs::fgetxattr_query(fd, name)?,
            XattrSource::Path(p) => rustix::fs::lgetxattr_query(p, name)?,
        };
        let mut buf = vec![0u8; n];
        let r = match src {
            XattrSource::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut buf[..]),
            XattrSource::Path(p) => rustix::fs::lgetxattr(p, name, &mut buf[..]),
        };
        match r {
            Ok(m) => {
                buf.truncate(m);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}
