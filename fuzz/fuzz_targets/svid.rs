//! Certificates as the validator sees them, on arbitrary bytes: the input is read as PEM
//! (certificates, bundles, keys, CSRs), as a raw DER leaf, and as an intermediate under a leaf
//! that verifies, and goes through `verify_svid` against a fixed bundle (the root of the seeds in
//! fuzz/seeds/svid, so that mutations of them come close to valid) and `CertInfo::inspect`.
//! Nothing may panic; what verifies must carry an ID with a path in the bundle's trust domain,
//! and the leaf checks and `inspect` must agree. The checks are fuzz/checks/svid.rs, shared with
//! the stable smoke test tests/pem_fuzz_smoke.rs so that the two cannot drift apart.
//!
//! cargo +nightly fuzz run svid fuzz/corpus/svid fuzz/seeds/svid (docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/svid.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    // How many readings verified only matters to the smoke test's counts.
    let _ = checks::check(data);
});
