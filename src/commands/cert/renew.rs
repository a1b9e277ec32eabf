//! `palisade cert renew`: a new SVID over mTLS with the current one, once, or (`--watch`) for as
//! long as it runs, with an admin server and a sandbox.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Args;
use palisade_identity::SvidDir;
use palisade_identity_client::{
    unix, Bootstrap, RenewalStatus, RenewalTiming, Renewer, SvidDirSink,
};

use super::client::{client, exit, load_dir, read_bundle, report, write, CaArgs, Failure};
use crate::commands::service::shutdown_signal;
use crate::commands::{OutputArgs, SandboxArgs};
use crate::exit::LOCAL as EXIT_LOCAL;

#[derive(Debug, Args)]
pub struct RenewArgs {
    #[command(flatten)]
    pub ca: CaArgs,
    /// The directory with key.pem, cert.pem and bundle.pem (from `cert request` or `cert issue`).
    #[arg(long = "svid-dir", alias = "dir", value_name = "DIR")]
    pub svid_dir: PathBuf,
    /// Keep renewing at half the lifetime until stopped, with an admin server.
    #[arg(long)]
    pub watch: bool,
    /// Admin server address with --watch (/live, /ready, /metrics).
    #[arg(
        long = "admin",
        alias = "admin-listen",
        value_name = "ADDR",
        default_value = "127.0.0.1:9093",
        requires = "watch"
    )]
    pub admin: std::net::SocketAddr,
    /// With --watch: a read-only listener for scrapers, on any address (/live, /ready,
    /// /metrics only).
    #[arg(long, value_name = "ADDR", requires = "watch")]
    pub metrics: Option<std::net::SocketAddr>,
    /// With --watch: a service-account token file to start again with if the certificate
    /// expires (after a long outage).
    #[arg(long, value_name = "FILE", requires = "watch")]
    pub service_account_token: Option<PathBuf>,
    /// With --watch: how it restricts itself (Landlock: its directory and the CA's port; the
    /// system call allow-list).
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Without --watch: text, or json (as `cert request -o json`).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `cert renew` without `--watch`: one renewal over mTLS with the directory's certificate, the
/// new key, certificate and bundle written back. The demo runs it too.
pub async fn renew_once(
    ca: &CaArgs,
    dir: &SvidDir,
    output: OutputArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let current = load_dir(dir)?;
    let client = client(ca, &current.bundle)?;
    let renewer = Renewer::new(client, None, None, RenewalTiming::default());
    let svid = renewer.obtain(Some(&current)).await?;
    write(dir, &svid)?;
    report(out, "renewed", &svid, dir, output)
}

/// Restricts `cert renew --watch` before its runtime starts, to what
/// palisade_identity_client::sandbox allows a renewer.
fn sandbox_watch(args: &RenewArgs) -> Result<(), Failure> {
    use palisade_identity_client::sandbox;
    let mut allowed = sandbox::allowed(
        &args.svid_dir,
        args.admin.port(),
        &args.ca.ca,
        args.service_account_token.as_deref(),
    );
    allowed.bind.extend(args.metrics.map(|m| m.port()));
    let report = palisade_sandbox::restrict(
        &allowed,
        &sandbox::syscalls(&args.ca.ca),
        args.sandbox.config(),
    )
    .map_err(|e| Failure(EXIT_LOCAL, format!("cannot apply the sandbox: {e}")))?;
    palisade_sandbox::log_report("certificate renewer", &report);
    Ok(())
}

