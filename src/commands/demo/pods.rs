//! Step 10, as root: the policy of step 3 on two nodes, in network namespaces this demo makes
//! (and removes, also when a step fails). Each node applies its host table; each pod gets the
//! redirect table and a transparent sidecar running as the proxy UID; the apps are unmodified.
//!
//! ```text
//!   node-b (table for frontend, guest)                 node-a (table for payments)
//!   ┌ frontend pod 10.10.1.2 ┐                         ┌ payments pod 10.10.2.2 ┐
//!   │ app ─► sidecar :15001 ─┼─ mTLS ─► wire ─► ───────┼─► sidecar :15006 ─► app │
//!   └────────────────────────┘   10.10.0.2 ↔ 10.10.0.1  └─────────────────────────┘
//!   ┌ scanner pod 10.10.9.2 ─┐
//!   │ app ─► sidecar ─► ✗ dropped by node-b's table (guest may not reach payments)
//!   └────────────────────────┘
//! ```
//!
//! Everything runs as child processes of this one binary (`ip netns exec`), so what runs is what
//! an operator would run; the pretend apps are this binary's hidden `demo --toy-app` and
//! `demo --toy-get`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use super::{command, step};

/// The UID the sidecars run as; the redirect table exempts it.
const PROXY_UID: u32 = 1337;
const APP_PORT: u16 = 8080;
/// Where the frontend and the scanner connect: the payments pod's real address.
const PAYMENTS: &str = "10.10.2.2:8080";

