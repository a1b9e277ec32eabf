//! `palisade sidecar check-sandbox`: the sandbox `run` would apply, tried.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use palisade_sidecar::SidecarConfig;

use crate::commands::service::write_check_report;
use crate::commands::OutputArgs;

#[derive(Debug, Args)]
pub struct CheckSandboxArgs {
    /// The sidecar's YAML configuration.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// text, or json: {"landlock", "seccomp", "allowed": {...}, "tried": [...], "as_wanted"}.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sidecar check-sandbox`: applies the sidecar's sandbox for `config`, then tries what it must
/// forbid and reports each attempt; exit 0 when every one was refused.
pub fn check_sandbox(args: &CheckSandboxArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let config = SidecarConfig::load(&args.config)?;
    let report = palisade_sidecar::sandbox::restrict(&config)?;
    let tries =
        palisade_sandbox::check(&report, &palisade_sidecar::sandbox::syscalls(&config), &[]);
    write_check_report(&report, &tries, args.output.output, out)
}
