//! The compiled firewall against the policy's meaning, in a real kernel: network namespaces on a
//! bridge, the `inet palisade` table of each host applied as `palisade policy compile` prints it,
//! and every (source address, destination address, protocol, port) of tests/policy/lab.yaml
//! probed with real connections (TCP connect, UDP echo, ping and ping -6). Each cell must be what
//! `palisade_policy::decide` (the oracle behind `palisade policy explain`) says.
//!
//! Needs root, `ip`, `nft` and `python3`; prints `SKIP: <reason>` otherwise. It makes its own
//! namespaces (`pal-<pid>-<n>-<role>`) and deletes them on drop, even when it fails; nothing
//! touches the root namespace.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{have, ok, palisade, python, require_root, run_probes, Netns, SERVER_PY};
use palisade_policy::{decide, load_file, Endpoint, Policy, Protocol};

/// One host of the lab: its addresses (all on one link: /16 and /48, so every address reaches
/// every other without routes) and whether it runs the policy (`hosts:` in lab.yaml).
struct HostSpec {
    name: &'static str,
    managed: bool,
    addrs: &'static [&'static str],
}

/// The topology of tests/policy/lab.yaml (its header says which address is in which segment).
const HOSTS: &[HostSpec] = &[
    HostSpec {
        name: "alpha",
        managed: true,
        addrs: &["10.201.1.10", "fd00:201:0:1::10"],
    },
    HostSpec {
        name: "bravo",
        managed: true,
        addrs: &[
            "10.201.2.20",
            "10.201.3.20",
            "10.201.2.200",
            "fd00:201:0:2::20",
            "fd00:201:0:3::20",
            "fd00:201:0:2:8000::200",
        ],
    },
    HostSpec {
        name: "charlie",
        managed: true,
        addrs: &[
            "10.201.3.30",
            "10.201.9.3",
            "10.201.99.30",
            "fd00:201:0:3::30",
            "fd00:201:0:9::3",
            "fd00:201:0:99::30",
        ],
    },
    HostSpec {
        name: "internet",
        managed: false,
        addrs: &["10.201.99.40", "fd00:201:0:99::40"],
    },
];

const TCP_PORTS: &[u16] = &[22, 23, 53, 443, 5432, 8000, 8080, 8100, 8101, 9000];
const UDP_PORTS: &[u16] = &[53, 5140];
/// Listened on but never probed by the matrix: the sanity pass before the firewall uses it, so
/// that no connection tracking entry of that pass can be mistaken for a matrix cell.
const BASELINE_PORT: u16 = 7;

fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const LAB: &str = "tests/policy/lab.yaml";

/// The namespaces of the lab: a switch holding bridge `br0`, and one namespace per host with a
/// veth (`eth0`) to the bridge carrying all of the host's addresses.
struct Lab {
    /// Dropped last: deletes every namespace.
    netns: Netns,
    /// Host index to namespace name.
    host_ns: Vec<String>,
    python: String,
}

impl Lab {
    fn build() -> Lab {
        let mut netns = Netns::new();
        let switch = netns.add("switch");
        let ex = |netns: &Netns, ns: &str, cmd: &str| {
            let args: Vec<&str> = cmd.split_whitespace().collect();
            netns.exec_ok(ns, &args, None);
        };
        ex(
            &netns,
            &switch,
            "ip link add br0 type bridge stp_state 0 mcast_snooping 0",
        );
        ex(&netns, &switch, "ip link set br0 up");
        let mut host_ns = Vec::new();
        for (i, host) in HOSTS.iter().enumerate() {
            let ns = netns.add(host.name);
            let port = format!("p{i}");
            ex(
                &netns,
                &ns,
                &format!("ip link add eth0 type veth peer name {port} netns {switch}"),
            );
            ex(
                &netns,
                &switch,
                &format!("ip link set {port} master br0 up"),
            );
            for addr in host.addrs {
                // One link for all: /16 and /48 put every lab address on it. No DAD, so IPv6
                // addresses are usable at once.
                let cmd = if addr.contains(':') {
                    format!("ip addr add {addr}/48 dev eth0 nodad")
                } else {
                    format!("ip addr add {addr}/16 dev eth0")
                };
                ex(&netns, &ns, &cmd);
            }
            ex(&netns, &ns, "ip link set eth0 up");
            host_ns.push(ns);
        }
        Lab {
            netns,
            host_ns,
            python: python(),
        }
    }

