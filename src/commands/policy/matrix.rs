//! `palisade policy matrix`: which pods reach which on one port, by the NetworkPolicies.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::{FamilyArg, KubernetesArgs, ProtocolArg};
use crate::commands::{write_json, OutputArgs};

#[derive(Debug, Args)]
pub struct MatrixArgs {
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// Destination port.
    #[arg(long, value_name = "P")]
    pub port: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    pub protocol: ProtocolArg,
    /// Which of the pods' addresses.
    #[arg(long, value_enum, default_value = "ipv4")]
    pub family: FamilyArg,
    /// text (the grid), or json: {"pods": [...], "reachable": [[from][to]: true, false or null
    /// where a pod has no address of the family]}.
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn matrix(args: &MatrixArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let Some(cluster) = args.kubernetes.load()? else {
        anyhow::bail!("--kubernetes is needed: the matrix is over pods");
    };
    let proto = args.protocol.kubernetes()?;
    let table = palisade_netpol::matrix(&cluster, proto, args.port, args.family.family());
    if args.output.json() {
        write_json(
            out,
            &serde_json::json!({
                "protocol": proto.name(),
                "port": args.port,
                "family": args.family.name(),
                "pods": table.pods,
                "reachable": table.cells,
            }),
        )?;
    } else {
        write!(out, "{table}")?;
    }
    Ok(ExitCode::SUCCESS)
}
