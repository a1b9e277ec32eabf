//! The fuzz target `fuzz/fuzz_targets/ca_csr.rs` on stable, as a plain test: CSRs at the CA
//! service. The seeds in fuzz/seeds/ca_csr (CSRs for P-256, Ed25519 and keys the CA does not sign
//! for, as DER and PEM, with subjects and SANs the CA ignores) and deterministic mutations of them
//! (bytes for DER, text for PEM) go through the CA service's body reader
//! (`palisade_ca_server::csr_from_body`, what /v1/sign and /v1/renew do with the body they read)
//! and, when the CSR checks out, through `issue_for_csr` of an issuing CA for the ID of the
//! input's first line, or else for IDs in and out of its trust domain. Nothing may panic; a
//! refusal is a typed error; a certificate is issued exactly for the IDs of the CA's trust domain
//! that have a path, and what is issued must verify, with its chain, to the root as an X.509-SVID
//! of exactly that ID. The checks are fuzz/checks/ca_csr.rs, the same file the fuzz target
//! includes. Bounded to about 10 seconds and 60,000 mutations (issuing signs, so each is slower
//! than a parse). docs/FUZZING.md.
//!
//! `cargo test --test csr_fuzz_smoke -- --ignored write_csr_seeds` makes the seeds anew.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mutate::{caught, mutate, mutate_bytes, smoke, Bounds, Rng};

// The checks themselves, shared with the fuzz target so that the two cannot drift apart.
#[path = "../fuzz/checks/ca_csr.rs"]
mod checks;

const MUTATIONS: usize = 60_000;
const BUDGET: Duration = Duration::from_secs(10);

const TOKENS: &[&str] = &[
    "-----BEGIN CERTIFICATE REQUEST-----\n",
    "-----END CERTIFICATE REQUEST-----\n",
    "-----BEGIN NEW CERTIFICATE REQUEST-----\n",
    "-----BEGIN CERTIFICATE-----\n",
    "-----BEGIN",
    "=",
    "\r\n",
    "\n",
    "MII",
];

fn run(body: &[u8]) -> usize {
    caught(body, || checks::check(body))
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/ca_csr")
}

#[test]
fn csrs_and_their_mutations_never_panic_the_ca() {
    let mut files: Vec<_> = std::fs::read_dir(seeds_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(seeds.len() >= 6, "{} seeds", seeds.len());
    let started = Instant::now();
    let seeds_issued: usize = seeds.iter().map(|s| run(s)).sum();
    // Two IDs each for csr-p256.der and .pem, csr-ed25519.der, csr-with-names.der; the ID line's
    // own for id-payments-csr-p256.
    assert!(
        seeds_issued >= 9,
        "only {seeds_issued} issued from the seeds"
    );
    let (pem, der): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        seeds.into_iter().partition(|s| s.starts_with(b"-----"));
    let pem_text: Vec<String> = pem
        .iter()
        .map(|p| String::from_utf8(p.clone()).unwrap())
        .collect();
    let bounds = Bounds {
        max: MUTATIONS,
        min: 500,
        budget: BUDGET,
    };
    let mutations = smoke(
        bounds,
        &mut Rng(0xc5c5_0f0f_2026_1205),
        |rng| {
            if rng.below(4) == 0 {
                mutate(rng, &pem_text, TOKENS).into_bytes()
            } else {
                mutate_bytes(rng, &der)
            }
        },
        |body| run(body),
    );
    println!(
        "csr fuzz smoke: {} seed bodies ({seeds_issued} certificates issued), {} mutations, {} certificates issued from them, all verified, no panic, in {:.1} s",
        pem.len() + der.len(),
        mutations.inputs,
        mutations.counted,
        started.elapsed().as_secs_f64()
    );
}

/// Makes fuzz/seeds/ca_csr anew (run by hand; the seeds are checked in).
#[test]
#[ignore = "writes the seeds of fuzz/seeds/ca_csr; run by hand"]
fn write_csr_seeds() {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};
    let dir = seeds_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&p256)
        .unwrap();
    write("csr-p256.der", csr.der());
    write("csr-p256.pem", csr.pem().unwrap().as_bytes());
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let csr = CertificateParams::default().serialize_request(&ed).unwrap();
    write("csr-ed25519.der", csr.der());
    // A subject and SANs the CA must ignore: the credential decides the identity.
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    ));
    params
        .distinguished_name
        .push(DnType::CommonName, "spiffe://example.org/admin");
    write(
        "csr-with-names.der",
        params.serialize_request(&p256).unwrap().der(),
    );
    // A key type the CA does not sign for (CsrKeyType).
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&p384)
        .unwrap();
    write("csr-p384.der", csr.der());
    // A good CSR whose signature no longer matches (CsrSignature): one bit of the key flipped.
    let mut bad = CertificateParams::default()
        .serialize_request(&p256)
        .unwrap()
        .der()
        .to_vec();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    write("csr-bad-signature.der", &bad);
}
