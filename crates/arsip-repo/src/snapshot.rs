//! Snapshot manifests and the tree stream they point to.
//!
//! A manifest is a small sealed, signed JSON document (`snapshots/<id>`): what was backed up
//! (kind, source, host, tags, times, sizes, facts) and the chunk ids of its *tree stream*.
//! The tree stream is itself stored as ordinary chunks, so a manifest stays small whatever
//! the number of files, and unchanged trees deduplicate. The tree stream is JSON lines: one
//! [`Node`] line per entry, followed for regular files by `{"chunks":[…]}` lines of at most
//! [`CHUNKS_PER_LINE`] hex chunk ids each, in file order.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::format::ChunkId;

pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
pub const CHUNKS_PER_LINE: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    /// `files`, `stdin`, later `pg-logical`, `pg-physical`, `bucket`, …
    pub kind: String,
    /// What was backed up, e.g. the paths, the stream name or the database.
    pub source: String,
    pub host: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub time: jiff::Timestamp,
    pub end_time: jiff::Timestamp,
    /// Bytes read from the source.
    pub logical_bytes: u64,
    /// Plaintext bytes of chunks this snapshot added to the repository.
    pub added_bytes: u64,
    /// Bytes this snapshot added to storage (packs, after compression and encryption).
    pub stored_bytes: u64,
    pub files: u64,
    /// Free-form facts recorded at backup time (row counts, LSNs, …) for drills to compare.
    #[serde(default)]
    pub facts: BTreeMap<String, serde_json::Value>,
    /// Chunk ids (hex) of the tree stream, in order.
    pub tree: Vec<String>,
    pub tree_bytes: u64,
    /// The writer session that committed it (FORMAT.md §17); absent in manifests written
    /// before sessions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The newest audit record when the snapshot was committed (FORMAT.md §18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<crate::audit::AuditAnchor>,
}

impl Manifest {
    pub fn tree_ids(&self) -> Result<Vec<ChunkId>> {
        self.tree.iter().map(|h| parse_chunk_id(h)).collect()
    }
}

pub fn parse_chunk_id(h: &str) -> Result<ChunkId> {
    hex::decode(h)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| RepoError::Invalid(format!("bad chunk id {h:?}")))
}

/// A snapshot as listed: its id (hex BLAKE3 of the manifest object), writer and manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub id: String,
    pub writer: String,
    /// When the store accepted the manifest (its clock, not the writer's), if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<jiff::Timestamp>,
    #[serde(flatten)]
    pub manifest: Manifest,
}

/// How far a writer's clock may run ahead of the store's before its claimed time is cut
/// back to the store's (FORMAT.md §7.2).
pub const CLOCK_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_secs(300);

impl Snapshot {
    pub fn short_id(&self) -> &str {
        &self.id[..8]
    }

