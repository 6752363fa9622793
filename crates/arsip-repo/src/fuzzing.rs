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
use crate::snapshot::Manifest;

/// The internals the fuzz targets call (not API: the crate root is).
pub mod keys {
    pub use crate::keys::*;
}
/// See [`keys`].
pub mod index {
    pub use crate::index::*;
}
/// See [`keys`].
pub mod snapshot {
    pub use crate::snapshot::*;
}
/// See [`keys`].
pub mod wal {
    pub use crate::wal::*;
}

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

/// Records the largest single allocation of the current thread, so that tests can prove a
/// length field read from an object does not size an allocation before it is checked.
#[cfg(test)]
mod alloc_probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
    }

    struct Probe;

    // SAFETY: every call is forwarded unchanged to the system allocator; `note` only touches a
    // const-initialised thread-local `Cell`, which never allocates.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            note(l.size());
            System.alloc(l)
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            note(l.size());
            System.alloc_zeroed(l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            note(new);
            System.realloc(p, l, new)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            System.dealloc(p, l)
        }
    }

    #[global_allocator]
    static GLOBAL: Probe = Probe;

    /// Runs `f`; returns its result and the largest allocation this thread made meanwhile.
    pub fn largest<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|c| c.set(0));
        let r = f();
        (r, LARGEST.with(|c| c.get()))
    }
}

/// Regression tests for what the fuzz targets found, one per class (see fuzz/README.md).
#[cfg(test)]
mod regressions {
    use super::*;
    use crate::format::BlobEntry;
    use crate::keys::{KeySlot, Secret};

    /// `pack` target: a blob's `raw_len` (from an index entry or a pack table, which an agent
    /// writes) sized the decompression buffer before anything checked it, so one entry could
    /// make a reader allocate up to 4 GiB. Every `raw_len` above the largest chunk a writer
    /// cuts is refused before any allocation of that size, compressed or not.
    #[test]
    fn blob_raw_len_never_sizes_an_allocation_beyond_the_largest_chunk() {
        let k = TestKeys::fixed();
        let plain = vec![7u8; 4096];
        let id = crypto::chunk_id(&k.id_key, &plain);
        let zstd = zstd::bulk::compress(&plain, 1).unwrap();
        for (stored, flags) in [(&zstd, format::FLAG_ZSTD), (&plain, 0)] {
            let (pack, key, offsets) = seal_pack(&k, 0, &[(id, stored, flags)], &[]);
            let len = stored.len() as u32 + 40;
            let ct = &pack[offsets[0] as usize..(offsets[0] + len) as usize];
            for raw_len in [
                format::MAX_CHUNK_LEN + 1,
                1 << 28,
                1 << 30,
                1 << 31,
                u32::MAX - 1,
                u32::MAX,
            ] {
                let e = BlobEntry {
                    id,
                    offset: offsets[0],
                    len,
                    raw_len,
                    flags,
                };
                let (r, largest) =
                    alloc_probe::largest(|| format::open_blob("p", 0, &key, &e, ct, &k.id_key));
                assert!(r.is_err(), "raw_len {raw_len} accepted");
                assert!(
                    largest <= format::MAX_CHUNK_LEN as usize,
                    "raw_len {raw_len}: allocated {largest} bytes"
                );
            }
            // The honest entry still opens.
            let e = BlobEntry {
                id,
                offset: offsets[0],
                len,
                raw_len: plain.len() as u32,
                flags,
            };
            assert_eq!(
                format::open_blob("p", 0, &key, &e, ct, &k.id_key).unwrap(),
                plain
            );
        }
    }

