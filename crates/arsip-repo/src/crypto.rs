//! Cryptographic primitives of format v1, and nothing else: key derivation from the master
//! secret, the AEAD used for every blob, the sealed-key box that lets writers encrypt to the
//! repository without being able to decrypt, and writer signatures.
//!
//! - KDF: BLAKE3 `derive_key` with a context string per purpose (FORMAT.md §Keys).
//! - AEAD: XChaCha20-Poly1305, 192-bit random nonces, associated data binding the object
//!   header (format version, type, key id) and, for blobs, the chunk id.
//! - Sealed key: X25519 ephemeral-static; the shared secret and both public keys derive a
//!   one-time wrapping key that encrypts a fresh random object key.
//! - Signatures: Ed25519 over the whole object up to the signature.

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{RepoError, Result};

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Ephemeral public key, wrapped object key and its tag.
pub const SEALED_KEY_LEN: usize = 32 + KEY_LEN + TAG_LEN;
pub const SIGNATURE_LEN: usize = 64;

/// A 256-bit symmetric key, wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Key(pub [u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    pub fn random() -> Key {
        let mut k = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Key(k)
    }

    /// BLAKE3 `derive_key` of this key under `context`, with an optional suffix of material
    /// (a key scope number) appended to the key material.
    pub fn derive(&self, context: &str, extra: &[u8]) -> Key {
        let mut h = blake3::Hasher::new_derive_key(context);
        h.update(&self.0);
        h.update(extra);
        Key(*h.finalize().as_bytes())
    }
}

/// Context strings of every derived key; changing one is a format break.
pub mod context {
    pub const CHUNK_ID: &str = "arsip 2026-11 v1 chunk id key";
    pub const CHUNKER_SEED: &str = "arsip 2026-11 v1 chunker seed";
    pub const X25519: &str = "arsip 2026-11 v1 repository x25519 secret";
    pub const ROOT_SIGNING: &str = "arsip 2026-11 v1 root writer ed25519 seed";
    pub const SEAL: &str = "arsip 2026-11 v1 sealed object key";
    pub const SLOT_PASSWORD: &str = "arsip 2026-11 v1 password slot wrapping key";
    /// Local state only (prune's reference cache), never in the repository.
    pub const LOCAL_REFS: &str = "arsip 2026-12 v1 local reference cache key";
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// Encrypt `plaintext` under `key`; output is `nonce || ciphertext || tag`.
pub fn seal(key: &Key, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    seal_into(key, plaintext, aad, &mut out);
    out
}

/// [`seal`], appending to `out` (a pack being built) instead of allocating.
pub fn seal_into(key: &Key, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = XChaCha20Poly1305::new((&key.0).into())
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    out.extend_from_slice(&tag);
}

/// Decrypt and authenticate `nonce || ciphertext || tag`.
pub fn open(key: &Key, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(RepoError::Auth(
            "ciphertext shorter than nonce and tag".into(),
        ));
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| RepoError::Auth("authentication tag mismatch".into()))
}

/// The repository's X25519 key pair; the secret half exists only where the master secret is.
pub struct RepoSecret {
    secret: StaticSecret,
}

impl RepoSecret {
    pub fn from_master(master: &Key) -> RepoSecret {
        RepoSecret {
            secret: StaticSecret::from(master.derive(context::X25519, &[]).0),
        }
    }

    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }

    /// Recover an object key sealed with [`seal_key`].
    pub fn unseal_key(&self, sealed: &[u8], aad: &[u8]) -> Result<Key> {
        if sealed.len() != SEALED_KEY_LEN {
            return Err(RepoError::Auth("sealed key has the wrong length".into()));
        }
        let eph: [u8; 32] = sealed[..32].try_into().unwrap();
        let shared = self.secret.diffie_hellman(&PublicKey::from(eph));
        let wrap = wrapping_key(shared.as_bytes(), &eph, &self.public());
        let key = open_fixed_nonce(&wrap, &sealed[32..], aad)?;
        let arr: [u8; KEY_LEN] = key
            .as_slice()
            .try_into()
            .map_err(|_| RepoError::Auth("sealed key has the wrong length".into()))?;
        Ok(Key(arr))
    }
}

