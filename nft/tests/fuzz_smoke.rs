//! The fuzz target `fuzz/fuzz_targets/policy_load.rs` on stable, as a plain test: the fuzz seeds,
//! the example policies, and 20,000 deterministic mutations of them (byte flips, truncations,
//! deletions, duplications, dictionary insertions, number swaps and splices of two files) go
//! through `load_str`; whatever loads goes through `lint`, `compile` (all hosts, and each host),
//! `nft_text` and `nft_json`. Nothing may panic, and a failed load must say something.
//!
//! Bounded to about 10 seconds: on a slow machine fewer mutations run (the count is printed).
//! Libfuzzer with coverage feedback goes much further; see docs/FUZZING.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_test_support::mutate::{caught, mutate, smoke, Bounds, Rng};

const MUTATIONS: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(10);

/// The same checks as the fuzz target, plus every host's table.
fn check(text: &str) -> bool {
    match palisade_policy::load_str(text, Path::new("fuzz.yaml")) {
        Ok(policy) => {
            let _ = palisade_policy::lint(&policy);
            let hosts = policy.hosts.iter().map(|h| Some(h.name.as_str()));
            for host in std::iter::once(None).chain(hosts) {
                let ruleset = palisade_policy::compile(&policy, host).expect("a known host");
                let _ = palisade_nft::nft_text(&ruleset);
                let _ = palisade_nft::nft_json(&ruleset);
            }
            true
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "a failed load without an error");
            let _ = errors.to_string();
            false
        }
    }
}

const TOKENS: &[&str] = &[
    "version: 1\n",
    "segments:\n",
    "rules:\n",
    "hosts:\n",
    "  - ",
    ": ",
    "addresses: ",
    "except: ",
    "identities: ",
    "egress_to_outside: true",
    "from: ",
    "to: ",
    "protocol: ",
    "ports: ",
    "action: deny",
    "log: true",
    "outside",
    "tcp",
    "icmp",
    "icmpv6",
    "any",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "&a ",
    "*a",
    "!!str ",
    "---\n",
    "#",
    "|\n",
    "\t",
    "\n",
    "  ",
    "spiffe://example.org/",
    "/**",
    "/*",
    "0.0.0.0/0",
    "::/0",
    "\"fd00::/8\"",
    "10.0.0.0/8",
    "255.255.255.255",
    "é",
    "\u{feff}",
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn seeds_and_mutations_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut inputs = Vec::new();
    for dir in ["fuzz/seeds/policy_load", "examples/policy"] {
        for path in files(&root.join(dir)) {
            inputs.push(std::fs::read_to_string(&path).unwrap());
        }
    }
    assert!(inputs.len() >= 5, "{} seeds", inputs.len());

    let started = Instant::now();
    let seeds_loaded = inputs
        .iter()
        .filter(|seed| caught(seed.as_str(), || check(seed)))
        .count();
    let bounds = Bounds {
        max: MUTATIONS,
        min: 1_000,
        budget: BUDGET,
    };
    let mut rng = Rng(0x5eed_f0f0_9a11_5ade);
    let mutations = smoke(
        bounds,
        &mut rng,
        |rng| mutate(rng, &inputs, TOKENS),
        |text| usize::from(check(text)),
    );
    println!(
        "fuzz_smoke: {} seeds and examples ({seeds_loaded} of them valid), {} mutations \
({} loaded), no panic, in {:.1} s",
        inputs.len(),
        mutations.inputs,
        mutations.counted,
        started.elapsed().as_secs_f64()
    );
    assert!(
        seeds_loaded >= 4,
        "the valid seeds and examples should load"
    );
}
