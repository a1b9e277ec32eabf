//! `palisade policy sync` and `palisade policy apply` end to end: the real binary, in network
//! namespaces this file makes (`pal-<pid>-<n>-srv` and `-cli`, through palisade_test_support::netns) and deletes on drop, even when a test fails.
//! Nothing touches the root namespace: every command, the sync daemon and its admin server
//! (127.0.0.1:15100 of the namespace's own loopback) run through `ip netns exec`.
//!
//! Each lab is two namespaces joined by a veth pair: `srv` (10.77.2.20, host `h2`, segment `db`)
//! runs the policy; `cli` (10.77.1.10, segment `web`) connects to it with python3 probes. A
//! neighbouring table `inet other` in `srv` must come out of every test exactly as it went in.
//!
//! Needs root, `ip` and `nft` (prints `SKIP: <reason>` otherwise), and python3 and conntrack.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{have, metric_value, ok, on_path, palisade, require_root, Netns, BIN};
use serde_json::Value;

const SRV_ADDR: &str = "10.77.2.20";
const CLI_ADDR: &str = "10.77.1.10";
/// The policy's name for the `srv` namespace.
const HOST: &str = "h2";
/// Each namespace has its own loopback and ports: this one is always free in a fresh namespace.
const ADMIN_PORT: u16 = 15100;
/// What "within one interval" allows on top of the interval: the file poll (1 s), reading,
/// compiling and writing the table, and our own polling, on a machine other tests load too.
const SLACK: Duration = Duration::from_secs(3);
/// How long a TCP probe waits for a handshake before calling the port filtered.
const PROBE_TIMEOUT: &str = "1.5";
/// Bounds every one-shot command (nft, palisade apply, a probe).
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// python3 helpers, run inside the namespaces
// ---------------------------------------------------------------------------------------------

/// Echo server: listens on 0.0.0.0 on each port given, echoes every line; prints `ready`.
const SERVER_PY: &str = r#"
import socket, sys, threading
def serve(c):
    try:
        f = c.makefile("rb")
        for line in f:
            c.sendall(line)
    except OSError:
        pass
    finally:
        c.close()
def accept(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
for p in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(p)))
    s.listen(64)
    threading.Thread(target=accept, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// One connection: `open` (handshake and one echoed line), `timeout`, `refused` or `error ...`.
const CONNECT_PY: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    s.sendall(b"ping\n")
    line = s.makefile("rb").readline()
    print("open" if line == b"ping\n" else "bad echo %r" % line)
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error %s" % e)
"#;

/// One long-lived connection exchanging a line every 100 ms: prints `connected`, `ok N` per
/// echoed line, and `fail: ...` (then exits) when a send or a 1 s read fails. Bounded: 1200 rounds.
const KEEP_PY: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.settimeout(1.0)
f = s.makefile("rb")
print("connected", flush=True)
for n in range(1200):
    try:
        s.sendall(b"%d\n" % n)
        line = f.readline()
        if line != b"%d\n" % n:
            print("fail: echo %r" % line, flush=True)
            break
    except OSError as e:
        print("fail: %s" % (str(e) or type(e).__name__), flush=True)
        break
    print("ok %d" % n, flush=True)
    time.sleep(0.1)
"#;

/// GET http://127.0.0.1:PORT/PATH (no proxy): prints the status on the first line, then the body;
/// status 0 when nothing answers.
const GET_PY: &str = r#"
import http.client, sys
try:
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
    c.request("GET", sys.argv[2])
    r = c.getresponse()
    sys.stdout.write("%d\n%s" % (r.status, r.read().decode()))
except OSError as e:
    sys.stdout.write("0\n%s" % e)
"#;

/// Serves DIR/policy.yaml on 127.0.0.1:PORT with an ETag (a hash of the content), answering 304
/// to a matching If-None-Match; prints `GET <status>` per request.
const HTTP_PY: &str = r#"
import hashlib, http.server, os, sys
root = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            body = open(os.path.join(root, "policy.yaml"), "rb").read()
        except OSError:
            self.send_response(404)
            self.end_headers()
            print("GET 404", flush=True)
            return
        tag = '"%s"' % hashlib.sha256(body).hexdigest()[:16]
        if self.headers.get("If-None-Match") == tag:
            self.send_response(304)
            self.send_header("ETag", tag)
            self.end_headers()
            print("GET 304", flush=True)
            return
        self.send_response(200)
        self.send_header("ETag", tag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print("GET 200", flush=True)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
if len(sys.argv) > 3:
    # https: argv[3] certificate, argv[4] key, argv[5] (optional) the CA client certificates
    # must chain to.
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    if len(sys.argv) > 5:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(sys.argv[5])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    # A refused handshake is the client's failure, not the server's.
    server.handle_error = lambda request, address: None
print("ready", flush=True)
server.serve_forever()
"#;

/// A table that is not ours, with a hooked chain, rules, a set with elements and a regular chain.
const OTHER_TABLE: &str = "table inet other {
\tset blocked {
\t\ttype ipv4_addr
\t\telements = { 192.0.2.1, 192.0.2.2, 198.51.100.7 }
\t}
\tchain input {
\t\ttype filter hook input priority 10; policy accept;
\t\tip saddr @blocked counter drop
\t\ttcp dport 9 counter accept comment \"not palisade's\"
\t}
\tchain helper {
\t\tcounter
\t}
}
";

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

/// Two hosts' segments; `web` may reach `db` on `ports` only.
fn small_policy(ports: &str) -> String {
    format!(
        "version: 1
trust_domain: example.org
segments:
  web:
    addresses: [10.77.1.0/24]
  db:
    addresses: [10.77.2.0/24]
rules:
  - name: web-to-db
    from: web
    to: db
    protocol: tcp
    ports: [{ports}]
hosts:
  h1: {{ segments: [web] }}
  h2: {{ segments: [db] }}
"
    )
}

/// `web` made of `n` separate /32s (no two adjacent, so each is its own set element), allowed to
/// `db` on `port`: `n` elements in `allow_port_v4`, all different between two ports.
fn big_policy(port: u16, n: usize) -> String {
    let addresses: Vec<String> = (0..n)
        .map(|i| format!("10.{}.{}.1", 100 + i / 250, i % 250))
        .collect();
    format!(
        "version: 1
trust_domain: example.org
segments:
  web:
    addresses: [{}]
  db:
    addresses: [10.77.2.0/24]
rules:
  - name: web-to-db
    from: web
    to: db
    protocol: tcp
    ports: [{port}]
hosts:
  h2: {{ segments: [db] }}
",
        addresses.join(", ")
    )
}

/// The generation a policy compiles to for `HOST` (compiling reads no table: no namespace needed).
fn generation_of(file: &Path) -> String {
    let out = Command::new(BIN)
        .args(["policy", "compile"])
        .arg(file)
        .args(["--host", HOST])
        .output()
        .expect("run palisade policy compile");
    assert!(out.status.success(), "compile {}", file.display());
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("palisade generation ")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a generation comment")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Processes and waiting
// ---------------------------------------------------------------------------------------------

/// Whether a tool the lab needs is missing (the test then skips, or fails under scripts/test).
fn skip() -> bool {
    !(have("ip") && have("nft"))
}

/// The real python3 interpreter (not a pyenv shim, which costs a shell per probe).
fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "python3".to_owned())
    })
}

