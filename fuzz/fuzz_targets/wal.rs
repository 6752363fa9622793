//! WAL objects (FORMAT.md §16): the public part, the signature over its digest, the sealed
//! key and body, zstd and the length and keyed-hash checks.
//!
//! First byte mod 3 = 0: the raw object, parsed before anything authenticates (`wal push`
//! reads the public part of an existing object with an agent's credentials, too). 1: an
//! object validly sealed and signed for the fixed test repository with a fuzzed `len`,
//! content hash and body (a hand-made zstd frame): what an agent can write. 2: an honest
//! round trip through `wal::encode` of fuzzed plaintext.
#![no_main]

use std::sync::LazyLock;

use arsip_repo::format::ROOT_WRITER;
use arsip_repo::fuzzing::{self, TestKeys};
use arsip_repo::fuzzing::wal;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<TestKeys> = LazyLock::new(TestKeys::fixed);
const NAME: &str = "wal/7301234567890123456-15/000000010000000000000003";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = wal::parse_public(NAME, rest);
            let _ = fuzzing::open_wal(&KEYS, NAME, rest);
        }
        1 => {
            let _ = sealed(&mut Unstructured::new(rest));
        }
        _ => {
            let obj = wal::encode(
                NAME,
                &ROOT_WRITER,
                &KEYS.root,
                &KEYS.public,
                &KEYS.id_key,
                rest,
            )
            .unwrap();
            assert_eq!(fuzzing::open_wal(&KEYS, NAME, &obj).unwrap(), rest);
        }
    }
});

fn sealed(u: &mut Unstructured<'_>) -> Result<()> {
    let plain: &[u8] = u.arbitrary()?;
    let body = if u.arbitrary::<bool>()? {
        zstd::bulk::compress(plain, 1).unwrap()
    } else {
        plain.to_vec()
    };
    let raw_len = if u.arbitrary::<bool>()? {
        plain.len() as u64
    } else {
        u.arbitrary()?
    };
    let hash = if u.arbitrary::<bool>()? {
        wal::content_hash(&KEYS.id_key, plain)
    } else {
        u.arbitrary()?
    };
    let obj = fuzzing::seal_wal(&KEYS, NAME, raw_len, &hash, &body);
    if let Ok(d) = fuzzing::open_wal(&KEYS, NAME, &obj) {
        assert_eq!(d.len() as u64, raw_len);
    }
    Ok(())
}
