//! Imports of the old system's backups (`arsip import legacy-dump`).
//!
//! The plan's script wrote `autolumiku_backup_YYYYMMDD_HHMMSS.sql.gz.enc` every night:
//! `pg_dump --format=custom --compress=9 | gzip`, then `openssl enc -aes-256-cbc -salt -k
//! KEY`. Such a file is openssl's `Salted__` format: the 8-byte magic, an 8-byte salt, then
//! AES-256-CBC with PKCS#7 padding, key and IV derived from the passphrase and salt by
//! `EVP_BytesToKey` (one round) with SHA-256 (OpenSSL ≥ 1.1's default) or MD5 (before), or
//! by PBKDF2-HMAC-SHA256 when `-pbkdf2` was given ([`Kdf`]).
//!
//! Each file is checked before any work: the magic, whole AES blocks, the name's time. The
//! key derivations are tried on the file's first bytes ([`probe`]): the right one decrypts
//! to gzip whose content starts with pg_dump's custom-format header ("PGDMP"), which is
//! parsed for the facts (database, server and pg_dump versions, [`DumpHeader`]). Then one
//! streaming pass ([`import`]): decrypt → gunzip → the repository (as a `pg-logical`
//! snapshot's `database.dump`, the same chunking as `backup pg --logical`) and, at the same
//! time, `pg_restore --file=-`, which reads the whole archive as a restore would (a dump cut
//! short by a failed pg_dump, which the old script would still have gzipped and encrypted,
//! fails there) and prints the SQL whose `COPY` blocks give exact per-table row counts. The
//! snapshot commits only when the last block's padding, the gzip trailer (CRC and length)
//! and pg_restore's exit all passed; otherwise nothing is committed. Nothing is held in
//! memory beyond buffers.
//!
//! The snapshot is dated from the file name (in the zone given, the old host's), a writer's
//! claim as always (readers cap it by the store's time), and carries `legacy: true`,
//! `imported_from`, and the file's BLAKE3 and size: a file already imported is skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};

use arsip_repo::Node;
use arsip_repo::{Classify, ErrorClass, FullRepo, RepoError};
use arsip_repo::{SnapshotMeta, SnapshotTxn};
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use flate2::read::MultiGzDecoder;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Value};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::control::pg_bin_dir;
use crate::error::{PgError, Result};
use crate::logical::{DUMP_CHUNKS, DUMP_FILE, KIND};
use crate::settings::PgSettings;

/// What the old system's file names end in.
pub const NAME_SUFFIX: &str = ".sql.gz.enc";
/// `openssl enc -pbkdf2`'s iteration count when `-iter` is not given.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 10_000;
const MAGIC: &[u8; 8] = b"Salted__";
const BLOCK: usize = 16;

/// How openssl turned the passphrase and salt into key and IV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Kdf {
    /// `EVP_BytesToKey(SHA-256, count 1)`: `openssl enc -k` from OpenSSL 1.1.0 on.
    #[serde(rename = "evp-sha256")]
    EvpSha256,
    /// `EVP_BytesToKey(MD5, count 1)`: before OpenSSL 1.1.0 (or `-md md5`).
    #[serde(rename = "evp-md5")]
    EvpMd5,
    /// PBKDF2-HMAC-SHA256: `openssl enc -pbkdf2 [-iter N]` (OpenSSL ≥ 1.1.1).
    #[serde(rename = "pbkdf2-sha256")]
    Pbkdf2Sha256,
}

impl Kdf {
    pub const ALL: [Kdf; 3] = [Kdf::EvpSha256, Kdf::EvpMd5, Kdf::Pbkdf2Sha256];

    pub fn as_str(self) -> &'static str {
        match self {
            Kdf::EvpSha256 => "evp-sha256",
            Kdf::EvpMd5 => "evp-md5",
            Kdf::Pbkdf2Sha256 => "pbkdf2-sha256",
        }
    }

    /// Key (32 bytes) and IV (16 bytes).
    fn derive(self, pass: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 48]> {
        match self {
            Kdf::EvpSha256 => evp_bytes_to_key::<sha2::Sha256>(pass, salt),
            Kdf::EvpMd5 => evp_bytes_to_key::<md5::Md5>(pass, salt),
            Kdf::Pbkdf2Sha256 => {
                let mut out = Zeroizing::new([0u8; 48]);
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pass, salt, iterations.max(1), &mut out[..]);
                out
            }
        }
    }
}

/// OpenSSL's `EVP_BytesToKey` with one round: `D_i = H(D_{i-1} || pass || salt)`, concatenated
/// until key and IV are filled.
fn evp_bytes_to_key<D: Digest>(pass: &[u8], salt: &[u8]) -> Zeroizing<[u8; 48]> {
    let mut out = Zeroizing::new([0u8; 48]);
    let mut prev = Zeroizing::new(Vec::new());
    let mut filled = 0;
    while filled < out.len() {
        let mut h = D::new();
        h.update(&prev[..]);
        h.update(pass);
        h.update(salt);
        *prev = h.finalize().to_vec();
        let n = prev.len().min(out.len() - filled);
        out[filled..filled + n].copy_from_slice(&prev[..n]);
        filled += n;
    }
    out
}

/// Why a file was not imported: a message, what to do, and the class its exit code follows.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub class: ErrorClass,
    pub msg: String,
    pub hint: String,
}

impl Refusal {
    fn new(class: ErrorClass, msg: impl Into<String>, hint: impl Into<String>) -> Refusal {
        Refusal {
            class,
            msg: msg.into(),
            hint: hint.into(),
        }
    }

