//! The sidecar's admission by Kubernetes NetworkPolicies against `explain`: over generated
//! clusters (namespaces with labels, pods with service accounts, labels and named ports,
//! NetworkPolicies with pod, namespace and ipBlock peers and numeric or named ports), a real
//! sidecar with one `network_policy` listener per (cluster, destination pod) is asked by curl
//! with the certificates of nine service accounts; each answer must be what `decide` (the
//! oracle behind `palisade policy explain --kubernetes`) says: admitted when some pod running as
//! that account is admitted by the destination's ingress on the port.

mod common;

use common::*;
use palisade_netpol::{decide, End, Proto};

const NAMESPACES: [&str; 3] = ["ns0", "ns1", "ns2"];
const ACCOUNTS: [&str; 3] = ["a", "b", "default"];
const PORT: u16 = 8080;

fn generated_cluster(rng: &mut Rng) -> String {
    let mut docs = Vec::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{team: t{}}}",
            i % 2
        ));
    }
    for p in 0..6 + rng.below(3) {
        let ns = rng.pick(&NAMESPACES);
        let sa = rng.pick(&ACCOUNTS);
        let app = rng.pick(&["web", "db", "api"]);
        let named = rng.pick(&[8080u16, 80]);
        let account = if *sa == "default" && rng.below(2) == 0 {
            String::new() // no serviceAccountName: the default account
        } else {
            format!("\n  serviceAccountName: {sa}")
        };
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p{p}\n  namespace: {ns}\n  labels: {{app: {app}}}\nspec:{account}\n  nodeName: n1\n  containers:\n  - name: c\n    image: i\n    ports:\n    - {{name: http, containerPort: {named}}}\nstatus:\n  podIP: 10.7.0.{}",
            10 + p
        ));
    }
    for i in 0..2 + rng.below(3) {
        let ns = rng.pick(&NAMESPACES);
        let selector = rng.pick(&[
            "{}",
            "{matchLabels: {app: web}}",
            "{matchLabels: {app: db}}",
        ]);
        let mut rules = String::new();
        for _ in 0..rng.below(4) {
            let peer = match rng.below(5) {
                0 => format!("    - podSelector: {{matchLabels: {{app: {}}}}}\n", rng.pick(&["web", "api"])),
                1 => format!("    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n", rng.below(2)),
                2 => format!(
                    "    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n      podSelector: {{matchExpressions: [{{key: app, operator: NotIn, values: [db]}}]}}\n",
                    rng.below(2)
                ),
                3 => format!("    - ipBlock: {{cidr: 10.7.0.{}/29}}\n", 8 * rng.below(3)),
                _ => String::new(),
            };
            let ports = match rng.below(4) {
                0 => String::new(),
                1 => "    ports:\n    - port: http\n".to_owned(),
                2 => format!("    ports:\n    - port: {PORT}\n"),
                _ => "    ports:\n    - port: 9090\n".to_owned(),
            };
            let from = if peer.is_empty() {
                String::new()
            } else {
                format!("    from:\n{peer}")
            };
            if from.is_empty() && ports.is_empty() {
                rules += "  - {}\n";
            } else {
                rules += &format!("  -\n{from}{ports}");
            }
        }
        let ingress = if rules.is_empty() {
            "  ingress: []\n".to_owned()
        } else {
            format!("  ingress:\n{rules}")
        };
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np{i}\n  namespace: {ns}\nspec:\n  podSelector: {selector}\n{ingress}"
        ));
    }
    docs.join("\n---\n") + "\n"
}

