//! Packs (FORMAT.md §5): the header and sealed pack key, the trailer and sealed table, and
//! every blob the table lists (authentication, zstd, length and chunk-id checks).
//!
//! Even input bytes: the raw object, as anyone who can create objects controls it, parsed
//! before anything authenticates. Odd: a pack validly sealed to the fixed test repository
//! (what an agent can write) with fuzzed blobs and a fuzzed table plaintext; the table's
//! entries either point at the blobs (so blob opening reaches decompression with fuzzed
//! `raw_len` and flags) or are arbitrary.
#![no_main]

use std::sync::LazyLock;

use arsip_repo::format::{self, BlobEntry};
use arsip_repo::fuzzing::{self, TestKeys};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<TestKeys> = LazyLock::new(TestKeys::fixed);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = format::parse_header("p", rest, format::ObjectType::Pack);
        let _ = format::open_pack_key("p", rest, &KEYS.secret);
        let _ = format::read_pack_table("p", rest, &KEYS.secret);
    } else {
        let _ = sealed(&mut Unstructured::new(rest));
    }
});

struct Blob {
    id: [u8; 32],
    stored: Vec<u8>,
    flags: u8,
    raw_len: u32,
}

fn sealed(u: &mut Unstructured<'_>) -> Result<()> {
    let key_id = if u.arbitrary::<bool>()? {
        0
    } else {
        u.arbitrary()?
    };
    let mut blobs = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let plain: &[u8] = u.arbitrary()?;
        let flags: u8 = u.arbitrary()?;
        let b = match u.int_in_range(0..=2)? {
            // Honest: the chunk id of the plaintext, compressed if flagged.
            0 => Blob {
                id: arsip_repo::crypto::chunk_id(&KEYS.id_key, plain),
                stored: if flags & format::FLAG_ZSTD != 0 {
                    zstd::bulk::compress(plain, 1).unwrap()
                } else {
                    plain.to_vec()
                },
                flags,
                raw_len: plain.len() as u32,
            },
            // Honest bytes, a lying raw_len.
            1 => Blob {
                id: arsip_repo::crypto::chunk_id(&KEYS.id_key, plain),
                stored: zstd::bulk::compress(plain, 1).unwrap(),
                flags: flags | format::FLAG_ZSTD,
                raw_len: u.arbitrary()?,
            },
            // Arbitrary stored bytes (a hand-made zstd frame, say).
            _ => Blob {
                id: u.arbitrary()?,
                stored: plain.to_vec(),
                flags,
                raw_len: u.arbitrary()?,
            },
        };
        blobs.push(b);
    }
    let parts: Vec<_> = blobs
        .iter()
        .map(|b| (b.id, b.stored.as_slice(), b.flags))
        .collect();
    let table = if u.arbitrary::<bool>()? {
        // Entries for the blobs, some perturbed.
        let mut t = (blobs.len() as u32).to_le_bytes().to_vec();
        let (_, _, offsets) = fuzzing::seal_pack(&KEYS, key_id, &parts, &[]);
        for (b, off) in blobs.iter().zip(&offsets) {
            let mut e = [
                &b.id[..],
                &off.to_le_bytes(),
                &(b.stored.len() as u32 + 40).to_le_bytes(),
                &b.raw_len.to_le_bytes(),
                &[b.flags],
            ]
            .concat();
            if u.ratio(1, 8)? {
                let i = u.choose_index(e.len())?;
                e[i] = u.arbitrary()?;
            }
            t.extend_from_slice(&e);
        }
        t
    } else {
        u.arbitrary::<&[u8]>()?.to_vec()
    };
    let (pack, key, _) = fuzzing::seal_pack(&KEYS, key_id, &parts, &table);
    if let Ok((k, entries)) = format::read_pack_table("p", &pack, &KEYS.secret) {
        assert!(k == key, "a pack's table opened under another key");
        for e in entries {
            open(&pack, key_id, &k, &e);
        }
    }
    Ok(())
}

/// As `Reader::chunk` and `check --read-data` open one blob: the range the entry names.
fn open(pack: &[u8], key_id: u32, key: &arsip_repo::crypto::Key, e: &BlobEntry) {
    let Some(ct) = pack.get(e.offset as usize..e.offset as usize + e.len as usize) else {
        return;
    };
    if let Ok(data) = format::open_blob("p", key_id, key, e, ct, &KEYS.id_key) {
        assert_eq!(data.len(), e.raw_len as usize);
    }
}
