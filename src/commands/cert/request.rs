//! `palisade cert request`: a first SVID from the CA service, with a join token or a
//! Kubernetes service-account token. The key is made here; only the CSR leaves.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use palisade_identity::{SpiffeId, SvidDir};
use palisade_identity_client::{Bootstrap, RenewalTiming, Renewer};

use super::client::{client, exit, read_bundle, report, write, CaArgs, Failure};
use crate::commands::OutputArgs;
use crate::exit::LOCAL as EXIT_LOCAL;

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
    #[arg(long = "svid-dir", alias = "out", value_name = "DIR")]
    pub svid_dir: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
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
            let dir = SvidDir::new(&args.svid_dir);
            write(&dir, &svid)?;
            report(out, "issued", &svid, &dir, args.output)?;
            Ok(ExitCode::SUCCESS)
        })(),
        false,
    )
}
