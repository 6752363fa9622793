//! Tree streams (FORMAT.md §7.3): `TreeReader` over arbitrary bytes, and each node's path and
//! symlink target as bytes. The plaintext of a tree stream is whatever the snapshot's writer
//! (an agent, say) chunked, so every byte here is attacker-controlled after authentication.
#![no_main]

use arsip_repo::fuzzing::snapshot::TreeReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = TreeReader::new(data);
    while let Ok(Some((node, _chunks))) = r.next_node() {
        let _ = node.path_bytes();
        let _ = node.target_bytes();
    }
});
