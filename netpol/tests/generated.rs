//! Generated clusters against two independent readings of the NetworkPolicy semantics.
//!
//! The generator makes namespaces, pods (labels, nodes, named ports, IPv4 and IPv6 addresses) and
//! NetworkPolicies (every selector form, every peer form, `from`/`to` absent or empty, ports by
//! number, name and range, policyTypes absent, one or both), as its own structs, and writes them
//! out as manifests, where an absent field is often written as null instead (`null`, `~`, `Null`
//! or an empty value: `namespaceSelector: null`, `ports: ~`, `matchLabels: null`...), which the
//! API server reads as absent (a struct value, `spec.podSelector`, as `{}`), and a CIDR often
//! with host bits set (`10.9.1.77/24`), which it reads as the network. Then, over every (source, destination, protocol, port) including an address
//! outside the cluster:
//!
//! 1. `palisade_netpol::decide` on the loaded manifests must equal the straightforward evaluation
//!    below, written from the Kubernetes documentation over the generator's own structs;
//! 2. the compiled table of each node, run by a small interpreter of its chains and sets (the
//!    source's node checks egress, the destination's node ingress), must say the same; and every
//!    set's elements must be disjoint, as the kernel requires.
//!
//! `PALISADE_TEST_SEED` replays a run; `PALISADE_TEST_CASES` sets how many clusters (default 300).

use std::collections::BTreeMap;
use std::net::IpAddr;

use palisade_netpol::{decide, load_str, Cluster, End, Proto};
use palisade_policy::addrs::{family_of, to_u128, Family};
use palisade_policy::compile::{ChainRule, Element, Lookup};
use palisade_policy::Ruleset;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---- The generator's own model, and the manifests it writes ----

#[derive(Clone)]
struct GNamespace {
    name: String,
    labels: Vec<(String, String)>,
}

