//! Byte layouts of the binary objects of format v1 (packs, indexes, snapshots, WAL files):
//! the 16-byte object header, the pack layout and its table, and the index layout. Pure
//! encode/decode functions; no I/O. FORMAT.md is the specification; this is its code.

use crate::crypto::{self, Key, RepoSecret, SEALED_KEY_LEN, SIGNATURE_LEN};
use crate::error::{RepoError, Result};

pub const MAGIC: &[u8; 4] = b"ARSP";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 16;
pub const PACK_TRAILER_MAGIC: &[u8; 4] = b"PEND";
pub const WRITER_ID_LEN: usize = 16;
/// The root writer (any holder of the master secret) has the all-zero id.
pub const ROOT_WRITER: WriterId = [0; WRITER_ID_LEN];

pub type ChunkId = [u8; 32];
pub type WriterId = [u8; WRITER_ID_LEN];

/// Blob flag: the stored bytes are zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;

/// The largest chunk any writer cuts (the chunker's maximum `max`, FORMAT.md §10.1): readers
/// refuse a blob whose `raw_len` exceeds it before sizing anything by it (§10.2).
pub const MAX_CHUNK_LEN: u32 = fastcdc::v2020::MAXIMUM_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectType {
    Pack = 1,
    Index = 2,
    Snapshot = 3,
    Wal = 4,
}

/// `magic(4) | version(1) | type(1) | flags u16 LE | key id u32 LE | reserved u32 = 0`.
pub fn header(ty: ObjectType, key_id: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = FORMAT_VERSION;
    h[5] = ty as u8;
    h[8..12].copy_from_slice(&key_id.to_le_bytes());
    h
}

/// Validate a header; returns the key id.
pub fn parse_header(object: &str, bytes: &[u8], ty: ObjectType) -> Result<u32> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(RepoError::corrupt(object, "missing arsip object header"));
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(RepoError::Unsupported(format!(
            "{object} has format version {}, this arsip reads version {FORMAT_VERSION}",
            bytes[4]
        )));
    }
    if bytes[5] != ty as u8 {
        return Err(RepoError::corrupt(
            object,
            format!("object type {} where {:?} expected", bytes[5], ty),
        ));
    }
    if bytes[6..8] != [0, 0] || bytes[12..16] != [0; 4] {
        return Err(RepoError::Unsupported(format!(
            "{object} uses header flags this arsip does not know; upgrade arsip"
        )));
    }
    Ok(u32::from_le_bytes(bytes[8..12].try_into().unwrap()))
}

/// Associated data of one blob: the pack header, the chunk id and the blob flags.
pub fn blob_aad(header: &[u8; HEADER_LEN], id: &ChunkId, flags: u8) -> [u8; HEADER_LEN + 33] {
    let mut a = [0u8; HEADER_LEN + 33];
    a[..HEADER_LEN].copy_from_slice(header);
    a[HEADER_LEN..HEADER_LEN + 32].copy_from_slice(id);
    a[HEADER_LEN + 32] = flags;
    a
}

fn tagged_aad(header: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut a = header.to_vec();
    for p in parts {
        a.extend_from_slice(p);
    }
    a
}

/// Where a blob sits in a pack, as recorded in the pack table and in index entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: ChunkId,
    pub offset: u32,
    pub len: u32,
    pub raw_len: u32,
    pub flags: u8,
}

const PACK_TABLE_ENTRY: usize = 32 + 4 + 4 + 4 + 1;

