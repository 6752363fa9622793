//! Indexes (FORMAT.md §6): the public section (counts, chunk ids), the signature, the sealed
//! location section, and the in-memory chunk index built from it (`IndexBuilder`,
//! `ChunkIndex` lookups).
//!
//! Even input bytes: the raw object, parsed before anything authenticates (anyone who can
//! create objects can name an object after its own hash). Odd: an index validly sealed and
//! signed for the fixed test repository with fuzzed counts, chunk ids and location
//! plaintext: what an agent can write (its signature would be its own).
#![no_main]

use std::sync::LazyLock;

use arsip_repo::format::{self, ROOT_WRITER};
use arsip_repo::fuzzing::{self, TestKeys};
use arsip_repo::fuzzing::index::{IndexBuilder, Trust};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<TestKeys> = LazyLock::new(TestKeys::fixed);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(p) = format::parse_index("i", rest) {
            assert_eq!(p.chunk_ids().count(), p.len());
            let _ = format::open_index_locations("i", rest, &p, &KEYS.secret);
        }
        let _ = fuzzing::open_index(&KEYS, rest);
    } else {
        let _ = sealed(&mut Unstructured::new(rest));
    }
});

fn count(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(if u.ratio(7, 8)? {
        u.int_in_range(0..=8)?
    } else {
        u.arbitrary()?
    })
}

fn sealed(u: &mut Unstructured<'_>) -> Result<()> {
    let n_packs = count(u)?;
    let n_chunks = count(u)?;
    let real_chunks = (n_chunks as usize).min(64);
    let mut ids = Vec::new();
    for _ in 0..real_chunks {
        // Few distinct ids, so duplicates (several copies of a chunk) are common.
        let mut id = [0u8; 32];
        id[0] = u.int_in_range(0..=3)?;
        id[31] = u.arbitrary()?;
        ids.extend_from_slice(&id);
    }
    if u.ratio(1, 8)? {
        ids.extend_from_slice(u.arbitrary::<&[u8]>()?);
    }
    let mut loc = Vec::new();
    if u.arbitrary::<bool>()? {
        for _ in 0..(n_packs as usize).min(16) {
            loc.extend_from_slice(&u.bytes(64)?);
            loc.extend_from_slice(&u.arbitrary::<u64>()?.to_le_bytes());
            loc.extend_from_slice(&u.arbitrary::<u32>()?.to_le_bytes());
        }
        for _ in 0..real_chunks {
            let pack = u.int_in_range(0..=n_packs)?;
            loc.extend_from_slice(&pack.to_le_bytes());
            loc.extend_from_slice(&u.bytes(13)?);
        }
    } else {
        loc.extend_from_slice(u.arbitrary::<&[u8]>()?);
    }
    let object = fuzzing::seal_index(
        &KEYS,
        &KEYS.root,
        &ROOT_WRITER,
        n_packs,
        n_chunks,
        &ids,
        &loc,
    );
    let Ok((packs, entries)) = fuzzing::open_index(&KEYS, &object) else {
        return Ok(());
    };
    // As `Repository::add_index_object` and `load_index` build the chunk index.
    let mut b = IndexBuilder::new(1 << 30, "/nonexistent/spill".into());
    let nums: Vec<u32> = packs.iter().map(|p| b.add_index_pack(p)).collect();
    for e in &entries {
        b.add(nums[e.pack as usize], &e.blob, Trust::Root).unwrap();
    }
    let idx = b.finish().unwrap();
    assert_eq!(idx.len(), entries.len());
    for e in &entries {
        let all = idx.all(&e.blob.id);
        assert!(
            all.iter().any(|s| s.blob() == e.blob),
            "an indexed entry is not found"
        );
        let s = idx.lookup(&e.blob.id).unwrap();
        let _ = idx.pack(s.pack);
    }
    Ok(())
}
