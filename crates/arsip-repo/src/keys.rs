//! Keys: the repository config (signed by the root writer), key slots that wrap the master
//! secret (passphrase through Argon2id, or a raw key file), agent credentials (write-only)
//! and the writer registry through which full keys admit and revoke agents.
//!
//! All of these are small JSON documents. A signed document is `{"body": …, "sig": hex}`
//! where the signature covers the canonical serialisation of `body` (serde_json with sorted
//! keys, no whitespace).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, context, Key, WriterKey};
use crate::error::{RepoError, Result};
use crate::format::{WriterId, ROOT_WRITER};

pub const CONFIG_OBJECT: &str = "config";
pub const KEYS_PREFIX: &str = "keys/";
pub const WRITERS_PREFIX: &str = "writers/";

/// Chunker parameters (bytes). FastCDC 2020, normalisation level 1.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(RepoError::Invalid(format!(
                "chunk sizes min {} avg {} max {} out of range (min {MINIMUM_MIN}..{MINIMUM_MAX}, avg \
                 {AVERAGE_MIN}..{AVERAGE_MAX}, max {MAXIMUM_MIN}..{MAXIMUM_MAX}, min ≤ avg ≤ max)",
                self.min, self.avg, self.max
            )))
        }
    }
}

/// The repository's public configuration, readable by everyone with storage access.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub version: u32,
    pub repo_id: String,
    pub created: jiff::Timestamp,
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_size: u32,
    /// Fixed block size for files that change in place at page offsets (PostgreSQL relation
    /// files). Absent in configs written before it existed, which used 128 KiB.
    #[serde(default = "legacy_block_size")]
    pub block_size: u32,
    /// X25519 public key everything is sealed to.
    pub public_key: String,
    /// Ed25519 key of the root writer (holders of the master secret).
    pub root_verify_key: String,
}

fn legacy_block_size() -> u32 {
    128 * 1024
}

/// `block_size` must be a power of two from 4 KiB to 4 MiB (FORMAT.md §8.2).
pub fn validate_block_size(block_size: u32) -> Result<()> {
    if (4096..=1 << 22).contains(&block_size) && block_size.is_power_of_two() {
        Ok(())
    } else {
        Err(RepoError::Invalid(format!(
            "block size {block_size} is not a power of two between 4 KiB and 4 MiB"
        )))
    }
}

impl Config {
    pub fn public_key(&self) -> Result<[u8; 32]> {
        decode32(&self.public_key, "config public_key")
    }
    pub fn root_verify_key(&self) -> Result<[u8; 32]> {
        decode32(&self.root_verify_key, "config root_verify_key")
    }
}

pub fn decode32(s: &str, what: &str) -> Result<[u8; 32]> {
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| RepoError::corrupt(what, "expected 32 bytes of hex"))
}

#[derive(Serialize, Deserialize)]
struct Signed {
    body: serde_json::Value,
    sig: String,
}

/// True if `v` holds a number that is not an integer within `i64`/`u64` (JSON's `1.5`, `1e3`,
/// or an integer too large for 64 bits). Its canonical form (§8.1) is undefined: `serde_json`
/// parses such numbers to the nearest `f64` only approximately, so the form recomputed from a
/// stored document can differ from the form that was signed.
pub(crate) fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