    /// Starts the listeners of every host and waits until they are bound.
    fn listen(&mut self) {
        let mut tcp: Vec<u16> = TCP_PORTS.to_vec();
        tcp.push(BASELINE_PORT);
        for (i, host) in HOSTS.iter().enumerate() {
            let spec = serde_json::json!({ "addrs": host.addrs, "tcp": tcp, "udp": UDP_PORTS });
            let ns = self.host_ns[i].clone();
            let python = self.python.clone();
            let child = self
                .netns
                .spawn(&ns, &[&python, "-c", SERVER_PY, &spec.to_string()]);
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().expect("stdout"))
                .read_line(&mut line)
                .expect("read listener output");
            assert_eq!(line.trim(), "ready", "listeners in {ns} did not start");
        }
    }

    /// Compiles `host`'s table with the real binary and applies it in its namespace.
    fn apply_policy(&self, index: usize) {
        let host = HOSTS[index].name;
        let text = ok(palisade(
            &["policy", "compile", LAB, "--host", host],
            &root_dir(),
        ));
        self.netns.exec_ok(
            &self.host_ns[index],
            &["nft", "-f", "-"],
            Some(text.as_bytes()),
        );
    }

    /// Runs `probes` (one python3 process per source namespace, all at once); returns each
    /// probe's status by probe id.
    fn probe(&self, probes: &[Probe], timeout: f64) -> BTreeMap<usize, String> {
        let mut by_ns: BTreeMap<usize, Vec<serde_json::Value>> = BTreeMap::new();
        for p in probes {
            by_ns.entry(p.host).or_default().push(serde_json::json!({
                "id": p.id,
                "src": p.src.to_string(),
                "dst": p.dst.to_string(),
                "proto": p.proto,
                "port": p.port,
                "ident": p.ident,
            }));
        }
        let by_ns: BTreeMap<String, Vec<serde_json::Value>> = by_ns
            .into_iter()
            .map(|(host, list)| (self.host_ns[host].clone(), list))
            .collect();
        run_probes(&self.netns, &self.python, &by_ns, timeout)
    }
}

/// One probe: from `src` (an address of host `host`) to `dst`.
#[derive(Debug, Clone)]
struct Probe {
    id: usize,
    host: usize,
    src: IpAddr,
    dst: IpAddr,
    /// `tcp`, `udp` or `icmp` (ping or ping -6, by the family of the addresses).
    proto: &'static str,
    port: Option<u16>,
    /// ICMP echo identifier: unique per probe, so that no connection tracking entry of one
    /// probe can answer for another.
    ident: u16,
}

impl Probe {
    fn protocol(&self) -> Protocol {
        match (self.proto, self.dst) {
            ("tcp", _) => Protocol::Tcp,
            ("udp", _) => Protocol::Udp,
            (_, IpAddr::V4(_)) => Protocol::Icmp,
            (_, IpAddr::V6(_)) => Protocol::Icmpv6,
        }
    }

    fn what(&self) -> String {
        match self.port {
            Some(port) => format!("{} {port}", self.proto),
            None => self.protocol().name().to_owned(),
        }
    }
}

/// Every pair of distinct lab addresses of one family.
fn address_pairs() -> Vec<(usize, IpAddr, IpAddr)> {
    let all: Vec<(usize, IpAddr)> = HOSTS
        .iter()
        .enumerate()
        .flat_map(|(i, h)| {
            h.addrs
                .iter()
                .map(move |a| (i, a.parse().expect("address")))
        })
        .collect();
    let mut pairs = Vec::new();
    for &(host, src) in &all {
        for &(_, dst) in &all {
            if src != dst && src.is_ipv4() == dst.is_ipv4() {
                pairs.push((host, src, dst));
            }
        }
    }
    pairs
}

/// The matrix: every address pair, every probed TCP and UDP port, and ping.
fn matrix() -> Vec<Probe> {
    let mut probes = Vec::new();
    for (host, src, dst) in address_pairs() {
        let mut add = |proto, port| {
            let id = probes.len();
            probes.push(Probe {
                id,
                host,
                src,
                dst,
                proto,
                port,
                ident: 10_000 + id as u16,
            });
        };
        for &port in TCP_PORTS {
            add("tcp", Some(port));
        }
        for &port in UDP_PORTS {
            add("udp", Some(port));
        }
        add("icmp", None);
    }
    probes
}

fn load_lab() -> Policy {
    load_file(&root_dir().join(LAB)).unwrap_or_else(|e| panic!("{e}"))
}

