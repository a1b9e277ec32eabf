//! `palisade cert request` and `palisade cert renew`: the rotation CLI, a client of
//! `palisade ca serve` (the protocol and timing are `palisade_identity_client`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Args;
use palisade_ca::{SpiffeId, SvidDir, TrustBundle, TrustBundleSet};
use palisade_identity_client::{
    unix, Bootstrap, CaClient, ClientError, RenewalStatus, RenewalTiming, Renewer, Svid, SvidSink,
};

use crate::output::rfc3339;

use crate::exit::{FAILURE as EXIT_REFUSED, LOCAL as EXIT_LOCAL, RETRY_LATER as EXIT_UNAVAILABLE};

#[derive(Debug, Args)]
pub struct CaArgs {
    /// The CA service, https://host[:port].
    #[arg(long, value_name = "URL")]
    pub ca: String,
    /// The CA service's SPIFFE ID (default spiffe://<trust domain of the bundle>/palisade/ca).
    #[arg(long, value_name = "ID")]
    pub ca_id: Option<SpiffeId>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("credential").required(true).multiple(false)))]
pub struct RequestArgs {
    #[command(flatten)]
    pub ca: CaArgs,
    /// PEM roots that authenticate the CA service.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// A join token from `palisade ca token` (visible to other local users in the process
    /// list while this runs: prefer --token-file on shared hosts).
    #[arg(long, value_name = "TOKEN", group = "credential")]
    pub token: Option<String>,
    /// A file holding a join token.
    #[arg(long, value_name = "FILE", group = "credential")]
    pub token_file: Option<PathBuf>,
    /// A file holding a Kubernetes service-account token (projected, with the CA's audience).
    #[arg(long, value_name = "FILE", group = "credential")]
    pub service_account_token: Option<PathBuf>,
    /// Refuse a certificate for any other ID (the CA checks it too).
    #[arg(long, value_name = "ID")]
    pub spiffe_id: Option<SpiffeId>,
    /// Directory to write key.pem, cert.pem and bundle.pem to.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    #[command(flatten)]
    pub ca: CaArgs,
    /// The directory with key.pem, cert.pem and bundle.pem (from `cert request` or `cert issue`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Keep renewing at half the lifetime until stopped, with an admin server.
    #[arg(long)]
    pub watch: bool,
    /// Admin server address with --watch (/live, /ready, /metrics).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9093",
        requires = "watch"
    )]
    pub admin_listen: std::net::SocketAddr,
    /// With --watch: a service-account token file to start again with if the certificate
    /// expires (after a long outage).
    #[arg(long, value_name = "FILE", requires = "watch")]
    pub service_account_token: Option<PathBuf>,
    /// With --watch: how it restricts itself (Landlock: its directory and the CA's port; the
    /// system call allow-list).
    #[command(flatten)]
    pub sandbox: super::SandboxArgs,
}

/// An error with the exit code it deserves.
pub struct Failure(u8, String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let code = match &error {
            ClientError::Credential { .. } | ClientError::OwnCredentials(_) => EXIT_LOCAL,
            e if e.is_temporary() => EXIT_UNAVAILABLE,
            _ => EXIT_REFUSED,
        };
        Failure(code, error.to_string())
    }
}

/// The exit code and the sentence, said once: in the log for the `--watch` service, on stderr
/// for a one-shot command.
fn exit(result: Result<ExitCode, Failure>, service: bool) -> anyhow::Result<ExitCode> {
    match result {
        Ok(code) => Ok(code),
        Err(Failure(code, message)) => {
            if service {
                tracing::error!(error = %message, "stopped");
            } else {
                eprintln!("error: {message}");
            }
            Ok(ExitCode::from(code))
        }
    }
}

fn client(ca: &CaArgs, bundle: &TrustBundle) -> Result<CaClient, Failure> {
    let server_id = match &ca.ca_id {
        Some(id) => id.clone(),
        None => SpiffeId::parse(&format!("{}/palisade/ca", bundle.trust_domain().id()))
            .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))?,
    };
    Ok(CaClient::new(
        &ca.ca,
        server_id,
        Arc::new(TrustBundleSet::from(bundle.clone())),
    )?)
}

fn read_bundle(path: &PathBuf) -> Result<TrustBundle, Failure> {
    let pem = std::fs::read(path)
        .map_err(|e| Failure(EXIT_LOCAL, format!("cannot read {}: {e}", path.display())))?;
    TrustBundle::from_pem_own_domain(&pem)
        .map_err(|e| Failure(EXIT_LOCAL, format!("{}: {e}", path.display())))
}

fn write(dir: &SvidDir, svid: &Svid) -> Result<(), Failure> {
    dir.write(
        Some(svid.key_pem().as_bytes()),
        svid.chain_pem.as_bytes(),
        svid.bundle_pem.as_bytes(),
    )
    .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))
}

fn report(out: &mut dyn Write, verb: &str, svid: &Svid, dir: &SvidDir) -> std::io::Result<()> {
    let not_after = time::OffsetDateTime::from_unix_timestamp(unix(svid.not_after))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    writeln!(
        out,
        "{verb} {} (serial {}), valid until {}",
        svid.id,
        svid.serial,
        rfc3339(not_after)
    )?;
    writeln!(out, "  key      {} (0600)", dir.key_path().display())?;
    writeln!(out, "  cert     {}", dir.cert_path().display())?;
    writeln!(out, "  bundle   {}", dir.bundle_path().display())
}

