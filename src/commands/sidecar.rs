//! `palisade sidecar run`: one workload's mTLS sidecar, until SIGTERM, SIGINT or POST /shutdown.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_sidecar::{Sidecar, SidecarConfig};

#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Run a sidecar: mTLS in and out for one workload, configured by a YAML file.
    #[command(
        after_help = "Example:\n  palisade sidecar run --config /etc/palisade/sidecar.yaml --log-format json\n\n\
The configuration is described in docs/SIDECAR.md; examples/sidecar/ holds working ones.\n\
SIGTERM (or POST /shutdown on the admin server) stops accepting, lets open connections finish\n\
within limits.drain_grace, then exits 0."
    )]
    Run(RunArgs),
    /// Apply the sandbox `run` would apply for a configuration, then try what it must forbid
    /// (reading a file outside its paths, writing, binding and connecting other ports, sockets
    /// Landlock cannot see, running a program); one JSON line says what was allowed and refused.
    /// Exit 0 when every attempt came out as the configuration says, 3 when one did not.
    #[command(
        after_help = "Example (as the user and in the pod the sidecar runs in):\n  \
palisade sidecar check-sandbox --config /etc/palisade/sidecar.yaml"
    )]
    CheckSandbox(RunArgs),
    /// Exit 0 when the sidecar's admin server says /ready, 3 otherwise: for exec probes, since a
    /// kubelet cannot reach a loopback admin server by HTTP.
    #[command(
        after_help = "Example (a startupProbe or readinessProbe's exec command):\n  \
palisade sidecar probe --admin 127.0.0.1:15000"
    )]
    Probe(ProbeArgs),
    /// Inside a pod's network namespace: send the app's TCP through the sidecar (nftables table
    /// inet palisade_redirect), or take that away again (--remove).
    #[cfg(feature = "tools")]
    #[command(after_help = "Example (an init container with NET_ADMIN):\n  \
palisade sidecar redirect --inbound-port 15006 --outbound-port 15001 \\\n    \
--proxy-uid 1337 --exclude-inbound-ports 15020,15021\n\n\
Connections to the pod go to the inbound port, the app's outbound connections to the outbound\n\
port; the proxy's own UID, loopback and the excluded ports and networks are left alone. One\n\
transaction, read back; running it again replaces the table. Exit 0 when the table is in place.")]
    Redirect(super::redirect::RedirectArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sidecar's YAML configuration.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(cmd: SidecarCommand, _out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        SidecarCommand::Run(args) => run_sidecar(&args),
        SidecarCommand::Probe(args) => probe(&args),
        SidecarCommand::CheckSandbox(args) => check_sandbox(&args, _out),
        #[cfg(feature = "tools")]
        SidecarCommand::Redirect(args) => super::redirect::run(&args, _out),
    }
}

fn run_sidecar(args: &RunArgs) -> anyhow::Result<ExitCode> {
    // Fatal errors are said once, by main, in the service's log.
    let config = SidecarConfig::load(&args.config).context("invalid sidecar configuration")?;
    // Two descriptors per proxied connection, max_connections in each direction: as many as allowed.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    // Counted before the sandbox: the count honours the cgroup's CPU quota only when the cgroup
    // files can be read, which Landlock then forbids (tokio would count every CPU of the node).
    let workers = config.workers.unwrap_or_else(available_parallelism);
    sandbox(&config)?;
    let runtime = match workers {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let sidecar = Sidecar::bind(config)
            .await
            .context("cannot start the sidecar")?;
        print_addresses(&sidecar.addresses());
        sidecar.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The CPUs this process may use (its cgroup's quota and affinity), read before the sandbox
/// closes the cgroup files; 1 when unknown.
pub(crate) fn available_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Restricts this process to what `config` needs (sidecar/src/sandbox.rs), before any other
/// thread exists.
fn sandbox(config: &SidecarConfig) -> anyhow::Result<()> {
    let report = palisade_sidecar::sandbox::restrict(config).context("cannot apply the sandbox")?;
    palisade_sandbox::log_report("sidecar", &report);
    Ok(())
}

/// `sidecar check-sandbox`: applies the sidecar's sandbox for `config`, then tries what it must
/// forbid and reports each attempt; exit 0 when every one was refused.
fn check_sandbox(args: &RunArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let config = SidecarConfig::load(&args.config)?;
    let report = palisade_sidecar::sandbox::restrict(&config)?;
    let tries =
        palisade_sandbox::check(&report, &palisade_sidecar::sandbox::syscalls(&config), &[]);
    write_check_report(&report, &tries, out)
}

/// The JSON line of a sandbox check (`sidecar check-sandbox`, `policy sync --check-sandbox`);
/// exit 0 when every attempt came out as wanted.
pub(crate) fn write_check_report(
    report: &palisade_sandbox::Report,
    tries: &[palisade_sandbox::Try],
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let allowed = &report.allowed;
    let paths = |list: &[std::path::PathBuf]| {
        list.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    };
    let line = serde_json::json!({
        "landlock": report.landlock_status(),
        "seccomp": format!("{:?}", report.seccomp).to_lowercase(),
        "allowed": {
            "read": paths(&allowed.read),
            "write": paths(&allowed.write),
            "execute": paths(&allowed.execute),
            "bind": allowed.bind,
            "connect": allowed.connect,
        },
        "tried": tries.iter().map(|t| serde_json::json!({"try": t.what, "refused": t.refused, "as_wanted": t.as_wanted()})).collect::<Vec<_>>(),
    });
    writeln!(out, "{line}")?;
    Ok(crate::exit::answer(
        tries.iter().all(palisade_sandbox::Try::as_wanted),
    ))
}

/// One JSON line on stdout with every address bound (listeners may ask for port 0), for
/// supervisors and tests: `{"listening":{"admin":"127.0.0.1:15000","inbound":{"api":"..."},
/// "outbound":{...}}}`. Logs go to stderr, so stdout carries only this.
fn print_addresses(addresses: &palisade_sidecar::Addresses) {
    use std::io::Write;
    let named = |list: &[(String, std::net::SocketAddr)]| {
        list.iter()
            .map(|(name, addr)| (name.clone(), serde_json::Value::from(addr.to_string())))
            .collect::<serde_json::Map<_, _>>()
    };
    let line = serde_json::json!({
        "listening": {
            "admin": addresses.admin.to_string(),
            "inbound": named(&addresses.inbound),
            "outbound": named(&addresses.outbound),
            "transparent": {
                "inbound": addresses.transparent_inbound.map(|a| a.to_string()),
                "outbound": addresses.transparent_outbound.map(|a| a.to_string()),
            },
        }
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The sidecar's admin address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    pub admin: std::net::SocketAddr,
}

/// GET /ready with a 2-second budget; 200 is ready.
fn probe(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    let limit = std::time::Duration::from_secs(2);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&args.admin, limit)?;
        stream.set_read_timeout(Some(limit))?;
        stream.set_write_timeout(Some(limit))?;
        write!(
            stream,
            "GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.take(4096).read_to_string(&mut text)?;
        Ok(text)
    })();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200") => Ok(ExitCode::SUCCESS),
        Ok(text) => {
            eprintln!("not ready: {}", text.lines().last().unwrap_or(""));
            Ok(crate::exit::answer(false))
        }
        Err(error) => {
            eprintln!("cannot reach the admin server at {}: {error}", args.admin);
            Ok(crate::exit::answer(false))
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
