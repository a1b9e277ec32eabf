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

/// Pods `x/web` (10.0.1.1), `x/other` (10.0.1.2) and `y/web` (10.0.2.1), with `policies` after.
fn cluster_with(policies: &str) -> String {
    let pod = |ns: &str, name: &str, app: &str, ip: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nspec:\n  containers:\n  - name: c\n    ports:\n    - {{name: http, containerPort: 80}}\nstatus: {{podIP: {ip}}}\n---\n")
    };
    pod("x", "web", "web", "10.0.1.1")
        + &pod("x", "other", "other", "10.0.1.2")
        + &pod("y", "web", "web", "10.0.2.1")
        + policies
}

/// Whether `from` may open TCP `port` to `to` (addresses).
fn allowed(cluster: &palisade_netpol::Cluster, from: &str, to: &str, port: u16) -> bool {
    use palisade_netpol::{decide, End, Proto};
    let from = End::at(cluster, from.parse().unwrap());
    let to = End::at(cluster, to.parse().unwrap());
    decide(cluster, &from, &to, Proto::Tcp, port).allowed
}

/// Review finding (issue 20, item 3): `namespaceSelector: null` (its labels commented out) was
/// read as `{}`, every namespace; Kubernetes decodes null into the pointer as absent, so the
/// peer means pods of the policy's own namespace.
#[test]
fn a_null_namespace_selector_is_absent_not_every_namespace() {
    use palisade_netpol::model::Peer;
    for null in ["null", "~", "", "Null", "NULL"] {
        let text = cluster_with(&format!(
            "{HEAD}  podSelector: {{matchLabels: {{app: other}}}}\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{app: web}}}}\n      namespaceSelector: {null}\n        # matchLabels: {{team: a}}\n"
        ));
        let cluster = load_str(&text, "m.yaml").unwrap();
        let peer = &cluster.policies[0].ingress[0].peers[0];
        assert!(
            matches!(
                peer,
                Peer::Pods {
                    pods: Some(_),
                    namespaces: None
                }
            ),
            "`namespaceSelector: {null}` read as {peer:?}"
        );
        // x/web reaches x/other; y/web, with the same label in another namespace, does not.
        assert!(allowed(&cluster, "10.0.1.1", "10.0.1.2", 80), "{null}");
        assert!(!allowed(&cluster, "10.0.2.1", "10.0.1.2", 80), "{null}");
    }
    // A quoted "null" is a string, not null: refused, as the API server refuses it.
    let got = errors(&cluster_with(&format!(
        "{HEAD}  ingress:\n  - from:\n    - namespaceSelector: \"null\"\n"
    )));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("`namespaceSelector` must be a mapping"),
        "{got:?}"
    );
}

/// Every other null, as the API server decodes it (k8s.io/api/networking/v1): pointers
/// (`podSelector`, `namespaceSelector`, `ipBlock` of a peer; `protocol`, `port`, `endPort` of a
/// port), slices (`policyTypes`, `ingress`, `egress`, `from`, `to`, `ports`, `except`,
/// `matchExpressions`) and maps (`matchLabels`) are nil: absent; a struct value
/// (`spec.podSelector`, `spec` itself, an entry of `ingress` or `ports`) is its zero value; a
/// string is empty.
#[test]
fn every_null_means_what_the_api_server_makes_of_it() {
    use palisade_netpol::model::{Peer, PortRef};
    use palisade_netpol::Proto;
    let text = cluster_with(&format!(
        "{HEAD}  podSelector: null\n  policyTypes: null\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{app: web}}}}\n      ipBlock: null\n    - podSelector: null\n      namespaceSelector: {{matchLabels: null, matchExpressions: ~}}\n    - ipBlock: {{cidr: 10.0.0.0/8, except: null}}\n      namespaceSelector:\n    ports:\n    - {{protocol: null, port: null, endPort: null}}\n    -\n    - {{port: 80, protocol: ~}}\n  - from: null\n    ports: null\n  egress: null\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: q, namespace: null, labels: {{app: null}}}}\nspec:\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: r, namespace: y}}\nspec:\n  podSelector:\n    matchExpressions:\n    - {{key: app, operator: In, values: [null, \"null\"]}}\n"
    ));
    let cluster = load_str(&text, "m.yaml").unwrap_or_else(|e| panic!("{e}"));
    let p = &cluster.policies[0];
    // spec.podSelector: a struct value, so null is `{}`: every pod of x.
    assert!(p.pod_selector.is_empty());
    // policyTypes: null is absent, so defaulted: Ingress; `egress: null` is no egress rules.
    assert!(p.ingress_isolation && !p.egress_isolation && p.egress.is_empty());
    let rule = &p.ingress[0];
    assert_eq!(
        rule.peers[0],
        Peer::Pods {
            pods: Some(palisade_netpol::model::Selector {
                match_labels: [("app".to_owned(), "web".to_owned())].into(),
                match_expressions: Vec::new(),
            }),
            namespaces: None,
        },
        "`ipBlock: null` beside a podSelector is no ipBlock"
    );
    assert_eq!(
        rule.peers[1],
        Peer::Pods {
            pods: None,
            namespaces: Some(Default::default()),
        },
        "`podSelector: null` is absent; `matchLabels: null` and `matchExpressions: ~` are empty"
    );
    assert!(
        matches!(&rule.peers[2], Peer::IpBlock { except, .. } if except.is_empty()),
        "`namespaceSelector:` (empty) beside an ipBlock is no selector: {:?}",
        rule.peers[2]
    );
    // A port with every field null, and a null entry: TCP, every port. No port named `null`.
    for port in &rule.ports[..2] {
        assert_eq!(
            (port.protocol, &port.port, port.end_port),
            (Proto::Tcp, &None, None)
        );
    }
    assert_eq!(rule.ports[2].port, Some(PortRef::Number(80)));
    // `from: null` and `ports: null`: absent, so every address and every port.
    assert!(p.ingress[1].peers.is_empty() && p.ingress[1].ports.is_empty());
    assert!(allowed(&cluster, "192.0.2.1", "10.0.1.1", 443));
    // `metadata.namespace: null` is the empty string: the default namespace; `spec: null`
    // (empty) is the zero spec, which isolates every pod of it for ingress.
    let q = &cluster.policies[1];
    assert_eq!(
        (q.namespace.as_str(), q.pod_selector.is_empty()),
        ("default", true)
    );
    assert!(q.ingress_isolation && !q.egress_isolation && q.ingress.is_empty());
    // A null in `values` is the empty string; a quoted "null" is the string `null`.
    let r = &cluster.policies[2];
    assert_eq!(r.pod_selector.match_expressions[0].values, ["", "null"]);
}

