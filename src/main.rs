//! `palisade`: one command line for every part of Palisade. Each subcommand parses its arguments
//! and calls a library crate; the sentences users read on failure are made here.

mod commands;
#[cfg(feature = "tools")]
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Segment a container network twice over from one policy: nftables on every host, SPIFFE mTLS between workloads",
    after_help = "Start with `palisade demo`: the whole story on one machine, no root needed."
)]
struct Cli {
    /// Log format on stderr: text for people, json for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage a certificate authority (one per trust domain).
    #[cfg(feature = "tools")]
    #[command(subcommand)]
    Ca(commands::ca::CaCommand),
    /// Issue and inspect workload certificates (X.509-SVIDs).
    #[cfg(feature = "tools")]
    #[command(subcommand)]
    Cert(commands::cert::CertCommand),
    /// Check, compile, explain, apply and sync a segmentation policy.
    #[cfg(feature = "tools")]
    #[command(subcommand)]
    Policy(commands::policy::PolicyCommand),
    /// Run the mTLS sidecar of one workload.
    #[command(subcommand)]
    Sidecar(commands::sidecar::SidecarCommand),
    /// Add the redirect init container and the sidecar to Kubernetes workloads (or take them out).
    #[cfg(feature = "tools")]
    Inject(commands::inject::InjectArgs),
    /// Run the whole story on this machine in a temporary directory, printing each step.
    #[cfg(feature = "tools")]
    Demo(commands::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Services say what they do at info; one-shot commands only warn, their output is stdout.
    let is_service = match &cli.command {
        Command::Sidecar(_) => true,
        #[cfg(feature = "tools")]
        Command::Policy(commands::policy::PolicyCommand::Sync(_)) => true,
        #[cfg(feature = "tools")]
        Command::Ca(commands::ca::CaCommand::Serve(_)) => true,
        #[cfg(feature = "tools")]
        Command::Cert(commands::cert::CertCommand::Renew(args)) => args.watch,
        #[cfg(feature = "tools")]
        _ => false,
    };
    init_logging(cli.log_format, if is_service { "info" } else { "warn" });
    // Not locked for the whole run: services (ca serve's audit lines) write from other threads.
    let mut stdout = std::io::stdout();
    let result = match cli.command {
        #[cfg(feature = "tools")]
        Command::Ca(cmd) => commands::ca::run(cmd, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Cert(cmd) => commands::cert::run(cmd, &mut stdout),
        Command::Sidecar(cmd) => commands::sidecar::run(cmd, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Policy(cmd) => commands::policy::run(cmd, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Demo(args) => commands::demo::run(args, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Inject(args) => commands::inject::run(&args, &mut stdout),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::debug!(error = format!("{error:#}"), "command failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