    fn damaged(msg: impl Into<String>) -> Refusal {
        Refusal::new(
            ErrorClass::Damaged,
            msg,
            "the file is truncated or damaged: copy it again from where the old system \
             uploaded it, or use another day's file",
        )
    }

    fn not_a_dump(msg: impl Into<String>) -> Refusal {
        Refusal::new(
            ErrorClass::Refused,
            msg,
            "legacy-dump imports the old system's `pg_dump --format=custom | gzip | openssl enc \
             -aes-256-cbc -salt` files only",
        )
    }
}

impl<E: Classify + std::fmt::Display> From<E> for Refusal {
    fn from(e: E) -> Refusal {
        Refusal {
            class: e.class(),
            msg: e.to_string(),
            hint: e.hint().unwrap_or_default(),
        }
    }
}

// ---- decryption ------------------------------------------------------------------------

/// A file's bytes, hashed (BLAKE3) and counted as they are read.
struct Hashing {
    file: File,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// AES-256-CBC decryption of a stream, PKCS#7 padding removed and checked at its end. The
/// last decrypted block is held back until the ciphertext is known to go on. A fault
/// (ciphertext ending inside a block, bad padding) is kept in `fault` for the caller.
struct CbcReader<R> {
    inner: R,
    dec: cbc::Decryptor<aes::Aes256>,
    /// Ciphertext read and not yet decrypted (less than a block after each refill).
    pending: Vec<u8>,
    /// Plaintext ready to hand out, from `pos`.
    out: Vec<u8>,
    pos: usize,
    held: Option<[u8; BLOCK]>,
    read_buf: Vec<u8>,
    /// The end was reached and the padding checked.
    finished: bool,
    fault: Option<Refusal>,
}

impl<R: Read> CbcReader<R> {
    fn new(inner: R, key_iv: &[u8; 48]) -> CbcReader<R> {
        let dec = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key_iv[..32], &key_iv[32..])
            .expect("AES-256 key and IV lengths");
        CbcReader {
            inner,
            dec,
            pending: Vec::new(),
            out: Vec::new(),
            pos: 0,
            held: None,
            read_buf: vec![0; 256 << 10],
            finished: false,
            fault: None,
        }
    }

    fn fail(&mut self, r: Refusal) -> std::io::Error {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidData, r.msg.clone());
        self.fault.get_or_insert(r);
        e
    }

    fn refill(&mut self) -> std::io::Result<()> {
        self.out.clear();
        self.pos = 0;
        let n = loop {
            match self.inner.read(&mut self.read_buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n == 0 {
            self.finished = true;
            if !self.pending.is_empty() {
                return Err(self.fail(Refusal::damaged(
                    "the encrypted data ends inside an AES block: the file is truncated",
                )));
            }
            let Some(last) = self.held.take() else {
                return Err(self.fail(Refusal::damaged(
                    "the file holds no encrypted data after its salt: it is truncated",
                )));
            };
            let p = last[BLOCK - 1] as usize;
            if p == 0 || p > BLOCK || last[BLOCK - p..].iter().any(|&b| b as usize != p) {
                return Err(self.fail(Refusal::damaged(
                    "the last AES block's padding is invalid: the file is truncated or damaged",
                )));
            }
            self.out.extend_from_slice(&last[..BLOCK - p]);
            return Ok(());
        }
        self.pending.extend_from_slice(&self.read_buf[..n]);
        let whole = self.pending.len() / BLOCK * BLOCK;
        if whole == 0 {
            return Ok(());
        }
        if let Some(h) = self.held.take() {
            self.out.extend_from_slice(&h);
        }
        let start = self.out.len();
        self.out.extend_from_slice(&self.pending[..whole]);
        self.pending.drain(..whole);
        for b in self.out[start..].chunks_exact_mut(BLOCK) {
            self.dec.decrypt_block_mut(b.into());
        }
        let mut last = [0u8; BLOCK];
        last.copy_from_slice(&self.out[self.out.len() - BLOCK..]);
        self.out.truncate(self.out.len() - BLOCK);
        self.held = Some(last);
        Ok(())
    }
}

impl<R: Read> Read for CbcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.pos);
                buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.finished {
                return match &self.fault {
                    Some(f) => Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        f.msg.clone(),
                    )),
                    None => Ok(0),
                };
            }
            self.refill()?;
        }
    }
}

impl<R> Drop for CbcReader<R> {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.out.zeroize();
        if let Some(h) = &mut self.held {
            h.zeroize();
        }
    }
}

/// Read up to `n` bytes (fewer only at the end).
fn read_up_to(r: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut v)?;
    Ok(v)
}

// ---- the pg_dump archive header -----------------------------------------------------------

/// What a custom-format archive's header says (pg_backup_archiver.c `WriteHead`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DumpHeader {
    /// The archive version, `1.14-0` for pg_dump 14 and 15.
    pub archive_version: String,
    /// The database pg_dump connected to.
    pub database: Option<String>,
    /// The server's version string (`server_version`).
    pub server_version: Option<String>,
    pub pg_dump_version: Option<String>,
    /// When pg_dump started, in the old host's local time (no zone is recorded).
    pub created: Option<String>,
    /// The compression level (archives before 1.15) or method (1.15 on).
    pub compression: Option<i64>,
}

