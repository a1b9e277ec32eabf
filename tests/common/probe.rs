//! Real connections inside network namespaces: a listener script (TCP accept, UDP echo) and a
//! prober script (TCP connect, UDP echo, ping) run with python3, each probe's outcome one word.

use std::collections::BTreeMap;

use super::Netns;

/// Listens on every given address: TCP ports accept and close, UDP ports echo each datagram.
/// Prints `ready` once every socket is bound; exits when its stdin closes.
pub const SERVER_PY: &str = r#"
import json, os, selectors, socket, sys, threading
spec = json.loads(sys.argv[1])
sel = selectors.DefaultSelector()
for a in spec["addrs"]:
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    for p in spec["tcp"]:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a, p))
        s.listen(1024)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "tcp")
    for p in spec["udp"]:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((a, p))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "udp")
def watch_stdin():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=watch_stdin, daemon=True).start()
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == "tcp":
                c, _ = s.accept()
                c.close()
            else:
                data, peer = s.recvfrom(4096)
                s.sendto(data, peer)
        except OSError:
            pass
"#;

/// Runs the probes read from stdin (a JSON list) with bounded concurrency and prints one JSON list
/// of {id, status}: `open` (TCP handshake done, UDP echo or ping reply received), `timeout`,
/// `refused` (RST or ICMP port unreachable: a listener is missing), `eperm` (dropped by this
/// host's output chain) or `error: ...`.
pub const CLIENT_PY: &str = r#"
import json, select, socket, struct, sys, time
from concurrent.futures import ThreadPoolExecutor
T = float(sys.argv[1])
probes = json.load(sys.stdin)

def fam(a):
    return socket.AF_INET6 if ":" in a else socket.AF_INET

def same(a, b):
    return socket.inet_pton(fam(a), a) == socket.inet_pton(fam(b), b)

def tcp(p):
    s = socket.socket(fam(p["dst"]), socket.SOCK_STREAM)
    try:
        s.bind((p["src"], 0))
        s.settimeout(T)
        s.connect((p["dst"], p["port"]))
        return "open"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except PermissionError:
        return "eperm"
    finally:
        s.close()

def udp(p):
    s = socket.socket(fam(p["dst"]), socket.SOCK_DGRAM)
    token = ("palisade probe %d" % p["id"]).encode()
    try:
        s.bind((p["src"], 0))
        s.connect((p["dst"], p["port"]))
        deadline = time.monotonic() + T
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            s.send(token)
            r, _, _ = select.select([s], [], [], min(0.25, left))
            if r and s.recv(4096) == token:
                return "open"
    except ConnectionRefusedError:
        return "refused"
    except PermissionError:
        return "eperm"
    finally:
        s.close()

def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

def ping(p):
    v6 = ":" in p["dst"]
    ident = p["ident"]
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        request, reply = 128, 129
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        request, reply = 8, 0
    try:
        s.bind((p["src"], 0))
        deadline = time.monotonic() + T
        seq = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            seq += 1
            payload = b"palisade"
            header = struct.pack("!BBHHH", request, 0, 0, ident, seq)
            if not v6:  # the kernel computes ICMPv6 checksums itself
                header = struct.pack("!BBHHH", request, 0, checksum(header + payload), ident, seq)
            s.sendto(header + payload, (p["dst"], 0))
            until = time.monotonic() + min(0.25, left)
            while True:
                wait = until - time.monotonic()
                if wait <= 0:
                    break
                r, _, _ = select.select([s], [], [], wait)
                if not r:
                    break
                data, addr = s.recvfrom(4096)
                if not v6:
                    data = data[(data[0] & 15) * 4:]
                if (len(data) >= 8 and data[0] == reply and same(addr[0], p["dst"])
                        and struct.unpack("!H", data[4:6])[0] == ident):
                    return "open"
    except PermissionError:
        return "eperm"
    finally:
        s.close()

def run(p):
    try:
        return {"tcp": tcp, "udp": udp, "icmp": ping}[p["proto"]](p)
    except Exception as e:
        return "error: %r" % e

with ThreadPoolExecutor(max_workers=128) as pool:
    results = list(pool.map(run, probes))
print(json.dumps([{"id": p["id"], "status": r} for p, r in zip(probes, results)]))
"#;

/// The python3 binary itself (not a pyenv shim), so that `ip netns exec` starts it quickly.
pub fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("run python3");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !path.is_empty() {
        path
    } else {
        "python3".into()
    }
}

/// Runs each namespace's probes (JSON objects with `id`, `src`, `dst`, `proto` (`tcp`, `udp`,
/// `icmp`), `port`, `ident`) in one prober process per namespace, all at once; returns each
/// probe's status by id: `open`, `timeout`, `refused`, `eperm` or `error: ...`.
pub fn run_probes(
    netns: &Netns,
    python: &str,
    by_ns: &BTreeMap<String, Vec<serde_json::Value>>,
    timeout: f64,
) -> BTreeMap<usize, String> {
    let timeout = timeout.to_string();
    std::thread::scope(|scope| {
        let runs: Vec<_> = by_ns
            .iter()
            .map(|(ns, list)| {
                let input = serde_json::to_vec(list).expect("probe JSON");
                let timeout = &timeout;
                scope.spawn(move || {
                    let out = netns.exec_ok(ns, &[python, "-c", CLIENT_PY, timeout], Some(&input));
                    let results: Vec<serde_json::Value> = serde_json::from_str(&out)
                        .unwrap_or_else(|e| panic!("probe output of {ns}: {e}\n{out}"));
                    results
                })
            })
            .collect();
        let mut statuses = BTreeMap::new();
        for run in runs {
            for r in run.join().expect("probe thread") {
                statuses.insert(
                    r["id"].as_u64().expect("id") as usize,
                    r["status"].as_str().expect("status").to_owned(),
                );
            }
        }
        statuses
    })
}
