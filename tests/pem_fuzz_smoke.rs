//! The fuzz target `fuzz/fuzz_targets/svid.rs` on stable, as a plain test: certificates, chains,
//! bundles, keys and CSRs as the validator reads them. The seeds in fuzz/seeds/svid (SVIDs of one
//! root, chains through an issuer, certificates that break one SVID rule each, and their DER) and
//! deterministic mutations of them, at the byte level for DER and the text level for PEM, go
//! through the PEM readers, `TrustBundle::from_pem`, `verify_svid` against the seeds' bundle,
//! `not_after` and `CertInfo::inspect` (the leaf profile, the SPIFFE ID and the URI SANs), each
//! input as PEM, as a raw DER leaf and as an intermediate under a valid leaf. Nothing may panic;
//! what verifies must carry an ID of the bundle's trust domain, with a path, and `inspect` must
//! agree. The checks are fuzz/checks/svid.rs, the same file the fuzz target includes. Bounded to
//! about 10 seconds and 12,000 mutations (the counts are printed).
//!
//! `cargo test --test pem_fuzz_smoke -- --ignored write_svid_seeds` makes the seeds anew.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mutate::{caught, mutate, mutate_bytes, smoke, Bounds, Rng};
use palisade_identity::pem::certificates_from_pem;
use rustls_pki_types::CertificateDer;

// The checks themselves, shared with the fuzz target so that the two cannot drift apart.
#[path = "../fuzz/checks/svid.rs"]
mod checks;

const MUTATIONS: usize = 12_000;
const BUDGET: Duration = Duration::from_secs(10);

/// PEM labels and base64's edges, for the text mutations.
const TOKENS: &[&str] = &[
    "-----BEGIN CERTIFICATE-----\n",
    "-----END CERTIFICATE-----\n",
    "-----BEGIN PRIVATE KEY-----\n",
    "-----END PRIVATE KEY-----\n",
    "-----BEGIN EC PRIVATE KEY-----\n",
    "-----BEGIN CERTIFICATE REQUEST-----\n",
    "-----END CERTIFICATE REQUEST-----\n",
    "-----BEGIN X509 CRL-----\n",
    "-----",
    "=",
    "==",
    "\r\n",
    "\n",
    " ",
    "MII",
    "AAAA",
    "////",
];

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/svid")
}

fn run(input: &[u8]) -> usize {
    caught(input, || checks::check(input))
}