/// Runs `ip netns exec <ns> <args...>` to completion, killing it (and failing) after `limit`.
fn run_in(ns: &str, args: &[&str], limit: Duration) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    let (output, timed_out) = common::run_bounded(&mut cmd, b"", limit);
    assert!(
        !timed_out,
        "`{}` in {ns} did not finish within {limit:?}",
        args.join(" ")
    );
    output
}

/// [`run_in`], failing unless it succeeds; returns stdout.
fn run_ok(ns: &str, args: &[&str]) -> String {
    let out = run_in(ns, args, COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "`{}` in {ns}: {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `probe` every `step` until it returns Some, for at most `limit` (and a bounded number
/// of tries); fails naming `what` otherwise.
fn wait_until<T>(
    what: &str,
    limit: Duration,
    step: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    let tries = (limit.as_millis() / step.as_millis().max(1)) as usize + 2;
    for _ in 0..tries {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() >= limit {
            break;
        }
        thread::sleep(step);
    }
    panic!("timed out after {:?} waiting for {what}", start.elapsed());
}

/// A background process in a namespace, its stdout and stderr collected line by line; killed
/// (SIGKILL) and reaped when dropped.
struct Proc {
    child: Child,
    what: String,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(ns: &str, args: &[&str]) -> Proc {
        Proc::spawn_with(ns, args, false)
    }

    /// `own_group`: the process leads a new process group, which its children (nft) join.
    fn spawn_with(ns: &str, args: &[&str], own_group: bool) -> Proc {
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs the command: the child's pid is the command's.
        cmd.args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if own_group {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().expect("spawn in namespace");
        let collect = |r: Box<dyn Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let out = collect(Box::new(child.stdout.take().expect("stdout")));
        let err = collect(Box::new(child.stderr.take().expect("stderr")));
        Proc {
            child,
            what: args.iter().take(4).copied().collect::<Vec<_>>().join(" "),
            out,
            err,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn out_lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    fn err_text(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    /// Waits (bounded) for a stdout line matching `pred`.
    fn wait_out(&mut self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let name = self.what.clone();
        wait_until(
            &format!("{what} from `{name}`"),
            limit,
            Duration::from_millis(20),
            || {
                if let Some(line) = self.out_lines().into_iter().find(|l| pred(l)) {
                    return Some(line);
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "`{name}` exited with {status} before {what}\nstdout: {:?}\nstderr: {}",
                        self.out_lines(),
                        self.err_text()
                    );
                }
                None
            },
        )
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let what = format!("`{}` to exit", self.what);
        wait_until(&what, limit, Duration::from_millis(10), || {
            self.child.try_wait().expect("wait")
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether any process (zombies aside) is still in process group `pgid`, from /proc.
fn group_members(pgid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pgid = pgid.to_string();
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let _ppid = fields.next()?;
            let pgrp = fields.next()?;
            (state != "Z" && pgrp == pgid).then_some(comm)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// nft JSON
// ---------------------------------------------------------------------------------------------

/// `nft -j list table inet <name>` in `ns`, or None when there is no such table.
fn list_table(ns: &str, name: &str) -> Option<Value> {
    let out = run_in(
        ns,
        &["nft", "-j", "list", "table", "inet", name],
        COMMAND_LIMIT,
    );
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("No such file or directory"),
            "nft list table inet {name}: {stderr}"
        );
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("nft JSON"))
}

/// The table without metainfo and counter values, and without handles unless `keep_handles`
/// (a table rewritten with the same content gets new handles).
fn normalized(mut v: Value, keep_handles: bool) -> Value {
    fn walk(v: &mut Value, keep_handles: bool) {
        match v {
            Value::Object(map) => {
                if !keep_handles {
                    map.remove("handle");
                }
                for (key, value) in map.iter_mut() {
                    if key == "counter" && value.is_object() {
                        *value = Value::Null;
                    } else {
                        walk(value, keep_handles);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, keep_handles)),
            _ => {}
        }
    }
    if let Some(items) = v.get_mut("nftables").and_then(Value::as_array_mut) {
        items.retain(|o| o.get("metainfo").is_none());
    }
    walk(&mut v, keep_handles);
    v
}

/// A set element of nft's JSON in nft's text notation.
fn element_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(parts) = o.get("concat").and_then(Value::as_array) {
                parts
                    .iter()
                    .map(element_text)
                    .collect::<Vec<_>>()
                    .join(" . ")
            } else if let Some(p) = o.get("prefix") {
                format!("{}/{}", element_text(&p["addr"]), element_text(&p["len"]))
            } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                r.iter().map(element_text).collect::<Vec<_>>().join("-")
            } else if let Some(e) = o.get("elem") {
                element_text(e.get("val").unwrap_or(e))
            } else {
                panic!("unexpected element {v}")
            }
        }
        other => panic!("unexpected element {other}"),
    }
}

/// The comments of every rule of a table.
fn rule_comments(table: &Value) -> Vec<String> {
    table["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule")?.get("comment")?.as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------------------------

/// Two namespaces on a veth pair, an echo server on srv:5432 and srv:5433, the neighbouring
/// table, and a temporary directory. Dropping it stops the server and deletes the namespaces.
struct Lab {
    srv: String,
    cli: String,
    dir: tempfile::TempDir,
    other: Value,
    server: Option<Proc>,
    /// Dropped after the server: deletes the namespaces (palisade_test_support::netns).
    netns: Netns,
}

impl Lab {
    fn new() -> Lab {
        let mut lab = Lab {
            srv: String::new(),
            cli: String::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            other: Value::Null,
            server: None,
            netns: Netns::new(),
        };
        lab.srv = lab.netns.add("srv");
        lab.cli = lab.netns.add("cli");
        let (srv, cli) = (lab.srv.clone(), lab.cli.clone());
        // Made in srv with its peer placed straight into cli: the root namespace never sees it.
        run_ok(
            &srv,
            &[
                "ip", "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", &cli,
            ],
        );
        // One /16 on the link: both segments' addresses reach each other without routes.
        run_ok(
            &srv,
            &["ip", "addr", "add", &format!("{SRV_ADDR}/16"), "dev", "vs"],
        );
        run_ok(&srv, &["ip", "link", "set", "vs", "up"]);
        run_ok(
            &cli,
            &["ip", "addr", "add", &format!("{CLI_ADDR}/16"), "dev", "vc"],
        );
        run_ok(&cli, &["ip", "link", "set", "vc", "up"]);
        let other = lab.file("other.nft", OTHER_TABLE);
        run_ok(&srv, &["nft", "-f", other.to_str().unwrap()]);
        lab.other = lab.other_table();
        let mut server = Proc::spawn(&srv, &[python(), "-c", SERVER_PY, "5432", "5433"]);
        server.wait_out("ready", Duration::from_secs(10), |l| l == "ready");
        lab.server = Some(server);
        lab
    }

    /// Writes `dir/<name>` atomically (a reader sees the old or the new text, never half).
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        path
    }

    fn other_table(&self) -> Value {
        normalized(
            list_table(&self.srv, "other").expect("table inet other"),
            true,
        )
    }

    /// The neighbouring table is exactly as it was made: same handles, rules and elements.
    fn assert_other_unchanged(&self) {
        assert_eq!(self.other_table(), self.other, "table inet other changed");
    }

    /// `palisade policy apply FILE --host h2 --dry-run` in srv.
    fn dry_run(&self, file: &Path) -> String {
        run_ok(
            &self.srv,
            &[
                BIN,
                "policy",
                "apply",
                file.to_str().unwrap(),
                "--host",
                HOST,
                "--dry-run",
            ],
        )
    }

    /// Whether srv's live table is exactly what `file` compiles to.
    fn is_live(&self, file: &Path) -> bool {
        self.dry_run(file).starts_with("no change")
    }

    /// One-shot `palisade policy apply FILE --host HOST` in srv.
    fn apply(&self, file: &Path, host: &str) -> Output {
        run_in(
            &self.srv,
            &[
                BIN,
                "policy",
                "apply",
                file.to_str().unwrap(),
                "--host",
                host,
            ],
            COMMAND_LIMIT,
        )
    }

    /// A new TCP connection from cli to srv:`port`: `open`, `timeout`, `refused`...
    fn probe(&self, port: u16) -> String {
        run_ok(
            &self.cli,
            &[
                python(),
                "-c",
                CONNECT_PY,
                SRV_ADDR,
                &port.to_string(),
                PROBE_TIMEOUT,
            ],
        )
        .trim()
        .to_owned()
    }

    /// 5432 and 5433 behave as `allowed` says (the server listens on both).
    fn assert_ports(&self, allowed: u16, denied: u16) {
        assert_eq!(
            self.probe(allowed),
            "open",
            "port {allowed} should be allowed"
        );
        assert_eq!(
            self.probe(denied),
            "timeout",
            "port {denied} should be denied"
        );
    }

    /// Waits until srv's live table is `file`'s, for at most `limit`; returns how long it took.
    fn wait_live(&self, file: &Path, limit: Duration) -> Duration {
        let start = Instant::now();
        wait_until(
            &format!("{} to be live", file.display()),
            limit,
            Duration::from_millis(100),
            || self.is_live(file).then_some(()),
        );
        start.elapsed()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The server first, then the namespaces it ran in (the `netns` field).
        drop(self.server.take());
    }
}

/// A running `palisade policy sync` in srv, its admin server on 127.0.0.1:ADMIN_PORT there.
struct Daemon {
    proc: Proc,
    ns: String,
}

impl Daemon {
    /// Starts the sync and waits (bounded) until its admin server answers.
    fn start(lab: &Lab, source: &str, interval: &str, extra: &[&str]) -> Daemon {
        Daemon::start_under(&[], lab, source, interval, extra)
    }

    /// As [`Daemon::start`], run through `wrapper` (setpriv, to drop privileges).
    fn start_under(
        wrapper: &[&str],
        lab: &Lab,
        source: &str,
        interval: &str,
        extra: &[&str],
    ) -> Daemon {
        let admin = format!("127.0.0.1:{ADMIN_PORT}");
        let mut args = wrapper.to_vec();
        args.extend([
            BIN,
            "policy",
            "sync",
            source,
            "--host",
            HOST,
            "--interval",
            interval,
            "--admin",
            &admin,
        ]);
        args.extend_from_slice(extra);
        let mut daemon = Daemon {
            proc: Proc::spawn(&lab.srv, &args),
            ns: lab.srv.clone(),
        };
        wait_until(
            "the admin server",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                if let Ok(Some(status)) = daemon.proc.child.try_wait() {
                    panic!("sync exited with {status}:\n{}", daemon.proc.err_text());
                }
                (daemon.get("/live").0 != 0).then_some(())
            },
        );
        daemon
    }

    /// GET on the admin server: (status, body); status 0 when nothing answers.
    fn get(&self, path: &str) -> (u16, String) {
        let out = run_ok(
            &self.ns,
            &[python(), "-c", GET_PY, &ADMIN_PORT.to_string(), path],
        );
        let (status, body) = out.split_once('\n').unwrap_or((&out, ""));
        (status.trim().parse().unwrap_or(0), body.to_owned())
    }

    fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    fn wait_ready(&self, limit: Duration) {
        wait_until(
            "the sync to be ready",
            limit,
            Duration::from_millis(100),
            || (self.get("/ready").0 == 200).then_some(()),
        );
    }

    /// Waits (bounded) until `metric` reaches `at_least`; returns its value.
    fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        at_least: f64,
        limit: Duration,
    ) -> f64 {
        wait_until(
            &format!("{name}{labels:?} >= {at_least}"),
            limit,
            Duration::from_millis(100),
            || {
                let v = self.metric(name, labels);
                (v >= at_least).then_some(v)
            },
        )
    }
}

const CYCLES: &str = "palisade_sync_cycles_total";
const WRITES: &str = "palisade_sync_nft_writes_total";
const REPAIRS: &str = "palisade_sync_drift_repairs_total";
const FAILURES: &str = "palisade_sync_failures_total";
const GENERATION: &str = "palisade_sync_generation";
const REVOKED: &str = "palisade_sync_revoked_flows_total";
const LAST_SUCCESS: &str = "palisade_sync_last_success_timestamp_seconds";

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Acceptance 1: a policy change under a running sync (file source, 2 s interval) is enforced
/// within one interval, both ways, checked with real connections.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn a_policy_change_is_enforced_within_one_interval() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    let interval = Duration::from_secs(2);
    let lab = Lab::new();
    let p1 = lab.file("p1.yaml", &small_policy("5432"));
    let p2 = lab.file("p2.yaml", &small_policy("5433"));
    let source = lab.file("policy.yaml", &small_policy("5432"));
    let daemon = Daemon::start(&lab, source.to_str().unwrap(), "2s", &[]);
    daemon.wait_ready(interval + SLACK);
    assert!(lab.is_live(&p1));
    lab.assert_ports(5432, 5433);
    assert_eq!(
        daemon.metric(GENERATION, &[("generation", &generation_of(&p1))]),
        1.0
    );
    assert!(daemon.metric(LAST_SUCCESS, &[]) > 1.6e9);

    // Deny what was allowed, allow what was denied.
    lab.file("policy.yaml", &small_policy("5433"));
    let took = lab.wait_live(&p2, interval + SLACK);
    lab.assert_ports(5433, 5432);
    // And back.
    lab.file("policy.yaml", &small_policy("5432"));
    let took_back = lab.wait_live(&p1, interval + SLACK);
    lab.assert_ports(5432, 5433);
    println!(
        "policy change live after {took:?}, and back after {took_back:?} (interval {interval:?})"
    );

    let metrics = daemon.metrics();
    assert_eq!(
        metric_value(&metrics, GENERATION, &[("generation", &generation_of(&p1))]),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, GENERATION, &[("generation", &generation_of(&p2))]),
        0.0,
        "only the generation in force is reported:\n{metrics}"
    );
    assert_eq!(metric_value(&metrics, WRITES, &[]), 3.0, "{metrics}");
    assert_eq!(metric_value(&metrics, REPAIRS, &[]), 0.0, "{metrics}");
    assert_eq!(metric_value(&metrics, FAILURES, &[]), 0.0, "{metrics}");
    lab.assert_other_unchanged();
}

/// Acceptance 2 and 3: every kind of drift is repaired within one interval and counted; the live
/// table then equals the compiled one; the neighbouring table is never touched.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn drift_is_repaired_within_one_interval_and_counted() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    let interval = Duration::from_secs(2);
    let lab = Lab::new();
    let source = lab.file("policy.yaml", &small_policy("5432"));
    let daemon = Daemon::start(&lab, source.to_str().unwrap(), "2s", &[]);
    daemon.wait_ready(interval + SLACK);
    assert!(lab.is_live(&source));

    // An element that lets traffic through: deleting it denies 5432 until the sync puts it back.
    let set = list_table(&lab.srv, "palisade").expect("our table");
    let element = set["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("set"))
        .find(|s| s["name"] == "allow_port_v4")
        .and_then(|s| s["elem"].as_array()?.first().map(element_text))
        .expect("an element in allow_port_v4");
    assert_eq!(element, "10.77.1.0/24 . 10.77.2.0/24 . tcp . 5432");
    let delete_element = format!("delete element inet palisade allow_port_v4 {{ {element} }}");

    // Each drift as one nft command, made when it is its turn (handles change on every rewrite).
    type Drift = Box<dyn Fn(&Lab) -> String>;
    let fixed = |command: String| -> Drift { Box::new(move |_: &Lab| command.clone()) };
    let drifts: [(&str, Drift); 6] = [
        ("flush table", fixed("flush table inet palisade".into())),
        ("delete element", fixed(delete_element)),
        (
            "add rule",
            fixed("add rule inet palisade decide accept".into()),
        ),
        // Same number of rules, another meaning: the default drop for traffic to the host's
        // segments replaced by an accept.
        (
            "replace rule",
            Box::new(|lab: &Lab| {
                let table = list_table(&lab.srv, "palisade").expect("our table");
                let handle = table["nftables"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|o| o.get("rule"))
                    .find(|r| {
                        let expr = r["expr"].to_string();
                        r["chain"] == "decide"
                            && expr.contains("daddr")
                            && expr.contains("@local_v4")
                    })
                    .and_then(|r| r["handle"].as_u64())
                    .expect("the default drop rule");
                format!("replace rule inet palisade decide handle {handle} accept")
            }),
        ),
        // A base chain's policy turned to drop.
        (
            "chain policy",
            fixed("add chain inet palisade forward { policy drop; }".into()),
        ),
        ("delete table", fixed("delete table inet palisade".into())),
    ];
    for (what, command) in &drifts {
        let repairs = daemon.metric(REPAIRS, &[]);
        let writes = daemon.metric(WRITES, &[]);
        run_ok(&lab.srv, &["nft", &command(&lab)]);
        let start = Instant::now();
        daemon.wait_metric(REPAIRS, &[], repairs + 1.0, interval + SLACK);
        let took = start.elapsed();
        assert!(lab.is_live(&source), "after repairing `{what}`");
        let metrics = daemon.metrics();
        assert_eq!(
            metric_value(&metrics, REPAIRS, &[]),
            repairs + 1.0,
            "`{what}` is one repair"
        );
        assert_eq!(
            metric_value(&metrics, WRITES, &[]),
            writes + 1.0,
            "`{what}` is one write"
        );
        println!("drift `{what}` repaired after {took:?}");
        lab.assert_other_unchanged();
    }
    lab.assert_ports(5432, 5433);
    assert_eq!(daemon.metric(FAILURES, &[]), 0.0);
    lab.assert_other_unchanged();
}

/// Acceptance 8: with a steady policy a cycle writes nothing: nft_writes_total stays at the one
/// initial write over several intervals while cycles_total grows.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn a_cycle_with_no_change_writes_nothing() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    let lab = Lab::new();
    let source = lab.file("policy.yaml", &small_policy("5432"));
    let daemon = Daemon::start(&lab, source.to_str().unwrap(), "1s", &[]);
    daemon.wait_ready(Duration::from_secs(1) + SLACK);
    let cycles = daemon.metric(CYCLES, &[]);
    let table = normalized(list_table(&lab.srv, "palisade").unwrap(), true);
    daemon.wait_metric(CYCLES, &[], cycles + 4.0, Duration::from_secs(4) + SLACK);
    let metrics = daemon.metrics();
    assert_eq!(metric_value(&metrics, WRITES, &[]), 1.0, "{metrics}");
    assert_eq!(metric_value(&metrics, REPAIRS, &[]), 0.0, "{metrics}");
    assert_eq!(metric_value(&metrics, FAILURES, &[]), 0.0, "{metrics}");
    // Not rewritten: the very same table, handles included.
    assert_eq!(
        normalized(list_table(&lab.srv, "palisade").unwrap(), true),
        table
    );
    lab.assert_other_unchanged();
}