#[derive(Clone)]
struct GPod {
    ns: String,
    name: String,
    labels: Vec<(String, String)>,
    node: String,
    v4: [u8; 4],
    v6: String,
    /// (name, port, protocol)
    named: Vec<(String, u16, &'static str)>,
}

#[derive(Clone)]
enum GSelector {
    Empty,
    Labels(Vec<(String, String)>),
    /// (key, operator, values)
    Exprs(Vec<(String, &'static str, Vec<String>)>),
}

#[derive(Clone)]
enum GPeer {
    Pods(Option<GSelector>, Option<GSelector>),
    Block(String, Vec<String>),
}

#[derive(Clone)]
struct GPort {
    protocol: Option<&'static str>,
    port: Option<String>,
    end: Option<u16>,
}

#[derive(Clone)]
struct GRule {
    /// None: the field is absent; Some(empty): `[]`.
    peers: Option<Vec<GPeer>>,
    ports: Option<Vec<GPort>>,
}

#[derive(Clone)]
struct GPolicy {
    ns: String,
    name: String,
    selector: GSelector,
    types: Option<Vec<&'static str>>,
    ingress: Option<Vec<GRule>>,
    egress: Option<Vec<GRule>>,
}

const KEYS: &[&str] = &["app", "tier", "team"];
const VALUES: &[&str] = &["web", "db", "a", "b"];

fn labels(rng: &mut Rng) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for key in KEYS {
        if rng.chance(2) {
            out.push((key.to_string(), rng.pick(VALUES).to_string()));
        }
    }
    out
}

fn selector(rng: &mut Rng) -> GSelector {
    match rng.below(4) {
        0 => GSelector::Empty,
        1 | 2 => {
            let l = labels(rng);
            if l.is_empty() {
                GSelector::Empty
            } else {
                GSelector::Labels(vec![l[0].clone()])
            }
        }
        _ => {
            let mut exprs = Vec::new();
            for _ in 0..1 + rng.below(2) {
                let key = rng.pick(KEYS).to_string();
                let op = *rng.pick(&["In", "NotIn", "Exists", "DoesNotExist"]);
                let values = if matches!(op, "In" | "NotIn") {
                    let mut v = vec![rng.pick(VALUES).to_string()];
                    if rng.chance(2) {
                        v.push(rng.pick(VALUES).to_string());
                    }
                    v
                } else {
                    Vec::new()
                };
                exprs.push((key, op, values));
            }
            GSelector::Exprs(exprs)
        }
    }
}

fn cidr(rng: &mut Rng) -> (String, Vec<String>) {
    // Pod addresses are 10.9.N.x (N the node): blocks around them, with or without holes.
    match rng.below(5) {
        0 => (
            "10.9.0.0/16".into(),
            vec![format!("10.9.{}.0/24", 1 + rng.below(2))],
        ),
        // Host bits set half the time: the API server accepts them, and means the network.
        1 => (
            format!(
                "10.9.{}.{}/24",
                1 + rng.below(2),
                if rng.chance(2) { 0 } else { rng.below(256) }
            ),
            Vec::new(),
        ),
        2 => {
            let node = 1 + rng.below(2);
            (
                format!("10.9.{node}.0/28"),
                vec![format!("10.9.{node}.{}/31", 2 * rng.below(8))],
            )
        }
        3 => (
            if rng.chance(2) {
                "fd09::/32".into()
            } else {
                format!("fd09::{:x}/32", rng.below(65536))
            },
            vec![format!("fd09:0:{}::/48", 1 + rng.below(2))],
        ),
        _ => ("0.0.0.0/0".into(), vec!["10.9.0.0/16".into()]),
    }
}

fn rule(rng: &mut Rng) -> GRule {
    let peers = match rng.below(5) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(
            (0..1 + rng.below(2))
                .map(|_| match rng.below(4) {
                    0 => GPeer::Pods(Some(selector(rng)), None),
                    1 => GPeer::Pods(None, Some(selector(rng))),
                    2 => GPeer::Pods(Some(selector(rng)), Some(selector(rng))),
                    _ => {
                        let (c, e) = cidr(rng);
                        GPeer::Block(c, e)
                    }
                })
                .collect(),
        ),
    };
    let ports = match rng.below(4) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(
            (0..1 + rng.below(2))
                .map(|_| {
                    let protocol = *rng.pick(&[None, Some("TCP"), Some("UDP")]);
                    let (port, end) = match rng.below(5) {
                        0 => (None, None),
                        1 => (
                            Some(rng.pick(&["http", "dns", "metrics"]).to_string()),
                            None,
                        ),
                        2 => (Some("80".to_string()), Some(*rng.pick(&[81u16, 8080]))),
                        _ => (
                            Some(rng.pick(&["80", "53", "8080", "9090"]).to_string()),
                            None,
                        ),
                    };
                    GPort {
                        protocol,
                        port,
                        end,
                    }
                })
                .collect(),
        ),
    };
    GRule { peers, ports }
}

fn rules(rng: &mut Rng) -> Option<Vec<GRule>> {
    match rng.below(4) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some((0..1 + rng.below(2)).map(|_| rule(rng)).collect()),
    }
}

struct Generated {
    namespaces: Vec<GNamespace>,
    pods: Vec<GPod>,
    policies: Vec<GPolicy>,
}

fn generate(rng: &mut Rng) -> Generated {
    let namespaces: Vec<GNamespace> = (0..3)
        .map(|i| GNamespace {
            name: format!("ns{i}"),
            labels: labels(rng),
        })
        .collect();
    let mut pods = Vec::new();
    for i in 0..4 + rng.below(5) {
        let node = 1 + rng.below(2);
        let mut named = Vec::new();
        if rng.chance(2) {
            named.push(("http".to_string(), *rng.pick(&[80u16, 8080]), "TCP"));
        }
        if rng.chance(2) {
            named.push(("dns".to_string(), 53, *rng.pick(&["UDP", "TCP"])));
        }
        if rng.chance(3) {
            named.push(("metrics".to_string(), 9090, "TCP"));
        }
        pods.push(GPod {
            ns: rng.pick(&namespaces).name.clone(),
            name: format!("p{i}"),
            labels: labels(rng),
            node: format!("node-{node}"),
            v4: [10, 9, node as u8, 2 + i as u8],
            v6: format!("fd09:0:{node}::{:x}", 2 + i),
            named,
        });
    }
    let policies = (0..1 + rng.below(4))
        .map(|i| {
            let types = match rng.below(4) {
                0 | 1 => None,
                2 => Some(vec![*rng.pick(&["Ingress", "Egress"])]),
                _ => Some(vec!["Ingress", "Egress"]),
            };
            GPolicy {
                ns: rng.pick(&namespaces).name.clone(),
                name: format!("np{i}"),
                selector: selector(rng),
                types,
                ingress: rules(rng),
                egress: rules(rng),
            }
        })
        .collect();
    Generated {
        namespaces,
        pods,
        policies,
    }
}

