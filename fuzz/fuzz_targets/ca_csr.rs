//! CSRs at the CA service, on arbitrary bytes. An input is a request body, optionally after a
//! first line naming the SPIFFE ID a credential grants (`spiffe://…\n`; without one, IDs in and
//! out of the CA's trust domain). The body goes through `palisade_ca_server::csr_from_body` (what
//! /v1/sign and /v1/renew do with the body they read); a CSR that checks out goes through
//! `issue_for_csr` of an issuing CA made once. Nothing may panic; refusals are typed; a
//! certificate is issued exactly when the ID has a path in the CA's trust domain, and it must
//! verify, with its chain, to the root as an X.509-SVID of that ID. The checks are
//! fuzz/checks/ca_csr.rs, shared with the stable smoke test tests/csr_fuzz_smoke.rs so that the
//! two cannot drift apart.
//!
//! cargo +nightly fuzz run ca_csr fuzz/corpus/ca_csr fuzz/seeds/ca_csr (docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/ca_csr.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    // How many certificates were issued only matters to the smoke test's counts.
    let _ = checks::check(data);
});