fn wrapping_key(shared: &[u8; 32], eph_public: &[u8; 32], repo_public: &[u8; 32]) -> Key {
    let mut h = blake3::Hasher::new_derive_key(context::SEAL);
    h.update(shared);
    h.update(eph_public);
    h.update(repo_public);
    Key(*h.finalize().as_bytes())
}

// The wrapping key is fresh for every sealed key (new ephemeral), so a fixed nonce is safe.
const ZERO_NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];

fn open_fixed_nonce(key: &Key, ct: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    XChaCha20Poly1305::new((&key.0).into())
        .decrypt(XNonce::from_slice(&ZERO_NONCE), Payload { msg: ct, aad })
        .map_err(|_| RepoError::Auth("sealed key does not open with this repository's key".into()))
}

/// Seal `object_key` to the repository public key: anyone may seal, only the master can open.
pub fn seal_key(repo_public: &[u8; 32], object_key: &Key, aad: &[u8]) -> [u8; SEALED_KEY_LEN] {
    let eph = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let eph_public = PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&PublicKey::from(*repo_public));
    let wrap = wrapping_key(shared.as_bytes(), &eph_public, repo_public);
    let ct = XChaCha20Poly1305::new((&wrap.0).into())
        .encrypt(
            XNonce::from_slice(&ZERO_NONCE),
            Payload {
                msg: &object_key.0,
                aad,
            },
        )
        .expect("in-memory encryption cannot fail");
    let mut out = [0u8; SEALED_KEY_LEN];
    out[..32].copy_from_slice(&eph_public);
    out[32..].copy_from_slice(&ct);
    out
}

/// A writer's signing key (root: derived from the master; agent: random, in the agent file).
#[derive(Clone)]
pub struct WriterKey(SigningKey);

impl WriterKey {
    pub fn from_seed(seed: &[u8; 32]) -> WriterKey {
        WriterKey(SigningKey::from_bytes(seed))
    }
    pub fn root(master: &Key) -> WriterKey {
        WriterKey::from_seed(&master.derive(context::ROOT_SIGNING, &[]).0)
    }
    pub fn verify_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(msg).to_bytes()
    }
}

pub fn verify(verify_key: &[u8; 32], msg: &[u8], sig: &[u8]) -> Result<()> {
    let vk = VerifyingKey::from_bytes(verify_key)
        .map_err(|_| RepoError::Auth("invalid writer verify key".into()))?;
    let sig: [u8; SIGNATURE_LEN] = sig
        .try_into()
        .map_err(|_| RepoError::Auth("signature has the wrong length".into()))?;
    vk.verify(msg, &Signature::from_bytes(&sig))
        .map_err(|_| RepoError::Auth("signature does not verify".into()))
}

/// Keyed BLAKE3 of a chunk's plaintext: its id within one key scope.
pub fn chunk_id(id_key: &Key, data: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(&id_key.0, data).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_aad_binding() {
        let k = Key::random();
        let ct = seal(&k, b"hello", b"ad");
        assert_eq!(open(&k, &ct, b"ad").unwrap(), b"hello");
        assert!(open(&k, &ct, b"other").is_err());
        let mut flipped = ct.clone();
        flipped[30] ^= 1;
        assert!(open(&k, &flipped, b"ad").is_err());
    }

    #[test]
    fn sealed_keys_open_only_with_the_master() {
        let master = Key::random();
        let rs = RepoSecret::from_master(&master);
        let ok = Key::random();
        let sealed = seal_key(&rs.public(), &ok, b"x");
        assert_eq!(rs.unseal_key(&sealed, b"x").unwrap(), ok);
        assert!(rs.unseal_key(&sealed, b"y").is_err());
        let other = RepoSecret::from_master(&Key::random());
        assert!(other.unseal_key(&sealed, b"x").is_err());
    }

    #[test]
    fn signatures() {
        let w = WriterKey::from_seed(&[7; 32]);
        let s = w.sign(b"m");
        verify(&w.verify_key(), b"m", &s).unwrap();
        assert!(verify(&w.verify_key(), b"n", &s).is_err());
    }
}
