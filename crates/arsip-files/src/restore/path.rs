//! Tree paths as untrusted input: [`TreePath`], the validated components of a node's path,
//! and where each lands ([`Dest`]: under the target or under a [`Graft`](super::Graft)).
//! Also the restore's staging names ([`is_restore_staging`]), which no snapshot may hold.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// Names starting with this are the restore's own (staging names); a snapshot never holds
/// one, and the files backup skips them.
pub const STAGING_PREFIX: &[u8] = b".arsip-restore-";

/// Whether `name` (one path component) is a restore's staging name: a temporary entry of a
/// restore (killed, or in progress) that never holds data a backup should take. Restores
/// refuse snapshot paths with such a component, so the two never collide.
pub fn is_restore_staging(name: &[u8]) -> bool {
    name.starts_with(STAGING_PREFIX)
}

/// A new staging name, unique in this process and unpredictable enough that another local
/// user cannot plant it in advance (they could only make the exclusive create fail and be
/// retried; safety never depends on the name being unknown).
pub fn staging_name() -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static TOKEN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // RandomState is seeded from the OS's randomness.
    let token = *TOKEN.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::process::id())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = STAGING_PREFIX.to_vec();
    name.extend(format!("{token:016x}-{n:x}").bytes());
    name
}

/// The components of a validated tree path: each non-empty, without `/` or NUL, neither `.`
/// nor `..`, and not a staging name.
pub type TreePath = Vec<Vec<u8>>;

/// Split and validate a tree path; the error says why it is refused.
pub fn parse(bytes: &[u8]) -> Result<TreePath, &'static str> {
    if bytes.is_empty() {
        return Err("empty path");
    }
    if bytes[0] == b'/' {
        return Err("absolute path");
    }
    if bytes.contains(&0) {
        return Err("NUL byte in the path");
    }
    let mut out = Vec::new();
    for c in bytes.split(|&b| b == b'/') {
        match c {
            b"" => return Err("empty component"),
            b"." => return Err("`.` component"),
            b".." => return Err("`..` component"),
            c if is_restore_staging(c) => return Err("a restore's staging name"),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Where a node lands: `rel` below base directory `base` (0 is the target, `i + 1` is graft
/// `i`). An empty `rel` is the base itself (a graft's prefix node).
pub struct Dest {
    pub base: usize,
    pub rel: TreePath,
}

impl Dest {
    /// The parent's components and the entry's name; `None` for a base itself.
    pub fn split(&self) -> Option<(&[Vec<u8>], &[u8])> {
        let (name, dir) = self.rel.split_last()?;
        Some((dir, name))
    }
}

/// The grafts' prefixes, parsed once.
pub struct Grafts {
    prefixes: Vec<TreePath>,
}

impl Grafts {
    pub fn new(grafts: &[super::Graft]) -> Result<Grafts, String> {
        let prefixes = grafts
            .iter()
            .map(|g| {
                parse(g.prefix.as_bytes()).map_err(|why| format!("graft {:?}: {why}", g.prefix))
            })
            .collect::<Result<_, _>>()?;
        Ok(Grafts { prefixes })
    }

    /// Where tree path `p` lands: under the graft whose prefix holds it (whole components
    /// only), else under the target.
    pub fn resolve(&self, p: &[Vec<u8>]) -> Dest {
        for (i, prefix) in self.prefixes.iter().enumerate() {
            if p.len() >= prefix.len() && p[..prefix.len()] == prefix[..] {
                return Dest {
                    base: i + 1,
                    rel: p[prefix.len()..].to_vec(),
                };
            }
        }
        Dest {
            base: 0,
            rel: p.to_vec(),
        }
    }

    /// The tree path of base `base` (empty for the target).
    pub fn base_path(&self, base: usize) -> TreePath {
        match base {
            0 => vec![],
            i => self.prefixes[i - 1].clone(),
        }
    }
}

/// `base` joined with components, for messages.
pub fn display(base: &Path, rel: &[Vec<u8>]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut p = base.to_path_buf();
    for c in rel {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    p
}

/// A 128-bit digest of a tree path, for the set of paths `delete` keeps.
pub fn digest(p: &[Vec<u8>]) -> u128 {
    let mut h = blake3::Hasher::new();
    for c in p {
        h.update(&(c.len() as u64).to_le_bytes());
        h.update(c);
    }
    u128::from_le_bytes(h.finalize().as_bytes()[..16].try_into().unwrap_or([0; 16]))
}

/// A stable hash of where an entry lands, to send every file of one name to one finisher
/// (so that, with `overwrite`, the last of duplicate names wins deterministically).
pub fn route(base: usize, rel: &[Vec<u8>]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    base.hash(&mut h);
    rel.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_unsafe_shape() {
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"a/../../x",
            b"..",
            b"a/..",
            b".",
            b"a/./b",
            b"a//b",
            b"a/",
            b"a\0b",
            b".arsip-restore-x",
            b"a/.arsip-restore-1/b",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse(b"a/b\xff/c").unwrap(),
            vec![b"a".to_vec(), b"b\xff".to_vec(), b"c".to_vec()]
        );
        assert!(parse(b".f.arsip-tmp").is_ok());
        assert!(is_restore_staging(&staging_name()));
        assert_ne!(staging_name(), staging_name());
    }

    #[test]
    fn grafts_take_whole_components_only() {
        let g = Grafts::new(&[super::super::Graft {
            prefix: "pg_tblspc/16384".into(),
            dir: "/ts".into(),
        }])
        .unwrap();
        let at = |p: &str| {
            let d = g.resolve(&parse(p.as_bytes()).unwrap());
            (d.base, d.rel.len())
        };
        assert_eq!(at("pg_tblspc/16384"), (1, 0));
        assert_eq!(at("pg_tblspc/16384/PG_15/5/1259"), (1, 3));
        assert_eq!(at("pg_tblspc/163840/x"), (0, 3));
        assert_eq!(at("pg_tblspc"), (0, 1));
    }
}
