//! `palisade check`: preflight of this host, as `linkerd check` and `cilium status` do for a
//! cluster: what the tables, the sandbox and the services given need, one line per check, exit 1
//! when one fails. Nothing is changed: nft only checks (`nft -c`) the tables it would load.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Args;

use crate::commands::cert::client::{client, read_bundle, CaArgs};
use crate::commands::{Output, OutputArgs};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
palisade check\n  \
palisade check --policy /etc/palisade/policy.yaml --host node-a\n  \
palisade check --sidecar-config /etc/palisade/sidecar.yaml \\\n      \
--svid-dir /var/lib/palisade/web\n  \
palisade check --ca https://ca.example.org:8443 \\\n      \
--bundle root/bundle.pem -o json\n\n\
Each line: ok, warn (works, but not as well as it could) or fail, the check and\n\
why. Exit status 1 when a check fails, 0 otherwise.")]
pub struct CheckArgs {
    /// A policy `policy sync` would enforce here: it must load and nft must accept its table.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The host whose table to check (see `hosts:` in the policy).
    #[arg(long, value_name = "NAME", requires = "policy")]
    pub host: Option<String>,
    /// A sidecar configuration: it must load (with PALISADE_APP_PROBES, as `sidecar run` reads it).
    #[arg(long, value_name = "FILE")]
    pub sidecar_config: Option<PathBuf>,
    /// The sidecar's --metrics, as `sidecar run` is given it (inject: [::]:15020).
    #[arg(long, value_name = "ADDR", requires = "sidecar_config")]
    pub metrics: Option<std::net::SocketAddr>,
    /// A workload's key, certificate and bundle: the key must be the certificate's, the chain must
    /// verify to the bundle, and the certificate must not be close to its end.
    #[arg(long = "svid-dir", value_name = "DIR")]
    pub svid_dir: Option<PathBuf>,
    /// The CA service, https://host[:port]: it must answer for its bundle (needs --bundle).
    #[arg(long, value_name = "URL", requires = "bundle")]
    pub ca: Option<String>,
    /// The CA service's SPIFFE ID (default spiffe://<trust domain of the bundle>/palisade/ca).
    #[arg(long, value_name = "ID", requires = "ca")]
    pub ca_id: Option<palisade_identity::SpiffeId>,
    /// The roots the CA service is checked against.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Internal: apply a service's sandbox to this process and print what took (the parent reads it).
    #[arg(long, hide = true)]
    pub probe_sandbox: bool,
    /// text, or json: {"checks": [{"check", "status", "detail"}], "ok"}.
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, serde::Serialize)]
struct Outcome {
    check: &'static str,
    status: Status,
    detail: String,
}

fn outcome(check: &'static str, status: Status, detail: impl Into<String>) -> Outcome {
    Outcome {
        check,
        status,
        detail: detail.into(),
    }
}

/// The oldest kernel the tables are built for: nftables' concatenated interval sets (5.6). Below
/// Landlock's first release (5.13) the services run without it: a warning (`nft -c` below
/// decides whether the tables load).
const MIN_KERNEL: (u32, u32) = (5, 6);
const LANDLOCK_KERNEL: (u32, u32) = (5, 13);

/// A policy whose compiled table has every kind of rule a host table holds (segments by address
/// and both families, rules by port and by ICMP type, denies, the outside), for `nft -c`.
const SAMPLE_POLICY: &str = include_str!("../../examples/policy/shop.yaml");

/// The two kinds of table Palisade loads, as it would load them, for `nft -c`: a host's
/// `inet palisade` (the sample policy's busiest host) and a pod's `inet palisade_redirect` (as
/// inject configures it).
fn real_tables() -> Vec<(&'static str, String)> {
    let mut tables = Vec::new();
    if let Ok(policy) = palisade_policy::load_str(SAMPLE_POLICY, Path::new("shop.yaml")) {
        if let Ok(ruleset) = palisade_policy::compile(&policy, Some("node-b")) {
            tables.push(("host table", palisade_nft::nft_text(&ruleset)));
        }
    }
    let redirect = palisade_nft::redirect::Redirect {
        inbound_port: 15006,
        outbound_port: 15001,
        proxy_uid: 1337,
        exclude_inbound_ports: vec![15000, 15020],
        exclude_outbound_ports: vec![53],
        exclude_cidrs: Vec::new(),
    };
    tables.push((
        "redirect table",
        palisade_nft::redirect::redirect_transaction(&redirect).to_string(),
    ));
    tables
}

