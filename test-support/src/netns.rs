//! Network namespaces a test makes and removes.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::thread;

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
