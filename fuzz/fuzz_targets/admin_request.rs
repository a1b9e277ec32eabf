//! The admin server's decision on arbitrary request heads: the input's lines are the method, the
//! path, the Host header (`-` for none), whether an Origin header came (a non-empty line), and the
//! client's address (loopback when it does not parse). `palisade_admin::decide` must not panic,
//! and must keep the trust model: anything with an Origin, or whose Host is not a loopback
//! address or localhost, is refused; only `POST /shutdown` from loopback shuts down. The checks
//! are fuzz/checks/admin_request.rs, shared with the stable smoke test tests/admin_fuzz_smoke.rs
//! (which also sends mutated raw requests to a real admin server) so that the two cannot drift
//! apart.
//!
//! cargo +nightly fuzz run admin_request fuzz/corpus/admin_request fuzz/seeds/admin_request
//! (docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/admin_request.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    // Whether it was refused only matters to the smoke test's counts.
    let _ = checks::check(data);
});
