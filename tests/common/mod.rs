//! Shared by the end-to-end tests, one module per concern: `pki` (a CA and certificates made with
//! the real `palisade` binary), `sidecar` (a running sidecar and its bound addresses: every
//! listener binds port 0, so parallel tests never collide), `http` (the one HTTP client and the
//! tiny apps to proxy to), `ca` (a two-level CA and a running `ca serve`), `metrics` (reading /metrics), `netns` (network namespaces), `rng` (seeded generated cases), `probe` (real TCP, UDP and ping probes in namespaces), `mutate` (fuzz-smoke mutations); here:
//! running commands, waiting, and whether a test may run at all (`PALISADE_TEST_STRICT`).
// Each test binary uses a part of this.
#![allow(dead_code, unused_imports)]

mod ca;
mod http;
mod metrics;
pub mod mutate;
mod netns;
mod pki;
mod probe;
mod rng;
mod sidecar;

pub use ca::*;
pub use http::*;
pub use metrics::*;
pub use netns::*;
pub use pki::*;
pub use probe::*;
pub use rng::*;
pub use sidecar::*;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
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

/// A field of `/proc/<pid>/status` (`CapEff`, `NoNewPrivs`, `Seccomp`…), trimmed: what a test
/// reads to see which privileges and restrictions a process it started really has.
pub fn proc_status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"))
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// `chown -R uid:uid dir`: files a test hands to a process running as another UID.
pub fn chown_recursive(dir: &Path, uid: &str) {
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown -R {uid} {}", dir.display());
}

/// A port nothing listens on yet (bound, then released): for a service that is down, or is
/// started later on it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}
