//! `palisade cert inspect`: a certificate's SPIFFE ID, issuer, serial and validity, checked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Args;
use palisade_identity::pem::certificates_from_pem;
use palisade_identity::{CertInfo, SpiffeId, TrustBundle, TrustBundleSet, Verdict};
use rustls_pki_types::UnixTime;

use crate::commands::{write_json, OutputArgs};
use crate::output::{human_seconds, rfc3339};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// PEM file holding the certificate, optionally followed by its chain.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Trust bundle (PEM) to verify the chain against.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Deprecated: say `-o json`.
    #[arg(long, hide = true)]
    pub json: bool,
}

pub fn inspect(args: &InspectArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let pem = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let chain = certificates_from_pem(&pem)
        .map_err(|_| anyhow!("{} holds no PEM certificate", args.file.display()))?;
    let now = UnixTime::now();
    let mut info = CertInfo::inspect(&chain, None, now)
        .with_context(|| format!("cannot inspect {}", args.file.display()))?;
    if let Some(bundle_path) = &args.bundle {
        info.verdict = verdict_against_bundle(&chain, &info, bundle_path, now)?;
    }
    if args.json || args.output.json() {
        write_json(out, &info)?;
    } else {
        print_info(&info, args, out)?;
    }
    Ok(crate::exit::answer(info.verdict.is_valid()))
}

/// Checks the chain against the bundle of the certificate's own trust domain.
fn verdict_against_bundle(
    chain: &[rustls_pki_types::CertificateDer<'static>],
    info: &CertInfo,
    bundle_path: &Path,
    now: UnixTime,
) -> anyhow::Result<Verdict> {
    if !info.verdict.is_valid() {
        return Ok(info.verdict.clone());
    }
    let pem = std::fs::read(bundle_path)
        .with_context(|| format!("cannot read {}", bundle_path.display()))?;
    let Some(id) = info
        .spiffe_id
        .as_deref()
        .and_then(|s| SpiffeId::parse(s).ok())
    else {
        return Ok(info.verdict.clone());
    };
    let bundle = match TrustBundle::from_pem(id.trust_domain().clone(), &pem) {
        Ok(bundle) => bundle,
        Err(e) => {
            return Ok(Verdict::Invalid {
                reason: format!("{}: {e}", bundle_path.display()),
            })
        }
    };
    let inspected = CertInfo::inspect(chain, Some(&TrustBundleSet::from(bundle)), now)?;
    Ok(inspected.verdict)
}

fn print_info(info: &CertInfo, args: &InspectArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let dash = || "-".to_string();
    let chain_note = match info.chain_length {
        1 => "1 certificate".to_string(),
        n => format!("{n} certificates"),
    };
    writeln!(out, "file         {} ({chain_note})", args.file.display())?;
    writeln!(
        out,
        "spiffe id    {}",
        info.spiffe_id.clone().unwrap_or_else(dash)
    )?;
    if !info.dns_names.is_empty() {
        writeln!(out, "dns names    {}", info.dns_names.join(", "))?;
    }
    writeln!(out, "issuer       {}", info.issuer)?;
    writeln!(out, "serial       {}", info.serial)?;
    writeln!(out, "key          {}", info.key_algorithm)?;
    writeln!(out, "valid from   {}", rfc3339(info.not_before))?;
    let remaining = if info.remaining_seconds >= 0 {
        format!("{} left", human_seconds(info.remaining_seconds))
    } else {
        format!("expired {} ago", human_seconds(-info.remaining_seconds))
    };
    writeln!(
        out,
        "valid until  {} ({remaining})",
        rfc3339(info.not_after)
    )?;
    let verdict = match (&info.verdict, &args.bundle) {
        (Verdict::Valid, Some(bundle)) => {
            format!("valid X.509-SVID, chains to {}", bundle.display())
        }
        (Verdict::Valid, None) | (Verdict::ValidUnverified, _) => {
            "well-formed X.509-SVID within its validity; chain not checked (pass --bundle)".into()
        }
        (Verdict::Invalid { reason }, _) => format!("INVALID: {reason}"),
    };
    writeln!(out, "verdict      {verdict}")?;
    Ok(())
}
