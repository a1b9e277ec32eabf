//! A two-level CA made with the real binary (`ca init`, `ca init-issuer`) and a running
//! `palisade ca serve`: its addresses from the first stdout line, its audit lines (the rest of
//! stdout) collected for assertions, its log (stderr) kept for failure messages.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::{http_request, metric_value, ok, palisade, wait_until, BIN, TD};

/// `root/` (offline root) and `issuer/` (what the service signs with) in a temporary directory.
pub struct TwoLevelCa {
    pub dir: tempfile::TempDir,
}

impl TwoLevelCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        ok(palisade(
            &["ca", "init", "--ca-dir", "root", "--trust-domain", TD],
            dir.path(),
        ));
        ok(palisade(
            &[
                "ca",
                "init-issuer",
                "--root-dir",
                "root",
                "--ca-dir",
                "issuer",
                "--ttl",
                "2d",
            ],
            dir.path(),
        ));
        TwoLevelCa { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn issuer(&self) -> PathBuf {
        self.path().join("issuer")
    }

    /// The roots, for clients.
    pub fn bundle(&self) -> PathBuf {
        self.path().join("issuer/bundle.pem")
    }

    /// A one-time join token for `spiffe://example.org/<id_path>`.
    pub fn token(&self, id_path: &str, ttl: &str) -> String {
        let id = format!("spiffe://{TD}/{id_path}");
        ok(palisade(
            &[
                "ca",
                "token",
                "--ca-dir",
                "issuer",
                "--spiffe-id",
                &id,
                "--ttl",
                ttl,
            ],
            self.path(),
        ))
        .trim()
        .to_owned()
    }
}

/// A running `palisade ca serve`, killed when dropped.
pub struct CaProcess {
    pub child: Child,
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub audit: Arc<Mutex<Vec<serde_json::Value>>>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl CaProcess {
    /// Starts `ca serve --ca-dir <issuer_dir>` on free loopback ports with `extra` arguments.
    pub fn start(issuer_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(issuer_dir, "127.0.0.1:0", extra)
    }

    /// As [`CaProcess::start`], listening on `listen`.
    pub fn start_on(issuer_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "ca", "serve", "--ca-dir"])
            .arg(issuer_dir)
            .args(["--listen", listen, "--admin", "127.0.0.1:0"])
            .args(["--reload-interval", "1s"])
            .args(extra)
            .env("PALISADE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ca serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_writer = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log_writer.lock().unwrap().push(line);
            }
        });
        let audit = Arc::new(Mutex::new(Vec::new()));
        let audit_writer = audit.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = tx.send(lines.next().unwrap_or_default());
            for line in lines {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {line}"));
                audit_writer.lock().unwrap().push(value);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        if line.is_empty() {
            thread::sleep(Duration::from_millis(200));
            panic!(
                "ca serve did not report its addresses:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        let v: serde_json::Value = serde_json::from_str(&line).expect("listening line");
        let addr = |k: &str| {
            v["listening"][k]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {line}"))
        };
        CaProcess {
            api: addr("api"),
            admin: addr("admin"),
            child,
            audit,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.api)
    }

    /// Audit lines so far.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.audit.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) for an audit line with `event` and `code` (or no code for issuances)
    /// and returns it.
    pub fn expect_audit(&self, event: &str, code: Option<&str>) -> serde_json::Value {
        let mut found = None;
        wait_until(Duration::from_secs(5), || {
            found = self
                .audit_lines()
                .into_iter()
                .find(|l| l["event"] == event && code.is_none_or(|c| l["code"] == c));
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no audit line {event} {code:?} in:\n{:#?}\nlog:\n{}",
                self.audit_lines(),
                self.log_text()
            )
        })
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (status, body) = http_request(self.admin, "GET", "/metrics");
        assert_eq!(status, 200);
        metric_value(&body, name, labels)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to 5 s for a log line containing `needle`. The log is read by a thread of its
    /// own, so a line the process wrote before it answered may not have arrived yet.
    pub fn logged(&self, needle: &str) -> bool {
        wait_until(Duration::from_secs(5), || self.log_text().contains(needle))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
