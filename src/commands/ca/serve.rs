//! `palisade ca serve`: the CA service until SIGTERM or SIGINT (palisade_ca_server does the
//! work; its `sandbox` module says what the service may touch).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use palisade_ca::CaDir;
use palisade_ca_server::service_account::{JwksSource, JwksUrl, ServiceAccountConfig};
use palisade_ca_server::{AuditSink, CaServer, CaServerConfig, Limits, ServerIdentity};
use palisade_identity::SpiffeId;

use crate::commands::parse_duration;
use crate::commands::service::{available_parallelism, shutdown_signal, write_check_report};
use crate::commands::Output;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The CA directory (an issuer from `ca init-issuer`, or a root).
    #[arg(long = "ca-dir", alias = "dir", value_name = "DIR")]
    pub dir: PathBuf,
    /// Address of the HTTPS service.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// Address of the admin server (/live, /ready, /metrics); loopback.
    #[arg(
        long = "admin",
        alias = "admin-listen",
        value_name = "ADDR",
        default_value = "127.0.0.1:9092"
    )]
    pub admin: std::net::SocketAddr,
    /// A read-only listener for scrapers and the kubelet, on any address: /live, /ready,
    /// /metrics only (the admin server stays on loopback).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// The service's own SPIFFE ID, which clients pin (default spiffe://<trust domain>/palisade/ca).
    #[arg(long, value_name = "ID")]
    pub server_id: Option<SpiffeId>,
    /// DNS name for the service's certificate (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// Lifetime of the certificates issued.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "1h")]
    pub leaf_ttl: Duration,
    /// The join-token store (default DIR/tokens).
    #[arg(long, value_name = "DIR")]
    pub tokens_dir: Option<PathBuf>,
    /// JWKS file with the Kubernetes service-account signing keys (the API server's
    /// /openid/v1/jwks); turns on service-account tokens.
    #[arg(
        long,
        value_name = "FILE",
        requires = "jwt_issuer",
        conflicts_with = "jwks_url"
    )]
    pub jwks: Option<PathBuf>,
    /// The JWKS fetched over HTTPS instead of a file: the API server's
    /// (https://kubernetes.default.svc/openid/v1/jwks) or an OIDC discovery document's jwks_uri;
    /// fetched every 5 minutes, and when a token names an unknown key (at most every 5 s).
    #[arg(long, value_name = "URL", requires = "jwt_issuer")]
    pub jwks_url: Option<String>,
    /// The roots the JWKS server's certificate must chain to.
    #[arg(
        long,
        value_name = "FILE",
        requires = "jwks_url",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    pub jwks_ca: PathBuf,
    /// A bearer token for the JWKS server, read at each fetch (in a pod:
    /// /var/run/secrets/kubernetes.io/serviceaccount/token).
    #[arg(long, value_name = "FILE", requires = "jwks_url")]
    pub jwks_token: Option<PathBuf>,
    /// The `iss` service-account tokens must carry.
    #[arg(long, value_name = "URL")]
    pub jwt_issuer: Option<String>,
    /// The audience service-account tokens must be made for.
    #[arg(long, value_name = "AUD", default_value = "palisade-ca")]
    pub jwt_audience: String,
    /// Where audit lines go: - for stdout, or a file (appended, 0600).
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub audit_log: String,
    /// Sign and renew requests per second per client address (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    pub rate_limit: f64,
    /// Requests a client may make in a burst before --rate-limit applies.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub rate_burst: u32,
    /// An IPv6 /48 (a site) is limited too, at N times --rate-limit and --rate-burst for all of
    /// its /64s together: a request must pass both buckets.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub site_rate_multiple: u32,
    /// Signings in progress at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_signing: usize,
    /// Connections open at once, both classes together.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,
    /// Of --max-connections, those kept for connections whose client certificate verified to the
    /// bundle (renewals): a flood of unauthenticated connections cannot take them.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub reserved_connections: usize,
    /// Connections one client (an IPv4 address, an IPv6 /64) may hold in each class; a new one
    /// beyond closes its oldest idle one, or is refused when none is idle.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_connections_per_client: usize,
    /// Of --reserved-connections, those one SPIFFE ID may hold; a new one beyond closes its
    /// oldest idle one, or stays in the general class when none is idle.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub reserved_connections_per_id: usize,
    /// Time for a connection's TLS handshake.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub handshake_timeout: Duration,
    /// Time for a whole request, head and body together, on a connection without a verified
    /// client certificate (from the handshake, and from the previous answer); renewal connections
    /// get 30 s for a head and 10 s for a body.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub request_timeout: Duration,
    /// Requests refused on one connection before it is closed.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub refusals_per_connection: u32,
    /// Refusal lines per client per --audit-window in the audit trail; the rest are counted in
    /// one summary line per client and code when the window ends.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub audit_refusals_per_client: u32,
    /// The window of --audit-refusals-per-client (1,000 refusal lines per window in all).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
    pub audit_window: Duration,
    /// How often the CA directory and the JWKS are read again.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub reload_interval: Duration,
    /// How the service restricts itself (Landlock: its state; the system call allow-list).
    #[command(flatten)]
    pub sandbox: crate::commands::SandboxArgs,
    /// Apply the sandbox (making the token directories it needs), try what it must forbid,
    /// print one JSON line, and exit: 0 when every attempt came out as it should.
    #[arg(long)]
    pub check_sandbox: bool,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.admin.ip().is_loopback(),
        "--admin must be a loopback address (the admin server has no authentication), not {}",
        args.admin
    );
    let (ca, _) = CaDir::new(&args.dir).load()?;
    let server_id = match args.server_id {
        Some(id) => id,
        None => SpiffeId::parse(&format!("{}/palisade/ca", ca.trust_domain().id()))?,
    };
    let jwks = match (args.jwks, args.jwks_url) {
        (Some(path), _) => Some(JwksSource::File(path)),
        (None, Some(url)) => Some(JwksSource::Url(JwksUrl {
            url,
            roots: args.jwks_ca,
            token: args.jwks_token,
        })),
        (None, None) => None,
    };
    anyhow::ensure!(
        args.jwt_issuer.is_none() || jwks.is_some(),
        "--jwt-issuer needs --jwks FILE or --jwks-url URL (the keys its tokens are signed with)"
    );
    let service_account = match (jwks, args.jwt_issuer) {
        (Some(jwks), Some(issuer)) => Some(ServiceAccountConfig {
            jwks,
            issuer,
            audience: args.jwt_audience,
        }),
        _ => None,
    };
    let config = CaServerConfig {
        tokens_dir: args.tokens_dir.unwrap_or_else(|| args.dir.join("tokens")),
        dir: args.dir,
        listen: args.listen,
        admin_listen: args.admin,
        metrics_listen: args.metrics,
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
            site_rate_multiple: args.site_rate_multiple,
            max_signing: args.max_signing,
            max_connections: args.max_connections,
            reserved_connections: args.reserved_connections,
            max_connections_per_client: args.max_connections_per_client,
            reserved_connections_per_id: args.reserved_connections_per_id,
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
    let workers = available_parallelism();
    // Restricted before the runtime (and its threads) exist.
    let syscalls = palisade_ca_server::sandbox::syscalls(&config);
    let allowed = palisade_ca_server::sandbox::allowed(&config)?;
    let report = palisade_sandbox::restrict(&allowed, &syscalls, args.sandbox.config())
        .context("cannot apply the sandbox")?;
    if args.check_sandbox {
        let tries = palisade_sandbox::check(&report, &syscalls, &[]);
        return write_check_report(&report, &tries, Output::Json, &mut std::io::stdout());
    }
    palisade_sandbox::log_report("CA service", &report);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Fatal errors are said once, by main, in the service's log.
        let server = CaServer::bind(config)
            .await
            .context("cannot start the CA service")?;
        let (api, admin) = server.addresses();
        let metrics = server.metrics_address();
        // Stdout carries this line, then the audit lines; logs go to stderr.
        println!(
            "{}",
            serde_json::json!({"listening": {"api": api.to_string(), "admin": admin.to_string(),
                "metrics": metrics.map(|m| m.to_string())}})
        );
        if let Some(metrics) = metrics {
            tracing::info!(address = %metrics, "metrics listening (read-only)");
        }
        tracing::info!(%api, %admin, "CA service listening");
        server.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
