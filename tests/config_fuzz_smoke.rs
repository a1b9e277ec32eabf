//! The fuzz target `fuzz/fuzz_targets/sidecar_config.rs` on stable, as a plain test: the seeds in
//! fuzz/seeds/sidecar_config (the example configurations among them) and 60,000 deterministic
//! mutations of them go through `SidecarConfig::from_yaml`. Nothing may panic; an error must be
//! located (line and column from 1) and say something; a configuration that loads must hold what
//! the sidecar relies on when it binds and runs (one identity source, a loopback admin address,
//! unique listener names, one means of admission per inbound listener, someone expected by each
//! outbound listener, counts its semaphores can hold). The checks are
//! fuzz/checks/sidecar_config.rs, the same file the fuzz target includes. Bounded to about 10
//! seconds (the counts are printed). docs/FUZZING.md.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::mutate::{caught, mutate, smoke, Bounds, Rng};

// The checks themselves, shared with the fuzz target so that the two cannot drift apart.
#[path = "../fuzz/checks/sidecar_config.rs"]
mod checks;

const MUTATIONS: usize = 60_000;
const BUDGET: Duration = Duration::from_secs(10);

/// The configuration's fields and values, and YAML's punctuation: mutations then make fields the
/// loader knows rather than random bytes.
const TOKENS: &[&str] = &[
    "identity:\n",
    "  cert: c.pem\n",
    "  key: k.pem\n",
    "  bundle: b.pem\n",
    "ca: ",
    "url: https://ca:8443",
    "server_id: spiffe://td/ns/palisade/sa/ca",
    "service_account_token: t",
    "join_token_file: t",
    "spiffe_id: spiffe://td/ns/a/sa/b",
    "reload_interval: ",
    "inbound:\n",
    "outbound:\n",
    "  - name: x\n",
    "listen: ",
    "forward_to: ",
    "connect_to: ",
    "allow: ",
    "expect: ",
    "policy: ",
    "network_policy: ",
    "manifests: ",
    "pod: ns/name",
    "port: ",
    "alpn: ",
    "allow_non_loopback: true",
    "admin:\n",
    "limits:\n",
    "buffer_size: ",
    "max_connections: ",
    "max_handshakes: ",
    "handshake_timeout: ",
    "idle_timeout: ",
    "drain_grace: ",
    "tls: ",
    "resumption: ",
    "transparent:\n",
    "mode: permissive",
    "sandbox: ",
    "landlock: off",
    "workers: ",
    "spiffe://td/**",
    "spiffe://td/ns/*/sa/x",
    "127.0.0.1:0",
    "0.0.0.0:8443",
    "\"[::1]:1\"",
    "\"[::]:15006\"",
    "1ms",
    "0s",
    "1h",
    "18446744073709551615",
    "  - ",
    ": ",
    "{}",
    "[]",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "&a ",
    "*a",
    "!!str ",
    "<<: *a\n",
    "---\n",
    "#",
    "|\n",
    "\t",
    "\n",
    "null",
    "~",
    "é",
    "\u{feff}",
];

fn run(text: &str) -> bool {
    caught(text, || checks::check(text))
}

#[test]
fn sidecar_configurations_and_their_mutations_never_panic_the_loader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("fuzz/seeds/sidecar_config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain(
            std::fs::read_dir(root.join("examples/sidecar"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml")),
        )
        .collect();
    files.sort();
    let inputs: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(inputs.len() >= 7, "{} seeds", inputs.len());
    let started = Instant::now();
    let seeds_loaded = inputs.iter().filter(|text| run(text)).count();
    assert!(seeds_loaded >= 5, "only {seeds_loaded} seeds load");
    let bounds = Bounds {
        max: MUTATIONS,
        min: 1_000,
        budget: BUDGET,
    };
    let mutations = smoke(
        bounds,
        &mut Rng(0x5eed_c0f1_2026_1205),
        |rng| mutate(rng, &inputs, TOKENS),
        |text| usize::from(run(text)),
    );
    println!(
        "sidecar config fuzz smoke: {} seeds ({seeds_loaded} load), {} mutations ({} load), no panic, in {:.1} s",
        inputs.len(),
        mutations.inputs,
        mutations.counted,
        started.elapsed().as_secs_f64()
    );
}
