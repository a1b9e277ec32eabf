//! `palisade policy ...`: check, compile and explain a segmentation policy.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use palisade_policy::{decide, load_file, Endpoint, Protocol};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a policy, report every error with file:line:column, and lint what is suspicious.
    #[command(
        after_help = "Example:\n  palisade policy check examples/policy/shop.yaml --strict\n\n\
Exit code 1 on errors (and on warnings with --strict), 0 otherwise."
    )]
    Check(CheckArgs),
    /// Compile a host's nftables table (`inet palisade`).
    #[command(
        after_help = "Examples:\n  palisade policy compile examples/policy/shop.yaml --host node-a\n  \
palisade policy compile examples/policy/shop.yaml --all-hosts --format json"
    )]
    Compile(CompileArgs),
    /// Replace this host's `inet palisade` table with the compiled policy, in one transaction.
    #[command(
        after_help = "Examples:\n  palisade policy apply /etc/palisade/policy.yaml --host node-a --dry-run\n  \
palisade policy apply /etc/palisade/policy.yaml --host node-a\n\n\
Only the `inet palisade` table is read or written. A policy that does not load, or a transaction\n\
nft refuses, exits 1 and leaves the table in force unchanged."
    )]
    Apply(ApplyArgs),
    /// Keep this host's table equal to the policy: re-read, compile, detect drift, reapply.
    #[command(
        after_help = "Examples:\n  palisade policy sync --source /etc/palisade/policy.yaml --host node-a \\\n      --interval 30s\n  \
palisade policy sync --source https://config.internal/policy.yaml \\\n      --source-ca /etc/palisade/config-ca.pem --host node-a\n\n\
A file or directory source is also looked at every second and applied as soon as it changes.\n\
Stopping never removes the table. See docs/POLICY.md, \"Host sync\"."
    )]
    Sync(SyncArgs),
    /// Say whether the policy lets one endpoint reach another, and which rule decides.
    #[command(
        after_help = "Examples:\n  palisade policy explain examples/policy/shop.yaml \\\n      --from 10.10.1.5 --to 10.10.2.7 --port 443\n  \
palisade policy explain examples/policy/shop.yaml \\\n      --from spiffe://example.org/ns/shop/sa/frontend \\\n      --to spiffe://example.org/ns/shop/sa/payments --port 443"
    )]
    Explain(ExplainArgs),
    /// Print which pods reach which, for one port: the NetworkPolicies' truth table.
    #[command(
        after_help = "Example:\n  palisade policy matrix --kubernetes examples/kubernetes/netpol --port 80\n\n\
Rows are sources, columns destinations: `.` reachable, `X` not, `-` no address of the family."
    )]
    Matrix(MatrixArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Nft,
    Json,
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The Palisade policy (optional with --kubernetes).
    #[arg(value_name = "FILE", required_unless_present = "kubernetes")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// The host whose table to compile (see `hosts:` in the policy; a node name for
    /// --kubernetes).
    #[arg(long, value_name = "NAME", required_unless_present = "all_hosts")]
    pub host: Option<String>,
    /// Compile as if every segment lived on this host.
    #[arg(long, conflicts_with_all = ["host", "kubernetes"])]
    pub all_hosts: bool,
    #[arg(long, value_enum, default_value = "nft")]
    pub format: Format,
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

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The Palisade policy (optional with --kubernetes).
    #[arg(value_name = "FILE", required_unless_present = "kubernetes")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// This host's name in the policy's `hosts:` (a node name for --kubernetes).
    #[arg(long, value_name = "NAME")]
    pub host: String,
    /// Print what would change in the live table, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// A policy file, a directory holding policy.yaml (a ConfigMap mount), or an https:// URL.
    #[arg(
        long,
        value_name = "FILE|DIR|URL",
        required_unless_present = "kubernetes"
    )]
    pub source: Option<String>,
    /// The PEM bundle an https:// source's certificate must chain to (only these CAs are
    /// trusted, never the system's); its host name is checked too.
    #[arg(long, value_name = "FILE")]
    pub source_ca: Option<PathBuf>,
    /// A certificate (chain) to present to an https:// source that asks for one: the node's
    /// SVID. Re-read at each fetch, so a renewed one is used at once.
    #[arg(long, value_name = "FILE", requires = "source_key")]
    pub source_cert: Option<PathBuf>,
    /// The key of --source-cert.
    #[arg(long, value_name = "FILE", requires = "source_cert")]
    pub source_key: Option<PathBuf>,
    /// Accept a plain http:// source: anyone on the path could change the policy.
    #[arg(long)]
    pub insecure_source: bool,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// This host's name in the policy's `hosts:` (the node name for --kubernetes).
    #[arg(long, value_name = "NAME")]
    pub host: String,
    /// How often the source is fetched and the live table checked for drift.
    #[arg(long, value_name = "DUR", value_parser = super::parse_duration, default_value = "30s")]
    pub interval: std::time::Duration,
    /// Admin server (loopback): /live, /ready, /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15100")]
    pub admin: std::net::SocketAddr,
    /// Policy to enforce when none has loaded yet and no table exists (default: isolate
    /// workloads, drop everything forwarded that is not a reply).
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Cut established flows that a new policy denies, and those a repaired drift had let
    /// through (needs the conntrack tool).
    #[arg(long)]
    pub revoke_established: bool,
    /// A fetched or read policy larger than this many bytes is refused (the last good one stays).
    #[arg(long, value_name = "BYTES", default_value_t = palisade_sync::source::DEFAULT_MAX_POLICY_BYTES)]
    pub max_policy_bytes: u64,
    /// Landlock (files nft and the sources need, the admin port, the source's port) and the
    /// system call allow-list (it covers nft too).
    #[command(flatten)]
    pub sandbox: super::SandboxArgs,
    /// Apply the sandbox, try what it must forbid (and run nft, which it must allow), print one
    /// JSON line, and exit: 0 when every attempt came out as it should.
    #[arg(long)]
    pub check_sandbox: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The Palisade policy (optional with --kubernetes).
    #[arg(value_name = "FILE", required_unless_present = "kubernetes")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// Source: an IP address or a SPIFFE ID; with --kubernetes, a pod (`namespace/name`) or an
    /// IP address.
    #[arg(long, value_name = "ADDR|SPIFFE_ID|NS/POD")]
    pub from: String,
    /// Destination, as --from.
    #[arg(long, value_name = "ADDR|SPIFFE_ID|NS/POD")]
    pub to: String,
    /// Destination port (tcp, udp and sctp).
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
    #[arg(long, value_enum, default_value = "tcp")]
    pub protocol: ProtocolArg,
    /// With --kubernetes: which of a pod's addresses to use.
    #[arg(long, value_enum, default_value = "ipv4")]
    pub family: FamilyArg,
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
}