/// Segments of an address, for the mismatch table.
fn segments(policy: &Policy, addr: IpAddr) -> String {
    let segs = policy.segments_of(&Endpoint::Address(addr));
    if segs.is_empty() {
        "outside".into()
    } else {
        segs.iter()
            .map(|&i| policy.segments[i].name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn kernel_matches_explain_cell_for_cell() {
    require_root("network namespaces and nftables");
    if !(have("ip") && have("nft") && have("python3")) {
        return;
    }
    let started = Instant::now();
    let policy = load_lab();
    let mut lab = Lab::build();
    lab.listen();

    // Before any firewall, every pair must talk: the harness (addresses, listeners, probes)
    // works, so a closed cell below is the firewall's doing.
    let mut baseline = Vec::new();
    for (host, src, dst) in address_pairs() {
        for (proto, port) in [("tcp", Some(BASELINE_PORT)), ("icmp", None)] {
            let id = baseline.len();
            baseline.push(Probe {
                id,
                host,
                src,
                dst,
                proto,
                port,
                ident: 1 + id as u16,
            });
        }
    }
    let statuses = lab.probe(&baseline, 2.0);
    let broken: Vec<String> = baseline
        .iter()
        .filter(|p| statuses[&p.id] != "open")
        .map(|p| format!("{} -> {} {}: {}", p.src, p.dst, p.what(), statuses[&p.id]))
        .collect();
    assert!(
        broken.is_empty(),
        "the lab is broken before any firewall:\n{}",
        broken.join("\n")
    );

    for (i, host) in HOSTS.iter().enumerate() {
        if host.managed {
            lab.apply_policy(i);
        }
    }

    let probes = matrix();
    let probing = Instant::now();
    let mut statuses = lab.probe(&probes, 1.0);
    let first_pass = probing.elapsed();
    let expected: Vec<_> = probes
        .iter()
        .map(|p| {
            decide(
                &policy,
                &Endpoint::Address(p.src),
                &Endpoint::Address(p.dst),
                p.protocol(),
                p.port,
            )
        })
        .collect();
    // A cell the policy allows but that timed out gets a second, slower chance (a lost first
    // packet is not a firewall verdict); a denied cell that got through never does.
    let retry: Vec<Probe> = probes
        .iter()
        .filter(|p| expected[p.id].allowed && statuses[&p.id] != "open")
        .map(|p| Probe {
            ident: 40_000 + p.id as u16,
            ..p.clone()
        })
        .collect();
    if !retry.is_empty() {
        eprintln!("retrying {} allowed cells that did not answer", retry.len());
        statuses.extend(lab.probe(&retry, 3.0));
    }

    let mut mismatches = Vec::new();
    let mut harness_errors = Vec::new();
    let (mut open, mut closed) = (0, 0);
    for p in &probes {
        let status = &statuses[&p.id];
        let reachable = status == "open";
        if reachable {
            open += 1;
        } else {
            closed += 1;
        }
        if status == "refused" || status.starts_with("error") {
            harness_errors.push(format!("{} -> {} {}: {status}", p.src, p.dst, p.what()));
        }
        let decision = &expected[p.id];
        if reachable != decision.allowed {
            mismatches.push(format!(
                "{:<22} ({:<7}) -> {:<22} ({:<7}) {:<9} kernel: {:<16} explain: {decision}",
                p.src.to_string(),
                segments(&policy, p.src),
                p.dst.to_string(),
                segments(&policy, p.dst),
                p.what(),
                if reachable {
                    "reachable".to_owned()
                } else {
                    format!("closed ({status})")
                },
            ));
        }
    }
    eprintln!(
        "{} cells ({} address pairs x {} probes): {open} reachable, {closed} closed; \
         probing took {:.1?}, the whole test {:.1?}",
        probes.len(),
        address_pairs().len(),
        TCP_PORTS.len() + UDP_PORTS.len() + 1,
        first_pass,
        started.elapsed()
    );
    assert!(
        harness_errors.is_empty(),
        "probes that failed for another reason than the firewall:\n{}",
        harness_errors.join("\n")
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} cells differ between the kernel and `policy explain`:\n{}",
        mismatches.len(),
        probes.len(),
        mismatches.join("\n")
    );
    // The lab means something only if it exercises both verdicts in bulk.
    assert!(open > 100 && closed > 100, "{open} open, {closed} closed");
}

/// The generation stamped into the compiled table's first decide rule.
fn generation(nft_text: &str) -> String {
    let at = nft_text
        .find("palisade generation ")
        .expect("a generation comment");
    nft_text[at + "palisade generation ".len()..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect()
}

#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn the_json_form_applies_and_lists_like_the_text_form() {
    require_root("network namespaces and nftables");
    if !(have("ip") && have("nft") && have("python3")) {
        return;
    }
    let dir: &Path = &root_dir();
    let mut netns = Netns::new();
    let from_text = netns.add("text");
    let from_json = netns.add("json");
    let text = ok(palisade(
        &["policy", "compile", LAB, "--host", "bravo"],
        dir,
    ));
    let json = ok(palisade(
        &["policy", "compile", LAB, "--host", "bravo", "-o", "json"],
        dir,
    ));
    let generation = generation(&text);
    assert_eq!(generation.len(), 16, "{text}");

    netns.exec_ok(&from_text, &["nft", "-f", "-"], Some(text.as_bytes()));
    netns.exec_ok(&from_json, &["nft", "-j", "-f", "-"], Some(json.as_bytes()));
    let list = |ns: &str| netns.exec_ok(ns, &["nft", "list", "table", "inet", "palisade"], None);
    let listed_json = list(&from_json);
    assert!(
        listed_json.contains(&format!("comment \"palisade generation {generation}\"")),
        "the table applied from JSON lacks generation {generation}:\n{listed_json}"
    );
    assert_eq!(
        listed_json,
        list(&from_text),
        "the JSON and text forms make different tables"
    );
}
