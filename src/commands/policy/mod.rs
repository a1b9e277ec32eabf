//! `palisade policy ...`: check, compile, apply, sync and explain a segmentation policy, and the
//! NetworkPolicies' truth table. One file per command; what several share (the Kubernetes
//! input, the host's table, protocols and address families) is here.

mod apply;
mod check;
mod compile;
mod explain;
mod matrix;
mod sync;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use palisade_policy::{load_file, Protocol};

pub use check::CheckArgs;
pub use compile::{CompileArgs, Format};
pub use explain::ExplainArgs;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a policy (and NetworkPolicies), report every error with file:line:column, and lint
    /// what is suspicious.
    #[command(
        after_help = "Examples:\n  palisade policy check examples/policy/shop.yaml --strict\n  \
palisade policy check --kubernetes examples/kubernetes/netpol -o json\n\n\
Exit code 1 on errors (and on warnings with --strict), 0 otherwise."
    )]
    Check(CheckArgs),
    /// Compile a host's nftables table (`inet palisade`).
    #[command(
        after_help = "Examples:\n  palisade policy compile examples/policy/shop.yaml --host node-a\n  \
palisade policy compile examples/policy/shop.yaml --all-hosts -o json"
    )]
    Compile(CompileArgs),
    /// Replace this host's `inet palisade` table with the compiled policy, in one transaction.
    #[command(
        after_help = "Examples:\n  palisade policy apply /etc/palisade/policy.yaml --host node-a --dry-run\n  \
palisade policy apply /etc/palisade/policy.yaml --host node-a\n\n\
Only the `inet palisade` table is read or written. A policy that does not load, or a transaction\n\
nft refuses, exits 1 and leaves the table in force unchanged."
    )]
    Apply(apply::ApplyArgs),
    /// Keep this host's table equal to the policy: re-read, compile, detect drift, reapply.
    #[command(
        after_help = "Examples:\n  palisade policy sync /etc/palisade/policy.yaml --host node-a \\\n      --interval 30s\n  \
palisade policy sync https://config.internal/policy.yaml \\\n      --source-ca /etc/palisade/config-ca.pem --host node-a\n\n\
A file or directory source is also looked at every second and applied as soon as it changes.\n\
Stopping never removes the table. See docs/POLICY.md, \"Host sync\"."
    )]
    Sync(sync::SyncArgs),
    /// Say whether the policy lets one endpoint reach another, and which rule decides.
    #[command(
        after_help = "Examples:\n  palisade policy explain examples/policy/shop.yaml \\\n      --from 10.10.1.5 --to 10.10.2.7 --port 443\n  \
palisade policy explain examples/policy/shop.yaml \\\n      --from spiffe://example.org/ns/shop/sa/frontend \\\n      --to spiffe://example.org/ns/shop/sa/payments --port 443 -o json\n\n\
Exit code 0 when allowed, 3 when denied."
    )]
    Explain(ExplainArgs),
    /// Print which pods reach which, for one port: the NetworkPolicies' truth table.
    #[command(
        after_help = "Examples:\n  palisade policy matrix --kubernetes examples/kubernetes/netpol --port 80\n  \
palisade policy matrix --kubernetes examples/kubernetes/netpol --port 80 \\\n      -o json\n\n\
Rows are sources, columns destinations: `.` reachable, `X` not, `-` no address of the family."
    )]
    Matrix(matrix::MatrixArgs),
}

pub fn run(cmd: PolicyCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check(args) => check::check(&args, out),
        PolicyCommand::Compile(args) => compile::compile(&args, out),
        PolicyCommand::Explain(args) => explain::explain(&args, out),
        PolicyCommand::Apply(args) => apply::apply(&args, out),
        PolicyCommand::Sync(args) => sync::sync(&args, out),
        PolicyCommand::Matrix(args) => matrix::matrix(&args, out),
    }
}

/// Kubernetes NetworkPolicy input (docs/KUBERNETES.md).
#[derive(Debug, Args, Default)]
pub struct KubernetesArgs {
    /// Manifests of NetworkPolicies, Pods and Namespaces (files, or directories of *.yaml,
    /// *.yml, *.json; `kubectl get pods,namespaces,networkpolicies -A -o yaml` output works).
    /// Repeatable. With a policy FILE too, a connection must pass both.
    #[arg(long = "kubernetes", value_name = "PATH")]
    pub kubernetes: Vec<PathBuf>,
}

impl KubernetesArgs {
    /// The objects, if any path was given. Warnings (a CIDR read as its network) go to stderr,
    /// located; a refused NetworkPolicy fails the command, with every problem located (`policy
    /// sync` enforces the rest instead: a one-shot command has no last good table to keep).
    fn load(&self) -> anyhow::Result<Option<palisade_netpol::Cluster>> {
        if self.kubernetes.is_empty() {
            return Ok(None);
        }
        let loaded = palisade_netpol::load_partial(&self.kubernetes)?;
        for (at, warning) in &loaded.warnings {
            eprintln!("{at}: warning: {warning}");
        }
        if !loaded.refused.is_empty() {
            let errors = palisade_netpol::LoadErrors {
                errors: loaded
                    .refused
                    .into_iter()
                    .flat_map(|refused| refused.errors)
                    .collect(),
            };
            return Err(errors.into());
        }
        Ok(Some(loaded.cluster))
    }
}

/// The table for `host`: the Palisade policy's (or an open one), with the node's share of the
/// Kubernetes objects added.
fn host_ruleset(
    file: Option<&std::path::Path>,
    kubernetes: &KubernetesArgs,
    host: Option<&str>,
) -> anyhow::Result<palisade_policy::Ruleset> {
    let base = match file {
        Some(file) => palisade_policy::compile(&load_file(file)?, host)?,
        None => palisade_policy::Ruleset::open(host),
    };
    Ok(match (kubernetes.load()?, host) {
        (Some(cluster), Some(host)) => palisade_netpol::compile(&cluster, host, base),
        (Some(_), None) => anyhow::bail!("--kubernetes needs --host (a node name)"),
        (None, _) => base,
    })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
}

impl ProtocolArg {
    fn protocol(self) -> Protocol {
        match self {
            ProtocolArg::Tcp => Protocol::Tcp,
            ProtocolArg::Udp => Protocol::Udp,
            ProtocolArg::Sctp => Protocol::Sctp,
            ProtocolArg::Icmp => Protocol::Icmp,
            ProtocolArg::Icmpv6 => Protocol::Icmpv6,
        }
    }

    /// NetworkPolicy ports are TCP, UDP or SCTP.
    fn kubernetes(self) -> anyhow::Result<palisade_netpol::Proto> {
        Ok(match self {
            ProtocolArg::Tcp => palisade_netpol::Proto::Tcp,
            ProtocolArg::Udp => palisade_netpol::Proto::Udp,
            ProtocolArg::Sctp => palisade_netpol::Proto::Sctp,
            ProtocolArg::Icmp | ProtocolArg::Icmpv6 => {
                anyhow::bail!("NetworkPolicy governs TCP, UDP and SCTP only")
            }
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FamilyArg {
    Ipv4,
    Ipv6,
}

impl FamilyArg {
    fn family(self) -> palisade_policy::addrs::Family {
        match self {
            FamilyArg::Ipv4 => palisade_policy::addrs::Family::V4,
            FamilyArg::Ipv6 => palisade_policy::addrs::Family::V6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FamilyArg::Ipv4 => "ipv4",
            FamilyArg::Ipv6 => "ipv6",
        }
    }
}