/// Sign `body` as a signed document (FORMAT.md §8.1). A body with a floating-point number
/// (none of v1's documents has one) gives a document every verifier refuses.
pub fn sign_doc<T: Serialize>(signer: &WriterKey, body: &T) -> Vec<u8> {
    let value = serde_json::to_value(body).expect("serialisable");
    let canonical = serde_json::to_vec(&value).expect("serialisable");
    let doc = Signed {
        body: value,
        sig: hex::encode(signer.sign(&canonical)),
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("serialisable");
    out.push(b'\n');
    out
}

pub fn verify_doc<T: for<'de> Deserialize<'de>>(
    object: &str,
    bytes: &[u8],
    verify_key: &[u8; 32],
) -> Result<T> {
    let doc: Signed =
        serde_json::from_slice(bytes).map_err(|e| RepoError::corrupt(object, e.to_string()))?;
    if has_float(&doc.body) {
        return Err(RepoError::corrupt(
            object,
            "a floating-point number in a signed document (v1 has none)",
        ));
    }
    let canonical = serde_json::to_vec(&doc.body).expect("serialisable");
    let sig =
        hex::decode(&doc.sig).map_err(|_| RepoError::corrupt(object, "signature is not hex"))?;
    crypto::verify(verify_key, &canonical, &sig)
        .map_err(|e| RepoError::corrupt(object, e.to_string()))?;
    serde_json::from_value(doc.body).map_err(|e| RepoError::corrupt(object, e.to_string()))
}

/// Read a signed document's body without verifying it (only to learn which key verifies it).
pub fn unverified_body<T: for<'de> Deserialize<'de>>(object: &str, bytes: &[u8]) -> Result<T> {
    let doc: Signed =
        serde_json::from_slice(bytes).map_err(|e| RepoError::corrupt(object, e.to_string()))?;
    serde_json::from_value(doc.body).map_err(|e| RepoError::corrupt(object, e.to_string()))
}

/// Argon2id parameters of a passphrase slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    pub salt: String,
}

impl KdfParams {
    /// Defaults: m=64 MiB, t=3, p=1 (above OWASP's minimums for Argon2id; about 0.2 s
    /// here). `ARSIP_TEST_WEAK_KDF=1` lowers them for test suites, and only in builds with
    /// the `test-hooks` feature (or this crate's own unit tests): every other build, debug
    /// or release, ignores it.
    pub fn new() -> KdfParams {
        let weak = cfg!(any(test, feature = "test-hooks"))
            && std::env::var_os("ARSIP_TEST_WEAK_KDF").is_some();
        KdfParams {
            m_kib: if weak { 64 } else { 64 * 1024 },
            t: if weak { 1 } else { 3 },
            p: 1,
            salt: hex::encode(crypto::random_bytes::<16>()),
        }
    }

    /// The Argon2id instance and salt these parameters describe, or why Argon2 would refuse
    /// them. [`KeySlot::parse`] calls it, so a slot readers accept never fails to derive.
    fn argon2(&self) -> std::result::Result<(argon2::Argon2<'static>, Vec<u8>), String> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        let salt = hex::decode(&self.salt).map_err(|_| "salt is not hex".to_string())?;
        if !(argon2::MIN_SALT_LEN..=argon2::MAX_SALT_LEN).contains(&salt.len()) {
            return Err(format!(
                "salt of {} bytes (Argon2 needs at least {})",
                salt.len(),
                argon2::MIN_SALT_LEN
            ));
        }
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        Ok((a, salt))
    }

    fn derive(&self, password: &[u8]) -> Result<Key> {
        let (a, salt) = self
            .argon2()
            .map_err(|e| RepoError::corrupt("key slot", e))?;
        let mut out = Zeroizing::new([0u8; 32]);
        a.hash_password_into(password, &salt, out.as_mut())
            .map_err(|e| RepoError::Invalid(format!("argon2: {e}")))?;
        Ok(Key(*out).derive(context::SLOT_PASSWORD, &[]))
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    Password,
    Keyfile,
}

/// One key slot: `keys/<id>`. The master secret, wrapped under a key derived from a
/// passphrase (Argon2id) or held in a key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    pub version: u32,
    pub id: String,
    pub kind: SlotKind,
    pub created: jiff::Timestamp,
    pub host: String,
    pub label: String,
    pub kdf: Option<KdfParams>,
    /// `nonce ‖ ciphertext ‖ tag` of the master secret; AAD = repo id ‖ slot id.
    pub wrapped: String,
}

