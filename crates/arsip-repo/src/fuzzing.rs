//! Fuzzing support, **not API**: fixed test keys and encoders that wrap arbitrary plaintext in
//! validly sealed and signed objects, so that the fuzz targets in `fuzz/` (repository root)
//! reach the parsers that run *after* authentication, and the reader steps of `repo.rs`,
//! `read.rs` and `wal.rs` composed as those call them. Hidden from the documentation; it may
//! change or vanish with any commit, and nothing outside `fuzz/` and this crate's tests may
//! use it.
//!
//! Why sealing fuzzed plaintext is the right model: every object a reader authenticates is
//! sealed to the repository's *public* key and signed by a writer. An agent holds a writer key
//! and the public key, so a compromised agent can produce validly sealed and signed packs,
//! indexes, manifests, tree streams and WAL objects with any plaintext it likes; readers with
//! the master secret then parse that plaintext. Config and writer records need the root key,
//! which an attacker does not have, but the parsers still must not misbehave on them.

use crate::crypto::{self, Key, RepoSecret, WriterKey};
use crate::error::{RepoError, Result};
use crate::format::{self, ChunkId, IndexEntry, IndexPack, ObjectType, WriterId, HEADER_LEN};
use crate::keys;
use crate::snapshot::Manifest;
use crate::wal;

/// The keys of a fixed test repository (master secret `[0x42; 32]`).
pub struct TestKeys {
    pub master: Key,
    pub secret: RepoSecret,
    pub root: WriterKey,
    pub public: [u8; 32],
    pub id_key: Key,
}

impl TestKeys {
    pub fn fixed() -> TestKeys {
        let master = Key([0x42; 32]);
        let secret = RepoSecret::from_master(&master);
        TestKeys {
            public: secret.public(),
            root: WriterKey::root(&master),
            id_key: keys::chunk_id_key(&master, 0),
            secret,
            master,
        }
    }
}

fn aad(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A pack whose sealed key opens under `k`, with the given sealed blobs (stored bytes,
/// chunk id, flags) and an arbitrary table *plaintext*, sealed as a writer would seal it.
/// Returns the pack bytes, its key and the offset of each blob.
pub fn seal_pack(
    k: &TestKeys,
    key_id: u32,
    blobs: &[(ChunkId, &[u8], u8)],
    table: &[u8],
) -> (Vec<u8>, Key, Vec<u32>) {
    let h = format::header(ObjectType::Pack, key_id);
    let key = Key([0x17; 32]);
    let mut out = h.to_vec();
    out.extend_from_slice(&crypto::seal_key(&k.public, &key, &aad(&[&h, b"pack"])));
    let mut offsets = Vec::new();
    for (id, stored, flags) in blobs {
        offsets.push(out.len() as u32);
        crypto::seal_into(&key, stored, &format::blob_aad(&h, id, *flags), &mut out);
    }
    let sealed = crypto::seal(&key, table, &aad(&[&h, b"pack-table"]));
    out.extend_from_slice(&sealed);
    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    out.extend_from_slice(format::PACK_TRAILER_MAGIC);
    (out, key, offsets)
}

/// An index object with arbitrary counts, chunk-id bytes and location *plaintext*, sealed to
/// `k` and signed by `signer` exactly as `format::encode_index` seals and signs.
pub fn seal_index(
    k: &TestKeys,
    signer: &WriterKey,
    writer: &WriterId,
    n_packs: u32,
    n_chunks: u32,
    ids: &[u8],
    locations: &[u8],
) -> Vec<u8> {
    let h = format::header(ObjectType::Index, 0);
    let mut out = h.to_vec();
    out.extend_from_slice(writer);
    out.extend_from_slice(&n_packs.to_le_bytes());
    out.extend_from_slice(&n_chunks.to_le_bytes());
    let counts = out[HEADER_LEN..].to_vec();
    out.extend_from_slice(ids);
    let ids_hash = blake3::hash(ids);
    let key = Key([0x18; 32]);
    out.extend_from_slice(&crypto::seal_key(
        &k.public,
        &key,
        &aad(&[&h, writer, b"index"]),
    ));
    out.extend_from_slice(&crypto::seal(
        &key,
        locations,
        &aad(&[&h, &counts, ids_hash.as_bytes()]),
    ));
    let sig = signer.sign(&out);
    out.extend_from_slice(&sig);
    out
}

/// What a full-key reader does with an index object once its name matched its hash
/// (`Repository::add_index_object` with the root writer's key): parse the public section,
/// verify the signature, open the location section.
pub fn open_index(k: &TestKeys, bytes: &[u8]) -> Result<(Vec<IndexPack>, Vec<IndexEntry>)> {
    let name = "index/fuzz";
    let p = format::parse_index(name, bytes)?;
    if p.writer != format::ROOT_WRITER {
        return Err(RepoError::corrupt(name, "unknown writer"));
    }
    crypto::verify(&k.root.verify_key(), p.signed, p.signature)?;
    format::open_index_locations(name, bytes, &p, &k.secret)
}

/// What a full-key reader does with a manifest object once its name matched its hash
/// (`Repository::open_manifest` with the root writer's key).
pub fn open_manifest(k: &TestKeys, raw: &[u8]) -> Result<Manifest> {
    let name = "snapshots/fuzz";
    let (writer, signed, sig) = format::sealed_doc_writer(name, raw, ObjectType::Snapshot)?;
    if writer != format::ROOT_WRITER {
        return Err(RepoError::corrupt(name, "unknown writer"));
    }
    crypto::verify(&k.root.verify_key(), signed, sig)?;
    let body = format::open_sealed_doc(name, raw, ObjectType::Snapshot, &k.secret)?;
    serde_json::from_slice(&body).map_err(|e| RepoError::corrupt(name, e.to_string()))
}

/// A WAL object with an arbitrary public part (`raw_len`, content hash) and an arbitrary
/// body (the bytes that should be a zstd frame), sealed and signed as `wal::encode` does.
pub fn seal_wal(k: &TestKeys, name: &str, raw_len: u64, hash: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let h = format::header(ObjectType::Wal, 0);
    let writer = format::ROOT_WRITER;
    let mut out = h.to_vec();
    out.extend_from_slice(&writer);
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(hash);
    let key = Key([0x19; 32]);
    out.extend_from_slice(&crypto::seal_key(
        &k.public,
        &key,
        &aad(&[&h, &writer, b"wal", name.as_bytes()]),
    ));
    out.extend_from_slice(&crypto::seal(
        &key,
        body,
        &aad(&[&out[..wal::PUBLIC_LEN], name.as_bytes()]),
    ));
    let sig = k.root.sign(&wal::signed_digest(&out));
    out.extend_from_slice(&sig);
    out
}

/// What `Repository::wal_get` does with the bytes of a WAL object written by the root writer.
pub fn open_wal(k: &TestKeys, name: &str, raw: &[u8]) -> Result<Vec<u8>> {
    let p = wal::parse_public(name, raw)?;
    if raw.len() < wal::PUBLIC_LEN + crypto::SIGNATURE_LEN {
        return Err(RepoError::corrupt(name, "WAL object too short"));
    }
    if p.writer != format::ROOT_WRITER {
        return Err(RepoError::corrupt(name, "unknown writer"));
    }
    let (signed, sig) = raw.split_at(raw.len() - crypto::SIGNATURE_LEN);
    crypto::verify(&k.root.verify_key(), &wal::signed_digest(signed), sig)?;
    wal::open(name, raw, &k.secret, &k.id_key)
}
