//! `palisade policy apply`: this host's `inet palisade` table replaced in one transaction.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{host_ruleset, KubernetesArgs};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The Palisade policy (optional with --kubernetes).
    #[arg(value_name = "FILE", required_unless_present = "kubernetes")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// This host's name in the policy's `hosts:` (a node name for --kubernetes).
    #[arg(long, value_name = "NAME")]
    pub host: String,
    /// Print what would change in the live table, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn apply(args: &ApplyArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    use palisade_nft::apply;
    let ruleset = host_ruleset(args.file.as_deref(), &args.kubernetes, Some(&args.host))?;
    if args.dry_run {
        let live = apply::live_table()?;
        let changes = apply::diff(live.as_ref(), &ruleset);
        if changes.is_empty() {
            writeln!(
                out,
                "no change: the live table is generation {}",
                ruleset.generation
            )?;
        }
        for line in &changes {
            writeln!(out, "{line}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    apply::apply(&ruleset)?;
    tracing::info!(host = args.host, generation = ruleset.generation, "applied");
    writeln!(
        out,
        "applied generation {} to table inet {} for host {}",
        ruleset.generation,
        palisade_policy::TABLE,
        args.host
    )?;
    Ok(ExitCode::SUCCESS)
}
