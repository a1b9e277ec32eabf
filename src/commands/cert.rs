//! `palisade cert ...`: issue a workload's X.509-SVID, and inspect one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use palisade_ca::pem::{certificates_from_pem, csr_from_pem};
use palisade_ca::{
    CaDir, CertInfo, LeafRequest, SpiffeId, SvidDir, TrustBundle, TrustBundleSet, Verdict,
};
use rustls_pki_types::UnixTime;

use super::{parse_duration, KeyTypeArg};
use crate::output::{human_seconds, rfc3339};

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a workload certificate (X.509-SVID) from a CA directory.
    #[command(after_help = "Examples:\n  \
palisade cert issue --ca-dir ca \\\n      --spiffe-id spiffe://example.org/ns/shop/sa/frontend --out frontend\n  \
palisade cert issue --ca-dir ca \\\n      --spiffe-id spiffe://example.org/ns/shop/sa/payments \\\n      --csr payments.csr --out payments\n\n\
Writes key.pem (0600, unless --csr), cert.pem (the certificate, then its chain) and bundle.pem, each atomically.")]
    Issue(IssueArgs),
    /// Show a certificate's SPIFFE ID, issuer, serial and validity, and check it.
    #[command(
        after_help = "Example:\n  palisade cert inspect frontend/cert.pem --bundle frontend/bundle.pem\n\n\
Exit code 0 when the certificate is a valid X.509-SVID (and chains to the bundle, if given); 3\n\
when it is not (docs/CLI.md)."
    )]
    Inspect(InspectArgs),
    /// Get a first certificate from the CA service with a join token or a service-account token.
    #[command(after_help = "Examples:\n  \
palisade cert request --ca https://ca.example.org:8443 --bundle bundle.pem \\\n      --token palisade-join-... --out frontend\n  \
palisade cert request --ca https://palisade-ca.palisade.svc:8443 \\\n      --bundle bundle.pem \\\n      --service-account-token /var/run/secrets/palisade/token \\\n      --ca-id spiffe://cluster.local/ns/palisade/sa/palisade-ca --out /run/svid\n\n\
The key is made here and never leaves (only the CSR is sent). Writes key.pem (0600), cert.pem and\n\
bundle.pem atomically. Exit codes: 0 issued; 1 the CA refused (retrying will not help); 3 the CA\n\
could not be reached or was busy (retry later); 4 local files unusable.")]
    Request(super::cert_client::RequestArgs),
    /// Renew a certificate from the CA service over mTLS, once or (--watch) for as long as it runs.
    #[command(after_help = "Examples:\n  \
palisade cert renew --ca https://ca.example.org:8443 --dir frontend\n  \
palisade cert renew --ca https://ca.example.org:8443 --dir frontend \\\n      --watch --admin-listen 127.0.0.1:9093\n\n\
Authenticates with DIR's certificate and trusts DIR's bundle; writes a new key, certificate and\n\
bundle atomically. With --watch it renews at half the lifetime (+-10%), backs off with jitter\n\
while the CA is away, and serves /live, /ready and /metrics. Exit codes as for `cert request`.")]
    Renew(super::cert_client::RenewArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA directory made by `palisade ca init`.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The workload's identity, e.g. spiffe://example.org/ns/shop/sa/frontend.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: SpiffeId,
    /// Directory to write key.pem, cert.pem and bundle.pem to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Lifetime of the certificate; never past the CA's own expiry.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "24h")]
    pub ttl: Duration,
    /// DNS name to add as a SAN (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// Certify the key of this PEM certificate signing request instead of generating one. Only the
    /// CSR's key is used: its subject and SANs are ignored.
    #[arg(long, value_name = "FILE")]
    pub csr: Option<PathBuf>,
    /// Key algorithm of a generated key.
    #[arg(long, value_enum, default_value = "ecdsa-p256", conflicts_with = "csr")]
    pub key_type: KeyTypeArg,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// PEM file holding the certificate, optionally followed by its chain.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Trust bundle (PEM) to verify the chain against.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: CertCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCommand::Issue(args) => issue(&args, out),
        CertCommand::Inspect(args) => inspect(&args, out),
        CertCommand::Request(args) => super::cert_client::request(&args, out),
        CertCommand::Renew(args) => super::cert_client::renew(&args, out),
    }
}

pub fn issue(args: &IssueArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (ca, bundle) = CaDir::new(&args.ca_dir).load()?;
    let mut request = LeafRequest::new(args.spiffe_id.clone(), args.ttl);
    request.dns_names = args.dns_names.clone();
    let (issued, key_pem) = match &args.csr {
        Some(csr_path) => {
            let pem = std::fs::read(csr_path)
                .with_context(|| format!("cannot read {}", csr_path.display()))?;
            let der = csr_from_pem(&pem).ok_or_else(|| {
                anyhow!("{} holds no PEM certificate request", csr_path.display())
            })?;
            let issued = ca
                .issue_from_csr(&der, &request)
                .with_context(|| format!("cannot issue from {}", csr_path.display()))?;
            (issued, None)
        }
        None => {
            let (issued, key) = ca.issue_with_new_key(&request, args.key_type.into())?;
            (issued, Some(palisade_ca::private_key_pem(&key)))
        }
    };
    // Key first, bundle last (SvidDir::write): a cert.pem never sits beside a key it does not
    // belong to for longer than a rename.
    let dir = SvidDir::new(&args.out);
    dir.write(
        key_pem.as_deref().map(str::as_bytes),
        issued.chain_pem().as_bytes(),
        bundle.to_pem().as_bytes(),
    )?;
    let key_path = key_pem.map(|_| dir.key_path());
    let (cert_path, bundle_path) = (dir.cert_path(), dir.bundle_path());
    tracing::info!(spiffe_id = %args.spiffe_id, serial = %hex_colon(&issued.serial), "issued certificate");
    writeln!(
        out,
        "issued {} (serial {}), valid until {}",
        args.spiffe_id,
        hex_colon(&issued.serial),
        rfc3339(issued.not_after)
    )?;
    if let Some(key_path) = key_path {
        writeln!(out, "  key      {} (0600)", key_path.display())?;
    }
    writeln!(out, "  cert     {}", cert_path.display())?;
    writeln!(out, "  bundle   {}", bundle_path.display())?;
    Ok(ExitCode::SUCCESS)
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
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &info)?;
        writeln!(out)?;
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

fn hex_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