/// Material that opens a slot.
pub enum Secret<'a> {
    Password(&'a [u8]),
    KeyFile(&'a KeyFile),
}

/// A full key file: the raw wrapping key of one key-file slot. Opening with it needs no KDF,
/// which keeps `wal push` fast.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub arsip_key_file: u32,
    pub repo_id: String,
    pub slot_id: String,
    pub key: String,
}

/// Most KDF work a slot may ask for (FORMAT.md §8.3): anyone who can create objects could
/// plant a slot asking for more, to exhaust memory or time at every password opening.
pub const MAX_KDF_M_KIB: u32 = 4 << 20;
pub const MAX_KDF_T: u32 = 64;
pub const MAX_KDF_P: u32 = 16;

/// Bytes of a slot's `wrapped`: nonce, the 32-byte master secret, tag.
const WRAPPED_LEN: usize = crypto::NONCE_LEN + 32 + crypto::TAG_LEN;

impl KeySlot {
    /// Parse the slot object `object`. Refuses (so that readers skip it, FORMAT.md §8.3) a
    /// slot that does not parse, whose KDF parameters exceed the limits above or are ones
    /// Argon2 refuses, whose salt is not hex of at least 8 bytes, or whose `wrapped` is not
    /// hex of 72 bytes: opening with a password tries every slot, so a slot accepted here
    /// must never make opening fail.
    pub fn parse(object: &str, bytes: &[u8]) -> Result<KeySlot> {
        let slot: KeySlot =
            serde_json::from_slice(bytes).map_err(|e| RepoError::corrupt(object, e.to_string()))?;
        if let Some(k) = &slot.kdf {
            if k.m_kib > MAX_KDF_M_KIB || k.t > MAX_KDF_T || k.p > MAX_KDF_P {
                return Err(RepoError::corrupt(object, "KDF parameters out of range"));
            }
            k.argon2().map_err(|e| RepoError::corrupt(object, e))?;
        }
        if !hex::decode(&slot.wrapped).is_ok_and(|w| w.len() == WRAPPED_LEN) {
            return Err(RepoError::corrupt(
                object,
                format!("wrapped is not hex of {WRAPPED_LEN} bytes"),
            ));
        }
        Ok(slot)
    }

    pub fn object_name(&self) -> String {
        format!("{KEYS_PREFIX}{}", self.id)
    }

    fn aad(repo_id: &str, slot_id: &str) -> Vec<u8> {
        format!("arsip key slot\0{repo_id}\0{slot_id}").into_bytes()
    }

    pub fn new_password(
        repo_id: &str,
        master: &Key,
        password: &[u8],
        label: &str,
        host: &str,
        now: jiff::Timestamp,
    ) -> Result<KeySlot> {
        let kdf = KdfParams::new();
        let wrapping = kdf.derive(password)?;
        Ok(Self::wrap(
            repo_id,
            master,
            &wrapping,
            SlotKind::Password,
            Some(kdf),
            label,
            host,
            now,
        ))
    }

    pub fn new_keyfile(
        repo_id: &str,
        master: &Key,
        label: &str,
        host: &str,
        now: jiff::Timestamp,
    ) -> (KeySlot, KeyFile) {
        let wrapping = Key::random();
        let slot = Self::wrap(
            repo_id,
            master,
            &wrapping,
            SlotKind::Keyfile,
            None,
            label,
            host,
            now,
        );
        let file = KeyFile {
            arsip_key_file: 1,
            repo_id: repo_id.to_string(),
            slot_id: slot.id.clone(),
            key: hex::encode(wrapping.0),
        };
        (slot, file)
    }

    #[allow(clippy::too_many_arguments)]
    fn wrap(
        repo_id: &str,
        master: &Key,
        wrapping: &Key,
        kind: SlotKind,
        kdf: Option<KdfParams>,
        label: &str,
        host: &str,
        now: jiff::Timestamp,
    ) -> KeySlot {
        let id = hex::encode(crypto::random_bytes::<8>());
        let wrapped = crypto::seal(wrapping, &master.0, &Self::aad(repo_id, &id));
        KeySlot {
            version: 1,
            id,
            kind,
            created: now,
            host: host.to_string(),
            label: label.to_string(),
            kdf,
            wrapped: hex::encode(wrapped),
        }
    }

