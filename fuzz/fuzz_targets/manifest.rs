//! Snapshot manifests (FORMAT.md §7.1–7.2): the sealed-document layout and the manifest JSON.
//!
//! Even input bytes: the raw object, parsed before anything authenticates. Odd: the rest is a
//! manifest body, sealed and signed for the fixed test repository (what an agent can write),
//! then opened as `Repository::open_manifest` opens it.
#![no_main]

use std::sync::LazyLock;

use arsip_repo::format::{self, ObjectType, ROOT_WRITER};
use arsip_repo::fuzzing::{self, TestKeys};
use arsip_repo::fuzzing::snapshot::{self, Snapshot};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<TestKeys> = LazyLock::new(TestKeys::fixed);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let manifest = if mode & 1 == 0 {
        let _ = format::sealed_doc_writer("s", rest, ObjectType::Snapshot);
        let _ = format::open_sealed_doc("s", rest, ObjectType::Snapshot, &KEYS.secret);
        fuzzing::open_manifest(&KEYS, rest)
    } else {
        let object = format::encode_sealed_doc(
            ObjectType::Snapshot,
            0,
            &ROOT_WRITER,
            &KEYS.root,
            &KEYS.public,
            rest,
        );
        fuzzing::open_manifest(&KEYS, &object)
    };
    let Ok(m) = manifest else {
        return;
    };
    let _ = m.tree_ids();
    let snaps = [Snapshot {
        id: blake3::hash(rest).to_hex().to_string(),
        writer: hex::encode(ROOT_WRITER),
        stored: None,
        manifest: m,
    }];
    let _ = snaps[0].short_id();
    let _ = snapshot::select(&snaps, "latest").unwrap();
    // What `snapshots --json` prints.
    let _ = serde_json::to_vec(&snaps[0]).unwrap();
});
