//! Stream objects ("WAL objects" in FORMAT.md §16): named files of a source's continuous
//! stream, one create-only object per file in a namespace the source chooses, sealed to the
//! repository so that agents can write but not read them, zstd-compressed, signed by its
//! writer, and carrying a public keyed hash of its plaintext so that a writer without the
//! master secret can tell whether an object already stored under the same name holds the same
//! bytes (a source may retry a put whose answer it lost; that MUST succeed, and a different
//! file under the same name MUST fail loudly).
//!
//! This module knows no source. Namespaces and file names follow the generic name rule
//! ([`crate::check_name`], FORMAT.md §2.3); a source restricts them further before
//! calling (PostgreSQL's `<system-identifier>-<major>` namespaces and WAL file names are
//! `arsip-pg`'s, docs/POSTGRESQL.md).
//!
//! Layout (FORMAT.md "WAL objects"):
//! `header(type 4) | writer id (16) | raw_len u64 LE | content hash (32) | sealed key (80) |
//!  nonce‖ciphertext‖tag of zstd(plaintext) | signature (64)`; the signature is over a
//! BLAKE3 digest of everything before it ([`signed_digest`]).
//! Names: `wal/<namespace>/<file name>`. The associated data binds the object name, so an
//! object cannot be moved to another name or namespace undetected.

use bytes::Bytes;
use futures::TryStreamExt;

use crate::crypto::{self, Key, SEALED_KEY_LEN, SIGNATURE_LEN};
use crate::error::{RepoError, Result};
use crate::format::{self, ObjectType, WriterId, HEADER_LEN, WRITER_ID_LEN};
use crate::record::check_name;
use crate::repo::Repository;
use arsip_storage::ErrorKind;

pub const WAL_PREFIX: &str = "wal/";
/// Context of the key that hashes WAL plaintext (derived from the scope-0 chunk-id key).
pub const CONTENT_HASH_CONTEXT: &str = "arsip 2026-11 v1 wal content hash";
/// Bytes at the start of a WAL object that anyone can read: header, writer, length, hash.
pub const PUBLIC_LEN: usize = HEADER_LEN + WRITER_ID_LEN + 8 + 32;
/// zstd level for WAL: archiving latency matters more than the last few percent.
pub const ZSTD_LEVEL: i32 = 1;
/// Largest plaintext accepted (1 GiB: PostgreSQL's largest WAL segment).
pub const MAX_WAL_FILE: u64 = 1 << 30;

/// Check a namespace and a file name by the generic name rule (FORMAT.md §2.3); returns the
/// object name `wal/<namespace>/<file>`.
pub fn object_name(namespace: &str, file: &str) -> Result<String> {
    check_name(namespace, "stream namespace")?;
    check_name(file, "stream file name")?;
    Ok(format!("{WAL_PREFIX}{namespace}/{file}"))
}

/// The keyed hash of a WAL file's plaintext, computable by every writer.
pub fn content_hash(id_key: &Key, data: &[u8]) -> [u8; 32] {
    let k = id_key.derive(CONTENT_HASH_CONTEXT, &[]);
    *blake3::keyed_hash(&k.0, data).as_bytes()
}

fn aad(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Encode one WAL object.
pub fn encode(
    name: &str,
    writer: &WriterId,
    signer: &crypto::WriterKey,
    repo_public: &[u8; 32],
    id_key: &Key,
    data: &[u8],
) -> Result<Vec<u8>> {
    let h = format::header(ObjectType::Wal, 0);
    let hash = content_hash(id_key, data);
    let len = (data.len() as u64).to_le_bytes();
    let compressed = zstd::bulk::compress(data, ZSTD_LEVEL)?;
    let key = Key::random();
    let mut out = Vec::with_capacity(compressed.len() + PUBLIC_LEN + 256);
    out.extend_from_slice(&h);
    out.extend_from_slice(writer);
    out.extend_from_slice(&len);
    out.extend_from_slice(&hash);
    out.extend_from_slice(&crypto::seal_key(
        repo_public,
        &key,
        &aad(&[&h, writer, b"wal", name.as_bytes()]),
    ));
    out.extend_from_slice(&crypto::seal(
        &key,
        &compressed,
        &aad(&[&out[..PUBLIC_LEN], name.as_bytes()]),
    ));
    let sig = signer.sign(&signed_digest(&out));
    out.extend_from_slice(&sig);
    Ok(out)
}

/// What a WAL object's signature covers: a BLAKE3 digest of every byte before the signature,
/// under a context string. Ed25519 hashes its message twice with SHA-512; signing the 32-byte
/// digest keeps a 16 MiB segment's signing cost at one BLAKE3 pass.
pub fn signed_digest(object_without_signature: &[u8]) -> Vec<u8> {
    let mut m = SIGN_CONTEXT.as_bytes().to_vec();
    m.extend_from_slice(blake3::hash(object_without_signature).as_bytes());
    m
}

/// Prefix of the signed message of a WAL object (`signed_digest`).
pub const SIGN_CONTEXT: &str = "arsip 2026-11 v1 wal object signature\0";

/// The public part of a WAL object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPublic {
    pub writer: WriterId,
    pub raw_len: u64,
    pub hash: [u8; 32],
}