    /// A derived key file for this password slot: its wrapping key, derived from `password`
    /// with one Argon2id run, so that an unattended process (a recovery's `restore_command`)
    /// opens the slot without the KDF. `Ok(None)` when the password does not open this slot.
    /// It opens the repository for as long as this slot exists: callers keep it short-lived
    /// (FORMAT.md §8.4, §14.5).
    pub fn derived_key_file(&self, repo_id: &str, password: &[u8]) -> Result<Option<KeyFile>> {
        let (SlotKind::Password, Some(kdf)) = (self.kind, &self.kdf) else {
            return Ok(None);
        };
        let wrapping = kdf.derive(password)?;
        let file = KeyFile {
            arsip_key_file: 1,
            repo_id: repo_id.to_string(),
            slot_id: self.id.clone(),
            key: hex::encode(wrapping.0),
        };
        Ok(self.open(repo_id, &Secret::KeyFile(&file))?.map(|_| file))
    }

    /// Try to open this slot. `Ok(None)` when the secret does not fit this slot.
    pub fn open(&self, repo_id: &str, secret: &Secret<'_>) -> Result<Option<Key>> {
        let wrapping = match (secret, self.kind, &self.kdf) {
            (Secret::Password(p), SlotKind::Password, Some(kdf)) => kdf.derive(p)?,
            (Secret::KeyFile(f), SlotKind::Keyfile, None) if f.slot_id == self.id => {
                Key(decode32(&f.key, "key file")?)
            }
            // A derived key file (§8.4): the wrapping key of a password slot, derived once.
            (Secret::KeyFile(f), SlotKind::Password, Some(_)) if f.slot_id == self.id => {
                Key(decode32(&f.key, "key file")?)
            }
            _ => return Ok(None),
        };
        let wrapped = hex::decode(&self.wrapped)
            .map_err(|_| RepoError::corrupt(self.object_name(), "not hex"))?;
        match crypto::open(&wrapping, &wrapped, &Self::aad(repo_id, &self.id)) {
            Ok(m) => {
                let arr: [u8; 32] = m
                    .try_into()
                    .map_err(|_| RepoError::corrupt(self.object_name(), "bad length"))?;
                Ok(Some(Key(arr)))
            }
            Err(_) => Ok(None),
        }
    }
}

/// Write-only agent credentials (`arsip key add --agent --out FILE`). Everything an agent
/// needs to chunk, deduplicate, seal and sign — and nothing that decrypts.
#[derive(Clone, Serialize, Deserialize)]
pub struct AgentFile {
    pub arsip_agent_file: u32,
    pub repo_id: String,
    pub writer_id: String,
    pub label: String,
    /// Ed25519 seed of this agent's signing key.
    pub signing_seed: String,
    /// Chunk-id key of key scope 0.
    pub chunk_id_key: String,
    /// Decimal string: JSON tools that read numbers as doubles would round a u64.
    #[serde(with = "u64_string")]
    pub chunker_seed: u64,
    pub public_key: String,
    pub root_verify_key: String,
}

/// A registered writer: `writers/<id>`, signed by the root writer. Readers accept snapshots
/// and indexes only from the root writer and from registered, unrevoked writers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WriterRecord {
    pub version: u32,
    pub writer_id: String,
    pub verify_key: String,
    pub label: String,
    pub created: jiff::Timestamp,
    /// Set in revocations: the record is re-signed with this field under
    /// [`revocation_object`] (`key retire`, `key remove --compromised`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<jiff::Timestamp>,
    /// In revocations: what the revocation takes back. Absent means
    /// [`RevocationMode::Compromised`] (every revocation written before retirement existed),
    /// so a reader that does not know this field refuses everything the writer signed:
    /// older readers fail closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RevocationMode>,
}