/// Parse the header; `Err` says why the bytes are not a custom-format archive pg_restore
/// can read. Fields past the format byte are facts: a header too short for them leaves
/// them out.
pub fn parse_header(b: &[u8]) -> Result<DumpHeader, String> {
    if !b.starts_with(b"PGDMP") {
        return Err("no PGDMP magic".into());
    }
    if b.len() < 8 {
        return Err("the archive header is cut short".into());
    }
    let (vmaj, vmin, vrev) = (b[5], b[6], b[7]);
    let v = (vmaj, vmin, vrev);
    let mut h = DumpHeader {
        archive_version: format!("{vmaj}.{vmin}-{vrev}"),
        ..Default::default()
    };
    if vmaj != 1 || vmin < 7 {
        return Err(format!(
            "archive version {} is not one pg_restore reads",
            h.archive_version
        ));
    }
    let (Some(&int_size), Some(&_off_size), Some(&format)) = (b.get(8), b.get(9), b.get(10)) else {
        return Err("the archive header is cut short".into());
    };
    if !(1..=8).contains(&int_size) {
        return Err(format!("an integer size of {int_size} bytes"));
    }
    // ArchiveFormat: archCustom = 1, archTar = 3, archNull = 4, archDirectory = 5
    if format != 1 {
        return Err(format!(
            "archive format {format}, not the custom format (pg_dump --format=custom)"
        ));
    }
    let mut p = Parser {
        b,
        pos: 11,
        int_size: int_size as usize,
    };
    let rest = (|| {
        h.compression = Some(if v >= (1, 15, 0) {
            p.byte()? as i64
        } else {
            p.int()?
        });
        let mut tm = [0i64; 7];
        for x in &mut tm {
            *x = p.int()?;
        }
        let [sec, min, hour, mday, mon, year, _isdst] = tm;
        h.created = Some(format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            year + 1900,
            mon + 1,
            mday,
            hour,
            min,
            sec
        ));
        h.database = p.string()?;
        if v >= (1, 10, 0) {
            h.server_version = p.string()?;
            h.pg_dump_version = p.string()?;
        }
        Some(())
    })();
    let _ = rest; // a short prefix leaves later facts out; pg_restore judges the archive
    Ok(h)
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl Parser<'_> {
    fn byte(&mut self) -> Option<u8> {
        let x = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(x)
    }

    /// `WriteInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Option<i64> {
        let neg = self.byte()? != 0;
        let mut v: i64 = 0;
        for i in 0..self.int_size {
            let x = self.byte()? as i64;
            if i < 8 {
                v |= x << (8 * i);
            }
        }
        Some(if neg { -v } else { v })
    }

    /// `WriteStr`: a length (-1 for NULL), then the bytes.
    fn string(&mut self) -> Option<Option<String>> {
        let n = self.int()?;
        if n < 0 {
            return Some(None);
        }
        let n = usize::try_from(n).ok().filter(|&n| n <= 1 << 16)?;
        let s = self.b.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(Some(String::from_utf8_lossy(s).into_owned()))
    }
}

/// `server_version_num` from a version string: "15.5 (Debian …)" → 150005, "9.6.24" → 90624.
pub fn version_num(v: &str) -> Option<i64> {
    let head: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Vec<i64> = head
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [maj, min, ..] if *maj >= 10 => Some(maj * 10000 + min),
        [maj] if *maj >= 10 => Some(maj * 10000),
        [maj, min, rev, ..] => Some(maj * 10000 + min * 100 + rev),
        [maj, min] => Some(maj * 10000 + min * 100),
        _ => None,
    }
}

// ---- probing ---------------------------------------------------------------------------

/// The key derivation that opens a file, and its archive header.
pub struct Probe {
    pub kdf: Kdf,
    key_iv: Zeroizing<[u8; 48]>,
    pub header: DumpHeader,
}