pub fn parse_public(object: &str, b: &[u8]) -> Result<WalPublic> {
    format::parse_header(object, b, ObjectType::Wal)?;
    if b.len() < PUBLIC_LEN {
        return Err(RepoError::corrupt(
            object,
            "WAL object shorter than its header",
        ));
    }
    Ok(WalPublic {
        writer: b[HEADER_LEN..HEADER_LEN + WRITER_ID_LEN]
            .try_into()
            .unwrap(),
        raw_len: u64::from_le_bytes(
            b[HEADER_LEN + WRITER_ID_LEN..HEADER_LEN + WRITER_ID_LEN + 8]
                .try_into()
                .unwrap(),
        ),
        hash: b[PUBLIC_LEN - 32..PUBLIC_LEN].try_into().unwrap(),
    })
}

/// Decrypt, decompress and check a WAL object whose signature the caller verified.
pub fn open(object: &str, b: &[u8], secret: &crypto::RepoSecret, id_key: &Key) -> Result<Vec<u8>> {
    let p = parse_public(object, b)?;
    if b.len() < PUBLIC_LEN + SEALED_KEY_LEN + crypto::NONCE_LEN + crypto::TAG_LEN + SIGNATURE_LEN {
        return Err(RepoError::corrupt(object, "WAL object too short"));
    }
    if p.raw_len > MAX_WAL_FILE {
        return Err(RepoError::corrupt(object, "WAL length out of range"));
    }
    let h = &b[..HEADER_LEN];
    let ks = PUBLIC_LEN;
    let key = secret
        .unseal_key(
            &b[ks..ks + SEALED_KEY_LEN],
            &aad(&[h, &p.writer, b"wal", object.as_bytes()]),
        )
        .map_err(|e| RepoError::corrupt(object, e.to_string()))?;
    let compressed = crypto::open(
        &key,
        &b[ks + SEALED_KEY_LEN..b.len() - SIGNATURE_LEN],
        &aad(&[&b[..PUBLIC_LEN], object.as_bytes()]),
    )
    .map_err(|e| RepoError::corrupt(object, e.to_string()))?;
    let data = zstd::bulk::decompress(&compressed, p.raw_len as usize)
        .map_err(|e| RepoError::corrupt(object, format!("zstd: {e}")))?;
    if data.len() as u64 != p.raw_len || content_hash(id_key, &data) != p.hash {
        return Err(RepoError::corrupt(
            object,
            "content does not match its recorded hash",
        ));
    }
    Ok(data)
}

/// What `wal_put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored {
        stored_bytes: u64,
    },
    /// The same bytes were already stored under this name (a retried `archive_command`).
    AlreadyStored,
}

