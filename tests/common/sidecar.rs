//! A running `palisade sidecar run`: its bound addresses from the JSON line it prints on stdout,
//! its log (stderr) kept for failure messages, its admin server and metrics.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{http_request, metric_value, wait_until, BIN};

/// A running `palisade sidecar run`, killed when dropped.
pub struct SidecarProcess {
    pub child: Child,
    pub admin: SocketAddr,
    /// The read-only metrics listener, when the configuration has one.
    pub metrics: Option<SocketAddr>,
    pub listeners: HashMap<String, SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl SidecarProcess {
    /// Writes `config` (listeners should use port 0) to `dir/<file>`, starts the sidecar and waits
    /// (up to 10 s) for the JSON line in which it names every address it bound (`{"listening":
    /// {"admin": .., "inbound": {name: addr}, "outbound": {..}}}` on stdout); every listener in
    /// `names` must be there.
    pub fn start(dir: &Path, file: &str, config: &str, names: &[&str]) -> Self {
        Self::start_under(&[], dir, file, config, names)
    }

    /// [`SidecarProcess::start`], the sidecar started by `wrapper` (for example `setpriv` with
    /// its arguments, which then executes the sidecar in its own process).
    pub fn start_under(
        wrapper: &[&str],
        dir: &Path,
        file: &str,
        config: &str,
        names: &[&str],
    ) -> Self {
        let config_path = dir.join(file);
        std::fs::write(&config_path, config).expect("write config");
        let mut command = match wrapper.split_first() {
            None => Command::new(BIN),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
        };
        let mut child = command
            .args(["--log-format", "json", "sidecar", "run", "--config"])
            .arg(&config_path)
            .env("PALISADE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
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
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut first = String::new();
            let _ = BufReader::new(stdout).read_line(&mut first);
            let _ = tx.send(first);
        });
        let fail = |why: &str, log: &Arc<Mutex<Vec<String>>>| -> ! {
            // Give stderr a moment to arrive before showing it.
            thread::sleep(Duration::from_millis(200));
            panic!("{why}:\n{}", log.lock().unwrap().join("\n"))
        };
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if !line.is_empty() => line,
            _ => fail("the sidecar did not report its addresses", &log),
        };
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON line: {e}: {line:?}"));
        let listening = &v["listening"];
        let addr = |v: &serde_json::Value| v.as_str().and_then(|a| a.parse::<SocketAddr>().ok());
        let admin = addr(&listening["admin"]).unwrap_or_else(|| panic!("no admin in {line}"));
        let metrics = addr(&listening["metrics"]);
        let mut listeners = HashMap::new();
        for direction in ["inbound", "outbound"] {
            for (name, a) in listening[direction].as_object().into_iter().flatten() {
                listeners.insert(name.clone(), addr(a).expect("an address"));
            }
        }
        for name in names {
            assert!(
                listeners.contains_key(*name),
                "no listener {name} in {line}"
            );
        }
        SidecarProcess {
            child,
            admin,
            metrics,
            listeners,
            log,
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

    /// Waits up to 5 s for a log line containing `needle`. The log is read by a thread of its
    /// own, so a line the process wrote before it answered may not have arrived yet.
    pub fn logged(&self, needle: &str) -> bool {
        wait_until(Duration::from_secs(5), || self.log_text().contains(needle))
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