fn looks_like_text(b: &[u8]) -> bool {
    b.len() >= 16
        && b.iter()
            .all(|&c| matches!(c, b'\n' | b'\r' | b'\t') || (0x20..0x7f).contains(&c))
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter()
        .take(8)
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Check the file's framing and find the key derivation that opens it, reading only its
/// first bytes (the whole file only when it is small).
pub fn probe(path: &Path, pass: &[u8], iterations: u32) -> Result<Probe, Refusal> {
    let io = |e: std::io::Error| {
        Refusal::new(
            ErrorClass::Usage,
            format!("cannot read {}: {e}", path.display()),
            "check the path and its permissions",
        )
    };
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut head = [0u8; 16];
    let got = read_up_to(&mut f, 16).map_err(io)?;
    if got.len() < 8 || &got[..8] != MAGIC {
        return Err(Refusal::not_a_dump(
            "it does not start with openssl's \"Salted__\" header: not the output of `openssl \
             enc -salt`",
        ));
    }
    if got.len() < 16 {
        return Err(Refusal::damaged(
            "the file ends inside its salt: it is truncated",
        ));
    }
    head.copy_from_slice(&got);
    let salt = &head[8..16];
    let body = len - 16;
    if body == 0 || body % BLOCK as u64 != 0 {
        return Err(Refusal::damaged(format!(
            "{body} bytes of encrypted data are not a whole number of 16-byte AES blocks: the \
             file is truncated"
        )));
    }
    let mut text = None; // a derivation under which the plaintext is text, not gzip
    let mut raw_dump = None;
    let mut gzip_fault: Option<Refusal> = None;
    for kdf in Kdf::ALL {
        let key_iv = kdf.derive(pass, salt, iterations);
        let open = || -> std::io::Result<CbcReader<File>> {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(16))?;
            Ok(CbcReader::new(f, &key_iv))
        };
        let mut cbc = open().map_err(io)?;
        let Ok(first) = read_up_to(&mut cbc, 64) else {
            continue; // a small file whose padding this derivation does not satisfy
        };
        if !first.starts_with(&[0x1f, 0x8b, 0x08]) {
            if first.starts_with(b"PGDMP") {
                raw_dump = Some(kdf);
            } else if looks_like_text(&first) {
                text = Some(kdf);
            }
            continue;
        }
        let mut gz = MultiGzDecoder::new(open().map_err(io)?);
        let plain = match read_up_to(&mut gz, 4096) {
            Ok(p) => p,
            Err(e) => {
                let fault = gz.get_ref().fault.clone().unwrap_or_else(|| {
                    Refusal::damaged(format!(
                        "it decrypts ({}) to a gzip stream that is damaged or cut short: {e}",
                        kdf.as_str()
                    ))
                });
                gzip_fault.get_or_insert(fault);
                continue;
            }
        };
        if plain.starts_with(b"PGDMP") {
            return match parse_header(&plain) {
                Ok(header) => Ok(Probe {
                    kdf,
                    key_iv,
                    header,
                }),
                Err(why) => Err(Refusal::not_a_dump(format!(
                    "it decrypts and decompresses to a pg_dump archive arsip cannot import: {why}"
                ))),
            };
        }
        let what = if plain.starts_with(b"--") || (looks_like_text(&plain) && !plain.is_empty()) {
            "SQL text: a plain-format dump (pg_dump without --format=custom), which `arsip \
             restore pg --logical` cannot restore (feed it to psql instead)"
                .to_string()
        } else if plain.is_empty() {
            "nothing: the gzip stream is empty".to_string()
        } else {
            format!(
                "data that is not a pg_dump archive (it starts with {}, not PGDMP)",
                hex_prefix(&plain)
            )
        };
        return Err(Refusal::not_a_dump(format!(
            "it decrypts ({}) and decompresses to {what}",
            kdf.as_str()
        )));
    }
    if let Some(f) = gzip_fault {
        return Err(f);
    }
    if let Some(kdf) = raw_dump {
        return Err(Refusal::not_a_dump(format!(
            "it decrypts ({}) to a pg_dump archive that is not gzipped: not the old system's \
             `pg_dump | gzip | openssl` output",
            kdf.as_str()
        )));
    }
    if let Some(kdf) = text {
        return Err(Refusal::not_a_dump(format!(
            "it decrypts ({}) to text, not gzip: not the old system's `pg_dump | gzip | openssl` \
             output",
            kdf.as_str()
        )));
    }
    Err(Refusal::new(
        ErrorClass::WrongKey,
        format!(
            "the key does not decrypt it (tried EVP_BytesToKey with SHA-256 and with MD5, and \
             PBKDF2-HMAC-SHA256 with {iterations} iterations)"
        ),
        "give the old system's BACKUP_ENCRYPTION_KEY exactly (in the key file, a trailing \
         newline is ignored); files written with `openssl enc -pbkdf2 -iter N` need \
         --pbkdf2-iter N",
    ))
}

// ---- names and times -------------------------------------------------------------------

/// The time in a `PREFIX_YYYYMMDD_HHMMSS.sql.gz.enc` name, read in `zone`.
pub fn time_from_name(name: &str, zone: &TimeZone) -> Result<Timestamp, Refusal> {
    let bad = |why: &str| {
        Refusal::new(
            ErrorClass::Usage,
            format!("its name {name:?} {why}"),
            "legacy files are named like autolumiku_backup_YYYYMMDD_HHMMSS.sql.gz.enc (the \
             time they were made); give the time of a renamed file with --time",
        )
    };
    let stem = name
        .strip_suffix(NAME_SUFFIX)
        .ok_or_else(|| bad("does not end in .sql.gz.enc"))?;
    let b = stem.as_bytes();
    let n = b.len();
    let stamp = (n >= 16 && b[n - 16] == b'_' && b[n - 7] == b'_')
        .then(|| &stem[n - 15..])
        .filter(|s| {
            s.bytes()
                .enumerate()
                .all(|(i, c)| i == 8 || c.is_ascii_digit())
        })
        .ok_or_else(|| bad("does not end in _YYYYMMDD_HHMMSS.sql.gz.enc"))?;
    let num = |r: std::ops::Range<usize>| stamp[r].parse::<i16>().unwrap_or(-1);
    let (y, mo, d) = (num(0..4), num(4..6) as i8, num(6..8) as i8);
    let (h, mi, s) = (num(9..11) as i8, num(11..13) as i8, num(13..15) as i8);
    let dt = jiff::civil::DateTime::new(y, mo, d, h, mi, s, 0)
        .map_err(|e| bad(&format!("holds no valid date and time ({e})")))?;
    zone.to_ambiguous_zoned(dt)
        .later()
        .map(|z| z.timestamp())
        .map_err(|e| {
            bad(&format!(
                "holds a time that does not exist in the zone ({e})"
            ))
        })
}

// ---- the import ------------------------------------------------------------------------

/// What to import, and how.
pub struct LegacyImport {
    pub files: Vec<PathBuf>,
    /// The old system's BACKUP_ENCRYPTION_KEY (openssl's `-k` passphrase).
    pub key: Zeroizing<Vec<u8>>,
    /// The zone of the times in the names (the old host's).
    pub zone: TimeZone,
    /// A time for the (single) file instead of its name's.
    pub time: Option<Timestamp>,
    /// The snapshots' source; `None`: `legacy:<database>`.
    pub source: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// PBKDF2 iterations to try (`openssl enc -pbkdf2 -iter N`).
    pub pbkdf2_iterations: u32,
    pub settings: PgSettings,
}

impl std::fmt::Debug for LegacyImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyImport")
            .field("files", &self.files)
            .field("key", &"(redacted)")
            .field("zone", &self.zone)
            .field("time", &self.time)
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Imported,
    /// Already in the repository (the same bytes were imported before).
    Skipped,
    Refused,
}

