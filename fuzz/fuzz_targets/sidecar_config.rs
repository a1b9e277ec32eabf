//! The sidecar's configuration loader on arbitrary UTF-8: `SidecarConfig::from_yaml` must return
//! a configuration or a located error, never panic, and what loads must hold what the sidecar
//! relies on when it binds and runs. The checks are fuzz/checks/sidecar_config.rs, shared with
//! the stable smoke test tests/config_fuzz_smoke.rs so that the two cannot drift apart.
//!
//! cargo +nightly fuzz run sidecar_config fuzz/corpus/sidecar_config fuzz/seeds/sidecar_config
//! (docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/sidecar_config.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Whether it loaded only matters to the smoke test's counts.
    let _ = checks::check(text);
});
