//! A transparent sidecar is no relay. A neighbour on the pod's link routes packets for other
//! destinations through the pod (its MAC as the next hop): for a host that only the pod can
//! reach (a database at 10.30.0.2 / fd30::2, on a second link of the pod) and for 127.0.0.1,
//! where the pod's app serves something on loopback only. Neither may be carried on by the
//! sidecar, whose UID the redirect exempts:
//!
//! - the redirect table from `palisade sidecar redirect` drops them before the redirect (its
//!   guard chain: loopback from the wire, TCP for an address not the pod's), though the pod, as
//!   a pod on a node does, forwards (`ip_forward=1`) and takes 127.0.0.0/8 from the wire
//!   (`route_localnet=1`, which kube-proxy sets on nodes and pods inherit), and the database
//!   routes its answers back through the pod: without the guard the kernel would carry them;
//! - under a table that captures everything (as tables written by earlier versions did) the
//!   sidecar refuses them itself, counted as `destination_not_local`, in permissive mode
//!   (plaintext) and in strict mode (a client whose identity the policy admits);
//! - and inbound connections to the pod's own addresses work as before, IPv4 and IPv6.
//!
//! IPv6 has no loopback case: the kernel drops a packet for ::1 that arrives on any other
//! interface before any hook sees it. Everything runs in network namespaces made here.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const PROXY_UID: &str = "1337";
const APP_PORT: &str = "8080";
const LOOPBACK_ONLY_PORT: &str = "6060";
const DB_PORT: &str = "5432";
const POD_V4: &str = "10.31.0.2";
const POD_V6: &str = "fd31::2";
const DB_V4: &str = "10.30.0.2";
const DB_V6: &str = "fd30::2";
const PERMISSIVE: Sidecar = Sidecar {
    name: "permissive",
    inbound: "15006",
    outbound: "15001",
    admin: "15000",
};
const STRICT: Sidecar = Sidecar {
    name: "strict",
    inbound: "15106",
    outbound: "15101",
    admin: "15100",
};

struct Sidecar {
    name: &'static str,
    inbound: &'static str,
    outbound: &'static str,
    admin: &'static str,
}

struct Lab {
    nets: Netns,
    pod: String,
    neighbour: String,
}

