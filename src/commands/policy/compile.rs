//! `palisade policy compile`: a host's nftables table as nft text or nft's JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{host_ruleset, KubernetesArgs};
use crate::commands::write_json;

/// What `policy compile` prints: the table is the output, so its formats are nft's own.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// `nft -f` input.
    Nft,
    /// `nft -j -f` input.
    Json,
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The Palisade policy (optional with --kubernetes).
    #[arg(value_name = "FILE", required_unless_present = "kubernetes")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// The host whose table to compile (see `hosts:` in the policy; a node name for
    /// --kubernetes).
    #[arg(long, value_name = "NAME", required_unless_present = "all_hosts")]
    pub host: Option<String>,
    /// Compile as if every segment lived on this host.
    #[arg(long, conflicts_with_all = ["host", "kubernetes"])]
    pub all_hosts: bool,
    /// Output format: nft text, or nft's JSON.
    #[arg(
        short = 'o',
        long = "output",
        alias = "format",
        value_enum,
        default_value = "nft"
    )]
    pub format: Format,
}

pub fn compile(args: &CompileArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let ruleset = host_ruleset(args.file.as_deref(), &args.kubernetes, args.host.as_deref())?;
    match args.format {
        Format::Nft => out.write_all(palisade_nft::nft_text(&ruleset).as_bytes())?,
        Format::Json => write_json(out, &palisade_nft::nft_json(&ruleset))?,
    }
    Ok(ExitCode::SUCCESS)
}