#[derive(Debug, Args)]
pub struct MatrixArgs {
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// Destination port.
    #[arg(long, value_name = "P")]
    pub port: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    pub protocol: ProtocolArg,
    /// Which of the pods' addresses.
    #[arg(long, value_enum, default_value = "ipv4")]
    pub family: FamilyArg,
}

pub fn run(cmd: PolicyCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check(args) => check(&args, out),
        PolicyCommand::Compile(args) => compile(&args, out),
        PolicyCommand::Explain(args) => explain(&args, out),
        PolicyCommand::Apply(args) => apply(&args, out),
        PolicyCommand::Sync(args) => sync(&args, out),
        PolicyCommand::Matrix(args) => matrix(&args, out),
    }
}

fn sync(args: &SyncArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    use palisade_sync::{source::Source, Sync, SyncConfig};
    if !args.admin.ip().is_loopback() {
        anyhow::bail!("the admin address {} is not a loopback address", args.admin);
    }
    let source_auth = palisade_sync::source::SourceAuth {
        insecure_http: args.insecure_source,
        ca: args.source_ca.clone(),
        client: args.source_cert.clone().zip(args.source_key.clone()),
    };
    let source = match &args.source {
        Some(s) => Some(Source::parse(s, &source_auth)?),
        None => None,
    };
    let config = SyncConfig {
        source,
        source_auth,
        kubernetes: args.kubernetes.kubernetes.clone(),
        max_policy_bytes: args.max_policy_bytes,
        host: args.host.clone(),
        interval: args.interval,
        baseline: args.baseline.clone(),
        revoke_established: args.revoke_established,
    };
    // Restricted before the runtime (and its blocking threads, and nft) exist.
    let sandbox = args.sandbox.config();
    let syscalls = palisade_sync::sandbox::syscalls(&config);
    let report = palisade_sandbox::restrict(
        &palisade_sync::sandbox::allowed(&config, args.admin),
        &syscalls,
        sandbox,
    )
    .context("cannot apply the sandbox")?;
    if args.check_sandbox {
        let programs = palisade_sync::sandbox::programs(&config);
        let must_run: Vec<&std::path::Path> = programs.iter().map(|p| p.as_path()).collect();
        let tries = palisade_sandbox::check(&report, &syscalls, &must_run);
        return super::sidecar::write_check_report(&report, &tries, out);
    }
    palisade_sandbox::log_report("policy agent", &report);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let admin = tokio::net::TcpListener::bind(args.admin)
            .await
            .with_context(|| format!("cannot listen on {} for the admin server", args.admin))?;
        tracing::info!(address = %admin.local_addr()?, "admin listening");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            super::sidecar::shutdown_signal().await;
            stop.cancel();
        });
        Sync::new(config).run(admin, shutdown).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn apply(args: &ApplyArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    use palisade_nft::apply;
    let ruleset = host_ruleset(args.file.as_deref(), &args.kubernetes, Some(&args.host))?;
    if args.dry_run {
        let live = apply::live_table()?;
        let changes = apply::diff(live.as_ref(), &ruleset);
        if changes.is_empty() {
            writeln!(
                out,
                "no change: the live table is generation {}",
                ruleset.generation
            )?;
        }
        for line in &changes {
            writeln!(out, "{line}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    apply::apply(&ruleset)?;
    tracing::info!(host = args.host, generation = ruleset.generation, "applied");
    writeln!(
        out,
        "applied generation {} to table inet {} for host {}",
        ruleset.generation,
        palisade_policy::TABLE,
        args.host
    )?;
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let policy = load_file(&args.file)?;
    let warnings = palisade_policy::lint(&policy);
    for w in &warnings {
        writeln!(
            out,
            "{}:{}:{}: warning: {}",
            args.file.display(),
            w.pos.line,
            w.pos.column,
            w.message
        )?;
    }
    writeln!(
        out,
        "{}: {} segments, {} rules, {} hosts; {} warning{}",
        args.file.display(),
        policy.segments.len(),
        policy.rules.len(),
        policy.hosts.len(),
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" }
    )?;
    Ok(if args.strict && !warnings.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn compile(args: &CompileArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let ruleset = host_ruleset(args.file.as_deref(), &args.kubernetes, args.host.as_deref())?;
    match args.format {
        Format::Nft => out.write_all(palisade_nft::nft_text(&ruleset).as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &palisade_nft::nft_json(&ruleset))
                .context("cannot write JSON")?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn protocol_of(arg: ProtocolArg) -> Protocol {
    match arg {
        ProtocolArg::Tcp => Protocol::Tcp,
        ProtocolArg::Udp => Protocol::Udp,
        ProtocolArg::Sctp => Protocol::Sctp,
        ProtocolArg::Icmp => Protocol::Icmp,
        ProtocolArg::Icmpv6 => Protocol::Icmpv6,
    }
}

/// NetworkPolicy ports are TCP, UDP or SCTP.
fn kubernetes_protocol(arg: ProtocolArg) -> anyhow::Result<palisade_netpol::Proto> {
    Ok(match arg {
        ProtocolArg::Tcp => palisade_netpol::Proto::Tcp,
        ProtocolArg::Udp => palisade_netpol::Proto::Udp,
        ProtocolArg::Sctp => palisade_netpol::Proto::Sctp,
        ProtocolArg::Icmp | ProtocolArg::Icmpv6 => {
            anyhow::bail!("NetworkPolicy governs TCP, UDP and SCTP only")
        }
    })
}

fn explain(args: &ExplainArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let protocol = protocol_of(args.protocol);
    if protocol.has_ports() && args.port.is_none() {
        anyhow::bail!("--port is needed for {}", protocol.name());
    }
    let Some(cluster) = args.kubernetes.load()? else {
        let file = args
            .file
            .as_deref()
            .expect("clap requires FILE without --kubernetes");
        let from: Endpoint = args.from.parse()?;
        let to: Endpoint = args.to.parse()?;
        let allowed = explain_policy(file, &from, &to, protocol, args.port, out)?;
        return Ok(verdict_code(allowed));
    };
    let proto = kubernetes_protocol(args.protocol)?;
    let port = args
        .port
        .expect("checked above: TCP, UDP and SCTP have ports");
    let end = |text: &str| -> anyhow::Result<palisade_netpol::End> {
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Ok(palisade_netpol::End::at(&cluster, ip));
        }
        let Some(i) = cluster.inventory.pod(text) else {
            anyhow::bail!("there is no pod `{text}` in the manifests (expected namespace/name or an IP address)");
        };
        let pod = &cluster.inventory.pods[i];
        let family = args.family.family();
        let Some(ip) = pod
            .ips
            .iter()
            .copied()
            .find(|ip| palisade_policy::addrs::family_of(*ip) == family)
        else {
            anyhow::bail!(
                "pod `{text}` has no {} address",
                match family {
                    palisade_policy::addrs::Family::V4 => "IPv4",
                    palisade_policy::addrs::Family::V6 => "IPv6",
                }
            );
        };
        Ok(palisade_netpol::End { ip, pod: Some(i) })
    };
    let (from, to) = (end(&args.from)?, end(&args.to)?);
    let verdict = palisade_netpol::decide(&cluster, &from, &to, proto, port);
    write!(
        out,
        "{}",
        palisade_netpol::Explained {
            cluster: &cluster,
            from,
            to,
            protocol: proto,
            port,
            verdict: &verdict,
        }
    )?;
    let mut allowed = verdict.allowed;
    if let Some(file) = &args.file {
        write!(out, "and the Palisade policy: ")?;
        let (a, b) = (Endpoint::Address(from.ip), Endpoint::Address(to.ip));
        allowed &= explain_policy(file, &a, &b, protocol, args.port, out)?;
        writeln!(
            out,
            "both layers: {}",
            if allowed { "allowed" } else { "denied" }
        )?;
    }
    Ok(verdict_code(allowed))
}

fn verdict_code(allowed: bool) -> ExitCode {
    crate::exit::answer(allowed)
}

/// The Palisade policy's answer, printed; whether it allows.
fn explain_policy(
    file: &std::path::Path,
    from: &Endpoint,
    to: &Endpoint,
    protocol: Protocol,
    port: Option<u16>,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let policy = load_file(file)?;
    let decision = decide(&policy, from, to, protocol, port);
    let port = port.map(|p| format!(" port {p}")).unwrap_or_default();
    writeln!(
        out,
        "{} ({}) -> {} ({}) {}{port}: {decision}",
        from,
        decision.from_segments.join(", "),
        to,
        decision.to_segments.join(", "),
        protocol.name(),
    )?;
    Ok(decision.allowed)
}

fn matrix(args: &MatrixArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let Some(cluster) = args.kubernetes.load()? else {
        anyhow::bail!("--kubernetes is needed: the matrix is over pods");
    };
    let proto = kubernetes_protocol(args.protocol)?;
    let table = palisade_netpol::matrix(&cluster, proto, args.port, args.family.family());
    write!(out, "{table}")?;
    Ok(ExitCode::SUCCESS)
}
