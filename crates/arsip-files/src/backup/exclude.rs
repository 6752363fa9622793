//! [`Excludes`]: what a files backup leaves out — `--exclude` glob patterns, the paths arsip
//! must never back up (its own repository, cache and spool), restore staging names, and the
//! contents of virtual filesystems.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use arsip_repo::{RepoError, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Exclusion patterns, matched against an entry's absolute path (bytes; non-UTF-8 names
/// match like any other).
///
/// Semantics (restic's and tar's, without negation): `*`, `?` and `[…]` match within one
/// path component, `**` matches any number of components. A pattern that starts with `/` is
/// anchored at the filesystem root (`/var/cache`, `/home/*/.cache`); any other pattern
/// matches at any depth (`*.log` matches `/a/b/x.log`, `node_modules` every directory of
/// that name, `build/out` any `…/build/out`). A trailing `/` is ignored. An excluded
/// directory is recorded not at all, nor anything below it.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    set: Option<GlobSet>,
}

impl Patterns {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns> {
        if patterns.is_empty() {
            return Ok(Patterns { set: None });
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            let trimmed = p.trim_end_matches('/');
            if trimmed.is_empty() {
                return Err(RepoError::Invalid(format!(
                    "exclude pattern {p:?} would exclude everything"
                )));
            }
            // Matched against the path without its leading `/`.
            let glob = match trimmed.strip_prefix('/') {
                Some(anchored) => anchored.to_string(),
                None => format!("**/{trimmed}"),
            };
            let g = GlobBuilder::new(&glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| RepoError::Invalid(format!("exclude pattern {p:?}: {e}")))?;
            b.add(g);
        }
        let set = b
            .build()
            .map_err(|e| RepoError::Invalid(format!("exclude patterns: {e}")))?;
        Ok(Patterns { set: Some(set) })
    }

    /// Whether the entry at absolute path `abs` (bytes) is excluded.
    pub fn matches(&self, abs: &[u8]) -> bool {
        let Some(set) = &self.set else {
            return false;
        };
        let rel = abs.strip_prefix(b"/").unwrap_or(abs);
        set.is_match(Path::new(<std::ffi::OsStr as OsStrExt>::from_bytes(rel)))
    }
}

/// Read an exclude file: one pattern per line; blank lines and lines starting with `#`
/// (after leading whitespace) are ignored; surrounding whitespace is trimmed.
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RepoError::Invalid(format!("cannot read exclude file {}: {e}", path.display()))
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Paths never backed up whatever the arguments: arsip's own repository (when local), its
/// cache and spool. Resolved to physical paths once, so they match the walk's names; a path
/// that does not exist is dropped (nothing there to back up).
#[derive(Debug, Clone, Default)]
pub struct Never {
    paths: Vec<Vec<u8>>,
}

impl Never {
    pub fn new(paths: &[PathBuf]) -> Never {
        let paths = paths
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect();
        Never { paths }
    }

    /// Whether `abs` is one of these paths.
    pub fn is(&self, abs: &[u8]) -> bool {
        self.paths.iter().any(|p| p == abs)
    }

    /// The never-backed-up path that holds `abs` (itself or an ancestor), if any.
    pub fn holding(&self, abs: &[u8]) -> Option<&[u8]> {
        self.paths
            .iter()
            .find(|p| {
                abs == p.as_slice()
                    || p.as_slice() == b"/"
                    || (abs.starts_with(p) && abs.get(p.len()) == Some(&b'/'))
            })
            .map(|p| p.as_slice())
    }
}

/// Filesystems whose contents the kernel synthesises (process and device state, control
/// interfaces): a backup records their mount points as directories and does not descend
/// into them unless asked (`include_virtual`). By `statfs` `f_type`. tmpfs and ramfs are not
/// among them: they hold real files a user put there.
pub const VIRTUAL_FS: &[(u64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x2702_1997, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x7363_6673, "securityfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x6165_676c, "pstore"),
    (0xcafe_4a11, "bpf"),
    (0x6265_6570, "configfs"),
    (0x1980_0202, "mqueue"),
    (0x9584_58f6, "hugetlbfs"),
    (0x6573_5546, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
    (0xde5e_81e4, "efivarfs"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x6e73_6673, "nsfs"),
    (0x0187, "autofs"),
    (0x6767_6767, "rpc_pipefs"),
];

/// `devtmpfs` reports tmpfs's magic (0x01021994); it is told apart by its mount source,
/// which needs /proc. A backup checks this set of device numbers, read once from
/// `/proc/self/mountinfo`, for tmpfs mounts whose filesystem type is `devtmpfs`.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// The virtual filesystem type name for `f_type`, if it is one.
pub fn virtual_fs(f_type: u64) -> Option<&'static str> {
    VIRTUAL_FS
        .iter()
        .find(|(m, _)| *m == f_type)
        .map(|(_, n)| *n)
}

/// Device numbers (`st_dev`) of mounted devtmpfs filesystems, from `/proc/self/mountinfo`
/// (field 3 is `major:minor`, the field after ` - ` the type). Empty if it cannot be read.
pub fn devtmpfs_devices() -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split(' ').next()? != "devtmpfs" {
                return None;
            }
            let (maj, min) = pre.split(' ').nth(2)?.split_once(':')?;
            Some(rustix::fs::makedev(maj.parse().ok()?, min.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_semantics() {
        let p = Patterns::new(&[
            "*.log",
            "/var/cache",
            "node_modules/",
            "build/out",
            "/home/*/.cache",
            "**/tmp/**",
        ])
        .unwrap();
        for yes in [
            "/a/b/x.log",
            "/x.log",
            "/var/cache",
            "/srv/app/node_modules",
            "/node_modules",
            "/p/build/out",
            "/home/ann/.cache",
            "/a/tmp/b",
        ] {
            assert!(p.matches(yes.as_bytes()), "{yes} should match");
        }
        for no in [
            "/a/b/x.logs",
            "/srv/var/cache",
            "/var/cache2",
            "/p/build/outx",
            "/home/ann/sub/.cache",
            "/a/b",
        ] {
            assert!(!p.matches(no.as_bytes()), "{no} should not match");
        }
        // Non-UTF-8 names match as bytes.
        assert!(p.matches(b"/d/caf\xe9.log"));
        assert!(Patterns::new(&["/"]).is_err());
        assert!(Patterns::new(&["a[b"]).is_err());
    }

    #[test]
    fn never_holds_descendants() {
        let d = tempfile::tempdir().unwrap();
        let n = Never::new(&[d.path().to_path_buf(), "/nonexistent/x".into()]);
        let c = std::fs::canonicalize(d.path()).unwrap();
        let b = c.as_os_str().as_bytes().to_vec();
        assert!(n.is(&b));
        let mut child = b.clone();
        child.extend_from_slice(b"/x");
        assert!(n.holding(&child).is_some());
        let mut sibling = b.clone();
        sibling.extend_from_slice(b"x");
        assert!(n.holding(&sibling).is_none());
    }
}
