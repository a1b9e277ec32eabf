//! The fuzz target `fuzz/fuzz_targets/policy_load.rs` on stable, as a plain test: the fuzz seeds,
//! the example policies, and 20,000 deterministic mutations of them (byte flips, truncations,
//! deletions, duplications, dictionary insertions, number swaps and splices of two files) go
//! through `load_str`; whatever loads goes through `lint`, `compile` (all hosts, and each host),
//! `nft_text` and `nft_json`. Nothing may panic, and a failed load must say something.
//!
//! Bounded to about 10 seconds: on a slow machine fewer mutations run (the count is printed).
//! Libfuzzer with coverage feedback goes much further; see docs/FUZZING.md.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
                let _ = palisade_policy::nft_text(&ruleset);
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

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
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

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "8",
    "24",
    "32",
    "33",
    "64",
    "128",
    "129",
    "255",
    "256",
    "65535",
    "65536",
    "-1",
    "99999999999999999999",
];

fn mutate(rng: &mut Rng, inputs: &[String]) -> String {
    let mut bytes = rng.pick(inputs).as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            // Flip a bit, or put a structural character in place of a byte.
            0 if len > 0 => {
                let i = rng.below(len);
                if rng.below(2) == 0 {
                    bytes[i] ^= 1 << rng.below(7);
                } else {
                    bytes[i] = *rng.pick(b"-:[]{},\"'&*!#|> \n\t0123456789./");
                }
            }
            1 => bytes.truncate(at),
            2 => {
                let end = (at + 1 + rng.below(40)).min(len);
                bytes.drain(at.min(end)..end);
            }
            3 => {
                // Copy a chunk (often a line) elsewhere.
                let start = rng.below(len + 1);
                let end = (start + rng.below(80)).min(len);
                let chunk = bytes[start..end].to_vec();
                let to = rng.below(bytes.len() + 1);
                bytes.splice(to..to, chunk);
            }
            4 => {
                let token = rng.pick(TOKENS).as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            5 => {
                // Swap a number for an edge value.
                if let Some(start) = (at..len).find(|&i| bytes[i].is_ascii_digit()) {
                    let end = (start..len)
                        .find(|&i| !bytes[i].is_ascii_digit())
                        .unwrap_or(len);
                    let n = rng.pick(NUMBERS).as_bytes();
                    bytes.splice(start..end, n.iter().copied());
                }
            }
            6 => {
                // Splice: this one's head, another's tail, cut at line starts.
                let other = rng.pick(inputs).as_bytes();
                let cut_here = line_start(&bytes, at);
                let cut_there = line_start(other, rng.below(other.len() + 1));
                bytes.truncate(cut_here);
                bytes.extend_from_slice(&other[cut_there..]);
            }
            _ => {
                // Indent or unindent a line.
                let start = line_start(&bytes, at);
                if rng.below(2) == 0 {
                    bytes.splice(start..start, *b"  ");
                } else if bytes[start..].starts_with(b"  ") {
                    bytes.drain(start..start + 2);
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn line_start(bytes: &[u8], at: usize) -> usize {
    bytes[..at.min(bytes.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// `check`, failing with the input when it panics.
fn run(text: &str) -> bool {
    catch_unwind(AssertUnwindSafe(|| check(text)))
        .unwrap_or_else(|_| panic!("panicked on this input:\n{text:?}"))
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
    let (mut runs, mut loaded, mut mutations) = (0usize, 0usize, 0usize);
    for seed in &inputs {
        runs += 1;
        loaded += usize::from(run(seed));
    }
    let seeds_loaded = loaded;
    let mut rng = Rng(0x5eed_f0f0_9a11_5ade);
    while mutations < MUTATIONS && started.elapsed() < BUDGET {
        let text = mutate(&mut rng, &inputs);
        runs += 1;
        loaded += usize::from(run(&text));
        mutations += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "fuzz_smoke: {runs} inputs ({} seeds and examples, {seeds_loaded} of them valid; \
{mutations} mutations), {loaded} loaded, no panic, in {:.1} s",
        inputs.len(),
        elapsed.as_secs_f64()
    );
    assert!(
        seeds_loaded >= 4,
        "the valid seeds and examples should load"
    );
    assert!(
        mutations >= 1_000,
        "only {mutations} mutations ran in {BUDGET:?}"
    );
}