/// What a revocation takes back (FORMAT.md §8.6).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RevocationMode {
    /// The writer stopped: what the store accepted from it before it accepted the
    /// revocation stays valid, nothing after. The cut-off is the store's time, which the
    /// writer cannot backdate.
    Retired,
    /// The writer's key is untrusted: nothing it ever signed is accepted.
    Compromised,
}

pub fn writer_object(id: &WriterId) -> String {
    format!("{WRITERS_PREFIX}{}", hex::encode(id))
}

/// Revocations are named after their own content (`writers/<id>.revoked.<BLAKE3 hex>`), so
/// nobody can occupy the name before the root writes it: an agent that plants a bogus
/// revocation object cannot block its real revocation.
pub fn revocation_object(id: &WriterId, content: &[u8]) -> String {
    format!(
        "{WRITERS_PREFIX}{}.revoked.{}",
        hex::encode(id),
        blake3::hash(content).to_hex()
    )
}

/// Every derived key of one master secret.
pub struct MasterKeys {
    pub master: Key,
    pub repo_secret: crypto::RepoSecret,
    pub root: WriterKey,
}

impl MasterKeys {
    pub fn new(master: Key) -> MasterKeys {
        MasterKeys {
            repo_secret: crypto::RepoSecret::from_master(&master),
            root: WriterKey::root(&master),
            master,
        }
    }
}

pub fn chunk_id_key(master: &Key, scope: u32) -> Key {
    master.derive(context::CHUNK_ID, &scope.to_le_bytes())
}

pub fn chunker_seed(master: &Key) -> u64 {
    let k = master.derive(context::CHUNKER_SEED, &[]);
    // A zero seed means "unseeded" to fastcdc; never produce it.
    u64::from_le_bytes(k.0[..8].try_into().unwrap()) | 1
}

pub fn root_writer() -> WriterId {
    ROOT_WRITER
}

mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A derived key file opens its password slot without the password, and only that one.
    #[test]
    fn derived_key_files_open_their_password_slot() {
        let master = Key::random();
        let now = jiff::Timestamp::UNIX_EPOCH;
        let slot = KeySlot::new_password("r1", &master, b"pw", "p", "h", now).unwrap();
        assert!(slot.derived_key_file("r1", b"wrong").unwrap().is_none());
        let kf = slot.derived_key_file("r1", b"pw").unwrap().unwrap();
        assert_eq!(kf.slot_id, slot.id);
        let opened = slot.open("r1", &Secret::KeyFile(&kf)).unwrap().unwrap();
        assert_eq!(opened.0, master.0);
        // another slot, another repository: no
        let other = KeySlot::new_password("r1", &master, b"pw", "q", "h", now).unwrap();
        assert!(other.open("r1", &Secret::KeyFile(&kf)).unwrap().is_none());
        assert!(slot.open("r2", &Secret::KeyFile(&kf)).unwrap().is_none());
        // a key-file slot yields no derived key file
        let (ks, _) = KeySlot::new_keyfile("r1", &master, "k", "h", now);
        assert!(ks.derived_key_file("r1", b"pw").unwrap().is_none());
    }

    #[test]
    fn configs_without_block_size_mean_128_kib() {
        let mut v = serde_json::to_value(Config {
            version: 1,
            repo_id: "00".into(),
            created: jiff::Timestamp::UNIX_EPOCH,
            chunker: ChunkerParams::default(),
            compression_level: 2,
            pack_size: 32 << 20,
            block_size: 16384,
            public_key: String::new(),
            root_verify_key: String::new(),
        })
        .unwrap();
        v.as_object_mut().unwrap().remove("block_size");
        let c: Config = serde_json::from_value(v).unwrap();
        assert_eq!(c.block_size, 131_072);
        assert!(validate_block_size(c.block_size).is_ok());
        for bad in [0, 4095, 12288, 1 << 23] {
            assert!(validate_block_size(bad).is_err(), "{bad}");
        }
    }
}
