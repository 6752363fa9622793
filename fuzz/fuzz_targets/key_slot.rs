//! Key slots `keys/<id>` (FORMAT.md §8.3): parsed and filtered as `Repository::open` lists
//! them, then opened with a password (only when the slot's KDF is cheap enough to run here)
//! and with a key file. Slots are unauthenticated and anyone who can create objects can
//! plant one, so every byte is attacker-controlled.
//!
//! Property: a slot that readers accept must never make opening *fail*. Opening with a
//! password tries every password slot in turn, so an error from one planted slot would stop
//! the repository from opening with any password (FORMAT.md §8.3: such slots are skipped).
#![no_main]

use arsip_repo::fuzzing::keys::{KeyFile, KeySlot, Secret, SlotKind};
use libfuzzer_sys::fuzz_target;

const REPO_ID: &str = "4242424242424242424242424242424242424242424242424242424242424242";

fuzz_target!(|data: &[u8]| {
    let Ok(slot) = KeySlot::parse("keys/fuzz", data) else {
        return;
    };
    let _ = slot.object_name();
    let cheap = slot
        .kdf
        .as_ref()
        .is_none_or(|k| k.m_kib <= 2048 && k.t <= 2 && k.p <= 4);
    if slot.kind == SlotKind::Password && cheap {
        if let Err(e) = slot.open(REPO_ID, &Secret::Password(b"password")) {
            panic!("an accepted slot fails password opening: {e}");
        }
    }
    let file = KeyFile {
        arsip_key_file: 1,
        repo_id: REPO_ID.into(),
        slot_id: slot.id.clone(),
        key: "17".repeat(32),
    };
    let _ = slot.open(REPO_ID, &Secret::KeyFile(&file));
});
