//! `palisade demo`: the whole story on one machine, in a temporary directory, no root needed.
//! Each step prints the command an operator would type, then runs that same command's code and
//! checks that the outcome is the expected one (the demo fails loudly if it is not).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use palisade_ca::{SpiffeId, TrustDomain};

use super::ca::{self, InitArgs};
use super::cert::{self, InspectArgs, IssueArgs};
use super::KeyTypeArg;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cargo run --release -- demo\n  palisade demo --keep")]
pub struct DemoArgs {
    /// Keep the demo's directory (CA, certificates) instead of removing it at the end.
    #[arg(long)]
    pub keep: bool,
}

const TRUST_DOMAIN: &str = "demo.palisade.internal";

pub fn run(args: DemoArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("palisade-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    std::env::set_current_dir(dir.path())
        .with_context(|| format!("cannot enter {}", dir.path().display()))?;
    let td: TrustDomain = TRUST_DOMAIN.parse()?;
    let frontend = SpiffeId::from_segments(&td, &["ns", "shop", "sa", "frontend"])?;
    let payments = SpiffeId::from_segments(&td, &["ns", "shop", "sa", "payments"])?;

    writeln!(
        out,
        "Palisade demo: workload identity, from CA to verified certificate."
    )?;
    writeln!(out, "Working in {}\n", dir.path().display())?;
    writeln!(out, "$ cd {}", dir.path().display())?;

    step(out, "1. A certificate authority for the trust domain. Its bundle.pem is what every workload trusts.")?;
    command(
        out,
        &format!("palisade ca init --dir ca --trust-domain {td}"),
    )?;
    ca::init(
        &InitArgs {
            dir: "ca".into(),
            trust_domain: td.clone(),
            key_type: KeyTypeArg::EcdsaP256,
            ttl: Duration::from_secs(365 * 86_400),
            force: false,
        },
        out,
    )?;

    step(out, "2. Each workload gets a short-lived X.509-SVID: its SPIFFE ID as the one URI SAN, a fresh key, 1 hour of life.")?;
    for (id, name) in [(&frontend, "frontend"), (&payments, "payments")] {
        command(
            out,
            &format!("palisade cert issue --ca-dir ca --spiffe-id {id} --out {name} --ttl 1h"),
        )?;
        cert::issue(&issue_args("ca", id, name), out)?;
    }

    step(
        out,
        "3. Inspect and verify them against the trust bundle (exit code 0 = valid).",
    )?;
    for name in ["frontend", "payments"] {
        command(
            out,
            &format!("palisade cert inspect {name}/cert.pem --bundle ca/bundle.pem"),
        )?;
        expect_valid(
            true,
            cert::inspect(&inspect_args(name, "ca/bundle.pem"), out)?,
        )?;
    }

    step(out, "4. An intruder runs a CA of its own for the same trust domain and issues itself frontend's ID.\n   The certificate looks right, but it does not chain to our bundle, so it is refused (exit code 1).")?;
    command(
        out,
        &format!("palisade ca init --dir intruder-ca --trust-domain {td}"),
    )?;
    ca::init(
        &InitArgs {
            dir: "intruder-ca".into(),
            trust_domain: td.clone(),
            key_type: KeyTypeArg::EcdsaP256,
            ttl: Duration::from_secs(86_400),
            force: false,
        },
        out,
    )?;
    command(
        out,
        &format!("palisade cert issue --ca-dir intruder-ca --spiffe-id {frontend} --out intruder --ttl 1h"),
    )?;
    cert::issue(&issue_args("intruder-ca", &frontend, "intruder"), out)?;
    command(
        out,
        "palisade cert inspect intruder/cert.pem --bundle ca/bundle.pem",
    )?;
    expect_valid(
        false,
        cert::inspect(&inspect_args("intruder", "ca/bundle.pem"), out)?,
    )?;

    writeln!(
        out,
        "\nDone: one CA, two workload identities verified, one forgery refused."
    )?;
    if args.keep {
        let kept: PathBuf = dir.keep();
        writeln!(out, "Kept {} for you to look at.", kept.display())?;
    } else {
        writeln!(
            out,
            "Removed {} (pass --keep to look at the files).",
            dir.path().display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn issue_args(ca_dir: &str, id: &SpiffeId, out_dir: &str) -> IssueArgs {
    IssueArgs {
        ca_dir: ca_dir.into(),
        spiffe_id: id.clone(),
        out: out_dir.into(),
        ttl: Duration::from_secs(3600),
        dns_names: Vec::new(),
        csr: None,
        key_type: KeyTypeArg::EcdsaP256,
    }
}

fn inspect_args(dir: &str, bundle: &str) -> InspectArgs {
    InspectArgs {
        file: PathBuf::from(dir).join("cert.pem"),
        bundle: Some(bundle.into()),
        json: false,
    }
}

fn expect_valid(expected: bool, code: ExitCode) -> anyhow::Result<()> {
    let valid = code == ExitCode::SUCCESS;
    if valid != expected {
        bail!(
            "the demo expected this certificate to be {}, but it was not",
            if expected { "valid" } else { "refused" }
        );
    }
    Ok(())
}

fn step(out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    writeln!(out, "\n{text}")
}

fn command(out: &mut dyn Write, cmd: &str) -> std::io::Result<()> {
    writeln!(out, "$ {cmd}")
}