/// Acceptance 4: an invalid policy pushed to the source keeps the old rules enforcing, is logged
/// with file:line:col and counted once; one-shot apply of it fails and changes nothing.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn an_invalid_policy_keeps_the_last_good_one() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    let interval = Duration::from_secs(2);
    let lab = Lab::new();
    let good = lab.file("good.yaml", &small_policy("5432"));
    let source = lab.file("policy.yaml", &small_policy("5432"));
    let daemon = Daemon::start(&lab, source.to_str().unwrap(), "2s", &[]);
    daemon.wait_ready(interval + SLACK);
    let table = normalized(list_table(&lab.srv, "palisade").unwrap(), true);

    // A port out of range, and 5433 which would open the other port if it loaded.
    let bad_text = small_policy("5433, 70000");
    let (line, column) = bad_text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("70000").map(|c| (i + 1, c + 1)))
        .unwrap();
    let bad = lab.file("bad.yaml", &bad_text);
    lab.file("policy.yaml", &bad_text);
    daemon.wait_metric(FAILURES, &[("stage", "load")], 1.0, interval + SLACK);
    let at = format!("{}:{line}:{column}", source.display());
    wait_until(
        "the load error in the log",
        Duration::from_secs(2),
        Duration::from_millis(50),
        || daemon.proc.err_text().contains(&at).then_some(()),
    );
    lab.assert_ports(5432, 5433);
    assert!(lab.is_live(&good));
    assert_eq!(
        normalized(list_table(&lab.srv, "palisade").unwrap(), true),
        table,
        "the table was not rewritten"
    );

    // Two more cycles: the same bad bytes are not reported again, nothing is written.
    let cycles = daemon.metric(CYCLES, &[]);
    daemon.wait_metric(CYCLES, &[], cycles + 2.0, 2 * interval + SLACK);
    let metrics = daemon.metrics();
    assert_eq!(
        metric_value(&metrics, FAILURES, &[("stage", "load")]),
        1.0,
        "{metrics}"
    );
    assert_eq!(metric_value(&metrics, WRITES, &[]), 1.0, "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            GENERATION,
            &[("generation", &generation_of(&good))]
        ),
        1.0
    );
    assert_eq!(
        daemon.get("/ready").0,
        200,
        "the last good policy is in force"
    );

    // One-shot apply of the bad file: exit non-zero, same message, table unchanged.
    let out = lab.apply(&bad, HOST);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "apply of a bad policy succeeded");
    assert!(
        stderr.contains(&format!("{}:{line}:{column}", bad.display())),
        "{stderr}"
    );
    assert_eq!(
        normalized(list_table(&lab.srv, "palisade").unwrap(), true),
        table
    );
    lab.assert_ports(5432, 5433);
    lab.assert_other_unchanged();
}