pub fn renew(args: &RenewArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    exit(
        (|| {
            let dir = SvidDir::new(&args.svid_dir);
            if args.watch {
                // Before the runtime exists, so that its threads are restricted too.
                sandbox_watch(args)?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))?;
            if !args.watch {
                runtime.block_on(renew_once(&args.ca, &dir, args.output, out))?;
                return Ok(ExitCode::SUCCESS);
            }
            if !args.admin.ip().is_loopback() {
                return Err(Failure(
                    EXIT_LOCAL,
                    format!(
                        "--admin must be a loopback address (the admin server has no authentication), not {}",
                        args.admin
                    ),
                ));
            }
            // Watching: a directory that does not load (expired, say) is not the end if a
            // service-account token can start again.
            let current = match load_dir(&dir) {
                Ok(svid) => Some(Arc::new(svid)),
                Err(_) if args.service_account_token.is_some() => None,
                Err(failure) => return Err(failure),
            };
            let bundle = match &current {
                Some(svid) => svid.bundle.clone(),
                None => read_bundle(&dir.bundle_path())?,
            };
            let client = client(&args.ca, &bundle)?;
            let bootstrap = args
                .service_account_token
                .clone()
                .map(Bootstrap::ServiceAccountTokenFile);
            let renewer = Renewer::new(client, bootstrap, None, RenewalTiming::default());
            let status = renewer.status();
            runtime.block_on(async move {
                let stop = tokio_util::sync::CancellationToken::new();
                let admin = tokio::net::TcpListener::bind(args.admin)
                    .await
                    .map_err(|e| {
                        Failure(EXIT_LOCAL, format!("cannot listen on {}: {e}", args.admin))
                    })?;
                tracing::info!(admin = %args.admin, dir = %args.svid_dir.display(), "renewing");
                let service = Arc::new(WatchAdmin(status));
                if let Some(address) = args.metrics {
                    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                        Failure(EXIT_LOCAL, format!("cannot listen on {address}: {e}"))
                    })?;
                    tracing::info!(%address, "metrics listening (read-only)");
                    tokio::spawn(palisade_admin::serve_read_only(
                        listener,
                        service.clone(),
                        stop.clone(),
                    ));
                }
                tokio::spawn(palisade_admin::serve(admin, service, stop.clone()));
                let renewing =
                    tokio::spawn(renewer.run(Arc::new(SvidDirSink(dir)), current, stop.clone()));
                shutdown_signal().await;
                stop.cancel();
                let _ = renewing.await;
                Ok(ExitCode::SUCCESS)
            })
        })(),
        args.watch,
    )
}

/// What `cert renew --watch` tells its admin server.
struct WatchAdmin(Arc<RenewalStatus>);

impl palisade_admin::AdminService for WatchAdmin {
    fn ready(&self) -> Result<(), palisade_admin::NotReady> {
        let expires = self.0.expires_at.load(Ordering::Relaxed);
        if expires > unix(std::time::SystemTime::now()) {
            Ok(())
        } else {
            Err("no valid certificate held".into())
        }
    }

    fn metrics(&self) -> String {
        let s = &self.0;
        let mut text = String::new();
        for (name, kind, help, value) in [
            (
                "palisade_renew_attempts",
                "counter",
                "Attempts to get a certificate",
                s.attempts.load(Ordering::Relaxed) as i64,
            ),
            (
                "palisade_renew_successes",
                "counter",
                "Attempts that put a new certificate in use",
                s.successes.load(Ordering::Relaxed) as i64,
            ),
            (
                "palisade_renew_failures",
                "counter",
                "Attempts that failed",
                s.failures.load(Ordering::Relaxed) as i64,
            ),
            (
                "palisade_renew_failures_in_a_row",
                "gauge",
                "Failures in a row now (backing off while above 0)",
                s.consecutive_failures.load(Ordering::Relaxed) as i64,
            ),
            (
                "palisade_renew_next_attempt_timestamp_seconds",
                "gauge",
                "Unix time of the next attempt",
                s.next_attempt.load(Ordering::Relaxed),
            ),
            (
                "palisade_renew_certificate_expiry_timestamp_seconds",
                "gauge",
                "NotAfter of the certificate held (0: none)",
                s.expires_at.load(Ordering::Relaxed),
            ),
            (
                "palisade_renew_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last success (0: none)",
                s.last_success.load(Ordering::Relaxed),
            ),
        ] {
            // OpenMetrics: a counter's samples carry `_total`, its TYPE line does not.
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            text.push_str(&format!(
                "# HELP {name} {help}.\n# TYPE {name} {kind}\n{sample} {value}\n"
            ));
        }
        text.push_str("# EOF\n");
        text
    }
}
