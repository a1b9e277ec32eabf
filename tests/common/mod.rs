//! Shared by the end-to-end tests, one module per concern: `pki` (a CA and certificates made with
//! the real `palisade` binary), `sidecar` (a running sidecar and its bound addresses: every
//! listener binds port 0, so parallel tests never collide), `http` (the one HTTP client and the
//! tiny apps to proxy to), `ca` (a two-level CA and a running `ca serve`), `metrics` (reading /metrics), `kubernetes` (validating manifests against the API schemas), `rng` (seeded generated cases), `probe` (real TCP, UDP and ping
//! probes in namespaces); here: running commands and waiting. From palisade-test-support, shared
//! with the crates' own tests: whether a test may run at all (`skip`), network namespaces
//! (`netns`), bounded commands (`process`), the fuzz smoke loop (`mutate`).
// Each test binary uses a part of this.
#![allow(dead_code, unused_imports)]

mod ca;
mod http;
pub mod kubernetes;
mod metrics;
mod pki;
mod probe;
mod rng;
mod sidecar;

pub use ca::*;
pub use http::*;
pub use metrics::*;
pub use palisade_test_support::mutate;
pub use palisade_test_support::netns::*;
pub use palisade_test_support::process::*;
pub use palisade_test_support::skip::*;
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
