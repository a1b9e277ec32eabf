//! `palisade cert issue`: a workload's X.509-SVID straight from a CA directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use palisade_ca::{CaDir, LeafRequest};
use palisade_identity::pem::csr_from_pem;
use palisade_identity::{serial_hex, SpiffeId, SvidDir};

use crate::commands::{parse_duration, write_json, KeyTypeArg, OutputArgs};
use crate::output::rfc3339;

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA directory made by `palisade ca init` (or `ca init-issuer`).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The workload's identity, e.g. spiffe://example.org/ns/shop/sa/frontend.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: SpiffeId,
    /// Directory to write key.pem, cert.pem and bundle.pem to (created if missing).
    #[arg(long = "svid-dir", alias = "out", value_name = "DIR")]
    pub svid_dir: PathBuf,
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
    #[command(flatten)]
    pub output: OutputArgs,
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
    let dir = SvidDir::new(&args.svid_dir);
    dir.write(
        key_pem.as_deref().map(str::as_bytes),
        issued.chain_pem().as_bytes(),
        bundle.to_pem().as_bytes(),
    )?;
    let key_path = key_pem.map(|_| dir.key_path());
    let serial = serial_hex(&issued.serial);
    tracing::info!(spiffe_id = %args.spiffe_id, %serial, "issued certificate");
    if args.output.json() {
        write_json(
            out,
            &serde_json::json!({
                "spiffe_id": args.spiffe_id.to_string(),
                "serial": serial,
                "not_after": rfc3339(issued.not_after),
                "key": key_path,
                "cert": dir.cert_path(),
                "bundle": dir.bundle_path(),
            }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "issued {} (serial {serial}), valid until {}",
        args.spiffe_id,
        rfc3339(issued.not_after)
    )?;
    if let Some(key_path) = key_path {
        writeln!(out, "  key      {} (0600)", key_path.display())?;
    }
    writeln!(out, "  cert     {}", dir.cert_path().display())?;
    writeln!(out, "  bundle   {}", dir.bundle_path().display())?;
    Ok(ExitCode::SUCCESS)
}