pub fn check(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    if args.probe_sandbox {
        return probe_sandbox(out);
    }
    let mut checks = vec![kernel()];
    let nft = nft_version();
    let have_nft = nft.status != Status::Fail;
    checks.push(nft);
    if have_nft {
        for (check, table) in real_tables() {
            checks.push(nft_accepts(check, &table));
        }
    }
    checks.extend(sandbox());
    if let Some(file) = &args.policy {
        checks.extend(policy(file, args.host.as_deref(), have_nft));
    }
    if let Some(file) = &args.sidecar_config {
        checks.push(sidecar_config(file, args.metrics));
    }
    if let Some(dir) = &args.svid_dir {
        checks.push(certificate(dir));
    }
    if let (Some(url), Some(bundle)) = (&args.ca, &args.bundle) {
        checks.push(ca(url, args.ca_id.clone(), bundle));
    }
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    match args.output.output {
        Output::Json => {
            crate::commands::write_json(out, &serde_json::json!({"checks": checks, "ok": !failed}))?
        }
        Output::Text => {
            for c in &checks {
                let status = match c.status {
                    Status::Ok => "ok  ",
                    Status::Warn => "warn",
                    Status::Fail => "FAIL",
                };
                writeln!(out, "{status}  {:<18} {}", c.check, c.detail)?;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn kernel() -> Outcome {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) if (major, minor) >= LANDLOCK_KERNEL => {
            outcome("kernel", Status::Ok, format!("Linux {release}"))
        }
        (Some(major), Some(minor)) if (major, minor) >= MIN_KERNEL => outcome(
            "kernel",
            Status::Warn,
            format!(
                "Linux {release}: the tables load, but Landlock needs {}.{}",
                LANDLOCK_KERNEL.0, LANDLOCK_KERNEL.1
            ),
        ),
        (Some(_), Some(_)) => outcome(
            "kernel",
            Status::Fail,
            format!(
                "Linux {release} is older than {}.{}, which the tables need",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        ),
        _ => outcome("kernel", Status::Warn, "cannot read the kernel's release"),
    }
}

fn nft_version() -> Outcome {
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            let version = text
                .split_whitespace()
                .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
                .unwrap_or("");
            let major: u32 = version[1.min(version.len())..]
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major >= 1 {
                outcome("nft", Status::Ok, text)
            } else {
                outcome(
                    "nft",
                    Status::Fail,
                    format!("{text}: the tables need nft 1.0 or newer"),
                )
            }
        }
        Ok(o) => outcome(
            "nft",
            Status::Fail,
            format!(
                "nft --version failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ),
        Err(e) => outcome(
            "nft",
            Status::Fail,
            format!("cannot run nft ({e}): install nftables"),
        ),
    }
}

/// `nft -c -f -`: whether the kernel and nft accept `ruleset`, committing nothing.
fn nft_accepts(check: &'static str, ruleset: &str) -> Outcome {
    // The redirect transaction is nft's JSON; the host table nft's text.
    let json = ruleset.trim_start().starts_with('{');
    let child = Command::new("nft")
        .args(if json {
            &["-c", "-j", "-f", "-"][..]
        } else {
            &["-c", "-f", "-"][..]
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return outcome(check, Status::Fail, format!("cannot run nft: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(ruleset.as_bytes());
    }
    let output = match wait_bounded(child, Duration::from_secs(20)) {
        Some(output) => output,
        None => return outcome(check, Status::Fail, "nft -c took more than 20 s"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        outcome(
            check,
            Status::Ok,
            "nft -c accepts the table (nothing loaded)",
        )
    } else if stderr.contains("Operation not permitted") {
        outcome(
            check,
            Status::Warn,
            "not checked: nft -c needs CAP_NET_ADMIN (run as root)",
        )
    } else {
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        outcome(check, Status::Fail, format!("nft refuses it: {first}"))
    }
}

fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Option<std::process::Output> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Landlock and seccomp, as every service applies them: tried in a child process (a sandbox
/// cannot be undone), which applies a service's sandbox to itself and says what took.
fn sandbox() -> Vec<Outcome> {
    let report = std::env::current_exe().ok().and_then(|exe| {
        let child = Command::new(exe)
            .args(["check", "--probe-sandbox"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let output = wait_bounded(child, Duration::from_secs(10))?;
        serde_json::from_slice::<serde_json::Value>(&output.stdout).ok()
    });
    let Some(report) = report else {
        return vec![outcome(
            "sandbox",
            Status::Fail,
            "could not apply a service's sandbox in a child process",
        )];
    };
    let landlock = report["landlock"].as_str().unwrap_or("");
    // What the services ask for is enforced in full only from the newest ABI they know.
    let abi = match report["landlock_abi"].as_i64().unwrap_or(0) {
        abi if landlock == "fully enforced" => format!("{}+", abi.max(7)),
        abi => abi.to_string(),
    };
    let landlock = match landlock {
        "fully enforced" => outcome(
            "landlock",
            Status::Ok,
            format!("ABI {abi}: files and ports restricted as wanted"),
        ),
        "partially enforced" => outcome(
            "landlock",
            Status::Warn,
            format!(
                "ABI {abi}: an older kernel; files restricted, {}",
                if report["landlock_abi"].as_i64().unwrap_or(0) >= 4 {
                    "ports too, not every newer right"
                } else {
                    "but not TCP ports (ABI 4, Linux 6.7)"
                }
            ),
        ),
        _ => outcome(
            "landlock",
            Status::Warn,
            "not available (not in the kernel or not in the lsm= list): services run without it, \
             or refuse to start with --landlock required",
        ),
    };
    let seccomp = match report["seccomp"].as_str() {
        Some("enforce") => outcome("seccomp", Status::Ok, "the allow-list filter installs"),
        other => outcome(
            "seccomp",
            Status::Fail,
            format!(
                "the allow-list filter did not install ({})",
                report["error"].as_str().or(other).unwrap_or("unknown")
            ),
        ),
    };
    vec![landlock, seccomp]
}

/// The child's half of [`sandbox`].
fn probe_sandbox(out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let abi = landlock_abi();
    let config = palisade_sandbox::SandboxConfig::default();
    let line = match palisade_sandbox::restrict(
        &palisade_sandbox::Allowed::default(),
        &palisade_sandbox::Syscalls::service(),
        config,
    ) {
        Ok(report) => serde_json::json!({
            "landlock": report.landlock_status(),
            "landlock_abi": abi,
            "seccomp": report.seccomp.name(),
        }),
        Err(e) => serde_json::json!({"landlock": "", "seccomp": "", "error": e.to_string()}),
    };
    writeln!(out, "{line}")?;
    Ok(ExitCode::SUCCESS)
}

/// The kernel's Landlock ABI version, from the kernel's release (the landlock crate keeps its
/// probe private): 0 when Landlock is not in the kernel's active security modules.
fn landlock_abi() -> i64 {
    // Where securityfs is mounted, it says whether Landlock is among the active modules.
    if let Ok(lsm) = std::fs::read_to_string("/sys/kernel/security/lsm") {
        if !lsm.split(',').any(|m| m.trim() == "landlock") {
            return 0;
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    [
        ((6, 15), 7),
        ((6, 12), 6),
        ((6, 10), 5),
        ((6, 7), 4),
        ((6, 2), 3),
        ((5, 19), 2),
        ((5, 13), 1),
    ]
    .into_iter()
    .find(|(since, _)| version >= *since)
    .map_or(0, |(_, abi)| abi)
}

fn policy(file: &Path, host: Option<&str>, have_nft: bool) -> Vec<Outcome> {
    let ruleset = palisade_policy::load_file(file)
        .map_err(anyhow::Error::from)
        .and_then(|p| Ok(palisade_policy::compile(&p, host)?));
    match ruleset {
        Ok(ruleset) => {
            let mut found = vec![outcome(
                "policy",
                Status::Ok,
                format!("{} loads", file.display()),
            )];
            if have_nft {
                found.push(nft_accepts(
                    "policy table",
                    &palisade_nft::nft_text(&ruleset),
                ));
            }
            found
        }
        Err(e) => vec![outcome("policy", Status::Fail, format!("{e:#}"))],
    }
}

fn sidecar_config(file: &Path, metrics: Option<std::net::SocketAddr>) -> Outcome {
    let probes = std::env::var(palisade_sidecar::config::APP_PROBES_ENV).ok();
    match palisade_sidecar::SidecarConfig::load(file)
        .and_then(|c| c.with_pod_settings(file, metrics, probes.as_deref()))
    {
        Ok(c) => outcome(
            "sidecar config",
            Status::Ok,
            format!(
                "{} loads: {} inbound, {} outbound listener(s){}",
                file.display(),
                c.inbound.len(),
                c.outbound.len(),
                if c.transparent.is_some() {
                    ", transparent"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => outcome("sidecar config", Status::Fail, e.to_string()),
    }
}

fn certificate(dir: &Path) -> Outcome {
    let svid_dir = palisade_identity::SvidDir::new(dir);
    // The key is the certificate's and the chain verifies to the directory's bundle, as a
    // service loading it requires.
    if let Err(e) = crate::commands::cert::client::load_dir(&svid_dir) {
        return outcome("certificate", Status::Fail, e.to_string());
    }
    let cert = svid_dir.cert_path();
    let chain = std::fs::read(&cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))
        .and_then(|pem| {
            palisade_identity::pem::certificates_from_pem(&pem)
                .map_err(|e| format!("{}: {e}", cert.display()))
        });
    let now = rustls_pki_types::UnixTime::now();
    let info = chain.and_then(|chain| {
        palisade_identity::CertInfo::inspect(&chain, None, now)
            .map_err(|e| format!("{}: {e}", cert.display()))
    });
    match info {
        Err(e) => outcome("certificate", Status::Fail, e),
        Ok(info) => {
            let id = info
                .spiffe_id
                .clone()
                .unwrap_or_else(|| "no SPIFFE ID".into());
            let life = (info.not_after - info.not_before).whole_seconds().max(1);
            let left = info.remaining_seconds;
            let until = palisade_identity::rfc3339(info.not_after);
            if let palisade_identity::Verdict::Invalid { reason } = &info.verdict {
                outcome("certificate", Status::Fail, format!("{id}: {reason}"))
            } else if left * 3 < life {
                // Renewal is due at half its life: a third left means it has failed a while.
                outcome(
                    "certificate",
                    Status::Warn,
                    format!("{id}: less than a third of its life left (until {until}): is renewal failing?"),
                )
            } else {
                outcome(
                    "certificate",
                    Status::Ok,
                    format!("{id}, valid until {until}"),
                )
            }
        }
    }
}

fn ca(url: &str, ca_id: Option<palisade_identity::SpiffeId>, bundle: &PathBuf) -> Outcome {
    let result = (|| -> Result<usize, String> {
        let bundle = read_bundle(bundle).map_err(|e| e.to_string())?;
        let client = client(
            &CaArgs {
                ca: url.to_owned(),
                ca_id,
            },
            &bundle,
        )
        .map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(client.bundle())
            .map(|pem| pem.len())
            .map_err(|e| e.to_string())
    })();
    match result {
        Ok(_) => outcome(
            "ca",
            Status::Ok,
            format!("{url} answers with its bundle, authenticated by its SPIFFE ID"),
        ),
        Err(e) => outcome("ca", Status::Fail, format!("{url}: {e}")),
    }
}
