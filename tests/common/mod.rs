//! Shared by the end-to-end tests: a PKI made with the real `palisade` binary, a sidecar process
//! whose listener addresses are read from its JSON log (every listener binds port 0, so parallel
//! tests never collide), tiny apps to proxy to, and a metrics reader.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const TD: &str = "example.org";
pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

pub fn palisade(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run palisade")
}

pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether a test must fail, not skip, when it lacks root or a tool: `scripts/test` sets
/// `PALISADE_TEST_STRICT=1` when it runs as root (as CI does), after installing every tool.
pub fn strict() -> bool {
    std::env::var("PALISADE_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// A test that cannot run here: fails under [`strict`], otherwise says why it skips. Returns true
/// so that callers can write `if cannot_run { return }`.
pub fn skipping(reason: &str) -> bool {
    assert!(
        !strict(),
        "cannot run: {reason} (PALISADE_TEST_STRICT=1: nothing may skip)"
    );
    eprintln!("SKIP: {reason}");
    true
}

/// Whether a tool is on PATH; when it is not, the test skips, or fails under [`strict`].
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skipping(&format!(
            "{tool} is not installed (scripts/test installs it as root)"
        ));
    }
    found
}

/// A temporary directory with a CA (`ca/`) and workload certificates issued by the real binary.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        ok(palisade(
            &["ca", "init", "--dir", "ca", "--trust-domain", TD],
            dir.path(),
        ));
        Pki { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issues `spiffe://example.org/<path>` into `<name>/` (key.pem, cert.pem, bundle.pem).
    pub fn issue(&self, name: &str, id_path: &str, extra: &[&str]) -> PathBuf {
        let id = format!("spiffe://{TD}/{id_path}");
        let mut args = vec![
            "cert",
            "issue",
            "--ca-dir",
            "ca",
            "--spiffe-id",
            &id,
            "--out",
            name,
        ];
        args.extend_from_slice(extra);
        ok(palisade(&args, self.path()));
        self.path().join(name)
    }

    /// A second, unrelated CA of the same trust domain (`<name>-ca/`), and a leaf from it.
    pub fn issue_from_other_ca(&self, name: &str, id_path: &str) -> PathBuf {
        let ca = format!("{name}-ca");
        ok(palisade(
            &["ca", "init", "--dir", &ca, "--trust-domain", TD],
            self.path(),
        ));
        let id = format!("spiffe://{TD}/{id_path}");
        ok(palisade(
            &[
                "cert",
                "issue",
                "--ca-dir",
                &ca,
                "--spiffe-id",
                &id,
                "--out",
                name,
            ],
            self.path(),
        ));
        self.path().join(name)
    }

    /// The identity section of a sidecar config for the workload in `<name>/`.
    pub fn identity_yaml(&self, name: &str) -> String {
        let d = self.path().join(name);
        format!(
            "identity:\n  cert: {}\n  key: {}\n  bundle: {}\n  reload_interval: 200ms\n",
            d.join("cert.pem").display(),
            d.join("key.pem").display(),
            d.join("bundle.pem").display()
        )
    }
}