#[test]
fn sidecar_admission_by_network_policies_equals_explain_over_generated_clusters() {
    assert!(have("curl"), "curl is required (scripts/test installs it)");
    let mut rng = Rng::from_env(0x6b38_2026_1205);
    let pki = Pki::new();
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test"],
    );
    let mut peers = Vec::new();
    for ns in NAMESPACES {
        for sa in ACCOUNTS {
            let dir = format!("{ns}-{sa}");
            pki.issue(&dir, &format!("ns/{ns}/sa/{sa}"), &[]);
            peers.push((dir, ns, sa));
        }
    }
    // An ID not of the ns/<namespace>/sa/<account> form is never admitted.
    pki.issue("batch", "batch/nightly", &[]);

    const CLUSTERS: usize = 8;
    let app = spawn_app(common::http_ok);
    let mut listeners = String::new();
    let mut cases = Vec::new();
    for k in 0..CLUSTERS {
        let text = generated_cluster(&mut rng);
        let file = pki.path().join(format!("c{k}.yaml"));
        std::fs::write(&file, &text).unwrap();
        let cluster = palisade_netpol::load_paths(std::slice::from_ref(&file))
            .unwrap_or_else(|e| panic!("generated cluster does not load: {e}\n{text}"));
        // Destinations: isolated pods first (the interesting ones), then the rest.
        let mut order: Vec<usize> = (0..cluster.inventory.pods.len()).collect();
        order.sort_by_key(|&i| {
            !cluster
                .policies
                .iter()
                .any(|p| p.ingress_isolation && p.selects(&cluster.inventory.pods[i]))
        });
        for &d in order.iter().take(3) {
            let pod = cluster.inventory.pods[d].key();
            let name = format!("c{k}-p{d}");
            listeners += &format!(
                "  - name: {name}\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    network_policy: {{ manifests: [c{k}.yaml], pod: {pod}, port: {PORT} }}\n"
            );
            cases.push((name, k, d, text.clone(), cluster.clone()));
        }
    }
    let config = format!(
        "{}inbound:\n{listeners}admin: {{ listen: 127.0.0.1:0 }}\n",
        pki.identity_yaml("payments")
    );
    let names: Vec<&str> = cases.iter().map(|(n, ..)| n.as_str()).collect();
    let sidecar = SidecarProcess::start(pki.path(), "sidecar.yaml", &config, &names);

    let (mut checked, mut admitted, mut wrong) = (0, 0, Vec::new());
    for (name, k, d, text, cluster) in &cases {
        let port = sidecar.addr(name).port();
        let dst = &cluster.inventory.pods[*d];
        let to = End {
            ip: dst.ips[0],
            pod: Some(*d),
        };
        for (dir, ns, sa) in &peers {
            // explain's answer: some pod of that namespace and account that the destination's
            // ingress admits on the port.
            let expected = cluster.inventory.pods.iter().enumerate().any(|(i, p)| {
                i != *d
                    && p.namespace == *ns
                    && p.service_account == *sa
                    && decide(
                        cluster,
                        &End {
                            ip: p.ips[0],
                            pod: Some(i),
                        },
                        &to,
                        Proto::Tcp,
                        PORT,
                    )
                    .ingress
                    .allows()
            });
            let got = curl_as(&pki, dir, port);
            checked += 1;
            admitted += usize::from(got);
            if got != expected {
                wrong.push(format!(
                    "cluster {k}, to {}: ns/{ns}/sa/{sa} {} by the sidecar, {} by explain\n{text}",
                    dst.key(),
                    if got { "admitted" } else { "refused" },
                    if expected { "admitted" } else { "refused" }
                ));
            }
        }
        assert!(
            !curl_as(&pki, "batch", port),
            "an ID of another form was admitted"
        );
    }
    println!("{checked} cases, {admitted} admitted");
    assert!(
        wrong.is_empty(),
        "{} of {checked} disagree; first:\n{}",
        wrong.len(),
        wrong[0]
    );
    assert!(
        admitted > checked / 10 && admitted < checked * 9 / 10,
        "{admitted} of {checked} admitted"
    );
}

/// The manifests of one pod `shop/payments` (account payments) and two clients (accounts a and
/// b in `shop`), with `policies` appended.
fn shop(policies: &str) -> String {
    let mut docs = vec!["apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop".to_owned()];
    for (i, (name, sa)) in [("payments", "payments"), ("c-a", "a"), ("c-b", "b")]
        .into_iter()
        .enumerate()
    {
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  labels: {{app: {name}}}\nspec:\n  serviceAccountName: {sa}\n  nodeName: n1\n  containers:\n  - name: c\n    image: i\nstatus:\n  podIP: 10.7.1.{}",
            10 + i
        ));
    }
    docs.join("\n---\n") + "\n---\n" + policies
}

/// A policy admitting account `a`'s pod to payments by a CIDR with host bits set (10.7.1.11/24
/// is read as 10.7.1.0/24, as the API server takes it), and one the loader refuses (protocol
/// ICMP) that selects payments too: the sidecar takes the first, and the refused one stands in
/// admitting nothing, so b stays out and a gets in. Before, either one froze the last good
/// manifests (here: none, so nobody got in).
#[test]
fn a_refused_network_policy_does_not_hold_up_the_others_at_the_sidecar() {
    assert!(have("curl"), "curl is required (scripts/test installs it)");
    let pki = Pki::new();
    pki.issue(
        "payments",
        "ns/shop/sa/payments",
        &["--dns", "payments.test"],
    );
    for sa in ["a", "b"] {
        pki.issue(sa, &format!("ns/shop/sa/{sa}"), &[]);
    }
    let manifests = pki.path().join("shop.yaml");
    let admit_a = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: admit-a\n  namespace: shop\nspec:\n  podSelector: {matchLabels: {app: payments}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.7.1.11/24, except: [10.7.1.12/32]}\n";
    let broken = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: broken\n  namespace: shop\nspec:\n  podSelector: {matchLabels: {app: payments}}\n  ingress:\n  - ports:\n    - {protocol: ICMP, port: 8080}\n";
    std::fs::write(&manifests, shop(&format!("{admit_a}---\n{broken}"))).unwrap();
    let app = spawn_app(common::http_ok);
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    network_policy: {{ manifests: [shop.yaml], pod: shop/payments, port: {PORT} }}\nadmin: {{ listen: 127.0.0.1:0 }}\n",
        pki.identity_yaml("payments")
    );
    let sidecar = SidecarProcess::start(pki.path(), "sidecar.yaml", &config, &["api"]);
    let port = sidecar.addr("api").port();
    assert!(
        wait_until(std::time::Duration::from_secs(10), || curl_as(
            &pki, "a", port
        )),
        "a is not admitted: {}",
        sidecar.log_text()
    );
    assert!(!curl_as(&pki, "b", port), "b is admitted");
    let log = sidecar.log_text();
    assert!(
        log.contains("NetworkPolicy shop/broken") && log.contains("has host bits set"),
        "{log}"
    );
}