/// One file's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileOutcome {
    pub file: String,
    pub status: Status,
    /// The snapshot it was imported as (or, skipped, the earlier import).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdf: Option<Kdf>,
    /// Bytes of the decrypted, decompressed pg_dump archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump_bytes: Option<u64>,
    /// Tables with data in the archive (their exact row counts are in the facts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<ErrorClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl FileOutcome {
    fn new(file: &Path, status: Status) -> FileOutcome {
        FileOutcome {
            file: file.display().to_string(),
            status,
            snapshot: None,
            time: None,
            database: None,
            kdf: None,
            dump_bytes: None,
            tables: None,
            reason: None,
            class: None,
            hint: None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LegacyImportOutcome {
    pub files: Vec<FileOutcome>,
    pub imported: usize,
    pub skipped: usize,
    pub refused: usize,
}

impl LegacyImportOutcome {
    /// The class of the refusals, when they share one (else [`ErrorClass::Failed`]);
    /// `None` when nothing was refused.
    pub fn refusal_class(&self) -> Option<ErrorClass> {
        let mut classes = self.files.iter().filter_map(|f| f.class);
        let first = classes.next()?;
        Some(if classes.all(|c| c == first) {
            first
        } else {
            ErrorClass::Failed
        })
    }
}

/// Facts that mark an imported snapshot.
pub const FACT_LEGACY: &str = "legacy";
pub const FACT_IMPORTED_FROM: &str = "imported_from";
pub const FACT_BLAKE3: &str = "legacy_blake3";
pub const FACT_SIZE: &str = "legacy_size";

/// Imported files the repository holds: (size, BLAKE3 hex) → snapshot id.
type Known = BTreeMap<(u64, String), String>;

async fn known_imports(repo: &FullRepo) -> Result<Known, RepoError> {
    let l = repo.snapshot_listing().await?;
    Ok(l.snapshots
        .into_iter()
        .filter(|s| s.manifest.kind == KIND)
        .filter_map(|s| {
            let f = &s.manifest.facts;
            (f.get(FACT_LEGACY) == Some(&Value::Bool(true))).then_some(())?;
            let size = f.get(FACT_SIZE)?.as_u64()?;
            let hash = f.get(FACT_BLAKE3)?.as_str()?.to_string();
            Some(((size, hash), s.id))
        })
        .collect())
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().to_hex().to_string());
        }
        h.update(&buf[..n]);
    }
}

/// Import every file, each on its own: one file's refusal does not stop the others.
pub async fn import(repo: FullRepo, opts: &LegacyImport) -> Result<LegacyImportOutcome> {
    let settings = opts.settings.clone();
    let bin = arsip_repo::blocking(move || pg_bin_dir(&settings)).await?;
    if !bin.join("pg_restore").exists() {
        return Err(PgError::refused(
            format!("{} has no pg_restore", bin.display()),
            "the import verifies each dump with pg_restore: install the PostgreSQL client \
             programs or set ARSIP_PG_BIN",
        ));
    }
    let mut known = known_imports(&repo).await?;
    let mut files = Vec::new();
    for path in &opts.files {
        let o = match import_one(&repo, &mut known, path, opts, &bin).await {
            Ok(o) => o,
            Err(r) => FileOutcome {
                reason: Some(r.msg),
                class: Some(r.class),
                hint: Some(r.hint).filter(|h| !h.is_empty()),
                ..FileOutcome::new(path, Status::Refused)
            },
        };
        files.push(o);
    }
    let count = |s| files.iter().filter(|f| f.status == s).count();
    Ok(LegacyImportOutcome {
        imported: count(Status::Imported),
        skipped: count(Status::Skipped),
        refused: count(Status::Refused),
        files,
    })
}