/// A running `palisade sidecar run`, killed when dropped.
pub struct SidecarProcess {
    pub child: Child,
    pub admin: SocketAddr,
    pub listeners: HashMap<String, SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl SidecarProcess {
    /// Writes `config` (listeners should use port 0) to `dir/<file>`, starts the sidecar and waits
    /// (up to 10 s) until the admin server and every listener named in `names` are listening.
    pub fn start(dir: &Path, file: &str, config: &str, names: &[&str]) -> Self {
        let config_path = dir.join(file);
        std::fs::write(&config_path, config).expect("write config");
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "sidecar", "run", "--config"])
            .arg(&config_path)
            .env("PALISADE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sidecar");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_writer = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log_writer.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = log.lock().unwrap().clone();
            let mut admin = None;
            let mut listeners = HashMap::new();
            for line in &lines {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let fields = &v["fields"];
                let address = fields["address"].as_str().and_then(|a| a.parse().ok());
                match fields["message"].as_str() {
                    Some("admin listening") => admin = address,
                    Some("inbound listening" | "outbound listening") => {
                        if let (Some(name), Some(addr)) = (fields["listener"].as_str(), address) {
                            listeners.insert(name.to_owned(), addr);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(admin) = admin {
                if names.iter().all(|n| listeners.contains_key(*n)) {
                    return SidecarProcess {
                        child,
                        admin,
                        listeners,
                        log,
                    };
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "sidecar exited with {status} before listening:\n{}",
                    lines.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "sidecar did not start:\n{}",
                lines.join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners[listener]
    }

    /// GET a path on the admin server: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_request(self.admin, "GET", path)
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, 200);
        body
    }

    /// The sum of every sample of `name` whose labels include all of `labels` (`k="v"` pairs).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A minimal HTTP/1.1 request with `Connection: close`; (status, body).
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A TCP app on 127.0.0.1:0 that runs `serve` on each connection in its own thread. The listener
/// thread lives as long as the test process; tests are short.
pub fn spawn_app(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind app");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Echoes every byte back, and closes its write side when the client closes its own.
pub fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Answers each HTTP request (read up to the blank line) with a fixed body; keeps the connection
/// open unless the request says `Connection: close`.
pub fn http_ok(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        let mut saw_request = false;
        let mut close = false;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {
                    saw_request = true;
                    close |= line.trim().eq_ignore_ascii_case("connection: close");
                }
            }
        }
        if !saw_request {
            return;
        }
        let body = "hello from the app\n";
        if write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        )
        .is_err()
            || close
        {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Says hello first, before reading anything (like SMTP or MySQL), then echoes.
pub fn banner_then_echo(mut stream: TcpStream) {
    if stream.write_all(b"220 hello, speak after me\r\n").is_err() {
        return;
    }
    echo(stream);
}

/// Whether the test runs as root (effective uid 0), from /proc/self/status.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Whether a tool is on PATH, silently.
pub fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Network namespaces made by one test, named `pal-<pid>-<n>-<role>`. Dropping it kills the
/// processes started with [`Netns::spawn`] and deletes every namespace it made, so a failing test
/// leaves nothing behind. Nothing here touches the root namespace: every command runs through
/// `ip netns exec`.
pub struct Netns {
    prefix: String,
    names: Vec<String>,
    children: Vec<Child>,
}

impl Netns {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Netns {
            prefix: format!("pal-{}-{n}", std::process::id()),
            names: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Makes namespace `<prefix>-<role>` with its loopback up; returns its name.
    pub fn add(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        // Remembered first: a half-made namespace is deleted too.
        self.names.push(name.clone());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.exec_ok(&name, &["ip", "link", "set", "lo", "up"], None);
        name
    }

    /// Runs `ip netns exec <ns> <args...>`, with `stdin` as its input when given.
    pub fn exec(&self, ns: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ip netns exec");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            let input = input.to_vec();
            // Written from a thread: the child may fill its stdout before reading all its input.
            let writer = thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
            let out = child.wait_with_output().expect("wait for ip netns exec");
            let _ = writer.join();
            out
        } else {
            child.wait_with_output().expect("wait for ip netns exec")
        }
    }

    /// [`Netns::exec`], failing the test unless the command succeeds; returns its stdout.
    pub fn exec_ok(&self, ns: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.exec(ns, args, stdin);
        assert!(
            out.status.success(),
            "ip netns exec {ns} {}: {}\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running process in `ns` (stdin and stdout piped, stderr inherited); it is
    /// killed when `self` is dropped.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> &mut Child {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn in namespace");
        self.children.push(child);
        self.children.last_mut().expect("just pushed")
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in self.names.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `cmd` with `input` on stdin and its output captured; kills it after `limit`. Returns the
/// output and whether it was killed for taking too long.
pub fn run_bounded(cmd: &mut Command, input: &[u8], limit: Duration) -> (Output, bool) {
    use std::io::Write as _;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn command");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let output = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    (output, timed_out)
}

/// Polls `check` every 20 ms until it holds (true) or `limit` has passed (false).
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
