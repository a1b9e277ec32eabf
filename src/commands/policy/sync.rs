//! `palisade policy sync`: keep this host's table equal to the policy (palisade_sync does the
//! work; its `sandbox` module says what the agent may touch).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::KubernetesArgs;
use crate::commands::service::{shutdown_signal, write_check_report};
use crate::commands::{Output, SandboxArgs};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// A policy file, a directory holding policy.yaml (a ConfigMap mount), or an https:// URL
    /// (optional with --kubernetes).
    #[arg(value_name = "SOURCE", required_unless_present_any = ["kubernetes", "old_source"])]
    pub source: Option<String>,
    /// The old spelling of SOURCE (docs/CLI.md).
    #[arg(
        long = "source",
        value_name = "SOURCE",
        hide = true,
        conflicts_with = "source"
    )]
    pub old_source: Option<String>,
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
    #[arg(long, value_name = "DUR", value_parser = crate::commands::parse_duration, default_value = "30s")]
    pub interval: std::time::Duration,
    /// Admin server (loopback): /live, /ready, /metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15100")]
    pub admin: std::net::SocketAddr,
    /// A read-only listener for scrapers, on any address: /live, /ready, /metrics only.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
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
    pub sandbox: SandboxArgs,
    /// Apply the sandbox, try what it must forbid (and run nft, which it must allow), print one
    /// JSON line, and exit: 0 when every attempt came out as it should.
    #[arg(long)]
    pub check_sandbox: bool,
}

pub fn sync(args: &SyncArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    use palisade_sync::{source::Source, Sync, SyncConfig};
    if !args.admin.ip().is_loopback() {
        anyhow::bail!("the admin address {} is not a loopback address", args.admin);
    }
    let source_auth = palisade_sync::source::SourceAuth {
        insecure_http: args.insecure_source,
        ca: args.source_ca.clone(),
        client: args.source_cert.clone().zip(args.source_key.clone()),
    };
    let source = match args.source.as_ref().or(args.old_source.as_ref()) {
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
    let mut allowed = palisade_sync::sandbox::allowed(&config, args.admin);
    allowed.bind.extend(args.metrics.map(|m| m.port()));
    let report = palisade_sandbox::restrict(&allowed, &syscalls, sandbox)
        .context("cannot apply the sandbox")?;
    if args.check_sandbox {
        let programs = palisade_sync::sandbox::programs(&config);
        let must_run: Vec<&std::path::Path> = programs.iter().map(|p| p.as_path()).collect();
        let tries = palisade_sandbox::check(&report, &syscalls, &must_run);
        return write_check_report(&report, &tries, Output::Json, out);
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
            shutdown_signal().await;
            stop.cancel();
        });
        let sync = Sync::new(config);
        if let Some(address) = args.metrics {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for the metrics listener"))?;
            tracing::info!(address = %listener.local_addr()?, "metrics listening (read-only)");
            tokio::spawn(palisade_admin::serve_read_only(
                listener,
                sync.clone(),
                shutdown.clone(),
            ));
        }
        sync.run(admin, shutdown).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