async fn import_one(
    repo: &FullRepo,
    known: &mut Known,
    path: &Path,
    opts: &LegacyImport,
    bin: &Path,
) -> Result<FileOutcome, Refusal> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let time = match opts.time {
        Some(t) => t,
        None => time_from_name(&name, &opts.zone)?,
    };
    let bound = repo.now() + arsip_repo::CLOCK_SKEW;
    if time > bound {
        return Err(Refusal::new(
            ErrorClass::Usage,
            format!(
                "its time {} is in the future",
                time.to_zoned(opts.zone.clone())
            ),
            "the names' times are read in --time-zone (default: the system's): give the old \
             host's zone, or the time with --time",
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        Refusal::new(
            ErrorClass::Usage,
            format!("cannot read {}: {e}", path.display()),
            "check the path and its permissions",
        )
    })?;
    if !meta.is_file() {
        return Err(Refusal::new(
            ErrorClass::Usage,
            format!("{} is not a regular file", path.display()),
            "name the .sql.gz.enc files themselves",
        ));
    }
    let size = meta.len();
    if known.keys().any(|(s, _)| *s == size) {
        let p = path.to_path_buf();
        let hash = arsip_repo::blocking(move || hash_file(&p).map_err(RepoError::Io)).await?;
        if let Some(id) = known.get(&(size, hash)) {
            return Ok(FileOutcome {
                snapshot: Some(id.clone()),
                time: Some(time),
                reason: Some(format!("already imported as snapshot {}", &id[..8])),
                ..FileOutcome::new(path, Status::Skipped)
            });
        }
    }
    let (p, key, iters) = (path.to_path_buf(), opts.key.clone(), opts.pbkdf2_iterations);
    let probe = arsip_repo::blocking(move || Ok::<_, Refusal>(probe(&p, &key, iters)))
        .await
        .and_then(|r| r)?;

    // pg_restore reads the archive as a restore would and prints its SQL: COPY blocks give
    // the row counts. Its stderr goes to a file, read when it failed.
    let mut stderr = tempfile::tempfile().map_err(RepoError::Io)?;
    let mut child = Command::new(bin.join("pg_restore"))
        .arg("--file=-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr.try_clone().map_err(RepoError::Io)?)
        .spawn()
        .map_err(|e| {
            Refusal::new(
                ErrorClass::Failed,
                format!("cannot run pg_restore: {e}"),
                "",
            )
        })?;
    let mut guard = KillOnDrop(Some(child.id()));
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let counter = std::thread::spawn(move || count_rows(stdout));

    let mut txn = SnapshotTxn::start(repo.clone()).await?;
    txn.claim_time(time);
    let session = txn.session().clone();
    let (p, key_iv) = (path.to_path_buf(), probe.key_iv.clone());
    let (written, feed) = arsip_repo::blocking(move || {
        let mut hashing = Hashing {
            file: File::open(&p)?,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        let mut head = [0u8; 16];
        hashing.read_exact(&mut head)?;
        let mut feed = Feed {
            gz: MultiGzDecoder::new(CbcReader::new(hashing, &key_iv)),
            pipe: Some(stdin),
            fault: None,
            pipe_closed: false,
            bytes: 0,
        };
        let written = session.write_stream_with(&mut feed, DUMP_CHUNKS);
        feed.pipe = None; // pg_restore sees the end
        Ok::<_, RepoError>((written, feed))
    })
    .await?;
    let status = arsip_repo::blocking(move || child.wait().map_err(RepoError::Io)).await?;
    guard.0 = None;
    let counts = counter.join();
    let mut err_tail = || {
        let mut buf = Vec::new();
        let _ = stderr.seek(SeekFrom::Start(0));
        let _ = stderr.read_to_end(&mut buf);
        let s = String::from_utf8_lossy(&buf);
        let s = s.trim();
        let cut = s.len().saturating_sub(2000);
        let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        s[cut..].replace('\n', "; ")
    };
    let (ids, dump_bytes) = match written {
        Ok(w) => w,
        Err(e) => {
            return Err(match feed.fault {
                Some(f) if !feed.pipe_closed => f,
                _ if feed.pipe_closed => pg_restore_refusal(status, &err_tail()),
                _ => e.into(),
            })
        }
    };
    let cbc = feed.gz.get_ref();
    if !cbc.finished {
        return Err(Refusal::damaged(
            "data follows the gzip stream: not a single `gzip` output",
        ));
    }
    if !status.success() {
        return Err(pg_restore_refusal(status, &err_tail()));
    }
    let counts = match counts {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(Refusal::new(
                ErrorClass::Failed,
                format!("reading pg_restore's output: {e}"),
                "",
            ))
        }
        Err(_) => {
            return Err(Refusal::new(
                ErrorClass::Internal,
                "the thread reading pg_restore's output panicked",
                "",
            ))
        }
    };
    let hash = cbc.inner.hasher.finalize().to_hex().to_string();
    let file_bytes = cbc.inner.bytes;

    let h = &probe.header;
    let db = h.database.clone().unwrap_or_else(|| "unknown".into());
    let mut facts: BTreeMap<String, Value> = BTreeMap::new();
    facts.insert(FACT_LEGACY.into(), json!(true));
    facts.insert(FACT_IMPORTED_FROM.into(), json!(name));
    facts.insert(FACT_BLAKE3.into(), json!(hash));
    facts.insert(FACT_SIZE.into(), json!(file_bytes));
    facts.insert("legacy_kdf".into(), json!(probe.kdf.as_str()));
    facts.insert(
        "legacy_time_from".into(),
        json!(if opts.time.is_some() {
            "--time"
        } else {
            "name"
        }),
    );
    facts.insert(
        "legacy_time_zone".into(),
        json!(opts
            .zone
            .iana_name()
            .map(str::to_string)
            .unwrap_or_else(|| { time.to_zoned(opts.zone.clone()).offset().to_string() })),
    );
    facts.insert("database".into(), json!(db));
    if let Some(v) = &h.server_version {
        facts.insert("server_version".into(), json!(v));
        if let Some(n) = version_num(v) {
            facts.insert("server_version_num".into(), json!(n));
        }
    }
    if let Some(v) = &h.pg_dump_version {
        facts.insert("pg_dump_version".into(), json!(v));
    }
    facts.insert("archive_version".into(), json!(h.archive_version));
    if let Some(c) = &h.created {
        facts.insert("pg_dump_started".into(), json!(c));
    }
    let tables = counts.len();
    facts.insert("row_counts".into(), json!(counts));
    txn.node(&Node::stream_file(DUMP_FILE, dump_bytes, time), &ids)?;
    let source = opts
        .source
        .clone()
        .unwrap_or_else(|| format!("legacy:{db}"));
    let out = txn
        .commit(SnapshotMeta {
            kind: KIND.into(),
            source,
            tags: opts.tags.clone(),
            facts,
        })
        .await?;
    known.insert((file_bytes, hash), out.id.clone());
    Ok(FileOutcome {
        snapshot: Some(out.id),
        time: Some(time),
        database: Some(db),
        kdf: Some(probe.kdf),
        dump_bytes: Some(dump_bytes),
        tables: Some(tables),
        ..FileOutcome::new(path, Status::Imported)
    })
}

fn pg_restore_refusal(status: std::process::ExitStatus, err: &str) -> Refusal {
    if err.contains("unsupported version") {
        return Refusal::new(
            ErrorClass::Refused,
            format!("pg_restore cannot read this archive: {err}"),
            "a newer pg_dump made it than this pg_restore: set ARSIP_PG_BIN to the programs of \
             a PostgreSQL at least as new as the old server's",
        );
    }
    let what = if status.success() {
        "pg_restore stopped reading it before its end".to_string()
    } else {
        format!("pg_restore failed ({status}): {err}")
    };
    Refusal::new(
        ErrorClass::Damaged,
        format!("the pg_dump archive inside is incomplete or damaged: {what}"),
        "the old system's pg_dump probably failed partway (its script does not check pg_dump's \
         exit status, so gzip and openssl still wrote a well-formed file): use another day's file",
    )
}

/// The decrypted, decompressed archive on its way into the repository, copied into
/// pg_restore's stdin as it passes. A fault of the layers below (padding, gzip) is kept.
struct Feed {
    gz: MultiGzDecoder<CbcReader<Hashing>>,
    pipe: Option<ChildStdin>,
    fault: Option<Refusal>,
    /// pg_restore stopped reading: its exit status and stderr say why.
    pipe_closed: bool,
    bytes: u64,
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.gz.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if self.fault.is_none() {
                    self.fault = Some(self.gz.get_ref().fault.clone().unwrap_or_else(|| {
                        Refusal::damaged(format!(
                            "the gzip stream is damaged or cut short ({e}): the file is truncated \
                             or damaged"
                        ))
                    }));
                }
                return Err(e);
            }
        };
        if n == 0 {
            self.pipe = None;
            return Ok(0);
        }
        self.bytes += n as u64;
        if let Some(p) = &mut self.pipe {
            if let Err(e) = p.write_all(&buf[..n]) {
                self.pipe = None;
                self.pipe_closed = true;
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("pg_restore stopped reading the archive: {e}"),
                ));
            }
        }
        Ok(n)
    }
}