/// A way to write null, for a field written as ` key:<this>`. `empty` allows the empty value,
/// which only block style has.
fn null(rng: &mut Rng, empty: bool) -> &'static str {
    const BLOCK: [&str; 4] = [" null", " ~", " Null", ""];
    const FLOW: [&str; 4] = [" null", " ~", " Null", " NULL"];
    let forms = if empty { BLOCK } else { FLOW };
    forms[rng.below(forms.len())]
}

fn yaml_labels(labels: &[(String, String)], indent: &str) -> String {
    if labels.is_empty() {
        return " {}".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("\n{indent}{k}: {v}"))
        .collect()
}

/// A selector; `zero_is_null`: the field is a struct value (`spec.podSelector`), so null is
/// `{}` (for a peer's selectors, pointers, null is absent).
fn yaml_selector(s: &GSelector, indent: &str, zero_is_null: bool, rng: &mut Rng) -> String {
    match s {
        GSelector::Empty => match rng.below(6) {
            0 if zero_is_null => null(rng, true).into(),
            1 => format!("\n{indent}matchLabels:{}", null(rng, true)),
            2 => format!("\n{indent}matchExpressions:{}", null(rng, true)),
            _ => " {}".into(),
        },
        GSelector::Labels(l) => {
            let mut out = format!(
                "\n{indent}matchLabels:{}",
                yaml_labels(l, &format!("{indent}  "))
            );
            if rng.chance(3) {
                out += &format!("\n{indent}matchExpressions:{}", null(rng, true));
            }
            out
        }
        GSelector::Exprs(e) => {
            let mut out = format!("\n{indent}matchExpressions:");
            for (key, op, values) in e {
                out += &format!("\n{indent}- key: {key}\n{indent}  operator: {op}");
                if !values.is_empty() {
                    out += &format!("\n{indent}  values: [{}]", values.join(", "));
                } else if rng.chance(3) {
                    out += &format!("\n{indent}  values:{}", null(rng, true));
                }
            }
            if rng.chance(3) {
                out += &format!("\n{indent}matchLabels:{}", null(rng, true));
            }
            out
        }
    }
}

