//! `palisade ca init` (a root) and `palisade ca init-issuer` (an issuing CA under it).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use palisade_ca::CaDir;
use palisade_identity::TrustDomain;

use crate::commands::{parse_duration, write_json, KeyTypeArg, OutputArgs};
use crate::output::rfc3339;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the CA's state (created 0700 if missing).
    #[arg(long = "ca-dir", alias = "dir", value_name = "DIR")]
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
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct InitIssuerArgs {
    /// The root CA's directory (made by `ca init`).
    #[arg(long, value_name = "DIR")]
    pub root_dir: PathBuf,
    /// Directory for the issuer (created 0700 if missing).
    #[arg(long = "ca-dir", alias = "dir", value_name = "DIR")]
    pub dir: PathBuf,
    /// Lifetime of the issuer certificate; never past the root's.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "30d")]
    pub ttl: Duration,
    /// Key algorithm of the issuer.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyTypeArg,
    /// Replace a root CA found in DIR (an issuer found there is replaced without it).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub output: OutputArgs,
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
    let key_type = palisade_ca::KeyType::from(args.key_type);
    if args.output.json() {
        write_json(
            out,
            &serde_json::json!({
                "trust_domain": ca.trust_domain().to_string(),
                "key_type": key_type.to_string(),
                "not_after": rfc3339(ca.not_after()),
                "key": dir.key_path(),
                "cert": dir.cert_path(),
                "bundle": dir.bundle_path(),
            }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "created CA for trust domain {} ({key_type}), valid until {}",
        ca.trust_domain(),
        rfc3339(ca.not_after())
    )?;
    writeln!(out, "  key      {} (0600)", dir.key_path().display())?;
    writeln!(out, "  cert     {}", dir.cert_path().display())?;
    writeln!(
        out,
        "  bundle   {}  <- give this to every workload",
        dir.bundle_path().display()
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn init_issuer(args: &InitIssuerArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let dir = CaDir::new(&args.dir);
    let (issuer, bundle) = dir.init_issuer(
        &CaDir::new(&args.root_dir),
        args.key_type.into(),
        args.ttl,
        args.force,
    )?;
    tracing::info!(trust_domain = %issuer.trust_domain(), dir = %args.dir.display(), "created issuer");
    let roots = bundle.roots().len();
    if args.output.json() {
        write_json(
            out,
            &serde_json::json!({
                "trust_domain": issuer.trust_domain().to_string(),
                "root_dir": args.root_dir,
                "not_after": rfc3339(issuer.not_after()),
                "key": dir.key_path(),
                "cert": dir.cert_path(),
                "bundle": dir.bundle_path(),
                "bundle_roots": roots,
            }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "created issuer for trust domain {} under {}, valid until {}",
        issuer.trust_domain(),
        args.root_dir.display(),
        rfc3339(issuer.not_after())
    )?;
    writeln!(out, "  key      {} (0600)", dir.key_path().display())?;
    writeln!(out, "  cert     {}", dir.cert_path().display())?;
    writeln!(
        out,
        "  bundle   {} ({roots} root{})",
        dir.bundle_path().display(),
        if roots == 1 { "" } else { "s" }
    )?;
    Ok(ExitCode::SUCCESS)
}