/// Kills a child process by id on drop unless disarmed (an import that failed on the
/// repository side must not leave pg_restore waiting on its stdin).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).expect("child pid"),
                rustix::process::Signal::KILL,
            );
        }
    }
}

/// Row counts from pg_restore's SQL: the lines between `COPY schema.table (…) FROM stdin;`
/// and `\.`. COPY's text format escapes newlines inside values, so each line is one row.
/// Lines are not kept whole (a row can be large): outside COPY data only the start of a
/// line is collected, inside only whether it is the terminator.
fn count_rows(out: impl Read) -> std::io::Result<BTreeMap<String, u64>> {
    const KEEP: usize = 1 << 20;
    let mut r = BufReader::with_capacity(1 << 20, out);
    let mut counts = BTreeMap::new();
    let mut line: Vec<u8> = Vec::new();
    let mut overflow = false;
    let mut copy: Option<(String, u64)> = None;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(counts);
        }
        let (chunk, ended) = match buf.iter().position(|&c| c == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let limit = if copy.is_some() { 3 } else { KEEP };
        if line.len() < limit {
            let take = chunk.len().min(limit - line.len());
            line.extend_from_slice(&chunk[..take]);
            overflow |= take < chunk.len();
        } else {
            overflow = true;
        }
        let used = chunk.len();
        r.consume(used);
        if !ended {
            continue;
        }
        match &mut copy {
            Some((_, n)) => {
                if !overflow && line == b"\\.\n" {
                    let (t, n) = copy.take().expect("in COPY data");
                    *counts.entry(t).or_insert(0) += n;
                } else {
                    *n += 1;
                }
            }
            None => {
                if !overflow && line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;\n") {
                    if let Some(t) = copy_table(&line[5..]) {
                        copy = Some((t, 0));
                    }
                }
            }
        }
        line.clear();
        overflow = false;
    }
}

/// `schema.table` (unquoted, as `backup pg --logical` records them) from the start of a COPY
/// statement's target: `public.t (a, b) FROM stdin;`, `"My Schema"."T" FROM stdin;`.
fn copy_table(s: &[u8]) -> Option<String> {
    let (schema, rest) = ident(s)?;
    let rest = rest.strip_prefix(b".")?;
    let (table, rest) = ident(rest)?;
    rest.starts_with(b" ").then(|| format!("{schema}.{table}"))
}