/// Acceptance 5: kill -9 during apply, 50 times, alternating two large policies A and B; the
/// killed process is a one-shot `apply` (or, one time in five, the sync), alone or with its nft.
/// After each kill the live table is exactly A or exactly B.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn kill_during_apply_leaves_a_whole_generation() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    const ELEMENTS: usize = 2500;
    const KILLS: usize = 50;
    let lab = Lab::new();
    let files = [
        lab.file("a.yaml", &big_policy(5432, ELEMENTS)),
        lab.file("b.yaml", &big_policy(5433, ELEMENTS)),
    ];
    // Reference tables, and how long a whole apply takes here.
    let mut snapshots = Vec::new();
    let mut full = Duration::ZERO;
    for file in &files {
        let start = Instant::now();
        let out = lab.apply(file, HOST);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        full = full.max(start.elapsed());
        snapshots.push(normalized(list_table(&lab.srv, "palisade").unwrap(), false));
    }
    assert_ne!(snapshots[0], snapshots[1]);
    println!("a whole apply of {ELEMENTS} elements takes {full:?}");

    let started = Instant::now();
    let admin = format!("127.0.0.1:{ADMIN_PORT}");
    let mut landed = [0usize; 2];
    let mut during_nft = 0;
    for i in 0..KILLS {
        let target = &files[i % 2];
        let target = target.to_str().unwrap();
        let use_sync = i % 5 == 4;
        let whole_group = (i / 2) % 2 == 1;
        let args: Vec<&str> = if use_sync {
            vec![
                BIN,
                "policy",
                "sync",
                target,
                "--host",
                HOST,
                "--interval",
                "1h",
                "--admin",
                &admin,
            ]
        } else {
            vec![BIN, "policy", "apply", target, "--host", HOST]
        };
        // Spread over 0 to 1.2 times a whole apply, so kills land before, during and after nft.
        let delay = full.mul_f64((i * 7 % 13) as f64 / 10.0);
        let mut proc = Proc::spawn_with(&lab.srv, &args, true);
        thread::sleep(delay);
        let pgid = proc.pid();
        if group_members(pgid).iter().any(|c| c == "nft") {
            during_nft += 1;
        }
        let target_arg = if whole_group {
            format!("-{pgid}")
        } else {
            pgid.to_string()
        };
        let _ = Command::new("kill")
            .args(["-KILL", "--", &target_arg])
            .status();
        proc.wait_exit(Duration::from_secs(10));
        // An nft whose parent was killed alone finishes (or fails) on its own: wait for it.
        wait_until(
            "the killed process group to be gone",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || group_members(pgid).is_empty().then_some(()),
        );
        let live = list_table(&lab.srv, "palisade")
            .unwrap_or_else(|| panic!("kill {i}: the table is missing"));
        let live = normalized(live, false);
        let Some(which) = snapshots.iter().position(|s| *s == live) else {
            panic!(
                "kill {i}: the live table is neither A nor B\nA: {}\nB: {}",
                lab.dry_run(&files[0]),
                lab.dry_run(&files[1])
            );
        };
        assert!(
            lab.is_live(&files[which]),
            "kill {i}: dry-run disagrees: {}",
            lab.dry_run(&files[which])
        );
        landed[which] += 1;
    }
    println!(
        "{KILLS} kills in {:?}: {during_nft} while nft was running; the table was A {} times, B {} times",
        started.elapsed(),
        landed[0],
        landed[1]
    );
    // Otherwise no kill landed inside a transaction, and the loop proved little.
    assert!(
        during_nft > 0,
        "no kill landed while nft was running (a whole apply: {full:?})"
    );
    lab.assert_other_unchanged();
}