/// Whether this process may make network namespaces; else the sentence that says why not.
pub fn can_run() -> Result<(), String> {
    let euid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Err("run it as root (`sudo palisade demo`) to also see two pods in network namespaces with transparent sidecars and their hosts' tables".into());
    }
    let missing: Vec<&str> = ["ip", "nft", "setpriv"]
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the pods part needs {} (Debian: apt install iproute2 nftables util-linux)",
            missing.join(", ")
        ));
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Network namespaces and the processes started in them; dropping it kills the processes and
/// deletes the namespaces.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// This binary, copied where the proxy UID may run it.
    bin: PathBuf,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn add(&mut self, role: &str) -> anyhow::Result<()> {
        let name = self.ns(role);
        // Remembered first: a half-made namespace is deleted too.
        self.namespaces.push(name.clone());
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        self.exec_ok(role, &["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn exec(&self, role: &str, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `{}`", args.join(" ")))
    }

    fn exec_ok(&self, role: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.exec(role, args)?;
        ensure!(
            out.status.success(),
            "`{}` in {role} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs this binary in `role`'s namespace.
    fn palisade(&self, role: &str, args: &[&str]) -> anyhow::Result<Output> {
        let bin = self.bin.to_string_lossy().into_owned();
        let mut full = vec![bin.as_str()];
        full.extend_from_slice(args);
        self.exec(role, &full)
    }

    /// One HTTP GET from `role`'s namespace, by this binary's hidden `demo --toy-get`: exits 0
    /// on a 200 and prints the status line and body; else prints why on stderr.
    fn get(&self, role: &str, target: &str, path: &str) -> anyhow::Result<Output> {
        self.palisade(role, &["demo", "--toy-get", target, "--toy-path", path])
    }

    /// Starts a long-running process in `role`'s namespace, its output into `log`.
    fn spawn(&mut self, role: &str, args: &[&str], log: &Path) -> anyhow::Result<()> {
        let log =
            fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start `{}`", args.join(" ")))?;
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A pod: its namespace role, address, and the node it sits on.
struct Pod {
    name: &'static str,
    node: &'static str,
    address: &'static str,
    gateway: &'static str,
}

const PODS: [Pod; 3] = [
    Pod {
        name: "frontend",
        node: "node-b",
        address: "10.10.1.2",
        gateway: "10.10.1.1",
    },
    Pod {
        name: "scanner",
        node: "node-b",
        address: "10.10.9.2",
        gateway: "10.10.9.1",
    },
    Pod {
        name: "payments",
        node: "node-a",
        address: "10.10.2.2",
        gateway: "10.10.2.1",
    },
];

/// Step 10. `dir` is the demo's directory (the current one): policy.yaml and each workload's
/// certificate directory are in it.
pub fn story(out: &mut dyn Write, dir: &Path) -> anyhow::Result<()> {
    step(
        out,
        &format!(
            "10. As root: the same policy.yaml on two nodes, in network namespaces. Each node applies\n    \
its host's table; each pod gets the redirect table and a transparent sidecar (UID {PROXY_UID}).\n    \
node-a: payments (10.10.2.2)    node-b: frontend (10.10.1.2), scanner (10.10.9.2)\n    \
The apps are unmodified: they connect to each other's real addresses."
        ),
    )?;
    let mut lab = prepare(dir)?;
    wire(&mut lab)?;

    for node in ["node-a", "node-b"] {
        command(
            out,
            &format!("palisade policy apply policy.yaml --host {node}   # on {node}"),
        )?;
        let policy = dir.join("policy.yaml");
        let applied = lab.palisade(
            node,
            &["policy", "apply", &policy.to_string_lossy(), "--host", node],
        )?;
        ensure!(
            applied.status.success(),
            "policy apply on {node} failed: {}",
            String::from_utf8_lossy(&applied.stderr).trim()
        );
        out.write_all(&applied.stdout)?;
    }

    let redirect = [
        "sidecar",
        "redirect",
        "--inbound-port",
        "15006",
        "--outbound-port",
        "15001",
        "--proxy-uid",
        "1337",
        "--exclude-inbound-ports",
        "15000",
    ];
    command(
        out,
        &format!("{}   # in each pod", redirect_line(&redirect)),
    )?;
    for pod in &PODS {
        let done = lab.palisade(pod.name, &redirect)?;
        ensure!(
            done.status.success(),
            "the redirect in {} failed: {}",
            pod.name,
            String::from_utf8_lossy(&done.stderr).trim()
        );
    }
    command(
        out,
        "palisade sidecar run --config sidecar.yaml   # in each pod, as UID 1337; sidecar.yaml:",
    )?;
    for line in sidecar_yaml().lines() {
        writeln!(out, "    {line}")?;
    }
    for pod in &PODS {
        start_sidecar(&mut lab, dir, pod)?;
    }
    start_app(&mut lab, dir)?;

    command(
        out,
        &format!("curl http://10.10.2.2:{APP_PORT}/charge   # in the frontend pod"),
    )?;
    let got = lab.get("frontend", PAYMENTS, "/charge")?;
    ensure!(
        got.status.success(),
        "the frontend pod's request should have reached payments: {}",
        String::from_utf8_lossy(&got.stderr).trim()
    );
    out.write_all(&got.stdout)?;
    let opened = metric(
        &lab,
        "payments",
        "palisade_sidecar_connections_opened_total{listener=\"transparent-inbound\",direction=\"inbound\"}",
    )?;
    ensure!(
        opened >= 1.0,
        "payments' sidecar should have carried that request"
    );
    writeln!(
        out,
        "(payments' sidecar took it as mTLS from the frontend's identity, admitted by the rule\n \
frontend-to-payments: palisade_sidecar_connections_opened_total{{listener=\"transparent-inbound\"}} {opened})"
    )?;

    command(
        out,
        &format!("curl http://10.10.2.2:{APP_PORT}/charge   # in the scanner pod"),
    )?;
    let got = lab.get("scanner", PAYMENTS, "/charge")?;
    ensure!(
        !got.status.success(),
        "the scanner pod should not have reached payments, but got:\n{}",
        String::from_utf8_lossy(&got.stdout)
    );
    writeln!(out, "-> {}", String::from_utf8_lossy(&got.stderr).trim())?;
    let after = metric(
        &lab,
        "payments",
        "palisade_sidecar_connections_opened_total{listener=\"transparent-inbound\",direction=\"inbound\"}",
    )?;
    ensure!(
        after == opened,
        "nothing from the scanner should have reached payments' sidecar"
    );
    let timed_out = metric(
        &lab,
        "scanner",
        "palisade_sidecar_connections_refused_total{listener=\"transparent-outbound\",direction=\"outbound\",reason=\"connect_timeout\"}",
    )?;
    ensure!(
        timed_out >= 1.0,
        "the scanner's sidecar should have found no way to payments"
    );
    writeln!(
        out,
        "(the scanner's sidecar could not even connect: palisade_sidecar_connections_refused_total{{reason=\"connect_timeout\"}} {timed_out})"
    )?;
    command(
        out,
        &format!(
            "palisade policy explain policy.yaml --from 10.10.9.2 --to 10.10.2.2 --port {APP_PORT}"
        ),
    )?;
    let explained = lab.palisade(
        "node-b",
        &[
            "policy",
            "explain",
            &dir.join("policy.yaml").to_string_lossy(),
            "--from",
            "10.10.9.2",
            "--to",
            "10.10.2.2",
            "--port",
            &APP_PORT.to_string(),
        ],
    )?;
    out.write_all(&explained.stdout)?;
    writeln!(
        out,
        "(node-b's table dropped the scanner sidecar's SYNs, as explain says: payments' sidecar never saw\n them, and would have refused the scanner's identity had the kernel let it through)"
    )?;
    Ok(())
}

fn redirect_line(args: &[&str]) -> String {
    format!("palisade {}", args.join(" "))
}

/// The transparent sidecar's configuration, the same in every pod (its files are in the pod's
/// own directory).
fn sidecar_yaml() -> String {
    "identity: { cert: cert.pem, key: key.pem, bundle: bundle.pem }\n\
transparent:\n  inbound: \"[::]:15006\"\n  outbound: \"[::]:15001\"\n  policy: policy.yaml\n  mode: strict\n\
admin: { listen: \"127.0.0.1:15000\" }\n"
        .to_owned()
}

/// A lab named after this process; this binary copied where the proxy UID may run it (the
/// build directory may sit under a home directory it cannot enter).
fn prepare(dir: &Path) -> anyhow::Result<Lab> {
    // The demo's directory is 0700; the proxy UID must pass through it to its pod's directory.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o711))?;
    let bin = dir.join("palisade");
    fs::copy(std::env::current_exe()?, &bin).context("cannot copy this binary for the pods")?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    Ok(Lab {
        prefix: format!("palisade-demo-{}", std::process::id()),
        namespaces: Vec::new(),
        children: Vec::new(),
        bin,
    })
}

/// Two nodes joined by a link, each pod on a veth pair to its node, routes between them.
fn wire(lab: &mut Lab) -> anyhow::Result<()> {
    for node in ["node-a", "node-b"] {
        lab.add(node)?;
        lab.exec_ok(node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    }
    let node_b = lab.ns("node-b");
    lab.exec_ok(
        "node-a",
        &[
            "ip", "link", "add", "wire", "type", "veth", "peer", "name", "wire", "netns", &node_b,
        ],
    )?;
    for (node, address) in [("node-a", "10.10.0.1/30"), ("node-b", "10.10.0.2/30")] {
        lab.exec_ok(node, &["ip", "addr", "add", address, "dev", "wire"])?;
        lab.exec_ok(node, &["ip", "link", "set", "wire", "up"])?;
    }
    for pod in &PODS {
        lab.add(pod.name)?;
        let pod_ns = lab.ns(pod.name);
        lab.exec_ok(
            pod.node,
            &[
                "ip", "link", "add", pod.name, "type", "veth", "peer", "name", "eth0", "netns",
                &pod_ns,
            ],
        )?;
        lab.exec_ok(
            pod.node,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", pod.gateway),
                "dev",
                pod.name,
            ],
        )?;
        lab.exec_ok(pod.node, &["ip", "link", "set", pod.name, "up"])?;
        lab.exec_ok(
            pod.name,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", pod.address),
                "dev",
                "eth0",
            ],
        )?;
        lab.exec_ok(pod.name, &["ip", "link", "set", "eth0", "up"])?;
        lab.exec_ok(
            pod.name,
            &["ip", "route", "add", "default", "via", pod.gateway],
        )?;
        let (other, via) = if pod.node == "node-a" {
            ("node-b", "10.10.0.1")
        } else {
            ("node-a", "10.10.0.2")
        };
        let subnet = format!(
            "{}.0/24",
            pod.gateway.rsplit_once('.').map_or("", |(net, _)| net)
        );
        lab.exec_ok(other, &["ip", "route", "add", &subnet, "via", via])?;
    }
    Ok(())
}

/// The pod's directory (its certificate, key, bundle, the policy and sidecar.yaml, owned by the
/// proxy UID), then its sidecar, waited for until ready.
fn start_sidecar(lab: &mut Lab, dir: &Path, pod: &Pod) -> anyhow::Result<()> {
    let pod_dir = dir.join("pods").join(pod.name);
    fs::create_dir_all(&pod_dir)?;
    fs::set_permissions(dir.join("pods"), fs::Permissions::from_mode(0o711))?;
    for file in ["cert.pem", "key.pem", "bundle.pem"] {
        fs::copy(dir.join(pod.name).join(file), pod_dir.join(file))
            .with_context(|| format!("cannot copy {}/{file}", pod.name))?;
    }
    fs::copy(dir.join("policy.yaml"), pod_dir.join("policy.yaml"))?;
    fs::write(pod_dir.join("sidecar.yaml"), sidecar_yaml())?;
    for entry in fs::read_dir(&pod_dir)? {
        std::os::unix::fs::chown(entry?.path(), Some(PROXY_UID), Some(PROXY_UID))?;
    }
    std::os::unix::fs::chown(&pod_dir, Some(PROXY_UID), Some(PROXY_UID))?;
    fs::set_permissions(&pod_dir, fs::Permissions::from_mode(0o700))?;

    let uid = PROXY_UID.to_string();
    let bin = lab.bin.to_string_lossy().into_owned();
    let config = pod_dir.join("sidecar.yaml").to_string_lossy().into_owned();
    lab.spawn(
        pod.name,
        &[
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
            &bin,
            "sidecar",
            "run",
            "--config",
            &config,
        ],
        &dir.join(format!("{}-pod-sidecar.log", pod.name)),
    )?;
    wait(Duration::from_secs(10), || {
        Ok(lab
            .palisade(pod.name, &["sidecar", "probe"])?
            .status
            .success())
    })
    .with_context(|| {
        format!(
            "the sidecar of the {} pod did not become ready; its log: {}",
            pod.name,
            fs::read_to_string(dir.join(format!("{}-pod-sidecar.log", pod.name)))
                .unwrap_or_default()
        )
    })
}

/// The payments app: plain HTTP on the pod's port 8080, as root (not the proxy UID).
fn start_app(lab: &mut Lab, dir: &Path) -> anyhow::Result<()> {
    let bin = lab.bin.to_string_lossy().into_owned();
    let listen = format!("0.0.0.0:{APP_PORT}");
    lab.spawn(
        "payments",
        &[&bin, "demo", "--toy-app", &listen],
        &dir.join("payments-pod-app.log"),
    )?;
    wait(Duration::from_secs(10), || {
        Ok(lab
            .get("payments", &format!("127.0.0.1:{APP_PORT}"), "/")?
            .status
            .success())
    })
    .context("the payments app did not start")
}

/// One sample of a pod's sidecar metrics, read through its admin server.
fn metric(lab: &Lab, pod: &str, series: &str) -> anyhow::Result<f64> {
    let got = lab.get(pod, "127.0.0.1:15000", "/metrics")?;
    ensure!(got.status.success(), "cannot read {pod}'s sidecar metrics");
    Ok(super::toy_http::sample(
        &String::from_utf8_lossy(&got.stdout),
        series,
    ))
}

fn wait(limit: Duration, mut done: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("gave up after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