#[test]
fn certificates_and_their_mutations_never_panic_the_validator() {
    let mut files: Vec<_> = std::fs::read_dir(seeds_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(seeds.len() >= 12, "{} seeds", seeds.len());
    let started = Instant::now();
    let seeds_verified: usize = seeds.iter().map(|s| run(s)).sum();
    // leaf-root.pem and .der, leaf-issuer-chain.pem, leaf-ed25519.pem, leaf-with-key.pem.
    assert!(
        seeds_verified >= 5,
        "only {seeds_verified} seed readings verified"
    );
    // DER seeds mutate as bytes, PEM seeds as text; then the DER inside mutated PEM, and PEM
    // made of mutated DER, so that both readers see near-valid certificates.
    let (pem, der): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        seeds.iter().cloned().partition(|s| s.starts_with(b"-----"));
    let pem_text: Vec<String> = pem
        .iter()
        .map(|p| String::from_utf8(p.clone()).unwrap())
        .collect();
    let mut der_inputs = der.clone();
    for p in &pem {
        if let Ok(chain) = certificates_from_pem(p) {
            der_inputs.extend(chain.iter().map(|c| c.to_vec()));
        }
    }
    let bounds = Bounds {
        max: MUTATIONS,
        min: 1_000,
        budget: BUDGET,
    };
    let mut as_pem = 0usize;
    let mutations = smoke(
        bounds,
        &mut Rng(0xde5e_ed5c_2026_1205),
        |rng| match rng.below(4) {
            0 => mutate(rng, &pem_text, TOKENS).into_bytes(),
            1 => {
                as_pem += 1;
                palisade_identity::pem::certificate_to_pem(&CertificateDer::from(mutate_bytes(
                    rng,
                    &der_inputs,
                )))
                .into_bytes()
            }
            _ => mutate_bytes(rng, &der_inputs),
        },
        |input| run(input),
    );
    println!(
        "pem/svid fuzz smoke: {} seeds ({seeds_verified} readings verified), {} mutations ({as_pem} of them DER mutated then PEM-encoded), {} readings verified, no panic, in {:.1} s",
        seeds.len(),
        mutations.inputs,
        mutations.counted,
        started.elapsed().as_secs_f64()
    );
}

/// Makes fuzz/seeds/svid anew (run by hand; the seeds are checked in): a root of example.org and
/// an issuer under it, valid for 20 years; SVIDs they sign, as PEM and as DER; certificates signed
/// by the root that each break one SVID rule; a CSR; and a few byte mutations of a leaf.
#[test]
#[ignore = "writes the seeds of fuzz/seeds/svid; run by hand"]
fn write_svid_seeds() {
    use palisade_ca::{CertificateAuthority, KeyType, LeafRequest};
    use palisade_identity::{SpiffeId, TrustDomain};
    use rcgen::{
        BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };

    let dir = seeds_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    let twenty_years = Duration::from_secs(20 * 365 * 86_400);
    let td = TrustDomain::parse("example.org").unwrap();
    let root = CertificateAuthority::generate_root(&td, KeyType::EcdsaP256, twenty_years).unwrap();
    let issuer = root
        .generate_issuer(KeyType::EcdsaP256, twenty_years)
        .unwrap();
    write(
        "bundle.pem",
        palisade_identity::pem::certificate_to_pem(root.certificate()).as_bytes(),
    );
    let id = SpiffeId::parse("spiffe://example.org/ns/shop/sa/frontend").unwrap();
    let request = LeafRequest::new(id, twenty_years);
    let (leaf, key) = root
        .issue_with_new_key(&request, KeyType::EcdsaP256)
        .unwrap();
    write("leaf-root.pem", leaf.chain_pem().as_bytes());
    write("leaf-root.der", &leaf.cert);
    write(
        "leaf-with-key.pem",
        format!("{}{}", leaf.chain_pem(), palisade_ca::private_key_pem(&key)).as_bytes(),
    );
    let (chained, _) = issuer
        .issue_with_new_key(&request, KeyType::EcdsaP256)
        .unwrap();
    write("leaf-issuer-chain.pem", chained.chain_pem().as_bytes());
    write("leaf-issuer.der", &chained.cert);
    write("issuer.der", issuer.certificate());
    let (ed, _) = root.issue_with_new_key(&request, KeyType::Ed25519).unwrap();
    write("leaf-ed25519.pem", ed.chain_pem().as_bytes());

    // Signed by the root, each breaking one rule, so that the checks past parsing are reached.
    let root_issuer = Issuer::from_ca_cert_der(
        root.certificate(),
        KeyPair::from_pem(&root.key_pem()).unwrap(),
    )
    .unwrap();
    let odd = |name: &str, edit: &dyn Fn(&mut CertificateParams)| {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.subject_alt_names = vec![SanType::URI(
            "spiffe://example.org/ns/shop/sa/odd".try_into().unwrap(),
        )];
        params.not_after = time::OffsetDateTime::now_utc() + twenty_years;
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &root_issuer).unwrap();
        write(name, cert.der());
    };
    odd("two-uri-sans.der", &|p| {
        p.subject_alt_names.push(SanType::URI(
            "spiffe://example.org/other".try_into().unwrap(),
        ))
    });
    odd("leaf-is-ca.der", &|p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
    });
    odd("no-key-usage.der", &|p| p.key_usages.clear());
    odd("dns-only.der", &|p| {
        p.subject_alt_names = vec![SanType::DnsName("frontend.shop".try_into().unwrap())]
    });
    odd("id-without-path.der", &|p| {
        p.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())]
    });
    odd("other-trust-domain.der", &|p| {
        p.subject_alt_names = vec![SanType::URI(
            "spiffe://other.example/ns/a".try_into().unwrap(),
        )]
    });
    odd("not-spiffe.der", &|p| {
        p.subject_alt_names = vec![SanType::URI("https://example.org/x".try_into().unwrap())]
    });
    let csr = CertificateParams::default()
        .serialize_request(&KeyPair::generate().unwrap())
        .unwrap();
    write("csr.pem", csr.pem().unwrap().as_bytes());
    let mut rng = Rng(0x5eed_0fde_2026_1205);
    let leaves = vec![leaf.cert.to_vec()];
    for n in 0..4 {
        write(
            &format!("leaf-mutated-{n}.der"),
            &mutate_bytes(&mut rng, &leaves),
        );
    }
}