/// Acceptance 6, with --revoke-established: an open connection the new policy denies is cut.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn revoke_established_cuts_a_denied_open_connection() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    revoke_scenario(true);
}

/// Acceptance 6, without --revoke-established: the open connection stays up, new ones are refused.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn without_revoke_an_open_connection_survives() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    revoke_scenario(false);
}

fn revoke_scenario(revoke: bool) {
    let interval = Duration::from_secs(2);
    let lab = Lab::new();
    let p2 = lab.file("p2.yaml", &small_policy("5433"));
    let source = lab.file("policy.yaml", &small_policy("5432"));
    let extra: &[&str] = if revoke {
        &["--revoke-established"]
    } else {
        &[]
    };
    let daemon = Daemon::start(&lab, source.to_str().unwrap(), "2s", extra);
    daemon.wait_ready(interval + SLACK);

    let mut client = Proc::spawn(&lab.cli, &[python(), "-c", KEEP_PY, SRV_ADDR, "5432"]);
    client.wait_out("three exchanges", Duration::from_secs(10), |l| l == "ok 3");

    lab.file("policy.yaml", &small_policy("5433"));
    lab.wait_live(&p2, interval + SLACK);
    let oks = |c: &Proc| {
        c.out_lines()
            .iter()
            .filter(|l| l.starts_with("ok "))
            .count()
    };
    if revoke {
        let failed = client.wait_out("the connection to fail", Duration::from_secs(6), |l| {
            l.starts_with("fail")
        });
        println!(
            "with --revoke-established the client saw `{failed}` after {} exchanges",
            oks(&client)
        );
        assert!(daemon.metric(REVOKED, &[]) >= 1.0, "{}", daemon.metrics());
        assert_eq!(lab.probe(5432), "timeout");
    } else {
        let before = oks(&client);
        // A new connection on the same port is refused meanwhile (takes PROBE_TIMEOUT).
        assert_eq!(lab.probe(5432), "timeout");
        wait_until(
            "more exchanges on the open connection",
            Duration::from_secs(5),
            Duration::from_millis(100),
            || (oks(&client) >= before + 10).then_some(()),
        );
        let lines = client.out_lines();
        assert!(
            !lines.iter().any(|l| l.starts_with("fail")),
            "the connection broke: {lines:?}"
        );
        assert_eq!(daemon.metric(REVOKED, &[]), 0.0);
    }
    assert_eq!(lab.probe(5433), "open");
    lab.assert_other_unchanged();
}

