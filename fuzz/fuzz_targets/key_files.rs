//! Key files (FORMAT.md §8.4) and agent files (§8.5), parsed as the CLI parses them
//! (`secrets::open_with`: JSON, then the shape its marker field names) and decoded as
//! `Repository::open` decodes their keys.
#![no_main]

use arsip_repo::fuzzing::keys::{self, AgentFile, KeyFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if v.get("arsip_agent_file").is_some() {
        if let Ok(a) = serde_json::from_value::<AgentFile>(v) {
            let _ = hex::decode(&a.writer_id);
            let _ = keys::decode32(&a.signing_seed, "agent file");
            let _ = keys::decode32(&a.chunk_id_key, "agent file");
            let _ = keys::decode32(&a.public_key, "agent file");
            let _ = keys::decode32(&a.root_verify_key, "agent file");
            // The decimal-string seed survives a round trip.
            let back: AgentFile =
                serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
            assert_eq!(back.chunker_seed, a.chunker_seed);
        }
    } else if v.get("arsip_key_file").is_some() {
        if let Ok(f) = serde_json::from_value::<KeyFile>(v) {
            let _ = keys::decode32(&f.key, "key file");
        }
    }
});
