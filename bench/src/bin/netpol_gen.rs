//! NetworkPolicy at cluster scale: generates a cluster (pods on nodes, namespaces, policies of
//! the shapes people write), then measures loading the manifests and compiling every node's
//! table; prints one JSON object. With `--nft-out DIR`, also writes each of the first
//! `--nft-nodes` nodes' tables as nft text, for the per-packet measurement (bench/netpol.sh).
//!
//! Usage: netpol_gen [--pods 5000] [--nodes 50] [--namespaces 100] [--policies 1000] [--seed 1]
//!                   [--nft-out DIR --nft-nodes N] [--manifests-out FILE]

use std::fmt::Write as _;
use std::time::Instant;

use palisade_policy::Ruleset;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const APPS: &[&str] = &[
    "web", "api", "db", "cache", "worker", "queue", "auth", "search",
];

fn manifests(pods: u64, nodes: u64, namespaces: u64, policies: u64, seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    let mut out = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for n in 0..namespaces {
        let team = n % 10;
        let env = if n % 3 == 0 { "prod" } else { "dev" };
        let _ = write!(
            out,
            "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: ns{n}\n    labels: {{team: t{team}, env: {env}}}\n"
        );
    }
    for p in 0..pods {
        let ns = p % namespaces;
        let node = rng.below(nodes);
        let app = APPS[rng.below(APPS.len() as u64) as usize];
        let tier = if rng.below(2) == 0 { "front" } else { "back" };
        let (hi, lo) = ((p >> 8) & 0xff, p & 0xff);
        let _ = write!(
            out,
            "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: p{p}\n    namespace: ns{ns}\n    labels: {{app: {app}, tier: {tier}}}\n  spec:\n    nodeName: node-{node}\n    containers:\n    - name: c\n      image: i\n      ports:\n      - {{name: http, containerPort: 8080}}\n      - {{name: metrics, containerPort: 9090}}\n  status:\n    podIPs:\n    - ip: 10.{}.{hi}.{lo}\n    - ip: \"fd00:10::{p:x}\"\n",
            16 + (p >> 16)
        );
    }
    for i in 0..policies {
        let ns = rng.below(namespaces);
        let app = APPS[rng.below(APPS.len() as u64) as usize];
        let from_app = APPS[rng.below(APPS.len() as u64) as usize];
        let team = rng.below(10);
        let spec = match rng.below(5) {
            // Default deny for the namespace.
            0 => "    podSelector: {}\n    policyTypes: [Ingress]\n".to_owned(),
            // From one app of the same namespace, on the named port.
            1 => format!("    podSelector: {{matchLabels: {{app: {app}}}}}\n    ingress:\n    - from:\n      - podSelector: {{matchLabels: {{app: {from_app}}}}}\n      ports:\n      - port: http\n"),
            // From a team's namespaces (any pod), on a port range.
            2 => format!("    podSelector: {{matchLabels: {{app: {app}}}}}\n    ingress:\n    - from:\n      - namespaceSelector: {{matchLabels: {{team: t{team}}}}}\n        podSelector: {{matchExpressions: [{{key: tier, operator: In, values: [front]}}]}}\n      ports:\n      - {{port: 8000, endPort: 8099}}\n"),
            // Egress: DNS anywhere, the app's peers in the cluster, nothing else.
            3 => format!("    podSelector: {{matchLabels: {{app: {app}}}}}\n    policyTypes: [Egress]\n    egress:\n    - ports:\n      - {{port: 53, protocol: UDP}}\n      - {{port: 53}}\n    - to:\n      - namespaceSelector: {{matchLabels: {{env: prod}}}}\n        podSelector: {{matchLabels: {{app: {from_app}}}}}\n"),
            // From outside: an ipBlock with holes, HTTPS.
            _ => format!("    podSelector: {{matchLabels: {{tier: front}}}}\n    ingress:\n    - from:\n      - ipBlock: {{cidr: 0.0.0.0/0, except: [10.0.0.0/8, 192.168.{}.0/24]}}\n      ports:\n      - port: 443\n", rng.below(256)),
        };
        let _ = write!(
            out,
            "- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata:\n    name: np{i}\n    namespace: ns{ns}\n  spec:\n{}",
            spec
        );
    }
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut pods, mut nodes, mut namespaces, mut policies, mut seed) =
        (5000u64, 50u64, 100u64, 1000u64, 1u64);
    let mut nft_out: Option<String> = None;
    let mut nft_nodes = 1u64;
    let mut manifests_out: Option<String> = None;
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--pods" => pods = value().parse().expect("--pods"),
            "--nodes" => nodes = value().parse().expect("--nodes"),
            "--namespaces" => namespaces = value().parse().expect("--namespaces"),
            "--policies" => policies = value().parse().expect("--policies"),
            "--seed" => seed = value().parse().expect("--seed"),
            "--nft-out" => nft_out = Some(value()),
            "--nft-nodes" => nft_nodes = value().parse().expect("--nft-nodes"),
            "--manifests-out" => manifests_out = Some(value()),
            other => panic!("unknown flag {other}"),
        }
    }
    let text = manifests(pods, nodes, namespaces, policies, seed);
    if let Some(file) = &manifests_out {
        std::fs::write(file, &text).expect("write the manifests");
    }
    let started = Instant::now();
    let cluster =
        palisade_netpol::load_str(&text, "generated.yaml").expect("the generated manifests load");
    let load_s = started.elapsed().as_secs_f64();
    let mut per_node = Vec::new();
    let mut elements = 0usize;
    let mut biggest = 0usize;
    for n in 0..nodes {
        let node = format!("node-{n}");
        let started = Instant::now();
        let table = palisade_netpol::compile(&cluster, &node, Ruleset::open(Some(&node)));
        let text = palisade_nft::nft_text(&table);
        per_node.push(started.elapsed().as_secs_f64());
        let count: usize = table.sets.iter().map(|s| s.elements.len()).sum();
        elements += count;
        biggest = biggest.max(count);
        if let Some(dir) = &nft_out {
            if n < nft_nodes {
                std::fs::write(format!("{dir}/node-{n}.nft"), text).expect("write a table");
            }
        }
    }
    // A probe for the per-packet measurement: a pod of node-0 that the policies isolate for
    // ingress, and a pod of the same node, isolated for egress if one fits, that may reach it
    // on TCP 8080, so that a new connection walks both chains of the largest sets.
    let mut probe = serde_json::Value::Null;
    let on_node0: Vec<usize> = (0..cluster.inventory.pods.len())
        .filter(|&i| cluster.inventory.pods[i].node.as_deref() == Some("node-0"))
        .collect();
    let v4 = |i: usize| {
        cluster.inventory.pods[i]
            .ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4())
            .expect("every generated pod has an IPv4 address")
    };
    let mut best = None;
    for &server in &on_node0 {
        for &client in &on_node0 {
            if client == server {
                continue;
            }
            let (c, s) = (
                palisade_netpol::End {
                    ip: v4(client),
                    pod: Some(client),
                },
                palisade_netpol::End {
                    ip: v4(server),
                    pod: Some(server),
                },
            );
            let v = palisade_netpol::decide(&cluster, &c, &s, palisade_netpol::Proto::Tcp, 8080);
            let isolated = |side: &palisade_netpol::Side| {
                matches!(side, palisade_netpol::Side::Isolated { .. })
            };
            if v.allowed && isolated(&v.ingress) {
                let score = u8::from(isolated(&v.egress));
                if best.is_none_or(|(b, _, _)| score > b) {
                    best = Some((score, client, server));
                }
            }
        }
    }
    if let Some((both, client, server)) = best {
        probe = serde_json::json!({"client": v4(client).to_string(), "server": v4(server).to_string(), "port": 8080, "both_isolated": both == 1});
    }
    let max = per_node.iter().copied().fold(0.0, f64::max);
    let total: f64 = per_node.iter().sum();
    println!(
        "{}",
        serde_json::json!({
            "pods": pods, "nodes": nodes, "namespaces": namespaces, "policies": policies,
            "manifest_bytes": text.len(),
            "load_s": (load_s * 1000.0).round() / 1000.0,
            "compile_and_print_per_node_s": {"max": (max * 1000.0).round() / 1000.0, "mean": ((total / nodes as f64) * 1000.0).round() / 1000.0},
            "all_nodes_s": (total * 1000.0).round() / 1000.0,
            "set_elements": {"all_nodes": elements, "largest_node": biggest},
            "goal": "every node's table compiled in under 1 s",
            "goal_met": max < 1.0,
            "probe": probe,
        })
    );
}