/// Builds one pack in memory: `header | sealed pack key | blobs… | table | table_len | "PEND"`.
pub struct PackBuilder {
    header: [u8; HEADER_LEN],
    key: Key,
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl PackBuilder {
    pub fn new(repo_public: &[u8; 32], key_id: u32, capacity: usize) -> PackBuilder {
        let header = header(ObjectType::Pack, key_id);
        let key = Key::random();
        let sealed = crypto::seal_key(repo_public, &key, &tagged_aad(&header, &[b"pack"]));
        let mut buf = Vec::with_capacity(capacity + (capacity >> 4));
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&sealed);
        PackBuilder {
            header,
            key,
            buf,
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encrypt and append one (already compressed or raw) chunk.
    pub fn add(&mut self, id: ChunkId, stored: &[u8], raw_len: u32, flags: u8) {
        let start = self.buf.len();
        let aad = blob_aad(&self.header, &id, flags);
        crypto::seal_into(&self.key, stored, &aad, &mut self.buf);
        self.entries.push(BlobEntry {
            id,
            offset: start as u32,
            len: (self.buf.len() - start) as u32,
            raw_len,
            flags,
        });
    }

    /// Finish the pack: returns its bytes, its id (BLAKE3 of the bytes), key and entries.
    pub fn finish(mut self) -> FinishedPack {
        let mut table = Vec::with_capacity(4 + self.entries.len() * PACK_TABLE_ENTRY);
        table.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            table.extend_from_slice(&e.id);
            table.extend_from_slice(&e.offset.to_le_bytes());
            table.extend_from_slice(&e.len.to_le_bytes());
            table.extend_from_slice(&e.raw_len.to_le_bytes());
            table.push(e.flags);
        }
        let sealed = crypto::seal(
            &self.key,
            &table,
            &tagged_aad(&self.header, &[b"pack-table"]),
        );
        self.buf.extend_from_slice(&sealed);
        self.buf
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(PACK_TRAILER_MAGIC);
        let id = *blake3::hash(&self.buf).as_bytes();
        FinishedPack {
            id,
            key: self.key,
            bytes: self.buf,
            entries: self.entries,
        }
    }
}

pub struct FinishedPack {
    pub id: [u8; 32],
    pub key: Key,
    pub bytes: Vec<u8>,
    pub entries: Vec<BlobEntry>,
}

pub fn pack_key_name(id: &[u8; 32]) -> String {
    let h = hex::encode(id);
    format!("data/{}/{}", &h[..2], h)
}

/// Unseal a pack's key from its first `HEADER_LEN + SEALED_KEY_LEN` bytes.
pub fn open_pack_key(object: &str, head: &[u8], secret: &RepoSecret) -> Result<Key> {
    parse_header(object, head, ObjectType::Pack)?;
    if head.len() < HEADER_LEN + SEALED_KEY_LEN {
        return Err(RepoError::corrupt(object, "pack shorter than its header"));
    }
    secret
        .unseal_key(
            &head[HEADER_LEN..HEADER_LEN + SEALED_KEY_LEN],
            &tagged_aad(&head[..HEADER_LEN], &[b"pack"]),
        )
        .map_err(|e| RepoError::corrupt(object, e.to_string()))
}

/// Parse a whole pack's table (used by `check --read-data` and index rebuilds).
pub fn read_pack_table(
    object: &str,
    pack: &[u8],
    secret: &RepoSecret,
) -> Result<(Key, Vec<BlobEntry>)> {
    let key = open_pack_key(object, pack, secret)?;
    let n = pack.len();
    if n < HEADER_LEN + SEALED_KEY_LEN + 8 || &pack[n - 4..] != PACK_TRAILER_MAGIC {
        return Err(RepoError::corrupt(
            object,
            "pack trailer missing (truncated pack?)",
        ));
    }
    let tlen = u32::from_le_bytes(pack[n - 8..n - 4].try_into().unwrap()) as usize;
    if tlen > n - 8 - HEADER_LEN - SEALED_KEY_LEN {
        return Err(RepoError::corrupt(object, "pack table length out of range"));
    }
    let table = crypto::open(
        &key,
        &pack[n - 8 - tlen..n - 8],
        &tagged_aad(&pack[..HEADER_LEN], &[b"pack-table"]),
    )
    .map_err(|e| RepoError::corrupt(object, format!("pack table: {e}")))?;
    let count = u32::from_le_bytes(
        table
            .get(..4)
            .ok_or_else(|| RepoError::corrupt(object, "empty table"))?
            .try_into()
            .unwrap(),
    ) as usize;
    if table.len() != 4 + count * PACK_TABLE_ENTRY {
        return Err(RepoError::corrupt(object, "pack table size mismatch"));
    }
    let entries = table[4..]
        .chunks_exact(PACK_TABLE_ENTRY)
        .map(|c| BlobEntry {
            id: c[..32].try_into().unwrap(),
            offset: u32::from_le_bytes(c[32..36].try_into().unwrap()),
            len: u32::from_le_bytes(c[36..40].try_into().unwrap()),
            raw_len: u32::from_le_bytes(c[40..44].try_into().unwrap()),
            flags: c[44],
        })
        .collect();
    Ok((key, entries))
}

/// Decrypt, decompress and verify one blob read from a pack.
pub fn open_blob(
    object: &str,
    pack_key_id: u32,
    key: &Key,
    e: &BlobEntry,
    ct: &[u8],
    id_key: &Key,
) -> Result<Vec<u8>> {
    // `raw_len` comes from an index entry or a pack table, which any writer (an agent too)
    // writes: it must not size the decompression buffer before it is known to be sane.
    if e.raw_len > MAX_CHUNK_LEN {
        return Err(RepoError::corrupt(
            object,
            format!(
                "blob {}: raw_len {} exceeds the largest chunk ({MAX_CHUNK_LEN})",
                hex::encode(&e.id[..8]),
                e.raw_len
            ),
        ));
    }
    let h = header(ObjectType::Pack, pack_key_id);
    let stored = crypto::open(key, ct, &blob_aad(&h, &e.id, e.flags)).map_err(|_| {
        RepoError::corrupt(
            object,
            format!("blob {} fails authentication", hex::encode(&e.id[..8])),
        )
    })?;
    let data = if e.flags & FLAG_ZSTD != 0 {
        decompress(&stored, e.raw_len as usize).map_err(|err| {
            RepoError::corrupt(
                object,
                format!("blob {}: zstd: {err}", hex::encode(&e.id[..8])),
            )
        })?
    } else {
        stored
    };
    if data.len() != e.raw_len as usize || crypto::chunk_id(id_key, &data) != e.id {
        return Err(RepoError::corrupt(
            object,
            format!(
                "blob {} does not match its chunk id",
                hex::encode(&e.id[..8])
            ),
        ));
    }
    Ok(data)
}

/// zstd-decompress into at most `capacity` bytes with this thread's decompression context:
/// a fresh context per blob costs more than decompressing a 16 KiB block.
fn decompress(src: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    DCTX.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = match cell.as_mut() {
            Some(d) => d,
            None => cell.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(src, capacity)
    })
}