/// Review finding (issue 20, item 9): a CIDR with host bits set, which the API server accepts,
/// failed the whole load. It is read as its network, with a warning that names where.
#[test]
fn a_cidr_with_host_bits_is_read_as_its_network_with_a_located_warning() {
    use palisade_netpol::model::Peer;
    let text = format!(
        "{HEAD}  ingress:\n  - from:\n    - ipBlock:\n        cidr: 10.0.2.66/24\n        except: [10.0.2.130/25]\n    - ipBlock: {{cidr: \"fd00::1:2/4\"}}\n"
    );
    let cluster = load_str(&text, "m.yaml").unwrap_or_else(|e| panic!("{e}"));
    let peers = &cluster.policies[0].ingress[0].peers;
    let Peer::IpBlock { cidr, except, .. } = &peers[0] else {
        panic!("{peers:?}")
    };
    assert_eq!(
        (cidr.to_string(), except[0].to_string()),
        ("10.0.2.0/24".into(), "10.0.2.128/25".into())
    );
    let Peer::IpBlock { cidr, .. } = &peers[1] else {
        panic!("{peers:?}")
    };
    assert_eq!(cidr.to_string(), "f000::/4");
    let loaded = palisade_netpol::load_str_partial(&text, "m.yaml").unwrap();
    let warnings: Vec<String> = loaded
        .warnings
        .iter()
        .map(|(at, message)| format!("{at}: {message}"))
        .collect();
    assert_eq!(
        warnings,
        [
            "m.yaml:10:15: `10.0.2.66/24` has host bits set; read as the network `10.0.2.0/24`, as Kubernetes does",
            "m.yaml:11:18: `10.0.2.130/25` has host bits set; read as the network `10.0.2.128/25`, as Kubernetes does",
            "m.yaml:12:23: `fd00::1:2/4` has host bits set; read as the network `f000::/4`, as Kubernetes does",
        ]
    );
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}---\n")
}

