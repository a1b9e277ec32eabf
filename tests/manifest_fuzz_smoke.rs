//! The Kubernetes manifest readers on stable, as the policy loader's smoke test does for it:
//! every manifest under examples/kubernetes and 20,000 deterministic mutations of them go through
//! the NetworkPolicy loader (whatever loads is compiled for each of its nodes and turned into
//! matrices) and through `inject` (whatever injects is uninjected again). Nothing may panic, a
//! failed load must say something, and uninjecting an injection must give back the input's
//! objects. Bounded to about 15 seconds (the count is printed). The checks are
//! fuzz/checks/kubernetes_manifests.rs, the same file the cargo-fuzz target
//! fuzz/fuzz_targets/kubernetes_manifests.rs includes (docs/FUZZING.md).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mutate::{caught, mutate, smoke, Bounds, Rng};

// The checks themselves, shared with the fuzz target so that the two cannot drift apart.
#[path = "../fuzz/checks/kubernetes_manifests.rs"]
mod checks;

const MUTATIONS: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(15);

const TOKENS: &[&str] = &[
    "apiVersion: v1\n",
    "apiVersion: networking.k8s.io/v1\n",
    "kind: NetworkPolicy\n",
    "kind: Pod\n",
    "kind: List\n",
    "kind: CronJob\n",
    "items:\n",
    "metadata:\n",
    "spec:\n",
    "podSelector: ",
    "namespaceSelector: ",
    "matchLabels: ",
    "matchExpressions: ",
    "operator: NotIn",
    "values: ",
    "ipBlock: ",
    "cidr: ",
    "except: ",
    "ports: ",
    "port: ",
    "endPort: ",
    "protocol: SCTP",
    "policyTypes: [Egress]",
    "ingress: ",
    "egress: ",
    "from: ",
    "to: ",
    "initContainers: ",
    "containers: ",
    "restartPolicy: Always",
    "annotations: ",
    "palisade.io/inject: ",
    "hostNetwork: true",
    "podIPs: ",
    "- ip: ",
    "nodeName: ",
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
    "---\n",
    "#",
    "|\n",
    "\t",
    "\n",
    "0.0.0.0/0",
    "\"::/0\"",
    "10.0.0.0/8",
    "null",
    "~",
    "é",
    "\u{feff}",
];

fn run(text: &str) -> bool {
    caught(text, || checks::check(text))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn manifests_and_their_mutations_never_panic_the_readers() {
    let mut files = Vec::new();
    yaml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes"),
        &mut files,
    );
    files.sort();
    let inputs: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(inputs.len() >= 8, "{} seeds", inputs.len());
    let started = Instant::now();
    let seeds_loaded = inputs.iter().filter(|seed| run(seed)).count();
    let bounds = Bounds {
        max: MUTATIONS,
        min: 1_000,
        budget: BUDGET,
    };
    let mutations = smoke(
        bounds,
        &mut Rng(0x6b38_f022_2026_1205),
        |rng| mutate(rng, &inputs, TOKENS),
        |text| usize::from(run(text)),
    );
    println!(
        "manifest fuzz smoke: {} seeds ({seeds_loaded} load as NetworkPolicy input), {} mutations, {} loaded, no panic, in {:.1} s",
        inputs.len(),
        mutations.inputs,
        mutations.counted,
        started.elapsed().as_secs_f64()
    );
}
