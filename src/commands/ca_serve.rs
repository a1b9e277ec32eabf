//! `palisade ca serve`: the CA service until SIGTERM or SIGINT.

use std::process::ExitCode;

use palisade_ca::{CaDir, SpiffeId};
use palisade_ca_server::service_account::ServiceAccountConfig;
use palisade_ca_server::{AuditSink, CaServer, CaServerConfig, Limits, ServerIdentity};

use super::ca::ServeArgs;
use super::sidecar::shutdown_signal;

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.admin_listen.ip().is_loopback(),
        "--admin-listen must be a loopback address (the admin server has no authentication), not {}",
        args.admin_listen
    );
    let (ca, _) = CaDir::new(&args.dir).load()?;
    let server_id = match args.server_id {
        Some(id) => id,
        None => SpiffeId::parse(&format!("{}/palisade/ca", ca.trust_domain().id()))?,
    };
    let service_account = match (args.jwks, args.jwt_issuer) {
        (Some(jwks_path), Some(issuer)) => Some(ServiceAccountConfig {
            jwks_path,
            issuer,
            audience: args.jwt_audience,
        }),
        _ => None,
    };
    let config = CaServerConfig {
        tokens_dir: args.tokens_dir.unwrap_or_else(|| args.dir.join("tokens")),
        dir: args.dir,
        listen: args.listen,
        admin_listen: args.admin_listen,
        server: ServerIdentity {
            id: server_id,
            dns_names: args.dns_names,
            // Its own certificate lives at least an hour: with very short leaves it would
            // otherwise be re-issued at every reload of the directory.
            ttl: args.leaf_ttl.max(std::time::Duration::from_secs(3600)),
        },
        leaf_ttl: args.leaf_ttl,
        service_account,
        audit: match args.audit_log.as_str() {
            "-" => AuditSink::Stdout,
            path => AuditSink::File(path.into()),
        },
        limits: Limits {
            rate_per_second: args.rate_limit,
            burst: args.rate_burst,
            max_signing: args.max_signing,
            max_connections: args.max_connections,
            reserved_connections: args.reserved_connections,
            max_connections_per_client: args.max_connections_per_client,
            handshake_timeout: args.handshake_timeout,
            request_timeout: args.request_timeout,
            refusals_per_connection: args.refusals_per_connection,
            audit_refusals: palisade_ca_server::RefusalBudget {
                window: args.audit_window,
                per_client: args.audit_refusals_per_client,
                ..Default::default()
            },
            ..Limits::default()
        },
        reload_interval: args.reload_interval,
    };
    // Counted before the sandbox closes the cgroup files (see `sidecar::available_parallelism`).
    let workers = super::sidecar::available_parallelism();
    sandbox(&config, args.sandbox.config())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = CaServer::bind(config).await.inspect_err(|error| {
            tracing::error!(%error, "cannot start the CA service");
        })?;
        let (api, admin) = server.addresses();
        // Stdout carries this line, then the audit lines; logs go to stderr.
        println!(
            "{}",
            serde_json::json!({"listening": {"api": api.to_string(), "admin": admin.to_string()}})
        );
        tracing::info!(%api, %admin, "CA service listening");
        server.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Restricts the CA service, before its runtime starts, to its state: reading and writing beneath
/// its CA directory and token store (tokens are spent by renaming them), appending to its audit
/// log, reading its JWKS file; binding its two ports; connecting nowhere; the system calls of a
/// service that writes state (best effort for Landlock: one log line for what the kernel lacks).
fn sandbox(config: &CaServerConfig, mode: palisade_sandbox::SandboxConfig) -> anyhow::Result<()> {
    use palisade_sandbox::{directory_of, Allowed, Syscalls};
    let mut write = vec![directory_of(&config.dir), directory_of(&config.tokens_dir)];
    if let AuditSink::File(path) = &config.audit {
        write.push(directory_of(path));
    }
    let read = config
        .service_account
        .iter()
        .map(|sa| directory_of(&sa.jwks_path))
        .collect();
    let allowed = Allowed {
        read,
        write,
        bind: [config.listen.port(), config.admin_listen.port()].into(),
        connect: Some(Default::default()),
        ..Allowed::default()
    };
    let syscalls = Syscalls::service().state();
    let report = palisade_sandbox::restrict(&allowed, &syscalls, mode)?;
    palisade_sandbox::log_report("CA service", &report);
    Ok(())
}