fn ident(s: &[u8]) -> Option<(String, &[u8])> {
    if let Some(q) = s.strip_prefix(b"\"") {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            match q.get(i)? {
                b'"' if q.get(i + 1) == Some(&b'"') => {
                    out.push(b'"');
                    i += 2;
                }
                b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), &q[i + 1..])),
                &c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
    }
    let end = s.iter().position(|&c| c == b'.' || c == b' ')?;
    (end > 0).then(|| (String::from_utf8_lossy(&s[..end]).into_owned(), &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02X}")).collect()
    }

    /// Key and IV as `openssl enc -aes-256-cbc -k 'correct horse' -S 0102030405060708 -P`
    /// prints them (OpenSSL 3.0: default SHA-256; `-md md5`; `-pbkdf2`).
    #[test]
    fn key_derivations_match_openssl() {
        let salt = [1, 2, 3, 4, 5, 6, 7, 8];
        let cases = [
            (
                Kdf::EvpSha256,
                "085B2AE493DF8814345B7B91E439DAA3EF6692712AF5AEF7F55F853E427ACA30",
                "1438EED66CCD26D7839CC92EB57E91F7",
            ),
            (
                Kdf::EvpMd5,
                "BCF8D941D9291141709C9D56360EB7148E3960AB3DC44D832C4028568545C91D",
                "5A7A1D12207F801D2F6F4CF578E8708C",
            ),
            (
                Kdf::Pbkdf2Sha256,
                "EDEB1973D06DB0AC9D005E6CBA1015ADFD43D7C4CC3D5168D60DBBFBC0AA8B40",
                "1BD457757B24514A847E243514EDC535",
            ),
        ];
        for (kdf, key, iv) in cases {
            let k = kdf.derive(b"correct horse", &salt, DEFAULT_PBKDF2_ITERATIONS);
            assert_eq!(hex(&k[..32]), key, "{kdf:?}");
            assert_eq!(hex(&k[32..]), iv, "{kdf:?}");
        }
    }

    /// Encrypt like openssl (CBC, PKCS#7) with the crate's encryptor, then decrypt through
    /// [`CbcReader`] with reads of awkward sizes; bad padding and partial blocks are faults.
    #[test]
    fn cbc_reader_unpads_and_detects_truncation() {
        use cbc::cipher::BlockEncryptMut;
        let key_iv = Kdf::EvpSha256.derive(b"k", b"saltsalt", 1);
        for len in [0usize, 1, 15, 16, 17, 1000, 300_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut buf = plain.clone();
            let p = BLOCK - len % BLOCK;
            buf.extend(std::iter::repeat_n(p as u8, p));
            let mut enc =
                cbc::Encryptor::<aes::Aes256>::new_from_slices(&key_iv[..32], &key_iv[32..])
                    .unwrap();
            for b in buf.chunks_exact_mut(BLOCK) {
                enc.encrypt_block_mut(b.into());
            }
            let mut r = CbcReader::new(std::io::Cursor::new(buf.clone()), &key_iv);
            let mut out = Vec::new();
            let mut small = [0u8; 7];
            loop {
                let n = r.read(&mut small).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&small[..n]);
            }
            assert_eq!(out, plain, "len {len}");
            assert!(r.finished && r.fault.is_none());

            // cut inside a block, and a whole block short
            for cut in [buf.len() - 1, buf.len() - BLOCK] {
                let mut r = CbcReader::new(std::io::Cursor::new(buf[..cut].to_vec()), &key_iv);
                let mut sink = Vec::new();
                let res = r.read_to_end(&mut sink);
                if cut == 0 || cut % BLOCK != 0 {
                    assert!(res.is_err(), "len {len} cut {cut}");
                    assert_eq!(r.fault.as_ref().unwrap().class, ErrorClass::Damaged);
                } else if res.is_ok() {
                    // a whole-block cut leaves valid-looking padding about 1 time in 256;
                    // gzip's trailer catches those
                    assert!(sink.len() < plain.len());
                }
            }
        }
    }

    #[test]
    fn header_fields() {
        // PGDMP 1.14-0, int 4, off 8, custom; compression 9; tm; "app"; "15.5"; "15.5"
        let mut b = b"PGDMP".to_vec();
        b.extend([1, 14, 0, 4, 8, 1]);
        let int = |b: &mut Vec<u8>, v: i32| {
            b.push(u8::from(v < 0));
            b.extend(v.unsigned_abs().to_le_bytes());
        };
        int(&mut b, 9);
        for v in [5, 4, 3, 2, 0, 125, 0] {
            int(&mut b, v);
        }
        for s in ["app", "15.5 (Debian 15.5-1)", "15.5"] {
            int(&mut b, s.len() as i32);
            b.extend(s.as_bytes());
        }
        let h = parse_header(&b).unwrap();
        assert_eq!(h.archive_version, "1.14-0");
        assert_eq!(h.database.as_deref(), Some("app"));
        assert_eq!(h.server_version.as_deref(), Some("15.5 (Debian 15.5-1)"));
        assert_eq!(h.created.as_deref(), Some("2025-01-02 03:04:05"));
        assert_eq!(h.compression, Some(9));
        assert_eq!(version_num("15.5 (Debian 15.5-1)"), Some(150005));
        assert_eq!(version_num("9.6.24"), Some(90624));
        b[10] = 3;
        assert!(parse_header(&b)
            .unwrap_err()
            .contains("not the custom format"));
        assert!(parse_header(b"-- PostgreSQL").is_err());
    }

    #[test]
    fn names_and_times() {
        let jkt = TimeZone::get("Asia/Jakarta").unwrap();
        let t = time_from_name("autolumiku_backup_20250131_020000.sql.gz.enc", &jkt).unwrap();
        assert_eq!(t.to_string(), "2025-01-30T19:00:00Z");
        for bad in [
            "autolumiku_backup_20250131_020000.sql.gz",
            "backup.sql.gz.enc",
            "autolumiku_backup_20251331_020000.sql.gz.enc",
            "autolumiku_backup_2025013_1020000.sql.gz.enc",
        ] {
            assert_eq!(
                time_from_name(bad, &jkt).unwrap_err().class,
                ErrorClass::Usage,
                "{bad}"
            );
        }
    }

    #[test]
    fn row_counts_from_pg_restore_sql() {
        let sql = b"SET x = 1;\n\
            COPY public.items (id, name) FROM stdin;\n1\ta\n2\tb\\nc\n\\.\n\n\n\
            COPY \"My Schema\".\"Odd \"\"T\"\"\" (id) FROM stdin;\n\\.\n\n\
            COPY public.big (v) FROM stdin;\n"
            .to_vec();
        let mut all = sql;
        all.extend(vec![b'x'; 3 << 20]);
        all.extend(b"\n\\.\n".iter());
        all.extend(b"-- COPY public.fake (a) FROM stdin;\n");
        let c = count_rows(std::io::Cursor::new(all)).unwrap();
        assert_eq!(c.get("public.items"), Some(&2));
        assert_eq!(c.get("My Schema.Odd \"T\""), Some(&0));
        assert_eq!(c.get("public.big"), Some(&1));
        assert_eq!(c.len(), 3);
    }
}