    /// The snapshot's time for ordering (`latest`): the writer's claimed start time, but
    /// never later than the store's acceptance of the manifest plus [`CLOCK_SKEW`]. A
    /// writer cannot date a snapshot into the future to make it the newest.
    pub fn effective_time(&self) -> jiff::Timestamp {
        match self.stored.and_then(|t| t.checked_add(CLOCK_SKEW).ok()) {
            Some(bound) => self.manifest.time.min(bound),
            None => self.manifest.time,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    #[default]
    File,
    Dir,
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device (`rdev` holds its number).
    #[serde(rename = "chardev")]
    CharDevice,
    /// A block device (`rdev` holds its number).
    #[serde(rename = "blockdev")]
    BlockDevice,
}

/// One extended attribute of a node (POSIX ACLs are the `system.posix_acl_*` ones).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Xattr {
    /// The attribute's name (`user.x`, `security.capability`, …).
    pub name: String,
    /// Its value, base64 (standard alphabet, padded).
    pub value: String,
}

/// One entry of a tree stream (docs/FORMAT.md §7.3 specifies every member byte for byte).
/// Paths are relative, `/`-separated, never empty; readers MUST treat them as untrusted (see
/// `restore`). Members are serialised in declaration order (`path` first: readers tell node
/// lines from chunks lines by it); optional ones are omitted when absent, and readers ignore
/// members they do not know.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// The path; a lossy display rendering when `path_raw` is present.
    pub path: String,
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// `st_mode & 0o7777`: permission bits with setuid, setgid and sticky.
    #[serde(default)]
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<jiff::Timestamp>,
    /// Files: bytes of content (a later hard link records the inode's size, without
    /// chunks). Other types: 0.
    #[serde(default)]
    pub size: u64,
    /// Symlinks: the target; a lossy display rendering when `target_raw` is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The path's bytes, base64, when they are not UTF-8 (Linux names are bytes); `path`
    /// then holds a lossy rendering for display only. See [`Node::path_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_raw: Option<String>,
    /// The symlink target's bytes, base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_raw: Option<String>,
    /// Device number (`st_rdev`, Linux's 64-bit encoding) of a character or block device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Hard links: regular files of one snapshot with the same group number (≥ 1) are one
    /// inode. The first of them in tree order carries the data; the later ones carry no
    /// chunks (but the inode's `size`) and are restored as links to the first. A group may
    /// have one member (its other links were outside the backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<u64>,
    /// Extended attributes, POSIX ACLs (`system.posix_acl_*`) and file capabilities
    /// (`security.capability`) included, in bytewise name order. Names that are not UTF-8
    /// are not recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// A regular file of `size` bytes that exists only in the repository (a stream, a dump,
    /// a label), mode 0600.
    pub fn stream_file(path: impl Into<String>, size: u64, mtime: jiff::Timestamp) -> Node {
        Node {
            path: path.into(),
            node_type: NodeType::File,
            mode: 0o600,
            mtime: Some(mtime),
            size,
            ..Default::default()
        }
    }

    /// The path as bytes: `path_raw` decoded when present, else `path`.
    pub fn path_bytes(&self) -> Result<Vec<u8>> {
        raw_or(&self.path, self.path_raw.as_deref(), "path")
    }

    /// Set the path from bytes: UTF-8 goes to `path`; anything else to `path_raw`, with a
    /// lossy `path` for display.
    pub fn set_path_bytes(&mut self, bytes: &[u8]) {
        (self.path, self.path_raw) = split_raw(bytes);
    }

    /// The symlink target as bytes, if this node has one.
    pub fn target_bytes(&self) -> Result<Option<Vec<u8>>> {
        match (&self.target, &self.target_raw) {
            (None, None) => Ok(None),
            (t, raw) => raw_or(t.as_deref().unwrap_or(""), raw.as_deref(), "target").map(Some),
        }
    }

    /// Set the symlink target from bytes (see [`Node::set_path_bytes`]).
    pub fn set_target_bytes(&mut self, bytes: &[u8]) {
        let (t, raw) = split_raw(bytes);
        self.target = Some(t);
        self.target_raw = raw;
    }
}

fn raw_or(text: &str, raw: Option<&str>, what: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    match raw {
        None => Ok(text.as_bytes().to_vec()),
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| {
                RepoError::corrupt("tree stream", format!("{what}_raw is not base64: {e}"))
            }),
    }
}