/// Review finding 11: with --revoke-established, a flow that was opened while the table had been
/// tampered with (a rule that accepts port 5432 put first) is cut when the sync repairs the drift,
/// not only when the policy changes. Before the fix it survived the repair as an established flow.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn revoke_established_cuts_a_flow_a_repaired_drift_had_let_through() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    let lab = Lab::new();
    let text = small_policy("5433");
    let source = lab.file("policy.yaml", &text);
    // A long interval: the repair happens when the test touches the source, not before.
    let daemon = Daemon::start(
        &lab,
        source.to_str().unwrap(),
        "60s",
        &["--revoke-established"],
    );
    daemon.wait_ready(Duration::from_secs(5));
    lab.assert_ports(5433, 5432);

    run_ok(
        &lab.srv,
        &[
            "nft", "insert", "rule", "inet", "palisade", "decide", "tcp", "dport", "5432", "accept",
        ],
    );
    let mut client = Proc::spawn(&lab.cli, &[python(), "-c", KEEP_PY, SRV_ADDR, "5432"]);
    client.wait_out("three exchanges", Duration::from_secs(10), |l| l == "ok 3");

    // The same policy, touched: the cycle finds the drift, repairs it and revokes.
    lab.file("policy.yaml", &format!("{text}# touched\n"));
    daemon.wait_metric(REPAIRS, &[], 1.0, Duration::from_secs(5));
    client.wait_out("the connection to fail", Duration::from_secs(6), |l| {
        l.starts_with("fail")
    });
    assert!(daemon.metric(REVOKED, &[]) >= 1.0, "{}", daemon.metrics());
    assert!(lab.is_live(&source));
    assert_eq!(lab.probe(5432), "timeout");
    lab.assert_other_unchanged();
}

/// Review finding 9: an `inet palisade` table that we did not write (an empty one, or one that
/// accepts everything) does not count as our table in force: with no loadable policy the sync
/// replaces it with the fail-closed baseline. Before the fix it was left in place.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn a_table_we_did_not_write_is_replaced_by_the_baseline() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    let lab = Lab::new();
    let missing = lab.dir.path().join("missing.yaml");
    let foreign = lab.file(
        "foreign.nft",
        "table inet palisade {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n",
    );
    for (what, make) in [
        (
            "an empty table",
            vec!["nft", "add", "table", "inet", "palisade"],
        ),
        (
            "an accepting table",
            vec!["nft", "-f", foreign.to_str().unwrap()],
        ),
    ] {
        let _ = run_in(
            &lab.srv,
            &["nft", "delete", "table", "inet", "palisade"],
            COMMAND_LIMIT,
        );
        run_ok(&lab.srv, &make);
        let daemon = Daemon::start(&lab, missing.to_str().unwrap(), "1s", &[]);
        let baseline = wait_until(
            &format!("the baseline over {what}"),
            Duration::from_secs(5),
            Duration::from_millis(100),
            || {
                list_table(&lab.srv, "palisade")
                    .filter(|t| rule_comments(t).iter().any(|c| c == "palisade baseline"))
            },
        );
        assert!(!rule_comments(&baseline).is_empty(), "{what}: {baseline}");
        assert_eq!(daemon.metric(WRITES, &[]), 1.0, "{what}");
        drop(daemon);
    }
    lab.assert_other_unchanged();
}

/// Acceptance 7: no loadable policy and no table installs the fail-closed baseline; SIGTERM
/// leaves the table in place; a later sync with a bad policy leaves it in place too, and puts it
/// back when it disappears; one-shot apply for a host not in the policy fails.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn no_loadable_policy_installs_the_baseline_and_stopping_keeps_it() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    let interval = Duration::from_secs(1);
    let lab = Lab::new();
    assert!(list_table(&lab.srv, "palisade").is_none());
    let missing = lab.dir.path().join("missing.yaml");
    let mut daemon = Daemon::start(&lab, missing.to_str().unwrap(), "1s", &[]);
    // Waiting for the whole table, not for the table alone: nft lists a table in several netlink
    // dumps, and one that overlaps the transaction can show the table before its chains.
    let baseline = wait_until(
        "the baseline table",
        interval + SLACK,
        Duration::from_millis(100),
        || {
            list_table(&lab.srv, "palisade")
                .filter(|t| rule_comments(t).iter().any(|c| c == "palisade baseline"))
        },
    );
    assert!(
        rule_comments(&baseline)
            .iter()
            .any(|c| c == "palisade baseline"),
        "{baseline}"
    );
    let metrics = daemon.metrics();
    assert_eq!(metric_value(&metrics, WRITES, &[]), 1.0, "{metrics}");
    assert!(
        metric_value(&metrics, FAILURES, &[("stage", "fetch")]) >= 1.0,
        "{metrics}"
    );
    assert_eq!(daemon.get("/ready").0, 503, "no policy is in force");

    let before = normalized(baseline, true);
    daemon.proc.signal("TERM");
    let status = daemon.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "sync exited with {status}");
    assert_eq!(
        list_table(&lab.srv, "palisade").map(|t| normalized(t, true)),
        Some(before.clone()),
        "stopping must leave the table as it is"
    );

    // A policy that does not load, with the baseline in place: left alone...
    let bad = lab.file("bad.yaml", &small_policy("70000"));
    let daemon = Daemon::start(&lab, bad.to_str().unwrap(), "1s", &[]);
    daemon.wait_metric(FAILURES, &[("stage", "load")], 1.0, interval + SLACK);
    let cycles = daemon.metric(CYCLES, &[]);
    daemon.wait_metric(CYCLES, &[], cycles + 1.0, interval + SLACK);
    assert_eq!(daemon.metric(WRITES, &[]), 0.0);
    assert_eq!(
        list_table(&lab.srv, "palisade").map(|t| normalized(t, true)),
        Some(before.clone())
    );
    // ...and put back when the table is gone.
    run_ok(&lab.srv, &["nft", "delete", "table", "inet", "palisade"]);
    let whole = normalized(before.clone(), false);
    let again = wait_until(
        "the whole baseline table again",
        interval + SLACK,
        Duration::from_millis(100),
        || list_table(&lab.srv, "palisade").filter(|t| normalized(t.clone(), false) == whole),
    );
    assert_eq!(normalized(again, false), whole);
    drop(daemon);

    // One-shot apply for a host the policy does not name: non-zero, table unchanged.
    let good = lab.file("good.yaml", &small_policy("5432"));
    let current = normalized(list_table(&lab.srv, "palisade").unwrap(), true);
    let out = lab.apply(&good, "nope");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no host `nope`"), "{stderr}");
    assert_eq!(
        normalized(list_table(&lab.srv, "palisade").unwrap(), true),
        current
    );
    lab.assert_other_unchanged();
}

