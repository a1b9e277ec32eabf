//! `palisade sidecar ...`: one workload's mTLS sidecar (`run`), its sandbox tried (`check-sandbox`),
//! its readiness for exec probes (`probe`), and the pod's redirect table (`redirect`).

mod check_sandbox;
mod probe;
#[cfg(feature = "tools")]
mod redirect;
mod run;

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SidecarCommand {
    /// Run a sidecar: mTLS in and out for one workload, configured by a YAML file.
    #[command(
        after_help = "Example:\n  palisade sidecar run --config /etc/palisade/sidecar.yaml --log-format json\n\n\
The configuration is described in docs/SIDECAR.md; examples/sidecar/ holds working ones.\n\
SIGTERM (or POST /shutdown on the admin server) stops accepting, lets open connections finish\n\
within limits.drain_grace, then exits 0."
    )]
    Run(run::RunArgs),
    /// Apply the sandbox `run` would apply for a configuration, then try what it must forbid
    /// (reading a file outside its paths, writing, binding and connecting other ports, sockets
    /// Landlock cannot see, running a program), and say what was allowed and refused.
    /// Exit 0 when every attempt came out as the configuration says, 3 when one did not.
    #[command(
        after_help = "Example (as the user and in the pod the sidecar runs in):\n  \
palisade sidecar check-sandbox --config /etc/palisade/sidecar.yaml\n  \
palisade sidecar check-sandbox --config /etc/palisade/sidecar.yaml -o json"
    )]
    CheckSandbox(check_sandbox::CheckSandboxArgs),
    /// Exit 0 when the sidecar's admin server says /ready, 3 otherwise: for exec probes, since a
    /// kubelet cannot reach a loopback admin server by HTTP.
    #[command(
        after_help = "Example (a startupProbe or readinessProbe's exec command):\n  \
palisade sidecar probe --admin 127.0.0.1:15000"
    )]
    Probe(probe::ProbeArgs),
    /// Inside a pod's network namespace: send the app's TCP through the sidecar (nftables table
    /// inet palisade_redirect), or take that away again (--remove).
    #[cfg(feature = "tools")]
    #[command(after_help = "Example (an init container with NET_ADMIN):\n  \
palisade sidecar redirect --inbound-port 15006 --outbound-port 15001 \\\n    \
--proxy-uid 1337 --exclude-inbound-ports 15020,15021\n\n\
Connections to the pod go to the inbound port, the app's outbound connections to the outbound\n\
port; the proxy's own UID, loopback and the excluded ports and networks are left alone. One\n\
transaction, read back; running it again replaces the table. Exit 0 when the table is in place.")]
    Redirect(redirect::RedirectArgs),
}

pub fn run(cmd: SidecarCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        SidecarCommand::Run(args) => run::run(&args),
        SidecarCommand::Probe(args) => probe::probe(&args),
        SidecarCommand::CheckSandbox(args) => check_sandbox::check_sandbox(&args, out),
        #[cfg(feature = "tools")]
        SidecarCommand::Redirect(args) => redirect::run(&args, out),
    }
}
