//! The loader's refusals: one located sentence per problem, all problems of a load together, as
//! the API server would refuse them (unknown fields included).

use palisade_netpol::load_str;

fn errors(text: &str) -> Vec<String> {
    match load_str(text, "m.yaml") {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

const HEAD: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: x\nspec:\n";

#[test]
fn every_problem_is_located_and_reported_together() {
    let text = format!(
        "{HEAD}  podSelector: {{}}\n  ingres: []\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 10.0.0.0/8}}\n      podSelector: {{}}\n    ports:\n    - port: 80\n      protocol: ICMP\n    - port: web_port\n    - endPort: 90\n    - port: 70000\n"
    );
    let got = errors(&text);
    let expected = [
        "m.yaml:8:3: unknown field `ingres` in `spec`",
        "m.yaml:11:7: a peer with `ipBlock` may not also have `podSelector` or `namespaceSelector`",
        "m.yaml:15:17: unknown protocol `ICMP` (expected TCP, UDP or SCTP)",
        "m.yaml:16:13: `web_port` is neither a port number nor a port name",
        "m.yaml:17:16: `endPort` needs a numeric `port`",
        "m.yaml:18:13: port 70000 is not in 1-65535",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (g, e) in got.iter().zip(expected) {
        assert!(g.starts_with(e), "{g}\n  expected to start with\n{e}");
    }
}

#[test]
fn selectors_and_blocks_are_checked_as_the_api_does() {
    let text = format!(
        "{HEAD}  podSelector:\n    matchExpressions:\n    - {{key: app, operator: In}}\n    - {{key: app, operator: Exists, values: [a]}}\n    - {{key: app, operator: Near, values: [a]}}\n  egress:\n  - to:\n    - ipBlock: {{cidr: 10.1.0.0/16, except: [10.2.0.0/24]}}\n    - ipBlock: {{cidr: 10.1.2.3}}\n    - {{}}\n"
    );
    let got = errors(&text);
    let expected = [
        "m.yaml:9:7: operator `In` needs at least one value",
        "m.yaml:10:7: operator `Exists` takes no values",
        "m.yaml:11:7: unknown operator `Near`",
        "m.yaml:14:45: `10.2.0.0/24` is not inside the block's cidr `10.1.0.0/16`",
        "m.yaml:15:23: `10.1.2.3` is not a CIDR (it needs a prefix length)",
        "m.yaml:16:7: a peer needs `podSelector`, `namespaceSelector` or `ipBlock`",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (g, e) in got.iter().zip(expected) {
        assert!(g.starts_with(e), "{g}\n  expected to start with\n{e}");
    }
}

#[test]
fn positions_count_from_the_start_of_a_multi_document_stream() {
    let text = "# pods\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\n--- \napiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: old}\nspec: {}\n";
    let got = errors(text);
    assert_eq!(
        got,
        [
            "m.yaml:7:1: Pod x/a is defined twice",
            "m.yaml:11:1: NetworkPolicy must be apiVersion networking.k8s.io/v1, not `networking.k8s.io/v1beta1`",
        ]
    );
}

#[test]
fn defaults_follow_the_api_server() {
    let cluster = load_str(
        &format!("{HEAD}  podSelector: {{}}\n  egress: []\n---\n{}  egress:\n  - {{}}\n  ingress:\n  - ports:\n    - {{}}\n", HEAD.replace("name: p", "name: q")),
        "m.yaml",
    )
    .unwrap();
    let (p, q) = (&cluster.policies[0], &cluster.policies[1]);
    // No policyTypes: Ingress always, Egress only with egress rules (an empty list is none).
    assert!(p.ingress_isolation && !p.egress_isolation);
    assert!(q.ingress_isolation && q.egress_isolation);
    // An absent podSelector is the empty one; a port entry with nothing is TCP, every port.
    assert!(q.pod_selector.is_empty());
    let port = &q.ingress[0].ports[0];
    assert_eq!(port.protocol, palisade_netpol::Proto::Tcp);
    assert!(port.port.is_none());
    // A namespace that only a pod names still has its name label.
    let c = load_str(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop}\n",
        "m.yaml",
    )
    .unwrap();
    assert_eq!(
        c.inventory
            .namespace_labels("shop")
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("shop")
    );
}

#[test]
fn other_kinds_pass_and_a_nested_bomb_is_refused() {
    let ok = load_str(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {whatever: 1}\n",
        "m.yaml",
    )
    .unwrap();
    assert!(ok.policies.is_empty() && ok.inventory.pods.is_empty());
    let bomb = format!("{}x\n", "- ".repeat(200));
    let got = errors(&format!("kind: List\nitems:\n{bomb}"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("nests too deeply"), "{got:?}");
}