/// The http:// source: fetched with If-None-Match (the server answers 304 while nothing
/// changed), and a change on the server is picked up within one interval.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn an_http_source_is_fetched_with_etag_and_changes_are_picked_up() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    let interval = Duration::from_secs(1);
    let lab = Lab::new();
    let www = lab.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let p1 = lab.file("p1.yaml", &small_policy("5432"));
    let p2 = lab.file("p2.yaml", &small_policy("5433"));
    let publish = |text: &str| {
        let tmp = www.join(".policy.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, www.join("policy.yaml")).unwrap();
    };
    publish(&small_policy("5432"));
    let mut server = Proc::spawn(
        &lab.srv,
        &[python(), "-c", HTTP_PY, "8080", www.to_str().unwrap()],
    );
    server.wait_out("ready", Duration::from_secs(10), |l| l == "ready");

    let daemon = Daemon::start(
        &lab,
        "http://127.0.0.1:8080/policy.yaml",
        "1s",
        &["--insecure-source"],
    );
    daemon.wait_ready(interval + SLACK);
    assert!(lab.is_live(&p1));
    server.wait_out("a 304", 2 * interval + SLACK, |l| l == "GET 304");

    publish(&small_policy("5433"));
    let took = lab.wait_live(&p2, interval + SLACK);
    println!("http source: the change was live after {took:?}");
    lab.assert_ports(5433, 5432);
    let metrics = daemon.metrics();
    assert_eq!(metric_value(&metrics, WRITES, &[]), 2.0, "{metrics}");
    assert_eq!(metric_value(&metrics, FAILURES, &[]), 0.0, "{metrics}");
    lab.assert_other_unchanged();
}

/// openssl in `dir`: a CA (`<name>-ca.pem`, `<name>-ca.key`) and a server certificate for
/// 127.0.0.1 signed by it (`<name>-server.pem`, `<name>-server.key`).
fn web_pki(dir: &Path, name: &str) {
    let sh = format!(
        "set -e; cd {dir}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN={name}-ca -keyout {name}-ca.key -out {name}-ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=policy-server -keyout {name}-server.key -out {name}-server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1' > {name}-san.ext
openssl x509 -req -in {name}-server.csr -CA {name}-ca.pem -CAkey {name}-ca.key -CAcreateserial -days 1 -extfile {name}-san.ext -out {name}-server.pem 2>/dev/null",
        dir = dir.display()
    );
    let out = Command::new("sh").args(["-c", &sh]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Authenticated sources (issue 13): a plain http:// source is refused unless allowed; an
/// https:// one needs a pinned CA bundle, and a server whose certificate does not chain to it is
/// never believed (the fail-closed baseline stays); with the right bundle the policy is applied;
/// a server that asks for a client certificate gets the node's SVID, and without one refuses.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn http_sources_are_refused_unless_allowed_and_https_ones_are_pinned_and_can_ask_for_the_node() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    let lab = Lab::new();
    for (source, sentence) in [
        (
            "http://127.0.0.1:8443/policy.yaml",
            "http:// sources are refused",
        ),
        ("https://127.0.0.1:8443/policy.yaml", "needs --source-ca"),
    ] {
        let out = run_in(
            &lab.srv,
            &[BIN, "policy", "sync", source, "--host", HOST],
            COMMAND_LIMIT,
        );
        assert_eq!(out.status.code(), Some(1), "{source}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(sentence), "{err}");
    }

    let pki = lab.dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    web_pki(&pki, "right");
    web_pki(&pki, "wrong");
    let www = lab.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("policy.yaml"), small_policy("5432")).unwrap();
    let p1 = lab.file("p1.yaml", &small_policy("5432"));
    let path = |f: &str| pki.join(f).to_str().unwrap().to_owned();
    let url = "https://127.0.0.1:8443/policy.yaml";

    let mut server = Proc::spawn(
        &lab.srv,
        &[
            python(),
            "-c",
            HTTP_PY,
            "8443",
            www.to_str().unwrap(),
            &path("right-server.pem"),
            &path("right-server.key"),
        ],
    );
    server.wait_out("ready", Duration::from_secs(10), |l| l == "ready");

    // A bundle the server's certificate does not chain to: nothing fetched, the baseline holds.
    let wrong_ca = path("wrong-ca.pem");
    let daemon = Daemon::start(&lab, url, "1s", &["--source-ca", &wrong_ca]);
    daemon.wait_metric(
        FAILURES,
        &[("stage", "fetch")],
        2.0,
        Duration::from_secs(10),
    );
    assert_eq!(daemon.get("/ready").0, 503);
    assert!(!lab.is_live(&p1));
    assert!(
        daemon
            .proc
            .err_text()
            .contains("TLS: invalid peer certificate"),
        "{}",
        daemon.proc.err_text()
    );
    drop(daemon);

    // The right bundle: applied.
    let right_ca = path("right-ca.pem");
    let daemon = Daemon::start(&lab, url, "1s", &["--source-ca", &right_ca]);
    daemon.wait_ready(Duration::from_secs(10));
    assert!(lab.is_live(&p1));
    drop(daemon);
    drop(server);

    // A server that asks for the node's certificate (an SVID from Palisade's CA).
    ok(palisade(
        &[
            "ca",
            "init",
            "--ca-dir",
            "ca",
            "--trust-domain",
            "example.org",
        ],
        &pki,
    ));
    ok(palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "ca",
            "--spiffe-id",
            "spiffe://example.org/node/srv",
            "--svid-dir",
            "node",
        ],
        &pki,
    ));
    let p2 = lab.file("p2.yaml", &small_policy("5433"));
    std::fs::write(www.join("policy.yaml"), small_policy("5433")).unwrap();
    let mut server = Proc::spawn(
        &lab.srv,
        &[
            python(),
            "-c",
            HTTP_PY,
            "8443",
            www.to_str().unwrap(),
            &path("right-server.pem"),
            &path("right-server.key"),
            &path("ca/bundle.pem"),
        ],
    );
    server.wait_out("ready", Duration::from_secs(10), |l| l == "ready");
    let daemon = Daemon::start(&lab, url, "1s", &["--source-ca", &right_ca]);
    daemon.wait_metric(
        FAILURES,
        &[("stage", "fetch")],
        2.0,
        Duration::from_secs(10),
    );
    assert!(
        !lab.is_live(&p2),
        "a server that wants the node's certificate served it without one"
    );
    drop(daemon);
    let (cert, key) = (path("node/cert.pem"), path("node/key.pem"));
    let daemon = Daemon::start(
        &lab,
        url,
        "1s",
        &[
            "--source-ca",
            &right_ca,
            "--source-cert",
            &cert,
            "--source-key",
            &key,
        ],
    );
    let took = lab.wait_live(&p2, Duration::from_secs(10));
    println!("https with the node's certificate: live after {took:?}");
    assert_eq!(daemon.metric(FAILURES, &[("stage", "fetch")]), 0.0);
    lab.assert_other_unchanged();
}