fn yaml_rules(rules: &[GRule], peers_field: &str, rng: &mut Rng) -> String {
    let mut out = String::new();
    for r in rules {
        out += "\n  -";
        if r.peers.is_none() && r.ports.is_none() && rng.chance(3) {
            // A null entry: the zero rule, which is `{}`.
            continue;
        }
        let mut first = true;
        let mut field = |name: &str| {
            let prefix = if first { " " } else { "\n    " };
            first = false;
            format!("{prefix}{name}:")
        };
        if r.peers.is_none() && r.ports.is_none() && rng.chance(2) {
            out += " {}";
            continue;
        }
        if r.peers.is_none() && rng.chance(2) {
            out += &field(peers_field);
            out += null(rng, true);
        }
        if let Some(peers) = &r.peers {
            out += &field(peers_field);
            if peers.is_empty() {
                out += " []";
            }
            for p in peers {
                match p {
                    GPeer::Pods(pods, namespaces) => {
                        let mut lead = "\n    - ";
                        // An absent selector is often written as null: still absent.
                        for (name, selector) in
                            [("podSelector", pods), ("namespaceSelector", namespaces)]
                        {
                            let text = match selector {
                                Some(s) => yaml_selector(s, "        ", false, rng),
                                None if rng.chance(2) => null(rng, true).to_owned(),
                                None => continue,
                            };
                            out += &format!("{lead}{name}:{text}");
                            lead = "\n      ";
                        }
                        if rng.chance(4) {
                            out += &format!("{lead}ipBlock:{}", null(rng, true));
                        }
                    }
                    GPeer::Block(c, e) => {
                        out += &format!("\n    - ipBlock:\n        cidr: \"{c}\"");
                        if !e.is_empty() {
                            let quoted: Vec<String> =
                                e.iter().map(|x| format!("\"{x}\"")).collect();
                            out += &format!("\n        except: [{}]", quoted.join(", "));
                        } else if rng.chance(2) {
                            out += &format!("\n        except:{}", null(rng, true));
                        }
                        if rng.chance(3) {
                            let name = rng.pick(&["podSelector", "namespaceSelector"]);
                            out += &format!("\n      {name}:{}", null(rng, true));
                        }
                    }
                }
            }
        }
        if r.ports.is_none() && rng.chance(2) {
            out += &field("ports");
            out += null(rng, true);
        }
        if let Some(ports) = &r.ports {
            out += &field("ports");
            if ports.is_empty() {
                out += " []";
            }
            for p in ports {
                let mut parts = Vec::new();
                // Each absent field is sometimes written as null: still absent.
                let mut part = |name: &str, value: Option<String>, rng: &mut Rng| match value {
                    Some(v) => parts.push(format!("{name}: {v}")),
                    None if rng.chance(3) => parts.push(format!("{name}:{}", null(rng, false))),
                    None => {}
                };
                part("protocol", p.protocol.map(str::to_owned), rng);
                part("port", p.port.clone(), rng);
                part("endPort", p.end.map(|e| e.to_string()), rng);
                if parts.is_empty() && rng.chance(2) {
                    // A null entry: the zero port, TCP and every port.
                    out += "\n    -";
                } else {
                    out += &format!("\n    - {{{}}}", parts.join(", "));
                }
            }
        }
    }
    out
}

fn manifests(g: &Generated, rng: &mut Rng) -> String {
    let mut docs = Vec::new();
    for ns in &g.namespaces {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels:{}",
            ns.name,
            yaml_labels(&ns.labels, "    ")
        ));
    }
    for p in &g.pods {
        let ports: String = p
            .named
            .iter()
            .map(|(n, port, proto)| {
                format!("\n    - {{name: {n}, containerPort: {port}, protocol: {proto}}}")
            })
            .collect();
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels:{}\nspec:\n  nodeName: {}\n  containers:\n  - name: c\n    image: i\n    ports:{}\nstatus:\n  podIPs:\n  - ip: {}\n  - ip: \"{}\"",
            p.name,
            p.ns,
            yaml_labels(&p.labels, "    "),
            p.node,
            if ports.is_empty() { " []".to_owned() } else { ports },
            IpAddr::from(p.v4),
            p.v6
        ));
    }
    for np in &g.policies {
        let mut spec = format!(
            "  podSelector:{}",
            yaml_selector(&np.selector, "    ", true, rng)
        );
        match &np.types {
            Some(t) => spec += &format!("\n  policyTypes: [{}]", t.join(", ")),
            None if rng.chance(3) => spec += &format!("\n  policyTypes:{}", null(rng, true)),
            None => {}
        }
        for (name, rules, peers) in [
            ("ingress", &np.ingress, "from"),
            ("egress", &np.egress, "to"),
        ] {
            let text = match rules {
                Some(r) if r.is_empty() => " []".to_owned(),
                Some(r) => yaml_rules(r, peers, rng),
                None if rng.chance(3) => null(rng, true).to_owned(),
                None => continue,
            };
            spec += &format!("\n  {name}:{text}");
        }
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n{spec}",
            np.name, np.ns
        ));
    }
    docs.join("\n---\n") + "\n"
}

// ---- The straightforward evaluation, over the generator's structs ----

fn has(labels: &[(String, String)], key: &str) -> Option<String> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn matches(s: &GSelector, labels: &[(String, String)]) -> bool {
    match s {
        GSelector::Empty => true,
        GSelector::Labels(l) => l.iter().all(|(k, v)| has(labels, k).as_ref() == Some(v)),
        GSelector::Exprs(e) => e.iter().all(|(k, op, values)| {
            let v = has(labels, k);
            match *op {
                "In" => v.is_some_and(|v| values.contains(&v)),
                "NotIn" => v.is_none_or(|v| !values.contains(&v)),
                "Exists" => v.is_some(),
                _ => v.is_none(),
            }
        }),
    }
}

