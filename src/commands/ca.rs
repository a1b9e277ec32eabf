//! `palisade ca ...`: create and manage a trust domain's certificate authority.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_ca::{CaDir, TrustDomain};

use super::{parse_duration, KeyTypeArg};
use crate::output::rfc3339;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new root CA for a trust domain in a directory.
    #[command(
        after_help = "Example:\n  palisade ca init --dir /etc/palisade/ca --trust-domain example.org\n\n\
Writes ca-key.pem (0600), ca-cert.pem and bundle.pem (the trust bundle to give every workload)."
    )]
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the CA's state (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Trust domain, e.g. example.org (lowercase letters, digits, '.', '-', '_').
    #[arg(long, value_name = "TD")]
    pub trust_domain: TrustDomain,
    /// Key algorithm of the CA.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyTypeArg,
    /// Lifetime of the CA certificate (e.g. 365d, 8760h).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "365d")]
    pub ttl: Duration,
    /// Replace an existing CA in DIR. Certificates it issued stop verifying against the new bundle.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: CaCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Init(args) => init(&args, out),
    }
}

pub fn init(args: &InitArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let dir = CaDir::new(&args.dir);
    let (ca, _bundle) = dir.init(
        &args.trust_domain,
        args.key_type.into(),
        args.ttl,
        args.force,
    )?;
    tracing::info!(trust_domain = %args.trust_domain, dir = %args.dir.display(), "created CA");
    writeln!(
        out,
        "created CA for trust domain {} ({}), valid until {}",
        ca.trust_domain(),
        palisade_ca::KeyType::from(args.key_type),
        rfc3339(ca.not_after())
    )?;
    writeln!(out, "  key      {} (0600)", dir.key_path().display())?;
    writeln!(out, "  cert     {}", dir.cert_path().display())?;
    writeln!(
        out,
        "  bundle   {}  <- give this to every workload",
        dir.bundle_path().display()
    )
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
