//! `palisade sidecar redirect`: the pod's redirect table (palisade_nft::redirect).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use palisade_nft::redirect::{apply_redirect, remove_redirect, Redirect, REDIRECT_TABLE};
use palisade_policy::addrs::Cidr;

#[derive(Debug, Args)]
pub struct RedirectArgs {
    /// The sidecar's transparent inbound port.
    #[arg(long, value_name = "PORT", required_unless_present = "remove")]
    pub inbound_port: Option<u16>,
    /// The sidecar's transparent outbound port.
    #[arg(long, value_name = "PORT", required_unless_present = "remove")]
    pub outbound_port: Option<u16>,
    /// The UID the sidecar runs as (its own connections are never redirected).
    #[arg(long, value_name = "UID", required_unless_present = "remove")]
    pub proxy_uid: Option<u32>,
    /// Ports on which connections to the pod reach the app directly (comma-separated).
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,
    /// Ports the app connects to directly (comma-separated).
    #[arg(long, value_name = "PORTS", value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Networks the app reaches directly (comma-separated CIDRs).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',', value_parser = parse_cidr)]
    pub exclude_cidrs: Vec<Cidr>,
    /// Remove the table instead (plain traffic again).
    #[arg(long, conflicts_with_all = ["inbound_port", "outbound_port", "proxy_uid"])]
    pub remove: bool,
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    Cidr::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: &RedirectArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    if args.remove {
        let removed = remove_redirect()
            .with_context(|| format!("cannot remove table inet {REDIRECT_TABLE}"))?;
        let what = if removed {
            "removed"
        } else {
            "was not there; nothing to remove:"
        };
        writeln!(out, "{what} table inet {REDIRECT_TABLE}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(inbound_port), Some(outbound_port), Some(proxy_uid)) =
        (args.inbound_port, args.outbound_port, args.proxy_uid)
    else {
        anyhow::bail!("--inbound-port, --outbound-port and --proxy-uid are required");
    };
    let redirect = Redirect {
        inbound_port,
        outbound_port,
        proxy_uid,
        exclude_inbound_ports: args.exclude_inbound_ports.clone(),
        exclude_outbound_ports: args.exclude_outbound_ports.clone(),
        exclude_cidrs: args.exclude_cidrs.clone(),
    };
    apply_redirect(&redirect)
        .with_context(|| format!("cannot install table inet {REDIRECT_TABLE}"))?;
    tracing::info!(
        inbound_port,
        outbound_port,
        proxy_uid,
        "redirect table installed"
    );
    writeln!(
        out,
        "table inet {REDIRECT_TABLE}: inbound TCP -> :{inbound_port}, outbound TCP -> :{outbound_port} (uid {proxy_uid}, loopback{}{}{} exempt)",
        if redirect.exclude_inbound_ports.is_empty() { String::new() } else { format!(", inbound ports {:?}", redirect.exclude_inbound_ports) },
        if redirect.exclude_outbound_ports.is_empty() { String::new() } else { format!(", outbound ports {:?}", redirect.exclude_outbound_ports) },
        if redirect.exclude_cidrs.is_empty() { String::new() } else { format!(", {}", redirect.exclude_cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")) },
    )?;
    Ok(ExitCode::SUCCESS)
}