/// One pack as listed in an index: its id, key and size.
#[derive(Clone)]
pub struct IndexPack {
    pub id: [u8; 32],
    pub key: Key,
    pub size: u64,
    pub key_id: u32,
}

/// One chunk location in an index: which pack (position in the index's pack list) and blob.
#[derive(Debug, Clone, Copy)]
pub struct IndexEntry {
    pub pack: u32,
    pub blob: BlobEntry,
}

const LOC_PACK: usize = 32 + 32 + 8 + 4;
const LOC_ENTRY: usize = 4 + 4 + 4 + 4 + 1;

/// Encode an index object:
/// `header | writer id | n_packs u32 | n_chunks u32 | chunk ids (n_chunks×32) | sealed key |
///  sealed location section | signature`.
pub fn encode_index(
    writer: &WriterId,
    signer: &crypto::WriterKey,
    repo_public: &[u8; 32],
    packs: &[IndexPack],
    entries: &[IndexEntry],
) -> Vec<u8> {
    let h = header(ObjectType::Index, 0);
    let mut out = Vec::with_capacity(HEADER_LEN + 24 + entries.len() * 60 + packs.len() * 80 + 256);
    out.extend_from_slice(&h);
    out.extend_from_slice(writer);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let ids_start = out.len();
    for e in entries {
        out.extend_from_slice(&e.blob.id);
    }
    let ids_hash = blake3::hash(&out[ids_start..]);
    let counts = out[HEADER_LEN..ids_start].to_vec();
    let key = Key::random();
    out.extend_from_slice(&crypto::seal_key(
        repo_public,
        &key,
        &tagged_aad(&h, &[writer, b"index"]),
    ));
    let mut loc = Vec::with_capacity(packs.len() * LOC_PACK + entries.len() * LOC_ENTRY);
    for p in packs {
        loc.extend_from_slice(&p.id);
        loc.extend_from_slice(&p.key.0);
        loc.extend_from_slice(&p.size.to_le_bytes());
        loc.extend_from_slice(&p.key_id.to_le_bytes());
    }
    for e in entries {
        loc.extend_from_slice(&e.pack.to_le_bytes());
        loc.extend_from_slice(&e.blob.offset.to_le_bytes());
        loc.extend_from_slice(&e.blob.len.to_le_bytes());
        loc.extend_from_slice(&e.blob.raw_len.to_le_bytes());
        loc.push(e.blob.flags);
    }
    out.extend_from_slice(&crypto::seal(
        &key,
        &loc,
        &tagged_aad(&h, &[&counts, ids_hash.as_bytes()]),
    ));
    let sig = signer.sign(&out);
    out.extend_from_slice(&sig);
    out
}

/// The parts of an index object everyone with read access sees.
pub struct IndexPublic<'a> {
    pub writer: WriterId,
    pub n_packs: usize,
    pub ids: &'a [u8],
    pub sealed_key: &'a [u8],
    pub location: &'a [u8],
    pub signed: &'a [u8],
    pub signature: &'a [u8],
}