/// The agent's user in the least-privilege test: not root, no capability but CAP_NET_ADMIN.
const AGENT_UID: &str = "1338";

/// `setpriv` arguments that run a command as AGENT_UID with CAP_NET_ADMIN as its only
/// capability, ambient so that nft (which the agent runs) has it too.
const AS_AGENT: &[&str] = &[
    "setpriv",
    "--reuid",
    AGENT_UID,
    "--regid",
    AGENT_UID,
    "--clear-groups",
    "--inh-caps=-all,+net_admin",
    "--ambient-caps=-all,+net_admin",
    "--bounding-set=-all,+net_admin",
];

/// Issue 13: the agent runs as a user of its own with CAP_NET_ADMIN only, under Landlock and the
/// system call filter, and still enforces policies; a policy file swapped for a symlink out of
/// its directory is refused (the last good policy stays); `--check-sandbox` shows what is
/// refused (reading, writing, binding, connecting, running a shell, a system call off the list) and that nft runs.
#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn the_agent_runs_as_a_user_with_net_admin_only_and_cannot_read_outside_its_source() {
    require_root("network namespaces and nftables");
    if skip() {
        return;
    }
    assert!(on_path("setpriv"), "setpriv (util-linux) is needed");
    let interval = Duration::from_secs(1);
    let lab = Lab::new();
    let p1 = lab.file("p1.yaml", &small_policy("5432"));
    let p2 = lab.file("p2.yaml", &small_policy("5433"));
    // The source in a directory of its own (as a ConfigMap mount), and a policy elsewhere that
    // the agent's user may read as far as file permissions go: only Landlock keeps it out.
    let policies = lab.dir.path().join("policies");
    let elsewhere = lab.dir.path().join("elsewhere");
    std::fs::create_dir(&policies).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(policies.join("policy.yaml"), small_policy("5432")).unwrap();
    std::fs::write(elsewhere.join("policy.yaml"), small_policy("5433")).unwrap();
    common::chown_recursive(lab.dir.path(), AGENT_UID);
    let source = policies.join("policy.yaml");
    let source = source.to_str().unwrap();

    let daemon = Daemon::start_under(AS_AGENT, &lab, source, "1s", &["--landlock", "required"]);
    let pid = daemon.proc.pid();
    assert_eq!(
        common::proc_status_field(pid, "Uid")
            .split_whitespace()
            .next(),
        Some(AGENT_UID)
    );
    // CAP_NET_ADMIN is bit 12; nothing else in any set.
    for field in ["CapPrm", "CapEff", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(
            common::proc_status_field(pid, field),
            "0000000000001000",
            "{field}"
        );
    }
    assert_eq!(common::proc_status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(common::proc_status_field(pid, "Seccomp"), "2");
    daemon.wait_ready(interval + SLACK);
    assert!(lab.is_live(&p1));
    lab.assert_ports(5432, 5433);
    assert!(
        daemon
            .proc
            .err_text()
            .contains("Landlock enforced for the policy agent"),
        "{}",
        daemon.proc.err_text()
    );

    // The source becomes a symlink to the policy elsewhere: refused, counted, p1 stays.
    let failures = daemon.metric(FAILURES, &[]);
    let link = policies.join("policy.yaml.new");
    std::os::unix::fs::symlink(elsewhere.join("policy.yaml"), &link).unwrap();
    std::fs::rename(&link, policies.join("policy.yaml")).unwrap();
    daemon.wait_metric(FAILURES, &[], failures + 1.0, 2 * interval + SLACK);
    assert!(
        daemon.proc.err_text().contains("Permission denied"),
        "{}",
        daemon.proc.err_text()
    );
    assert!(lab.is_live(&p1), "the last good policy stays");
    lab.assert_ports(5432, 5433);

    // A real change in its directory is still enforced, by nft run as that user.
    let tmp = policies.join(".policy.yaml.tmp");
    std::fs::write(&tmp, small_policy("5433")).unwrap();
    std::fs::rename(&tmp, policies.join("policy.yaml")).unwrap();
    lab.wait_live(&p2, interval + SLACK);
    lab.assert_ports(5433, 5432);
    // What nft reads back under the sandbox is what it was given: no cycle saw drift (nft
    // without /etc/protocols lists protocol numbers, and every cycle rewrote the table).
    assert_eq!(daemon.metric(REPAIRS, &[]), 0.0, "{}", daemon.metrics());
    drop(daemon);

    // --check-sandbox, as the same user with the same source.
    let mut args = AS_AGENT.to_vec();
    let admin = format!("127.0.0.1:{ADMIN_PORT}");
    args.extend([
        BIN,
        "policy",
        "sync",
        source,
        "--host",
        HOST,
        "--admin",
        &admin,
        "--landlock",
        "required",
        "--check-sandbox",
    ]);
    let out = run_in(&lab.srv, &args, COMMAND_LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(report["landlock"], "fully enforced", "{report}");
    assert_eq!(report["seccomp"], "enforce", "{report}");
    assert_eq!(
        report["allowed"]["write"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(
        report["allowed"]["connect"],
        serde_json::json!([]),
        "{report}"
    );
    let tried: Vec<(String, bool)> = report["tried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["try"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
                t["refused"] == true,
            )
        })
        .collect();
    let nft = tried
        .iter()
        .find(|(what, _)| what.starts_with("run ") && what.ends_with("/nft"))
        .unwrap_or_else(|| panic!("nft was not run: {report}"));
    assert!(!nft.1, "nft must run: {report}");
    // And the sockets Landlock's port rules do not cover (a file source: no name to resolve, so
    // no UDP either).
    for what in [
        "read",
        "write",
        "bind",
        "connect 127",
        "connect over",
        "connect with",
        "send UDP",
        "connect to",
        "run /bin/sh",
        "chown /",
    ] {
        assert!(
            tried
                .iter()
                .any(|(w, refused)| w.starts_with(what) && *refused),
            "{what} not refused: {report}"
        );
    }
}