/// The pod (eth0 to the neighbour, eth1 to the database), the neighbour with routes through the
/// pod for the database and for 127.0.0.1, and the database.
fn lab() -> Lab {
    let mut nets = Netns::new();
    let pod = nets.add("pod");
    let neighbour = nets.add("nb");
    let db = nets.add("db");
    let link = |nets: &Netns, other: &str, pod_if: &str, v4: &str, v6: &str| {
        nets.exec_ok(
            other,
            &[
                "ip", "link", "add", "e0", "type", "veth", "peer", "name", pod_if, "netns", &pod,
            ],
            None,
        );
        for (ns, dev, v4, v6) in [
            (other, "e0", format!("{v4}.1/24"), format!("{v6}:1/64")),
            (
                pod.as_str(),
                pod_if,
                format!("{v4}.2/24"),
                format!("{v6}:2/64"),
            ),
        ] {
            nets.exec_ok(ns, &["ip", "addr", "add", &v4, "dev", dev], None);
            nets.exec_ok(ns, &["ip", "addr", "add", &v6, "dev", dev, "nodad"], None);
            nets.exec_ok(ns, &["ip", "link", "set", dev, "up"], None);
        }
    };
    // The neighbour is .1 on 10.31.0.0/24 and fd31::/64, the pod .2.
    link(&nets, &neighbour, "eth0", "10.31.0", "fd31:");
    // The database's link the other way round: the pod .1, the database .2.
    nets.exec_ok(
        &db,
        &[
            "ip", "link", "add", "e0", "type", "veth", "peer", "name", "eth1", "netns", &pod,
        ],
        None,
    );
    for (ns, dev, v4, v6) in [
        (
            db.as_str(),
            "e0",
            format!("{DB_V4}/24"),
            format!("{DB_V6}/64"),
        ),
        (
            pod.as_str(),
            "eth1",
            "10.30.0.1/24".to_owned(),
            "fd30::1/64".to_owned(),
        ),
    ] {
        nets.exec_ok(ns, &["ip", "addr", "add", &v4, "dev", dev], None);
        nets.exec_ok(ns, &["ip", "addr", "add", &v6, "dev", dev, "nodad"], None);
        nets.exec_ok(ns, &["ip", "link", "set", dev, "up"], None);
    }
    // The pod as a node gives it: a new namespace inherits the node's IPv4 settings, so it
    // forwards, and where kube-proxy set route_localnet it takes 127.0.0.0/8 from the wire. The
    // database answers through the pod. So nothing but the redirect table's guard stands
    // between the neighbour and the database or the pod's loopback.
    for sysctl in [
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.all.route_localnet=1",
        "net.ipv4.conf.eth0.route_localnet=1",
    ] {
        nets.exec_ok(&pod, &["sysctl", "-qw", sysctl], None);
    }
    nets.exec_ok(
        &db,
        &["ip", "route", "add", "default", "via", "10.30.0.1"],
        None,
    );
    nets.exec_ok(
        &db,
        &["ip", "-6", "route", "add", "default", "via", "fd30::1"],
        None,
    );
    // The neighbour routes the database's addresses through the pod.
    nets.exec_ok(
        &neighbour,
        &["ip", "route", "add", &format!("{DB_V4}/32"), "via", POD_V4],
        None,
    );
    nets.exec_ok(
        &neighbour,
        &[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{DB_V6}/128"),
            "via",
            POD_V6,
        ],
        None,
    );
    // And 127.0.0.1: its local table is consulted after a rule of its own that sends 127.0.0.1
    // through the pod, and it accepts answers from 127.0.0.1 on its link (route_localnet).
    for args in [
        &["ip", "rule", "add", "pref", "1000", "lookup", "local"][..],
        &["ip", "rule", "del", "pref", "0"],
        &[
            "ip",
            "rule",
            "add",
            "pref",
            "10",
            "to",
            "127.0.0.1",
            "lookup",
            "77",
        ],
        &[
            "ip",
            "route",
            "add",
            "127.0.0.1/32",
            "via",
            POD_V4,
            "dev",
            "e0",
            "table",
            "77",
        ],
        &["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"],
        &["sysctl", "-qw", "net.ipv4.conf.e0.route_localnet=1"],
    ] {
        nets.exec_ok(&neighbour, args, None);
    }
    for target in [POD_V4, POD_V6] {
        nets.exec(&neighbour, &["ping", "-c", "1", "-W", "2", target], None);
    }
    for target in [DB_V4, DB_V6] {
        nets.exec(&pod, &["ping", "-c", "1", "-W", "2", target], None);
    }
    let mut lab = Lab {
        nets,
        pod,
        neighbour,
    };
    serve(&mut lab, &db);
    lab
}

/// An HTTP server on (address, port) that answers every GET with its name.
const SERVER_PY: &str = r#"
import http.server, socket, sys
bind, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(name.encode() + b"\n")
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
Server((bind, port), Handler).serve_forever()
"#;