impl IndexPublic<'_> {
    pub fn chunk_ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.ids.chunks_exact(32).map(|c| c.try_into().unwrap())
    }
    pub fn len(&self) -> usize {
        self.ids.len() / 32
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

pub fn parse_index<'a>(object: &str, b: &'a [u8]) -> Result<IndexPublic<'a>> {
    parse_header(object, b, ObjectType::Index)?;
    let fixed = HEADER_LEN + WRITER_ID_LEN + 8;
    if b.len() < fixed + SEALED_KEY_LEN + SIGNATURE_LEN {
        return Err(RepoError::corrupt(object, "index too short"));
    }
    let writer: WriterId = b[HEADER_LEN..HEADER_LEN + WRITER_ID_LEN]
        .try_into()
        .unwrap();
    let n_packs = u32::from_le_bytes(b[fixed - 8..fixed - 4].try_into().unwrap()) as usize;
    let n_chunks = u32::from_le_bytes(b[fixed - 4..fixed].try_into().unwrap()) as usize;
    let ids_end = fixed
        .checked_add(
            n_chunks
                .checked_mul(32)
                .ok_or_else(|| RepoError::corrupt(object, "count overflow"))?,
        )
        .filter(|&e| e + SEALED_KEY_LEN + SIGNATURE_LEN <= b.len())
        .ok_or_else(|| RepoError::corrupt(object, "index chunk count out of range"))?;
    let sig_start = b.len() - SIGNATURE_LEN;
    Ok(IndexPublic {
        writer,
        n_packs,
        ids: &b[fixed..ids_end],
        sealed_key: &b[ids_end..ids_end + SEALED_KEY_LEN],
        location: &b[ids_end + SEALED_KEY_LEN..sig_start],
        signed: &b[..sig_start],
        signature: &b[sig_start..],
    })
}

/// Decrypt an index's location section (needs the master secret).
pub fn open_index_locations(
    object: &str,
    b: &[u8],
    p: &IndexPublic<'_>,
    secret: &RepoSecret,
) -> Result<(Vec<IndexPack>, Vec<IndexEntry>)> {
    let h = &b[..HEADER_LEN];
    let key = secret
        .unseal_key(p.sealed_key, &tagged_aad(h, &[&p.writer, b"index"]))
        .map_err(|e| RepoError::corrupt(object, e.to_string()))?;
    let counts = &b[HEADER_LEN..HEADER_LEN + WRITER_ID_LEN + 8];
    let ids_hash = blake3::hash(p.ids);
    let loc = crypto::open(
        &key,
        p.location,
        &tagged_aad(h, &[counts, ids_hash.as_bytes()]),
    )
    .map_err(|e| RepoError::corrupt(object, format!("location section: {e}")))?;
    let n = p.len();
    if loc.len() != p.n_packs * LOC_PACK + n * LOC_ENTRY {
        return Err(RepoError::corrupt(object, "location section size mismatch"));
    }
    let (pk, en) = loc.split_at(p.n_packs * LOC_PACK);
    let packs = pk
        .chunks_exact(LOC_PACK)
        .map(|c| IndexPack {
            id: c[..32].try_into().unwrap(),
            key: Key(c[32..64].try_into().unwrap()),
            size: u64::from_le_bytes(c[64..72].try_into().unwrap()),
            key_id: u32::from_le_bytes(c[72..76].try_into().unwrap()),
        })
        .collect::<Vec<_>>();
    let mut entries = Vec::with_capacity(n);
    for (c, id) in en.chunks_exact(LOC_ENTRY).zip(p.chunk_ids()) {
        let pack = u32::from_le_bytes(c[..4].try_into().unwrap());
        if pack as usize >= packs.len() {
            return Err(RepoError::corrupt(
                object,
                "entry names a pack outside the index",
            ));
        }
        entries.push(IndexEntry {
            pack,
            blob: BlobEntry {
                id,
                offset: u32::from_le_bytes(c[4..8].try_into().unwrap()),
                len: u32::from_le_bytes(c[8..12].try_into().unwrap()),
                raw_len: u32::from_le_bytes(c[12..16].try_into().unwrap()),
                flags: c[16],
            },
        });
    }
    Ok((packs, entries))
}

/// Encode a sealed, signed document (snapshot manifests, WAL files):
/// `header | writer id | sealed key | nonce‖ciphertext‖tag | signature`.
pub fn encode_sealed_doc(
    ty: ObjectType,
    key_id: u32,
    writer: &WriterId,
    signer: &crypto::WriterKey,
    repo_public: &[u8; 32],
    body: &[u8],
) -> Vec<u8> {
    let h = header(ty, key_id);
    let key = Key::random();
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(&h);
    out.extend_from_slice(writer);
    out.extend_from_slice(&crypto::seal_key(
        repo_public,
        &key,
        &tagged_aad(&h, &[writer, b"doc"]),
    ));
    out.extend_from_slice(&crypto::seal(&key, body, &tagged_aad(&h, &[writer])));
    let sig = signer.sign(&out);
    out.extend_from_slice(&sig);
    out
}