fn split_raw(bytes: &[u8]) -> (String, Option<String>) {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

#[derive(Serialize, Deserialize)]
struct ChunksLine {
    chunks: Vec<String>,
}

/// Writes a tree stream to any `Write` (a spool file during backup).
pub struct TreeWriter<W: Write> {
    out: W,
}

impl<W: Write> TreeWriter<W> {
    pub fn new(out: W) -> Self {
        TreeWriter { out }
    }

    pub fn node(&mut self, node: &Node, chunks: &[ChunkId]) -> Result<()> {
        serde_json::to_writer(&mut self.out, node)
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        self.out.write_all(b"\n")?;
        for group in chunks.chunks(CHUNKS_PER_LINE) {
            let line = ChunksLine {
                chunks: group.iter().map(hex::encode).collect(),
            };
            serde_json::to_writer(&mut self.out, &line)
                .map_err(|e| RepoError::Invalid(e.to_string()))?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads a tree stream: yields each node with its chunk ids.
pub struct TreeReader<R: BufRead> {
    input: R,
    pending: Option<Node>,
    line: String,
}

impl<R: BufRead> TreeReader<R> {
    pub fn new(input: R) -> Self {
        TreeReader {
            input,
            pending: None,
            line: String::new(),
        }
    }

    fn read_line(&mut self) -> Result<bool> {
        self.line.clear();
        Ok(self.input.read_line(&mut self.line)? > 0)
    }

    /// The next node and its chunks. A file's chunk list is collected in memory; a file of
    /// 1 TiB at 1 MiB chunks is 1 M ids (32 MiB), which bounds it.
    pub fn next_node(&mut self) -> Result<Option<(Node, Vec<ChunkId>)>> {
        let node = match self.pending.take() {
            Some(n) => n,
            None => {
                if !self.read_line()? {
                    return Ok(None);
                }
                serde_json::from_str(&self.line)
                    .map_err(|e| RepoError::corrupt("tree stream", e.to_string()))?
            }
        };
        let mut chunks = Vec::new();
        while self.read_line()? {
            if self.line.starts_with("{\"chunks\"") {
                let c: ChunksLine = serde_json::from_str(&self.line)
                    .map_err(|e| RepoError::corrupt("tree stream", e.to_string()))?;
                for h in &c.chunks {
                    chunks.push(
                        parse_chunk_id(h)
                            .map_err(|e| RepoError::corrupt("tree stream", e.to_string()))?,
                    );
                }
            } else {
                self.pending = Some(
                    serde_json::from_str(&self.line)
                        .map_err(|e| RepoError::corrupt("tree stream", e.to_string()))?,
                );
                break;
            }
        }
        Ok(Some((node, chunks)))
    }
}

/// Which snapshot a user means: `latest`, a full id, or a unique prefix of one.
pub fn select<'a>(snaps: &'a [Snapshot], spec: &str) -> Result<&'a Snapshot> {
    if spec == "latest" {
        return snaps
            .iter()
            .max_by_key(|s| s.effective_time())
            .ok_or_else(|| {
                RepoError::NotFound("the repository has no snapshots (matching the filters)".into())
            });
    }
    let matches: Vec<&Snapshot> = snaps.iter().filter(|s| s.id.starts_with(spec)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(RepoError::NotFound(format!(
            "no snapshot {spec:?} in this repository"
        ))),
        many => Err(RepoError::Invalid(format!(
            "snapshot prefix {spec:?} is ambiguous ({} matches); give more characters",
            many.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_roundtrip() {
        let mut w = TreeWriter::new(Vec::new());
        let f = Node {
            path: "a/b".into(),
            node_type: NodeType::File,
            mode: 0o644,
            mtime: None,
            size: 3,
            ..Default::default()
        };
        let d = Node {
            path: "a".into(),
            node_type: NodeType::Dir,
            ..f.clone()
        };
        let many: Vec<ChunkId> = (0..600u32)
            .map(|i| {
                let mut c = [0; 32];
                c[..4].copy_from_slice(&i.to_le_bytes());
                c
            })
            .collect();
        w.node(&d, &[]).unwrap();
        w.node(&f, &many).unwrap();
        w.node(&d, &[]).unwrap();
        let bytes = w.into_inner();
        let mut r = TreeReader::new(&bytes[..]);
        assert_eq!(r.next_node().unwrap().unwrap(), (d.clone(), vec![]));
        assert_eq!(r.next_node().unwrap().unwrap(), (f, many));
        assert_eq!(r.next_node().unwrap().unwrap(), (d, vec![]));
        assert!(r.next_node().unwrap().is_none());
    }

    #[test]
    fn non_utf8_paths_round_trip_as_bytes() {
        let mut n = Node::default();
        n.set_path_bytes(b"dir/caf\xe9");
        assert_eq!(n.path_bytes().unwrap(), b"dir/caf\xe9");
        assert!(n.path_raw.is_some());
        n.set_path_bytes("dir/café".as_bytes());
        assert_eq!((n.path.as_str(), n.path_raw.as_deref()), ("dir/café", None));
        n.set_target_bytes(b"\xff/x");
        assert_eq!(n.target_bytes().unwrap().unwrap(), b"\xff/x");
    }
}
