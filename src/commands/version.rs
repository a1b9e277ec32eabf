//! `palisade version`, `palisade completion SHELL` and `palisade man DIR`: what a packager and a
//! shell need, generated from the same clap definitions as the commands.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// text, or json ({"version", "commit", "commit_date"}).
    #[command(flatten)]
    pub output: super::OutputArgs,
}

pub fn version(args: &VersionArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (version, commit, date) = (
        env!("CARGO_PKG_VERSION"),
        env!("PALISADE_COMMIT"),
        env!("PALISADE_COMMIT_DATE"),
    );
    match args.output.output {
        super::Output::Text => writeln!(
            out,
            "palisade {version}\ncommit {commit}\ncommit date {date}"
        )?,
        super::Output::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"version": version, "commit": commit, "commit_date": date})
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "tools")]
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(feature = "tools")]
pub fn completion(
    args: &CompletionArgs,
    command: &mut clap::Command,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, command, "palisade", &mut script);
    out.write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "tools")]
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write `palisade.1`, `palisade-policy.1`, `palisade-policy-explain.1`, …
    /// into (made if missing).
    pub dir: std::path::PathBuf,
}

/// One page per command and subcommand, named by its path (`palisade-ca-rotate-prepare.1`).
#[cfg(feature = "tools")]
pub fn man(args: &ManArgs, command: clap::Command) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot make {}", args.dir.display()))?;
    clap_mangen::generate_to(command, &args.dir)
        .with_context(|| format!("cannot write the man pages into {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
