//! The fuzz target `fuzz/fuzz_targets/sidecar_config.rs` on stable, as a plain test: the seeds in
//! fuzz/seeds/sidecar_config (the example configurations among them) and 60,000 deterministic
//! mutations of them go through `SidecarConfig::from_yaml`. Nothing may panic; an error must be
//! located (line and column from 1) and say something; a configuration that loads must hold what
//! the sidecar relies on when it binds and runs (one identity source, a loopback admin address,
//! unique listener names, one means of admission per inbound listener, someone expected by each
//! outbound listener). Bounded to about 10 seconds (the counts are printed). docs/FUZZING.md.

mod common;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use common::mutate::{mutate, Rng};
use palisade_sidecar::{AllowList, ConfigError, SidecarConfig};

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

/// The fuzz target's checks; true when the configuration loaded.
fn check(text: &str) -> bool {
    match SidecarConfig::from_yaml(text, Path::new("sidecar.yaml")) {
        Ok(config) => {
            assert!(
                config.identity.source().is_some(),
                "loaded without an identity source"
            );
            assert!(config.admin.listen.ip().is_loopback(), "admin off loopback");
            let mut names = HashSet::new();
            for name in config
                .inbound
                .iter()
                .map(|l| &l.name)
                .chain(config.outbound.iter().map(|l| &l.name))
            {
                assert!(
                    !name.is_empty() && names.insert(name),
                    "listener name {name:?} empty or repeated"
                );
            }
            for l in &config.inbound {
                let ways = usize::from(!l.allow.is_empty())
                    + usize::from(l.policy.is_some())
                    + usize::from(l.network_policy.is_some());
                assert_eq!(ways, 1, "listener {} admits by {ways} means", l.name);
                let _ = AllowList::new(l.allow.clone());
            }
            assert!(
                config.outbound.iter().all(|l| !l.expect.is_empty()),
                "an outbound listener expects nobody"
            );
            // The counts become tokio semaphores (at most 2^61 permits, or a panic at start).
            for count in [config.limits.max_connections, config.limits.max_handshakes] {
                assert!(
                    (1..=tokio::sync::Semaphore::MAX_PERMITS).contains(&count),
                    "a count no semaphore holds: {count}"
                );
            }
            assert!(config.workers.is_none_or(|w| (1..=1024).contains(&w)));
            true
        }
        Err(ConfigError::Syntax {
            line,
            column,
            message,
            ..
        }) => {
            assert!(line >= 1 && column >= 1, "located at {line}:{column}");
            assert!(!message.is_empty(), "a syntax error without a message");
            false
        }
        Err(ConfigError::Invalid { message, .. }) => {
            assert!(!message.is_empty(), "a refusal without a message");
            false
        }
        Err(error @ ConfigError::Read { .. }) => panic!("from_yaml read a file: {error}"),
    }
}

fn run(text: &str) -> bool {
    catch_unwind(AssertUnwindSafe(|| check(text)))
        .unwrap_or_else(|_| panic!("panicked on this input:\n{text:?}"))
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
    let (mut loaded, mut mutations) = (seeds_loaded, 0usize);
    let mut rng = Rng(0x5eed_c0f1_2026_1205);
    while mutations < MUTATIONS && started.elapsed() < BUDGET {
        let text = mutate(&mut rng, &inputs, TOKENS);
        loaded += usize::from(run(&text));
        mutations += 1;
    }
    println!(
        "sidecar config fuzz smoke: {} seeds ({seeds_loaded} load), {mutations} mutations, {loaded} loaded in all, no panic, in {:.1} s",
        inputs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        mutations >= 1_000,
        "only {mutations} mutations ran in {BUDGET:?}"
    );
}
