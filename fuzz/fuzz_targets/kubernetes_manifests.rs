//! The Kubernetes manifest readers on arbitrary UTF-8: the NetworkPolicy loader must return the
//! objects or located errors (objects that load must compile for every node and give matrices),
//! and `inject` must inject or refuse; what it injects must uninject and inject again to the same
//! text. The checks are fuzz/checks/kubernetes_manifests.rs, shared with the stable smoke test
//! tests/manifest_fuzz_smoke.rs so that the two cannot drift apart.
//!
//! cargo +nightly fuzz run kubernetes_manifests fuzz/corpus/kubernetes_manifests examples/kubernetes
//! (docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/kubernetes_manifests.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Whether it loaded only matters to the smoke test's counts.
    let _ = checks::check(text);
});
