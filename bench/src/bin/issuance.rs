//! Leaf issuance from CSRs per second on one thread, next to the raw ECDSA P-256 sign and verify
//! rates of the same crypto library, measured in the same process. Prints one JSON object.
//!
//! Issuing from a CSR costs at least one verify (the CSR's signature) and one sign (the
//! certificate), so 1 / (1/sign + 1/verify) is the ceiling; `bench/issuance.sh` compares us with
//! that ceiling as OpenSSL measures it on the same core in the same run.
//!
//! Usage: issuance [SECONDS]   (default 3 per measurement; every loop is bounded in count and time)

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use palisade_ca::{CertificateAuthority, KeyType, LeafRequest};
use palisade_identity::{SpiffeId, TrustDomain};
use rcgen::{CertificateParams, KeyPair};

const MAX_ITERATIONS: u64 = 10_000_000;

/// Runs `f` repeatedly for about `budget`, returning operations per second.
fn rate(budget: Duration, mut f: impl FnMut(u64)) -> f64 {
    // Warm up caches and lazy initialisation outside the timed loop.
    for i in 0..50 {
        f(i);
    }
    let start = Instant::now();
    let mut n = 0u64;
    while n < MAX_ITERATIONS {
        // Check the clock every 64 operations: cheap, and bounded whatever the speed.
        for _ in 0..64 {
            f(n);
            n += 1;
        }
        if start.elapsed() >= budget {
            break;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS must be a number"))
        .unwrap_or(3.0);
    let budget = Duration::from_secs_f64(seconds);

    let td = TrustDomain::parse("bench.example").unwrap();
    let ca =
        CertificateAuthority::generate_root(&td, KeyType::EcdsaP256, Duration::from_secs(86_400))
            .unwrap();
    // A pool of real CSRs from distinct keys, made before the clock starts.
    let csrs: Vec<Vec<u8>> = (0..256)
        .map(|_| {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            CertificateParams::new(Vec::<String>::new())
                .unwrap()
                .serialize_request(&key)
                .unwrap()
                .der()
                .to_vec()
        })
        .collect();
    let request = LeafRequest::new(
        SpiffeId::parse("spiffe://bench.example/ns/default/sa/workload").unwrap(),
        Duration::from_secs(3600),
    );
    let issuance = rate(budget, |i| {
        let issued = ca
            .issue_from_csr(&csrs[(i % csrs.len() as u64) as usize], &request)
            .unwrap();
        std::hint::black_box(issued);
    });

    // The same library's raw P-256 rates, over a message the size of a leaf's TBSCertificate.
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .unwrap();
    let message = [0x5au8; 400];
    let sign = rate(budget, |_| {
        std::hint::black_box(key.sign(&rng, &message).unwrap());
    });
    let sig = key.sign(&rng, &message).unwrap();
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        key.public_key().as_ref().to_vec(),
    );
    let verify = rate(budget, |_| {
        public.verify(&message, sig.as_ref()).unwrap();
    });
    let ceiling = 1.0 / (1.0 / sign + 1.0 / verify);

    let report = serde_json::json!({
        "benchmark": "issuance",
        "seconds_per_measurement": seconds,
        "issuance_from_csr_per_s": issuance.round(),
        "aws_lc_p256_sign_per_s": sign.round(),
        "aws_lc_p256_verify_per_s": verify.round(),
        "aws_lc_sign_plus_verify_ceiling_per_s": ceiling.round(),
        "ratio_to_aws_lc_ceiling": (issuance / ceiling * 1000.0).round() / 1000.0,
    });
    println!("{report}");
}
