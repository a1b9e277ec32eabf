//! `palisade sidecar run`: the sidecar until SIGTERM, SIGINT or POST /shutdown.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use palisade_sidecar::{Sidecar, SidecarConfig};

use crate::commands::service::{available_parallelism, shutdown_signal};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sidecar's YAML configuration.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The read-only listener (/live, /ready, /metrics and the app's probes), replacing the
    /// file's metrics.listen: inject gives each pod's sidecar its own.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    // Fatal errors are said once, by main, in the service's log.
    // The app's probes come from the environment (inject writes them into the pod), the rest
    // from the file every pod shares.
    let app_probes = std::env::var(palisade_sidecar::config::APP_PROBES_ENV).ok();
    let config = SidecarConfig::load(&args.config)
        .and_then(|c| c.with_pod_settings(&args.config, args.metrics, app_probes.as_deref()))
        .context("invalid sidecar configuration")?;
    if !config.app_probes.is_empty() {
        tracing::info!(
            probes = config.app_probes.len(),
            "running the app's kubelet probes on the metrics listener"
        );
    }
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

/// Restricts this process to what `config` needs (sidecar/src/sandbox.rs), before any other
/// thread exists.
fn sandbox(config: &SidecarConfig) -> anyhow::Result<()> {
    let report = palisade_sidecar::sandbox::restrict(config).context("cannot apply the sandbox")?;
    palisade_sandbox::log_report("sidecar", &report);
    Ok(())
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
            "metrics": addresses.metrics.map(|a| a.to_string()),
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