fn in_cidr(ip: IpAddr, c: &str) -> bool {
    let (a, len) = c.split_once('/').unwrap();
    let a: IpAddr = a.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    match (ip, a) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            len == 0 || (u32::from(x) >> (32 - len)) == (u32::from(y) >> (32 - len))
        }
        (IpAddr::V6(x), IpAddr::V6(y)) => {
            len == 0 || (u128::from(x) >> (128 - len)) == (u128::from(y) >> (128 - len))
        }
        _ => false,
    }
}

/// One end as the evaluation sees it: an address and, if a pod has it, that pod.
#[derive(Clone, Copy)]
struct GEnd<'a> {
    ip: IpAddr,
    pod: Option<&'a GPod>,
}

fn namespace_labels(g: &Generated, ns: &str) -> Vec<(String, String)> {
    let mut l = g
        .namespaces
        .iter()
        .find(|n| n.name == ns)
        .unwrap()
        .labels
        .clone();
    l.push(("kubernetes.io/metadata.name".into(), ns.into()));
    l
}

fn peer_ok(g: &Generated, policy_ns: &str, peers: &Option<Vec<GPeer>>, end: GEnd) -> bool {
    let Some(peers) = peers.as_ref().filter(|p| !p.is_empty()) else {
        return true; // absent or empty: every address
    };
    peers.iter().any(|p| match p {
        GPeer::Block(c, except) => in_cidr(end.ip, c) && !except.iter().any(|e| in_cidr(end.ip, e)),
        GPeer::Pods(pods, namespaces) => {
            let Some(pod) = end.pod else { return false };
            let ns_ok = match namespaces {
                Some(s) => matches(s, &namespace_labels(g, &pod.ns)),
                None => pod.ns == policy_ns,
            };
            ns_ok && pods.as_ref().is_none_or(|s| matches(s, &pod.labels))
        }
    })
}

fn port_ok(ports: &Option<Vec<GPort>>, dst: Option<&GPod>, proto: &str, port: u16) -> bool {
    let Some(ports) = ports.as_ref().filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        p.protocol.unwrap_or("TCP") == proto
            && match (&p.port, p.end) {
                (None, _) => true,
                (Some(n), Some(end)) => (n.parse::<u16>().unwrap()..=end).contains(&port),
                (Some(n), None) => match n.parse::<u16>() {
                    Ok(n) => n == port,
                    Err(_) => dst.is_some_and(|d| {
                        d.named
                            .iter()
                            .any(|(name, pp, pr)| name == n && *pp == port && *pr == proto)
                    }),
                },
            }
    })
}

fn applies(p: &GPolicy, egress: bool) -> bool {
    match &p.types {
        Some(t) => t.contains(&if egress { "Egress" } else { "Ingress" }),
        // The API server's default: Ingress, and Egress when there are egress rules.
        None => !egress || p.egress.as_ref().is_some_and(|e| !e.is_empty()),
    }
}

fn straightforward(g: &Generated, from: GEnd, to: GEnd, proto: &str, port: u16) -> bool {
    if let (Some(a), Some(b)) = (from.pod, to.pod) {
        if std::ptr::eq(a, b) {
            return true;
        }
    }
    let side = |end: GEnd, egress: bool| -> bool {
        let Some(pod) = end.pod else { return true };
        let isolating: Vec<&GPolicy> = g
            .policies
            .iter()
            .filter(|p| p.ns == pod.ns && matches(&p.selector, &pod.labels) && applies(p, egress))
            .collect();
        if isolating.is_empty() {
            return true;
        }
        isolating.iter().any(|p| {
            let rules = if egress { &p.egress } else { &p.ingress };
            rules.iter().flatten().any(|r| {
                let other = if egress { to } else { from };
                peer_ok(g, &p.ns, &r.peers, other) && port_ok(&r.ports, to.pod, proto, port)
            })
        })
    };
    side(from, true) && side(to, false)
}