/// Each server answers with its own name: the app on the pod's addresses, a loopback-only
/// server in the pod, and the database.
fn serve(lab: &mut Lab, db: &str) {
    let pod = lab.pod.clone();
    for (ns, text, bind, port) in [
        (pod.as_str(), "app", "::", APP_PORT),
        (
            pod.as_str(),
            "loopback-only",
            "127.0.0.1",
            LOOPBACK_ONLY_PORT,
        ),
        (db, "database", "::", DB_PORT),
    ] {
        lab.nets
            .spawn(ns, &["python3", "-c", SERVER_PY, bind, port, text]);
    }
    for (ns, url) in [
        (pod.clone(), format!("http://{POD_V4}:{APP_PORT}/")),
        (
            pod.clone(),
            format!("http://127.0.0.1:{LOOPBACK_ONLY_PORT}/"),
        ),
        (db.to_owned(), format!("http://{DB_V4}:{DB_PORT}/")),
    ] {
        assert!(
            wait_until(Duration::from_secs(10), || lab
                .nets
                .exec(&ns, &["curl", "-s", "--max-time", "1", &url], None)
                .status
                .success()),
            "{url} did not come up"
        );
    }
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The neighbour's identity may reach the pod on every port this test uses: in strict mode the
/// only thing between it and a relay would be the sidecar's check of the destination.
fn policy() -> String {
    [
        "version: 1".to_owned(),
        format!("trust_domain: {TD}"),
        "segments:".to_owned(),
        "  neighbour:".to_owned(),
        "    addresses: [10.31.0.1/32, \"fd31::1/128\"]".to_owned(),
        format!("    identities: [spiffe://{TD}/neighbour]"),
        "  pod:".to_owned(),
        format!("    addresses: [{POD_V4}/32, \"{POD_V6}/128\"]"),
        format!("    identities: [spiffe://{TD}/pod]"),
        "rules:".to_owned(),
        "  - name: neighbour-to-pod".to_owned(),
        "    from: neighbour".to_owned(),
        "    to: pod".to_owned(),
        "    protocol: tcp".to_owned(),
        format!("    ports: [{APP_PORT}, {LOOPBACK_ONLY_PORT}, {DB_PORT}]"),
    ]
    .join("\n")
        + "\n"
}

fn start_sidecar(lab: &mut Lab, pki: &Pki, sidecar: &Sidecar) {
    let dir = pki.path();
    let config = dir.join(format!("{}-sidecar.yaml", sidecar.name));
    let mode = sidecar.name;
    write(
        &config,
        &format!(
            "identity:\n  cert: pod/cert.pem\n  key: pod/key.pem\n  bundle: pod/bundle.pem\n\
             transparent:\n  inbound: \"[::]:{}\"\n  outbound: \"[::]:{}\"\n  policy: policy.yaml\n  \
             mode: {mode}\nadmin:\n  listen: 127.0.0.1:{}\n",
            sidecar.inbound, sidecar.outbound, sidecar.admin
        ),
    );
    chown_recursive(dir, PROXY_UID);
    let config = config.to_str().unwrap().to_owned();
    let pod = lab.pod.clone();
    lab.nets.spawn(
        &pod,
        &[
            "setpriv",
            "--reuid",
            PROXY_UID,
            "--regid",
            PROXY_UID,
            "--clear-groups",
            BIN,
            "sidecar",
            "run",
            "--config",
            &config,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || admin(lab, sidecar, "/ready")
            == "ready\n"),
        "the {} sidecar did not become ready",
        sidecar.name
    );
}

fn admin(lab: &Lab, sidecar: &Sidecar, path: &str) -> String {
    let url = format!("http://127.0.0.1:{}{path}", sidecar.admin);
    let out = lab
        .nets
        .exec(&lab.pod, &["curl", "-s", "--max-time", "2", &url], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused_not_local(lab: &Lab, sidecar: &Sidecar) -> f64 {
    metric_value(
        &admin(lab, sidecar, "/metrics"),
        "palisade_sidecar_connections_refused_total",
        &[
            ("listener", "transparent-inbound"),
            ("reason", "destination_not_local"),
        ],
    )
}

fn opened(lab: &Lab, sidecar: &Sidecar) -> f64 {
    metric_value(
        &admin(lab, sidecar, "/metrics"),
        "palisade_sidecar_connections_opened_total",
        &[("listener", "transparent-inbound")],
    )
}

/// The table `palisade sidecar redirect` writes, to `sidecar`'s ports.
fn redirect(lab: &Lab, sidecar: &Sidecar) {
    lab.nets.exec_ok(
        &lab.pod,
        &[
            BIN,
            "sidecar",
            "redirect",
            "--inbound-port",
            sidecar.inbound,
            "--outbound-port",
            sidecar.outbound,
            "--proxy-uid",
            PROXY_UID,
        ],
        None,
    );
}

/// A table that captures every TCP packet the pod receives, as tables written before the redirect
/// learned `fib daddr type local` did.
fn capture_everything(lab: &Lab, sidecar: &Sidecar) {
    let table = format!(
        "table inet palisade_redirect\ndelete table inet palisade_redirect\n\
table inet palisade_redirect {{\n\
  chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n\
    meta l4proto tcp redirect to :{}\n  }}\n}}\n",
        sidecar.inbound
    );
    lab.nets
        .exec_ok(&lab.pod, &["nft", "-f", "-"], Some(table.as_bytes()));
}

/// The neighbour's request to `host:port` (http, or https as the neighbour's workload): the body,
/// or why not.
fn request(lab: &Lab, pki: &Pki, tls: bool, host: &str, port: &str) -> Result<String, String> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{port}/");
    let dir = pki.path().join("neighbour");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut args = vec![
        "curl",
        "-sS",
        "--fail",
        "-g",
        "--connect-timeout",
        "2",
        "--max-time",
        "4",
    ];
    if tls {
        // The sidecar's certificate names a SPIFFE ID, not a host: -k, as a client that checks
        // nothing about the server would (the relay is the server's to refuse).
        args.extend([
            "-k",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]);
    }
    args.push(&url);
    let out = lab.nets.exec(&lab.neighbour, &args, None);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The three relays the neighbour tries.
const RELAYS: [(&str, &str); 3] = [
    (DB_V4, DB_PORT),
    (DB_V6, DB_PORT),
    ("127.0.0.1", LOOPBACK_ONLY_PORT),
];

#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn a_neighbour_routing_through_the_pod_gets_no_relay_to_other_hosts_or_loopback() {
    require_root("network namespaces and nftables");
    if !(have("nft") && have("curl") && have("setpriv") && have("python3") && have("ping")) {
        return;
    }
    let pki = Pki::new();
    for name in ["pod", "neighbour"] {
        pki.issue(name, name, &[]);
    }
    write(&pki.path().join("policy.yaml"), &policy());
    let mut lab = lab();
    start_sidecar(&mut lab, &pki, &PERMISSIVE);
    start_sidecar(&mut lab, &pki, &STRICT);

    // The redirect as written today: the relays are dropped by its guard (nothing reaches the
    // sidecar, nor the database or the loopback server by the kernel's forwarding); the pod's
    // own addresses are captured.
    redirect(&lab, &PERMISSIVE);
    for (host, port) in RELAYS {
        let before = opened(&lab, &PERMISSIVE);
        let answer = request(&lab, &pki, false, host, port);
        assert!(answer.is_err(), "relayed to {host}:{port}: {answer:?}");
        assert_eq!(
            opened(&lab, &PERMISSIVE),
            before,
            "{host}:{port} was captured"
        );
    }
    for pod in [POD_V4, POD_V6] {
        let before = opened(&lab, &PERMISSIVE);
        assert_eq!(request(&lab, &pki, false, pod, APP_PORT).unwrap(), "app\n");
        assert!(opened(&lab, &PERMISSIVE) > before, "{pod} was not captured");
    }
    let table = lab.nets.exec_ok(
        &lab.pod,
        &["nft", "list", "table", "inet", "palisade_redirect"],
        None,
    );
    assert!(table.contains("fib daddr type != local drop"), "{table}");

    // Under a table that captures everything, the sidecar refuses each relay itself: in
    // permissive mode (plaintext would otherwise be passed through)...
    capture_everything(&lab, &PERMISSIVE);
    for (n, (host, port)) in RELAYS.into_iter().enumerate() {
        let answer = request(&lab, &pki, false, host, port);
        assert!(answer.is_err(), "relayed to {host}:{port}: {answer:?}");
        assert!(
            wait_until(Duration::from_secs(5), || refused_not_local(
                &lab,
                &PERMISSIVE
            ) >= (n + 1) as f64),
            "the refusal of {host}:{port} was not counted"
        );
    }
    for pod in [POD_V4, POD_V6] {
        assert_eq!(request(&lab, &pki, false, pod, APP_PORT).unwrap(), "app\n");
    }
    // ...and in strict mode, to a client whose identity the policy admits on every port.
    capture_everything(&lab, &STRICT);
    for (n, (host, port)) in RELAYS.into_iter().enumerate() {
        let answer = request(&lab, &pki, true, host, port);
        assert!(answer.is_err(), "relayed to {host}:{port}: {answer:?}");
        assert!(
            wait_until(Duration::from_secs(5), || refused_not_local(&lab, &STRICT)
                >= (n + 1) as f64),
            "the refusal of {host}:{port} was not counted"
        );
    }
    for pod in [POD_V4, POD_V6] {
        assert_eq!(request(&lab, &pki, true, pod, APP_PORT).unwrap(), "app\n");
    }
}

/// What the proxy UID sends over UDP reaches port 53 and nothing else: the sidecar's system call
/// filter allows UDP only when it resolves names, and cannot see a datagram's destination; the
/// pod's table can. Another UID's UDP is untouched.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn the_proxy_uid_sends_udp_to_port_53_only() {
    require_root("network namespaces and nftables");
    if !(have("nft") && have("setpriv") && have("python3")) {
        return;
    }
    let mut nets = Netns::new();
    let pod = nets.add("udp");
    nets.exec_ok(
        &pod,
        &[
            BIN,
            "sidecar",
            "redirect",
            "--inbound-port",
            "15006",
            "--outbound-port",
            "15001",
            "--proxy-uid",
            PROXY_UID,
        ],
        None,
    );
    // A receiver on 127.0.0.1 ports 53 and 5353 takes what arrives; senders as the proxy UID and
    // as another, one datagram to each port.
    const RECEIVE: &str = r#"
import socket, sys
socks = []
for port in (53, 5353):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.setblocking(False)
    socks.append((port, s))
print("ready", flush=True)
# Loopback delivers a datagram into the socket's queue within sendto: once the senders have
# exited (the test says so on stdin), everything that will arrive is here.
sys.stdin.readline()
got = set()
for port, s in socks:
    while True:
        try:
            data, _ = s.recvfrom(64)
        except BlockingIOError:
            break
        got.add((port, data.decode()))
print(sorted(got), flush=True)
"#;
    const SEND: &str = r#"
import socket, sys
for port in (53, 5353):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(sys.argv[1].encode(), ("127.0.0.1", port))
    except OSError as e:
        print(port, e)
"#;
    // The system's interpreter: one under root's home (pyenv) is not for other users to run.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".to_owned()
    } else {
        python()
    };
    let receiver = nets.spawn(&pod, &[&python, "-c", RECEIVE]);
    let mut receiver_stdin = receiver.stdin.take();
    let mut out = std::io::BufReader::new(receiver.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    for (uid, tag) in [(PROXY_UID, "proxy"), ("1000", "app")] {
        nets.exec_ok(
            &pod,
            &[
                "setpriv",
                "--reuid",
                uid,
                "--regid",
                uid,
                "--clear-groups",
                &python,
                "-c",
                SEND,
                tag,
            ],
            None,
        );
    }
    {
        use std::io::Write;
        let stdin = receiver_stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(
        line.trim(),
        "[(53, 'app'), (53, 'proxy'), (5353, 'app')]",
        "what arrived"
    );
}