impl Repository {
    /// Store one file of a stream in `namespace`, create-only. Durable when `Ok`. An object of the same name with
    /// the same keyed hash and length counts as success; any other content is refused.
    pub async fn wal_put(&self, namespace: &str, file: &str, data: &[u8]) -> Result<PutOutcome> {
        let name = object_name(namespace, file)?;
        let obj = encode(
            &name,
            &self.writer_id,
            self.signer(),
            self.public_key(),
            self.id_key(),
            data,
        )?;
        let size = obj.len() as u64;
        match self.store.create(&name, Bytes::from(obj)).await {
            Ok(()) => Ok(PutOutcome::Stored { stored_bytes: size }),
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                let head = self.store.get_range(&name, 0..PUBLIC_LEN as u64).await?;
                let p = parse_public(&name, &head)?;
                if p.raw_len == data.len() as u64 && p.hash == content_hash(self.id_key(), data) {
                    Ok(PutOutcome::AlreadyStored)
                } else {
                    Err(RepoError::Invalid(format!(
                        "{name} is already archived with DIFFERENT content ({} bytes stored, {} \
                         offered); refusing to overwrite it. Two clusters may be archiving into \
                         the same namespace, or a restored cluster reused a timeline",
                        p.raw_len,
                        data.len()
                    )))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fetch one file of a stream: `Ok(None)` only when no such object exists. Verifies the writer's
    /// signature, decrypts and checks the content hash. Needs a full key.
    pub(crate) async fn wal_get(&self, namespace: &str, file: &str) -> Result<Option<Vec<u8>>> {
        let mk = self.master("reading WAL")?;
        let name = object_name(namespace, file)?;
        let (raw, stored) = match self.store.get_with_meta(&name).await {
            Ok(o) => {
                let t = crate::repo::store_time(&o.meta);
                (o.data, t)
            }
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let p = parse_public(&name, &raw)?;
        if raw.len() < PUBLIC_LEN + SIGNATURE_LEN {
            return Err(RepoError::corrupt(&name, "WAL object too short"));
        }
        let (signed, sig) = raw.split_at(raw.len() - SIGNATURE_LEN);
        // Signature, then standing: a retired writer's WAL the store accepted before the
        // cut-off stays readable (FORMAT.md §8.6).
        self.verify_writer(&name, &p.writer, &signed_digest(signed), sig, stored)
            .await?;
        let id_key = self.id_key().clone();
        let secret = &mk.repo_secret;
        Ok(Some(open(&name, &raw, secret, &id_key)?))
    }

    /// Whether a file of a stream exists (no decryption; agents may call it).
    pub async fn wal_exists(&self, namespace: &str, file: &str) -> Result<bool> {
        let name = object_name(namespace, file)?;
        match self.store.head(&name).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// File names stored in a namespace, sorted.
    pub async fn wal_list(&self, namespace: &str) -> Result<Vec<String>> {
        check_name(namespace, "stream namespace")?;
        let prefix = format!("{WAL_PREFIX}{namespace}/");
        let mut names: Vec<String> = self
            .store
            .list(&prefix)
            .map_ok(|m| m.key[prefix.len()..].to_string())
            .try_collect()
            .await?;
        names.sort();
        Ok(names)
    }

    /// [`Repository::wal_list`] with the store's time of each file (when it was archived,
    /// by the store's clock).
    pub async fn wal_list_times(&self, namespace: &str) -> Result<Vec<(String, jiff::Timestamp)>> {
        check_name(namespace, "stream namespace")?;
        let prefix = format!("{WAL_PREFIX}{namespace}/");
        let mut out: Vec<(String, jiff::Timestamp)> = self
            .store
            .list(&prefix)
            .map_ok(|m| (m.key[prefix.len()..].to_string(), m.last_modified))
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }

    /// Namespaces present (under `wal/`).
    pub async fn wal_namespaces(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .store
            .list(WAL_PREFIX)
            .map_ok(|m| {
                m.key[WAL_PREFIX.len()..]
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .try_collect()
            .await?;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_binding() {
        let master = Key::random();
        let rs = crypto::RepoSecret::from_master(&master);
        let signer = crypto::WriterKey::root(&master);
        let idk = Key::random();
        let name = object_name("7000000000000000001-15", "000000010000000000000001").unwrap();
        let data = vec![7u8; 1 << 20];
        let obj = encode(&name, &[0; 16], &signer, &rs.public(), &idk, &data).unwrap();
        assert!(obj.len() < 10_000, "compressed");
        let p = parse_public(&name, &obj[..PUBLIC_LEN]).unwrap();
        assert_eq!(p.raw_len, data.len() as u64);
        assert_eq!(p.hash, content_hash(&idk, &data));
        let (signed, sig) = obj.split_at(obj.len() - SIGNATURE_LEN);
        crypto::verify(&signer.verify_key(), &signed_digest(signed), sig).unwrap();
        assert_eq!(open(&name, &obj, &rs, &idk).unwrap(), data);
        // moved to another name: refused
        let other = object_name("7000000000000000001-15", "000000010000000000000002").unwrap();
        assert!(open(&other, &obj, &rs, &idk).is_err());
        // flipped byte: refused
        let mut bad = obj.clone();
        let n = bad.len() - 100;
        bad[n] ^= 1;
        assert!(open(&name, &bad, &rs, &idk).is_err());
    }

    #[test]
    fn names() {
        assert!(object_name("1-15", "00000002.history").is_ok());
        // Source-neutral: any safe names (a source narrows them).
        assert_eq!(object_name("x-15", "a").unwrap(), "wal/x-15/a");
        for (ns, f) in [
            ("1-15", "../x"),
            ("1-15", ""),
            ("1-15", ".a"),
            ("", "a"),
            ("a/b", "c"),
        ] {
            assert!(object_name(ns, f).is_err(), "{ns:?} {f:?}");
        }
    }
}