/// The smallest sealed document: header, writer, sealed key, an empty box, signature.
const SEALED_DOC_MIN_LEN: usize = HEADER_LEN
    + WRITER_ID_LEN
    + SEALED_KEY_LEN
    + crypto::NONCE_LEN
    + crypto::TAG_LEN
    + SIGNATURE_LEN;

/// The header and the length every reader of a sealed document checks before slicing it.
fn check_sealed_doc(object: &str, b: &[u8], ty: ObjectType) -> Result<()> {
    parse_header(object, b, ty)?;
    if b.len() < SEALED_DOC_MIN_LEN {
        return Err(RepoError::corrupt(object, "object too short"));
    }
    Ok(())
}

/// The writer of a sealed document and the bytes its signature covers.
pub fn sealed_doc_writer<'a>(
    object: &str,
    b: &'a [u8],
    ty: ObjectType,
) -> Result<(WriterId, &'a [u8], &'a [u8])> {
    check_sealed_doc(object, b, ty)?;
    let writer = b[HEADER_LEN..HEADER_LEN + WRITER_ID_LEN]
        .try_into()
        .unwrap();
    let s = b.len() - SIGNATURE_LEN;
    Ok((writer, &b[..s], &b[s..]))
}

/// Decrypt a sealed document whose signature the caller has verified.
pub fn open_sealed_doc(
    object: &str,
    b: &[u8],
    ty: ObjectType,
    secret: &RepoSecret,
) -> Result<Vec<u8>> {
    check_sealed_doc(object, b, ty)?;
    let h = &b[..HEADER_LEN];
    let writer = &b[HEADER_LEN..HEADER_LEN + WRITER_ID_LEN];
    let ks = HEADER_LEN + WRITER_ID_LEN;
    let key = secret
        .unseal_key(
            &b[ks..ks + SEALED_KEY_LEN],
            &tagged_aad(h, &[writer, b"doc"]),
        )
        .map_err(|e| RepoError::corrupt(object, e.to_string()))?;
    crypto::open(
        &key,
        &b[ks + SEALED_KEY_LEN..b.len() - SIGNATURE_LEN],
        &tagged_aad(h, &[writer]),
    )
    .map_err(|e| RepoError::corrupt(object, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip_and_tamper() {
        let master = Key::random();
        let rs = RepoSecret::from_master(&master);
        let idk = Key::random();
        let mut pb = PackBuilder::new(&rs.public(), 0, 1024);
        let data = b"some chunk data".to_vec();
        let id = crypto::chunk_id(&idk, &data);
        pb.add(id, &data, data.len() as u32, 0);
        let fp = pb.finish();
        let (key, entries) = read_pack_table("p", &fp.bytes, &rs).unwrap();
        assert_eq!(entries, fp.entries);
        let e = entries[0];
        let ct = &fp.bytes[e.offset as usize..(e.offset + e.len) as usize];
        assert_eq!(open_blob("p", 0, &key, &e, ct, &idk).unwrap(), data);
        let mut bad = ct.to_vec();
        bad[40] ^= 0x10;
        assert!(open_blob("p", 0, &key, &e, &bad, &idk).is_err());
        // a blob moved to another key id does not authenticate
        assert!(open_blob("p", 7, &key, &e, ct, &idk).is_err());
    }

    #[test]
    fn index_roundtrip() {
        let master = Key::random();
        let rs = RepoSecret::from_master(&master);
        let signer = crypto::WriterKey::root(&master);
        let packs = vec![IndexPack {
            id: [1; 32],
            key: Key::random(),
            size: 99,
            key_id: 0,
        }];
        let entries = vec![IndexEntry {
            pack: 0,
            blob: BlobEntry {
                id: [5; 32],
                offset: 96,
                len: 40,
                raw_len: 20,
                flags: 1,
            },
        }];
        let b = encode_index(&ROOT_WRITER, &signer, &rs.public(), &packs, &entries);
        let p = parse_index("i", &b).unwrap();
        crypto::verify(&signer.verify_key(), p.signed, p.signature).unwrap();
        assert_eq!(p.chunk_ids().collect::<Vec<_>>(), vec![[5; 32]]);
        let (pk, en) = open_index_locations("i", &b, &p, &rs).unwrap();
        assert_eq!(pk[0].size, 99);
        assert_eq!(en[0].blob, entries[0].blob);
    }
}
