//! The policy loader on arbitrary UTF-8: `load_str` must return a policy or located errors, never
//! panic; a policy that loads must lint, compile (every segment local) and render without panic.
//!
//! cargo +nightly fuzz run policy_load fuzz/corpus/policy_load fuzz/seeds/policy_load examples/policy
//! (docs/FUZZING.md). The same checks run on stable in nft/tests/fuzz_smoke.rs.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match palisade_policy::load_str(text, Path::new("fuzz.yaml")) {
        Ok(policy) => {
            let _ = palisade_policy::lint(&policy);
            let ruleset = palisade_policy::compile(&policy, None).expect("no host named");
            let _ = palisade_nft::nft_text(&ruleset);
            let _ = palisade_nft::nft_json(&ruleset);
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "an error without a message");
            let _ = errors.to_string();
        }
    }
});