pub fn request(args: &RequestArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    exit(
        (|| {
            let bundle = read_bundle(&args.bundle)?;
            let client = client(&args.ca, &bundle)?;
            let bootstrap = match (&args.token, &args.token_file, &args.service_account_token) {
                (Some(token), _, _) => Bootstrap::JoinToken(token.clone()),
                (None, Some(path), _) => Bootstrap::JoinTokenFile(path.clone()),
                (None, None, Some(path)) => Bootstrap::ServiceAccountTokenFile(path.clone()),
                (None, None, None) => {
                    return Err(Failure(EXIT_LOCAL, "no credential given".into()))
                }
            };
            let renewer = Renewer::new(
                client,
                Some(bootstrap),
                args.spiffe_id.clone(),
                RenewalTiming::default(),
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))?;
            let svid = runtime.block_on(renewer.obtain(None))?;
            let dir = SvidDir::new(&args.out);
            write(&dir, &svid)?;
            report(out, "issued", &svid, &dir).map_err(|e| Failure(EXIT_LOCAL, e.to_string()))?;
            Ok(ExitCode::SUCCESS)
        })(),
        false,
    )
}

fn load_dir(dir: &SvidDir) -> Result<Svid, Failure> {
    let read = |name| {
        dir.read(name)
            .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))
    };
    let written_at = std::fs::metadata(dir.cert_path())
        .and_then(|m| m.modified())
        .ok();
    Svid::from_pem(
        &read(SvidDir::CERT)?,
        &read(SvidDir::KEY)?,
        &read(SvidDir::BUNDLE)?,
        written_at,
    )
    .map_err(|e| Failure(EXIT_LOCAL, format!("{}: {e}", dir.path().display())))
}

/// `cert renew` without `--watch`: one renewal over mTLS with the directory's certificate, the
/// new key, certificate and bundle written back. The demo runs it too.
pub async fn renew_once(ca: &CaArgs, dir: &SvidDir, out: &mut dyn Write) -> Result<(), Failure> {
    let current = load_dir(dir)?;
    let client = client(ca, &current.bundle)?;
    let renewer = Renewer::new(client, None, None, RenewalTiming::default());
    let svid = renewer.obtain(Some(&current)).await?;
    write(dir, &svid)?;
    report(out, "renewed", &svid, dir).map_err(|e| Failure(EXIT_LOCAL, e.to_string()))
}

/// Writes each new SVID to the directory.
struct DirSink(SvidDir);

impl SvidSink for DirSink {
    fn install(&self, svid: Arc<Svid>) -> Result<(), palisade_identity_client::InstallError> {
        write(&self.0, &svid).map_err(|Failure(_, message)| message.into())
    }
}

/// Restricts `cert renew --watch`, before its runtime starts, to its work: write beneath its SVID
/// directory (files are replaced by renaming), read its service-account token's directory and
/// the resolver's files, bind its admin port, connect only to the CA service's port; the system
/// calls of a service that writes files.
fn sandbox_watch(args: &RenewArgs) -> Result<(), Failure> {
    use palisade_sandbox::{
        directory_of, names_a_host, port_of, resolver_files, Allowed, Syscalls,
    };
    let mut read: Vec<_> = args
        .service_account_token
        .iter()
        .map(|t| directory_of(t))
        .collect();
    read.extend(resolver_files());
    let allowed = Allowed {
        read,
        write: vec![directory_of(&args.dir)],
        bind: [args.admin_listen.port()].into(),
        // And DNS over TCP when the CA is named by host (answers too large for UDP).
        connect: Some(
            port_of(&args.ca.ca)
                .into_iter()
                .chain(names_a_host(&args.ca.ca).then_some(53))
                .collect(),
        ),
        ..Allowed::default()
    };
    // UDP for the resolver only when the CA is named by host.
    let syscalls = if names_a_host(&args.ca.ca) {
        Syscalls::service().state().resolver()
    } else {
        Syscalls::service().state()
    };
    let report = palisade_sandbox::restrict(&allowed, &syscalls, args.sandbox.config())
        .map_err(|e| Failure(EXIT_LOCAL, format!("cannot apply the sandbox: {e}")))?;
    palisade_sandbox::log_report("certificate renewer", &report);
    Ok(())
}

pub fn renew(args: &RenewArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    exit(
        (|| {
            let dir = SvidDir::new(&args.dir);
            if args.watch {
                // Before the runtime exists, so that its threads are restricted too.
                sandbox_watch(args)?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))?;
            if !args.watch {
                runtime.block_on(renew_once(&args.ca, &dir, out))?;
                return Ok(ExitCode::SUCCESS);
            }
            if !args.admin_listen.ip().is_loopback() {
                return Err(Failure(
                EXIT_LOCAL,
                format!(
                    "--admin-listen must be a loopback address (the admin server has no authentication), not {}",
                    args.admin_listen
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
                let admin = tokio::net::TcpListener::bind(args.admin_listen)
                    .await
                    .map_err(|e| {
                        Failure(
                            EXIT_LOCAL,
                            format!("cannot listen on {}: {e}", args.admin_listen),
                        )
                    })?;
                tracing::info!(admin = %args.admin_listen, dir = %args.dir.display(), "renewing");
                tokio::spawn(palisade_admin::serve(
                    admin,
                    Arc::new(WatchAdmin(status)),
                    stop.clone(),
                ));
                let renewing =
                    tokio::spawn(renewer.run(Arc::new(DirSink(dir)), current, stop.clone()));
                super::sidecar::shutdown_signal().await;
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
