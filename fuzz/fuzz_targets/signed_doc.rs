//! Signed JSON documents (FORMAT.md §8.1): `config` (§8.2) and writer records (§8.6).
//!
//! Even first byte: the raw object, verified under the fixed root key (fails unless the
//! fuzzer forges Ed25519) and read unverified as `Repository::open` first reads `config`.
//! Odd: the rest, if it is JSON, is signed as a body with the fixed root key and verified
//! back: the canonical form must survive the round trip for every JSON value without a
//! floating-point number (v1 has none, §8.1), a body with one must be refused as such, and a
//! verified config or record is then interpreted as readers interpret it.
#![no_main]

use std::sync::LazyLock;

use arsip_repo::fuzzing::TestKeys;
use arsip_repo::fuzzing::keys::{self, Config, WriterRecord};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<TestKeys> = LazyLock::new(TestKeys::fixed);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let vk = KEYS.root.verify_key();
    if mode & 1 == 0 {
        let _ = keys::unverified_body::<Config>("config", rest);
        let _ = keys::verify_doc::<Config>("config", rest, &vk);
        let _ = keys::verify_doc::<WriterRecord>("writers/x", rest, &vk);
        return;
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let doc = keys::sign_doc(&KEYS.root, &body);
    match keys::verify_doc::<serde_json::Value>("doc", &doc, &vk) {
        Ok(back) => {
            assert!(!has_float(&body), "a body with a float verifies");
            assert_eq!(back, body);
        }
        Err(e) if has_float(&body) => assert!(e.to_string().contains("floating-point"), "{e}"),
        Err(e) => panic!("a signed document does not verify: {e}"),
    }
    if let Ok(c) = keys::verify_doc::<Config>("config", &doc, &vk) {
        let _ = c.public_key();
        let _ = c.root_verify_key();
        let _ = keys::validate_block_size(c.block_size);
        let _ = c.chunker.validate();
    }
    if let Ok(r) = keys::verify_doc::<WriterRecord>("writers/x", &doc, &vk) {
        let _ = keys::decode32(&r.verify_key, "writer record");
        let _ = hex::decode(&r.writer_id);
    }
});

/// Any number that is not a 64-bit integer (the oracle, written independently of `keys`).
fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.as_i64().is_none() && n.as_u64().is_none(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}