// ---- A small interpreter of a compiled table: a new connection on the forward hook ----

fn element_has(
    e: &Element,
    key: palisade_policy::compile::Key,
    src: u128,
    dst: u128,
    proto: u8,
    port: u16,
) -> bool {
    (!key.src || (e.src.0..=e.src.1).contains(&src))
        && (!key.dst || (e.dst.0..=e.dst.1).contains(&dst))
        && (!key.proto || e.proto == proto)
        && (!key.port || (e.ports.first..=e.ports.last).contains(&port))
}

enum Outcome {
    Accept,
    Drop,
    /// Fell off the chain's end, or `return`.
    Continue,
}

fn run_chain(r: &Ruleset, chain: usize, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> Outcome {
    let family = family_of(src);
    let (s, d) = (to_u128(src), to_u128(dst));
    for rule in &r.chains[chain].rules {
        let lookup = |set: usize| -> bool {
            let set = &r.sets[set];
            set.family == family
                && set
                    .elements
                    .iter()
                    .any(|e| element_has(e, set.key, s, d, proto, port))
        };
        match rule {
            // A new connection: neither established nor invalid; not neighbour discovery.
            ChainRule::AcceptEstablished(_)
            | ChainRule::DropInvalid
            | ChainRule::AcceptNeighbourDiscovery { .. }
            | ChainRule::ReturnEstablished => {}
            ChainRule::Jump(c) => match run_chain(r, c.0, src, dst, proto, port) {
                Outcome::Continue => {}
                other => return other,
            },
            ChainRule::JumpIf { set, source, chain } => {
                let set_def = &r.sets[set.0];
                let addr = if *source { s } else { d };
                let hit = set_def.family == family
                    && set_def
                        .elements
                        .iter()
                        .any(|e| (e.src.0..=e.src.1).contains(&addr));
                if hit {
                    match run_chain(r, chain.0, src, dst, proto, port) {
                        Outcome::Continue => {}
                        other => return other,
                    }
                }
            }
            ChainRule::Lookup { set, verdict, .. } => {
                if lookup(set.0) {
                    match verdict {
                        Lookup::Pass => return Outcome::Continue,
                        Lookup::Allow => return Outcome::Accept,
                        Lookup::Deny => return Outcome::Drop,
                        Lookup::Log(_) => {}
                    }
                }
            }
            ChainRule::Drop => return Outcome::Drop,
            ChainRule::DropLocal { .. } => panic!("no Palisade segments in these tables"),
        }
    }
    Outcome::Continue
}

fn table_allows(r: &Ruleset, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> bool {
    let forward = r.chains.iter().position(|c| c.name == "forward").unwrap();
    !matches!(run_chain(r, forward, src, dst, proto, port), Outcome::Drop)
}

fn assert_disjoint(r: &Ruleset) {
    for set in &r.sets {
        let e = &set.elements;
        for i in 0..e.len() {
            for j in i + 1..e.len() {
                let overlap = |a: (u128, u128), b: (u128, u128)| a.0 <= b.1 && b.0 <= a.1;
                let k = set.key;
                let all = (!k.src || overlap(e[i].src, e[j].src))
                    && (!k.dst || overlap(e[i].dst, e[j].dst))
                    && (!k.proto || e[i].proto == e[j].proto)
                    && (!k.port
                        || (e[i].ports.first <= e[j].ports.last
                            && e[j].ports.first <= e[i].ports.last));
                assert!(
                    !all,
                    "set {} has overlapping elements {:?} and {:?}",
                    set.name, e[i], e[j]
                );
            }
        }
    }
}

#[test]
fn decide_and_the_compiled_tables_equal_a_straightforward_reading_over_generated_clusters() {
    let seed: u64 = std::env::var("PALISADE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6e65_7470_6f6c_2026);
    let cases: usize = std::env::var("PALISADE_TEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    println!("seed {seed} (PALISADE_TEST_SEED={seed} replays it), {cases} clusters");
    let mut rng = Rng(seed | 1);
    let (mut checked, mut allowed, mut isolated_cells) = (0usize, 0usize, 0usize);
    let outsider: IpAddr = "192.0.2.7".parse().unwrap();
    for case in 0..cases {
        let g = generate(&mut rng);
        let text = manifests(&g, &mut rng);
        let cluster: Cluster = load_str(&text, "generated.yaml").unwrap_or_else(|e| {
            panic!("case {case}: the generated manifests do not load: {e}\n{text}")
        });
        let tables: BTreeMap<String, Ruleset> = ["node-1", "node-2"]
            .iter()
            .map(|n| {
                let t = palisade_netpol::compile(&cluster, n, Ruleset::open(Some(n)));
                assert_disjoint(&t);
                (n.to_string(), t)
            })
            .collect();
        let index = |p: &GPod| {
            cluster
                .inventory
                .pod(&format!("{}/{}", p.ns, p.name))
                .unwrap()
        };
        for family in [Family::V4, Family::V6] {
            let addr = |p: &GPod| -> IpAddr {
                match family {
                    Family::V4 => IpAddr::from(p.v4),
                    Family::V6 => p.v6.parse().unwrap(),
                }
            };
            let mut ends: Vec<(GEnd, End, Option<&str>)> = g
                .pods
                .iter()
                .map(|p| {
                    (
                        GEnd {
                            ip: addr(p),
                            pod: Some(p),
                        },
                        End {
                            ip: addr(p),
                            pod: Some(index(p)),
                        },
                        Some(p.node.as_str()),
                    )
                })
                .collect();
            if family == Family::V4 {
                ends.push((
                    GEnd {
                        ip: outsider,
                        pod: None,
                    },
                    End {
                        ip: outsider,
                        pod: None,
                    },
                    None,
                ));
            }
            for (gf, f, from_node) in &ends {
                for (gt, t, to_node) in &ends {
                    for (proto, port) in [
                        ("TCP", 80u16),
                        ("TCP", 81),
                        ("TCP", 8080),
                        ("TCP", 53),
                        ("UDP", 53),
                        ("TCP", 9090),
                        ("UDP", 80),
                    ] {
                        let p = Proto::parse(proto).unwrap();
                        let expected = straightforward(&g, *gf, *gt, proto, port);
                        let verdict = decide(&cluster, f, t, p, port);
                        assert_eq!(
                            verdict.allowed, expected,
                            "case {case}: {} -> {} {proto}/{port}: decide says {}, the straightforward reading {expected}\n{verdict:?}\n{text}",
                            f.ip, t.ip, verdict.allowed
                        );
                        // The kernel's view: the source's node, then the destination's (a pod
                        // to itself never crosses either).
                        let same_pod = f.pod.is_some() && f.pod == t.pod;
                        if !same_pod {
                            let number = palisade_policy::compile::proto_number(p.protocol());
                            let mut kernel = true;
                            let mut nodes: Vec<&str> =
                                from_node.iter().chain(to_node.iter()).copied().collect();
                            nodes.dedup();
                            for n in nodes {
                                kernel &= table_allows(&tables[n], f.ip, t.ip, number, port);
                            }
                            assert_eq!(
                                kernel, expected,
                                "case {case}: {} -> {} {proto}/{port}: the compiled tables say {kernel}, the reading {expected}\n{text}\n{}\n{}",
                                f.ip, t.ip,
                                palisade_nft::nft_text(&tables["node-1"]),
                                palisade_nft::nft_text(&tables["node-2"])
                            );
                        }
                        checked += 1;
                        allowed += usize::from(expected);
                        isolated_cells += usize::from(
                            matches!(verdict.ingress, palisade_netpol::Side::Isolated { .. })
                                || matches!(verdict.egress, palisade_netpol::Side::Isolated { .. }),
                        );
                    }
                }
            }
        }
    }
    println!("{checked} cells, {allowed} allowed, {isolated_cells} with an isolated end");
    // A generator that isolates nobody, or admits nobody, proves little.
    assert!(
        isolated_cells > checked / 5,
        "{isolated_cells} of {checked}"
    );
    assert!(
        allowed > checked / 5 && allowed < checked * 9 / 10,
        "{allowed} of {checked}"
    );
}