    /// `key_slot` target: a planted slot that parsed and passed the KDF limits but carried
    /// KDF parameters Argon2 refuses, or a salt or wrapped key that is not hex, made opening
    /// with a password fail with an error instead of skipping the slot (password opening
    /// tries every slot, so one such object locked every password out). Every such slot is
    /// now refused by `KeySlot::parse`, which readers use to skip slots.
    #[test]
    fn a_slot_readers_accept_never_fails_password_opening() {
        let repo_id = "00".repeat(32);
        let good = serde_json::json!({
            "version": 1, "id": "0000000000000000", "kind": "password",
            "created": "2026-01-01T00:00:00Z", "host": "h", "label": "planted",
            "kdf": {"m_kib": 64, "t": 1, "p": 1, "salt": "00".repeat(16)},
            "wrapped": "00".repeat(72),
        });
        let mut hostile = Vec::new();
        for (field, value) in [
            ("salt", serde_json::json!("zz")),
            ("salt", serde_json::json!("0")),
            ("salt", serde_json::json!("")),
            ("salt", serde_json::json!("0011")),
            ("m_kib", serde_json::json!(0)),
            ("m_kib", serde_json::json!(7)),
            ("t", serde_json::json!(0)),
            ("p", serde_json::json!(0)),
            ("p", serde_json::json!(16)),
        ] {
            let mut s = good.clone();
            s["kdf"][field] = value;
            hostile.push(s);
        }
        for wrapped in ["zz", "0", "xyz0"] {
            let mut s = good.clone();
            s["wrapped"] = serde_json::json!(wrapped);
            hostile.push(s);
        }
        for s in hostile {
            let bytes = serde_json::to_vec(&s).unwrap();
            if let Ok(slot) = KeySlot::parse("keys/0000000000000000", &bytes) {
                let r = slot.open(&repo_id, &Secret::Password(b"pw"));
                assert!(r.is_ok(), "{s}: accepted, then opening fails: {r:?}");
            }
        }
        // The untouched slot is accepted and simply does not open with this password.
        let slot = KeySlot::parse("keys/0000000000000000", &serde_json::to_vec(&good).unwrap());
        assert!(matches!(
            slot.unwrap().open(&repo_id, &Secret::Password(b"pw")),
            Ok(None)
        ));
    }

    /// `signed_doc` target: a signed document whose body held a number that is not a 64-bit
    /// integer (`5555…2555555`, 42 digits, parses as an `f64`) failed its own signature: the
    /// canonical form recomputed from the stored digits differed from the one signed, as
    /// `serde_json` parses such numbers only approximately. FORMAT.md §8.1 has no canonical
    /// form for them (v1 documents contain none), so verifiers now refuse them for what they
    /// are, and every document without one verifies.
    #[test]
    fn signed_documents_verify_unless_they_hold_a_float() {
        let k = TestKeys::fixed();
        let vk = k.root.verify_key();
        let floats = [
            "555555555555555555555555555555555525555555",
            "{\"a\": [1, 0.1]}",
            "{\"n\": 18446744073709551616}",
            "[-1.5e300]",
            "-0",
        ];
        for text in floats {
            let body: serde_json::Value = serde_json::from_str(text).unwrap();
            let doc = keys::sign_doc(&k.root, &body);
            match keys::verify_doc::<serde_json::Value>("doc", &doc, &vk) {
                Err(RepoError::Corrupt { reason, .. }) if reason.contains("floating-point") => {}
                r => panic!("{text}: {r:?}"),
            }
        }
        let ints = "{\"a\": [18446744073709551615, -9223372036854775808, 0], \"b\": {}}";
        let body: serde_json::Value = serde_json::from_str(ints).unwrap();
        let doc = keys::sign_doc(&k.root, &body);
        assert_eq!(
            keys::verify_doc::<serde_json::Value>("doc", &doc, &vk).unwrap(),
            body
        );
    }

    /// `manifest` target: `open_sealed_doc` sliced the object before checking its length
    /// and panicked on any object shorter than its fixed fields (its caller happened to check
    /// first). Every length from 0 to the minimum is an error, never a panic.
    #[test]
    fn sealed_documents_of_every_short_length_are_errors() {
        let k = TestKeys::fixed();
        let doc = format::encode_sealed_doc(
            ObjectType::Snapshot,
            0,
            &format::ROOT_WRITER,
            &k.root,
            &k.public,
            b"{}",
        );
        for n in 0..doc.len() {
            let r = std::panic::catch_unwind(|| {
                format::open_sealed_doc("s", &doc[..n], ObjectType::Snapshot, &k.secret)
            });
            assert!(matches!(r, Ok(Err(_))), "length {n}: {r:?}");
        }
        assert_eq!(
            format::open_sealed_doc("s", &doc, ObjectType::Snapshot, &k.secret).unwrap(),
            b"{}"
        );
    }
}