/// Review finding (issue 20, item 9): one refused object stopped every update. A refused
/// NetworkPolicy is reported alone, located, and the rest loads; in its place stands a policy
/// that admits nothing and isolates what the object would have (its selector's pods, or its
/// whole namespace when the selector itself is wrong; its policy types, or both directions when
/// they are wrong), so refusing it never opens anything.
#[test]
fn a_refused_policy_is_reported_alone_and_isolates_without_admitting() {
    let text = cluster_with(
        &(policy(
            "x",
            "bad-rules",
            "  podSelector: {matchLabels: {app: other}}\n  ingress:\n  - from: [{podSelector: {}}]\n    ports: [{protocol: ICMP}]\n",
        ) + &policy(
            "x",
            "bad-selector",
            "  podSelector: {matchExpressions: [{key: app, operator: Near}]}\n  policyTypes: [Egress]\n  egress: [{}]\n",
        ) + &policy(
            "y",
            "bad-types",
            "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingres]\n  ingress: [{}]\n",
        ) + &policy("y", "allow-all", "  ingress: [{}]\n")
            + &policy("y", "allow-all", "  podSelector: {}\n  policyTypes: [Egress]\n")),
    );
    // One-shot readers still refuse the whole load, with every problem.
    let strict = errors(&text);
    assert_eq!(strict.len(), 4, "{strict:#?}");

    let loaded = palisade_netpol::load_str_partial(&text, "m.yaml").unwrap();
    let refused: Vec<String> = loaded
        .refused
        .iter()
        .map(|r| {
            let errors: Vec<String> = r
                .errors
                .iter()
                .map(|(at, m)| format!("{at}: {m}"))
                .collect();
            format!("{} at {}: {}", r.object, r.source, errors.join("; "))
        })
        .collect();
    assert_eq!(refused.len(), 4, "{refused:#?}");
    let expected = [
        "NetworkPolicy x/bad-rules at m.yaml:31:1: m.yaml:38:24: unknown protocol `ICMP`",
        "NetworkPolicy x/bad-selector at m.yaml:40:1: m.yaml:44:36: unknown operator `Near`",
        "NetworkPolicy y/bad-types at m.yaml:48:1: m.yaml:53:17: a policy type must be `Ingress` or `Egress`",
        "NetworkPolicy y/allow-all at m.yaml:62:1: m.yaml:62:1: NetworkPolicy y/allow-all is defined twice",
    ];
    for (got, want) in refused.iter().zip(expected) {
        assert!(
            got.starts_with(want),
            "{got}\n  expected to start with\n{want}"
        );
    }
    // The strict errors are the same sentences.
    for r in &loaded.refused {
        for (at, message) in &r.errors {
            assert!(strict.contains(&format!("{at}: {message}")), "{strict:#?}");
        }
    }

    let c = &loaded.cluster;
    let p = |name: &str| c.policies.iter().find(|p| p.name == name).unwrap();
    // Stand-ins: no rules; what they isolate.
    for name in ["bad-rules", "bad-selector", "bad-types"] {
        assert!(
            p(name).ingress.is_empty() && p(name).egress.is_empty(),
            "{name}"
        );
    }
    let isolation = |name: &str| (p(name).ingress_isolation, p(name).egress_isolation);
    assert_eq!(isolation("bad-rules"), (true, false));
    assert!(!p("bad-rules").pod_selector.is_empty());
    assert_eq!(isolation("bad-selector"), (false, true));
    assert!(
        p("bad-selector").pod_selector.is_empty(),
        "the whole namespace"
    );
    assert_eq!(isolation("bad-types"), (true, true));
    assert_eq!(
        c.policies.len(),
        5,
        "the first allow-all loads, the second stands in"
    );
    let (x_web, x_other, y_web, outside) = ("10.0.1.1", "10.0.1.2", "10.0.2.1", "192.0.2.1");
    // x/other: ingress isolated by bad-rules with nothing admitted.
    assert!(!allowed(c, outside, x_other, 80));
    // Every pod of x: egress isolated by bad-selector with nothing admitted.
    assert!(!allowed(c, x_web, outside, 80));
    // y/web: both directions isolated by bad-types, but y's valid allow-all admits ingress;
    // the second allow-all (refused, Egress only as written) isolates egress of y.
    assert!(allowed(c, outside, y_web, 80));
    assert!(!allowed(c, y_web, outside, 80));
    // x/web's ingress is not isolated by anything.
    assert!(allowed(c, outside, x_web, 80));
}

/// A problem that belongs to no one NetworkPolicy (YAML that does not parse, a pod that is
/// wrong, a policy without a name) fails the whole load, with every problem: what the broken
/// part would isolate is unknown.
#[test]
fn a_problem_of_no_one_policy_fails_the_whole_partial_load() {
    let bad_rules = policy("x", "bad", "  ingress: [{ports: [{protocol: ICMP}]}]\n");
    for (text, expect) in [
        (
            format!("{bad_rules}kind: [\n"),
            ["m.yaml:5:33: unknown protocol `ICMP`", "m.yaml:8:1: not YAML"],
        ),
        (
            format!("{bad_rules}apiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nstatus: {{podIP: 10.0.0.300}}\n"),
            ["m.yaml:5:33: unknown protocol `ICMP`", "m.yaml:10:17: a pod IP must be"],
        ),
        (
            format!("{bad_rules}apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{namespace: x}}\n"),
            ["m.yaml:5:33: unknown protocol `ICMP`", "m.yaml:9:11: NetworkPolicy needs `metadata.name`"],
        ),
    ] {
        let got: Vec<String> = match palisade_netpol::load_str_partial(&text, "m.yaml") {
            Ok(loaded) => panic!("loaded: {:?}", loaded.refused),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        };
        assert_eq!(got.len(), 2, "{got:#?}");
        for (g, e) in got.iter().zip(expect) {
            assert!(g.starts_with(e), "{got:#?}");
        }
    }
}
